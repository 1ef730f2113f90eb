//! What `/proc` says about a process and about the machine: CPU time in clock ticks, page faults,
//! memory, the CPU model and the kernel. Every bench tool reads it from here, so a CPU % means the
//! same in each of their reports.

use std::fs;
use std::process::Command;

use anyhow::{Context, Result};

/// The counters of a `/proc/<pid>/stat` (or `/proc/self/stat`, or a thread's) file that the bench
/// reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// User CPU time, in clock ticks.
    pub utime: u64,
    /// System CPU time, in clock ticks.
    pub stime: u64,
    /// Minor page faults: each is a 4 KiB page of memory touched for the first time since it was
    /// mapped (page-cache pages written by pwrite are not counted).
    pub minflt: u64,
}

impl Stat {
    /// utime + stime.
    pub fn ticks(&self) -> u64 {
        self.utime + self.stime
    }
}

/// Reads a `stat` file: `/proc/<pid>/stat`, `/proc/self/stat` or `/proc/<pid>/task/<tid>/stat`.
pub fn stat(path: &str) -> Result<Stat> {
    let text = fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    parse_stat(&text)
}

/// The `stat` of process `pid`.
pub fn pid_stat(pid: u32) -> Result<Stat> {
    stat(&format!("/proc/{pid}/stat"))
}

fn parse_stat(text: &str) -> Result<Stat> {
    // The command name (field 2) may contain spaces and parentheses; the fields after its last ')'
    // are space-separated, starting with the state (field 3): minflt (10), utime (14) and stime
    // (15) are at indexes 7, 11 and 12.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize, what: &str| -> Result<u64> {
        Ok(f.get(i).with_context(|| format!("no {what}"))?.parse()?)
    };
    Ok(Stat {
        utime: field(11, "utime")?,
        stime: field(12, "stime")?,
        minflt: field(7, "minflt")?,
    })
}

/// A `kB` line of `/proc/<pid>/status` in KiB, e.g. `VmHWM:` (peak RSS) or `VmRSS:`.
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU clock ticks (user + system) of this process's threads whose name starts with `prefix`
/// (threads that exited are not counted).
pub fn threads_ticks(prefix: &str) -> Result<u64> {
    let mut sum = 0;
    for t in fs::read_dir("/proc/self/task")? {
        let dir = t?.path();
        let comm = fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.starts_with(prefix) {
            if let Some(path) = dir.join("stat").to_str() {
                if let Ok(s) = stat(path) {
                    sum += s.ticks();
                }
            }
        }
    }
    Ok(sum)
}

/// Machine-wide CPU time from `/proc/stat`, all CPUs together, in clock ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct MachineTicks {
    /// Everything but idle and iowait.
    pub busy: u64,
    /// Softirq time is charged to no process: on loopback that is most of the network stack.
    pub softirq: u64,
    pub idle: u64,
}

impl MachineTicks {
    pub fn read() -> Result<MachineTicks> {
        let stat = fs::read_to_string("/proc/stat")?;
        let line = stat.lines().next().context("empty /proc/stat")?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let at = |i: usize| v.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal (guest time is already inside user).
        let total: u64 = (0..8).map(at).sum();
        let idle = at(3) + at(4);
        Ok(MachineTicks {
            busy: total - idle,
            softirq: at(6),
            idle,
        })
    }

    pub fn since(self, earlier: MachineTicks) -> MachineTicks {
        MachineTicks {
            busy: self.busy.saturating_sub(earlier.busy),
            softirq: self.softirq.saturating_sub(earlier.softirq),
            idle: self.idle.saturating_sub(earlier.idle),
        }
    }
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on every Linux this runs on).
pub fn clock_ticks_per_sec() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// The CPU's model name from `/proc/cpuinfo`, for report headers.
pub fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// The kernel release (`uname -r`), empty when unknown.
pub fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_survive_odd_command_names() {
        let stat =
            "4242 (tokio (rt) w) S 1 4242 4242 0 -1 4194304 900 0 0 0 123 45 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_stat(stat).ok().map(|s| s.ticks()), Some(168));
        assert_eq!(parse_stat(stat).ok().map(|s| s.minflt), Some(900));
        assert!(parse_stat("garbage").is_err());
    }

    #[test]
    fn own_process_is_readable() {
        assert!(stat("/proc/self/stat").is_ok());
        let m = MachineTicks::read().expect("/proc/stat");
        assert!(m.busy + m.idle > 0);
        assert!(status_kib(std::process::id(), "VmHWM:").is_some_and(|kib| kib > 0));
    }
}
