//! The text form of a link direction, as the benchmark script passes it:
//! `delay=20ms,jitter=5ms,loss=1%,rate=20mbit,queue=200ms` (comma-separated `key=value`).
//!
//! | key | value | meaning |
//! |---|---|---|
//! | `delay` | `20ms`, `1.5s`, `300us` (bare number: ms) | fixed one-way propagation delay |
//! | `jitter` | duration | each packet's delay is `delay` ± uniform(`jitter`), never below 0 |
//! | `reorder` | (flag) or `reorder=1` | let jitter reorder packets (default: delivery stays in order) |
//! | `loss` | `1%` or `0.01` | independent random loss |
//! | `ge` | `P/R[/LOSS_BAD[/LOSS_GOOD]]` | Gilbert-Elliott bursty loss, as netem's `loss gemodel p r 1-h 1-k`: P = P(good→bad), R = P(bad→good) per packet; loss probability in the bad (default 100%) and good (default 0%) state |
//! | `rate` | `20mbit`, `500kbit`, `1gbit`, bare bit/s; `0` = unlimited | bottleneck rate |
//! | `trace` | path | Mahimahi trace: the bottleneck's delivery opportunities (replaces `rate`) |
//! | `queue` | `200ms`, `150kb`, `64000b` (k/kb, m/mb: ×1024) | drop-tail limit of the bottleneck queue; a time is converted to bytes at the rate (the trace's mean rate). Default 200ms |
//!
//! A link-wide on/off schedule is given separately as `EVERY/DOWN[@FIRST]`, e.g. `10s/2s`: the link is
//! up for EVERY−DOWN, then down for DOWN, repeating from the emulator's start; `@FIRST` moves the first
//! cut (`10s/2s@3s`: down 3–5 s, 13–15 s, …).

use std::path::PathBuf;
use std::time::Duration;

use crate::Error;

#[derive(Debug, Clone, PartialEq)]
pub struct DirSpec {
    pub delay: Duration,
    pub jitter: Duration,
    pub reorder: bool,
    pub loss: f64,
    pub ge: Option<GilbertElliott>,
    pub capacity: CapacitySpec,
    pub queue: QueueLimit,
}

