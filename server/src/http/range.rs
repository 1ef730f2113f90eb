//! The `Range` request header for downloads: one byte range (RFC 9110 §14.1.2).
//!
//! Multiple ranges would need a `multipart/byteranges` body; no device-data consumer asks for
//! that, so such requests get the whole file (200), which RFC 9110 §14.2 allows. Syntactically
//! invalid headers are ignored the same way; only a valid range wholly outside the file is 416.

/// What to send for a file of a known length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// 200, the whole file.
    Full,
    /// 206, bytes `start..=end`.
    Partial { start: u64, end: u64 },
    /// 416.
    Unsatisfiable,
}

pub fn plan(header: Option<&str>, len: u64) -> Plan {
    let Some(h) = header else { return Plan::Full };
    let h = h.trim();
    let Some((unit, spec)) = h.split_once('=') else {
        return Plan::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return Plan::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Plan::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| {
        if s.bytes().all(|c| c.is_ascii_digit()) {
            s.parse::<u64>().ok()
        } else {
            None
        }
    };
    match (a.is_empty(), b.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match num(b) {
            None => Plan::Full,
            Some(0) => Plan::Unsatisfiable,
            Some(_) if len == 0 => Plan::Unsatisfiable,
            Some(n) => Plan::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
        },
        // bytes=A-
        (false, true) => match num(a) {
            None => Plan::Full,
            Some(s) if s >= len => Plan::Unsatisfiable,
            Some(s) => Plan::Partial {
                start: s,
                end: len - 1,
            },
        },
        // bytes=A-B
        (false, false) => match (num(a), num(b)) {
            (Some(s), Some(e)) if s <= e => {
                if s >= len {
                    Plan::Unsatisfiable
                } else {
                    Plan::Partial {
                        start: s,
                        end: e.min(len - 1),
                    }
                }
            }
            _ => Plan::Full,
        },
        (true, true) => Plan::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_ranges() {
        assert_eq!(plan(None, 10), Plan::Full);
        assert_eq!(
            plan(Some("bytes=0-3"), 10),
            Plan::Partial { start: 0, end: 3 }
        );
        assert_eq!(
            plan(Some("bytes=5-"), 10),
            Plan::Partial { start: 5, end: 9 }
        );
        assert_eq!(
            plan(Some("bytes=-3"), 10),
            Plan::Partial { start: 7, end: 9 }
        );
        assert_eq!(
            plan(Some("bytes=-30"), 10),
            Plan::Partial { start: 0, end: 9 }
        );
        assert_eq!(
            plan(Some("bytes=8-100"), 10),
            Plan::Partial { start: 8, end: 9 }
        );
        assert_eq!(
            plan(Some("Bytes = 1-1"), 10),
            Plan::Partial { start: 1, end: 1 }
        );
    }

    #[test]
    fn unsatisfiable() {
        assert_eq!(plan(Some("bytes=10-"), 10), Plan::Unsatisfiable);
        assert_eq!(plan(Some("bytes=10-20"), 10), Plan::Unsatisfiable);
        assert_eq!(plan(Some("bytes=-0"), 10), Plan::Unsatisfiable);
        assert_eq!(plan(Some("bytes=0-"), 0), Plan::Unsatisfiable);
        assert_eq!(plan(Some("bytes=-5"), 0), Plan::Unsatisfiable);
    }

    #[test]
    fn ignored_headers_serve_everything() {
        for h in [
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=5-2",
            "bytes=a-b",
            "bytes=-",
            "bytes=+1-2",
            "bytes",
            "",
        ] {
            assert_eq!(plan(Some(h), 10), Plan::Full, "{h}");
        }
    }
}