impl Default for DirSpec {
    fn default() -> Self {
        DirSpec {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            reorder: false,
            loss: 0.0,
            ge: None,
            capacity: CapacitySpec::Unlimited,
            queue: QueueLimit::Time(Duration::from_millis(200)),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum CapacitySpec {
    Unlimited,
    /// Bits per second.
    Rate(u64),
    Trace(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QueueLimit {
    Bytes(u64),
    Time(Duration),
}

/// Gilbert-Elliott two-state loss model; transitions happen once per packet, then the packet is lost
/// with the loss probability of the state it is in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GilbertElliott {
    pub p: f64,
    pub r: f64,
    pub loss_bad: f64,
    pub loss_good: f64,
}

impl GilbertElliott {
    /// Long-run loss rate: π_bad·loss_bad + π_good·loss_good.
    pub fn mean_loss(&self) -> f64 {
        if self.p + self.r <= 0.0 {
            return self.loss_good;
        }
        let bad = self.p / (self.p + self.r);
        bad * self.loss_bad + (1.0 - bad) * self.loss_good
    }
}

/// Link on/off schedule: down during `[first + k·every, first + k·every + down)` for k = 0, 1, …
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cut {
    pub every: Duration,
    pub down: Duration,
    /// Start of the first down period (default `every - down`: up first, then down).
    pub first: Duration,
}

impl Cut {
    pub fn is_down(&self, t: Duration) -> bool {
        t >= self.first
            && (t - self.first).as_nanos() % self.every.as_nanos() < self.down.as_nanos()
    }

    /// The start of the first down period that ends after `t` (the current one if `t` is inside one).
    pub fn next_down_start(&self, t: Duration) -> Duration {
        if t < self.first {
            return self.first;
        }
        let every = self.every.as_nanos();
        let since = (t - self.first).as_nanos();
        let start = self.first.as_nanos() + since / every * every;
        nanos(if t.as_nanos() < start + self.down.as_nanos() {
            start
        } else {
            start + every
        })
    }
}

fn nanos(n: u128) -> Duration {
    Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX))
}

fn bad(what: &str, v: &str) -> Error {
    Error::Spec(format!("bad {what}: {v:?}"))
}

fn split_num(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    (&s[..end], &s[end..])
}

fn number(num: &str, what: &str, orig: &str) -> Result<f64, Error> {
    let x: f64 = num.parse().map_err(|_| bad(what, orig))?;
    if x.is_finite() && x >= 0.0 {
        Ok(x)
    } else {
        Err(bad(what, orig))
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, Error> {
    let t = s.trim();
    let (num, unit) = split_num(t);
    let x = number(num, "duration", s)?;
    let secs = match unit.to_ascii_lowercase().as_str() {
        "" | "ms" => x / 1e3,
        "us" => x / 1e6,
        "s" => x,
        _ => return Err(bad("duration", s)),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Bits per second.
pub fn parse_rate(s: &str) -> Result<u64, Error> {
    let t = s.trim();
    let (num, unit) = split_num(t);
    let x = number(num, "rate", s)?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        _ => return Err(bad("rate (use bit, kbit, mbit, gbit)", s)),
    };
    Ok((x * mult).round() as u64)
}

pub fn parse_bytes(s: &str) -> Result<u64, Error> {
    let t = s.trim();
    let (num, unit) = split_num(t);
    let x = number(num, "size", s)?;
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1024.0,
        "m" | "mb" => 1024.0 * 1024.0,
        _ => return Err(bad("size", s)),
    };
    Ok((x * mult).round() as u64)
}

/// `1%` → 0.01; a bare number is a fraction in [0, 1].
pub fn parse_prob(s: &str) -> Result<f64, Error> {
    let t = s.trim();
    let p = match t.strip_suffix('%') {
        Some(pct) => number(pct, "probability", s)? / 100.0,
        None => number(t, "probability", s)?,
    };
    if p > 1.0 {
        return Err(bad("probability", s));
    }
    Ok(p)
}

pub fn parse_queue(s: &str) -> Result<QueueLimit, Error> {
    let t = s.trim().to_ascii_lowercase();
    if t.ends_with('s') {
        Ok(QueueLimit::Time(parse_duration(&t)?))
    } else {
        Ok(QueueLimit::Bytes(parse_bytes(&t)?))
    }
}

/// `EVERY/DOWN[@FIRST]`, e.g. `10s/2s` (down 8–10 s, 18–20 s, …) or `10s/2s@3s` (down 3–5 s, 13–15 s, …).
pub fn parse_cut(s: &str) -> Result<Cut, Error> {
    let (sched, first) = match s.split_once('@') {
        Some((sched, first)) => (sched, Some(parse_duration(first)?)),
        None => (s, None),
    };
    let (every, down) = sched
        .split_once('/')
        .ok_or_else(|| bad("cut (EVERY/DOWN[@FIRST])", s))?;
    let (every, down) = (parse_duration(every)?, parse_duration(down)?);
    if down.is_zero() || down >= every {
        return Err(bad("cut (need 0 < DOWN < EVERY)", s));
    }
    Ok(Cut {
        every,
        down,
        first: first.unwrap_or(every - down),
    })
}

pub fn parse_dir_spec(s: &str) -> Result<DirSpec, Error> {
    let mut d = DirSpec::default();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (key, val) = item.split_once('=').unwrap_or((item, ""));
        match key {
            "delay" => d.delay = parse_duration(val)?,
            "jitter" => d.jitter = parse_duration(val)?,
            "reorder" => d.reorder = !matches!(val, "0" | "no" | "false"),
            "loss" => d.loss = parse_prob(val)?,
            "ge" => {
                let parts: Vec<&str> = val.split('/').collect();
                if !(2..=4).contains(&parts.len()) {
                    return Err(bad("ge (P/R[/LOSS_BAD[/LOSS_GOOD]])", val));
                }
                let get = |i: usize, default: f64| -> Result<f64, Error> {
                    parts.get(i).map_or(Ok(default), |p| parse_prob(p))
                };
                d.ge = Some(GilbertElliott {
                    p: get(0, 0.0)?,
                    r: get(1, 1.0)?,
                    loss_bad: get(2, 1.0)?,
                    loss_good: get(3, 0.0)?,
                });
            }
            "rate" => {
                let bps = parse_rate(val)?;
                d.capacity = if bps == 0 {
                    CapacitySpec::Unlimited
                } else {
                    CapacitySpec::Rate(bps)
                };
            }
            "trace" if !val.is_empty() => d.capacity = CapacitySpec::Trace(PathBuf::from(val)),
            "queue" => d.queue = parse_queue(val)?,
            _ => {
                return Err(Error::Spec(format!(
                    "unknown or empty key in link spec: {item:?}"
                )))
            }
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("20ms").ok(), Some(Duration::from_millis(20)));
        assert_eq!(parse_duration("20").ok(), Some(Duration::from_millis(20)));
        assert_eq!(
            parse_duration("1.5s").ok(),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_duration("300us").ok(),
            Some(Duration::from_micros(300))
        );
        assert!(parse_duration("-1ms").is_err());
        assert!(parse_duration("5h").is_err());
        assert_eq!(parse_rate("20mbit").ok(), Some(20_000_000));
        assert_eq!(parse_rate("1.5Mbit").ok(), Some(1_500_000));
        assert!(parse_rate("20MB").is_err());
        assert_eq!(parse_bytes("150kb").ok(), Some(153_600));
        assert_eq!(parse_prob("1%").ok(), Some(0.01));
        assert_eq!(parse_prob("0.5").ok(), Some(0.5));
        assert!(parse_prob("150%").is_err());
        assert!(parse_prob("2").is_err());
    }

    #[test]
    fn full_spec() {
        let d = parse_dir_spec("delay=20ms, jitter=5ms,loss=1%,rate=20mbit,queue=150kb,ge=1%/30%")
            .expect("valid spec");
        assert_eq!(d.delay, Duration::from_millis(20));
        assert_eq!(d.jitter, Duration::from_millis(5));
        assert!(!d.reorder);
        assert_eq!(d.loss, 0.01);
        assert_eq!(d.capacity, CapacitySpec::Rate(20_000_000));
        assert_eq!(d.queue, QueueLimit::Bytes(153_600));
        let ge = d.ge.expect("ge parsed");
        assert_eq!(
            (ge.p, ge.r, ge.loss_bad, ge.loss_good),
            (0.01, 0.3, 1.0, 0.0)
        );
        assert!((ge.mean_loss() - 0.01 / 0.31).abs() < 1e-12);

        let t = parse_dir_spec("trace=/x/y.up,queue=100ms,reorder").expect("valid spec");
        assert_eq!(t.capacity, CapacitySpec::Trace("/x/y.up".into()));
        assert_eq!(t.queue, QueueLimit::Time(Duration::from_millis(100)));
        assert!(t.reorder);
        assert_eq!(parse_dir_spec("").ok(), Some(DirSpec::default()));
        assert!(parse_dir_spec("rate=0").is_ok_and(|d| d.capacity == CapacitySpec::Unlimited));
        assert!(parse_dir_spec("delay").is_err());
        assert!(parse_dir_spec("bogus=1").is_err());
    }

    #[test]
    fn cut_schedule() {
        let c = parse_cut("10s/2s").expect("valid cut");
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        assert!(!c.is_down(s(0)));
        assert!(!c.is_down(ms(7999)));
        assert!(c.is_down(s(8)));
        assert!(c.is_down(ms(9999)));
        assert!(!c.is_down(s(10)));
        assert!(c.is_down(s(18)));
        assert_eq!(c.next_down_start(s(0)), s(8));
        assert_eq!(c.next_down_start(s(9)), s(8));
        assert_eq!(c.next_down_start(s(10)), s(18));
        let c = parse_cut("10s/2s@3s").expect("valid cut");
        assert!(!c.is_down(ms(2999)));
        assert!(c.is_down(s(3)));
        assert!(!c.is_down(s(5)));
        assert!(c.is_down(s(14)));
        assert_eq!(c.next_down_start(s(0)), s(3));
        assert_eq!(c.next_down_start(s(4)), s(3));
        assert_eq!(c.next_down_start(s(5)), s(13));
        assert!(parse_cut("2s/2s").is_err());
        assert!(parse_cut("10s").is_err());
    }
}
