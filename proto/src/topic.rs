//! Topic names and filters with MQTT wildcard matching ([MQTT 5.0 §4.7], [§4.8.2] for shared
//! subscriptions).
//!
//! ```text
//! topic name    level ( "/" level )*           no "+", "#" or U+0000; 1..=65,535 bytes
//! topic filter  flevel ( "/" flevel )*         same limits
//! flevel        "+" | "#" (last level only) | level
//! shared        "$share/" group "/" filter     group: non-empty, no "+" or "#"
//! ```
//! Levels may be empty: `a//b` has three levels and `/a` starts with an empty one.
//!
//! [MQTT 5.0 §4.7]: https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901241
//! [§4.8.2]: https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901250

use std::fmt;

/// Longest topic name or filter: the length prefix of an MQTT UTF-8 string is 16 bits.
pub const MAX_TOPIC_LEN: usize = u16::MAX as usize;

/// The prefix that turns a filter into a shared subscription (MQTT 5.0 §4.8.2).
pub const SHARE_PREFIX: &str = "$share/";

/// Why a topic name or filter is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("invalid topic: {0}")]
    Invalid(&'static str),
}

/// Checks shared by names and filters: what the MQTT string encoding itself forbids.
fn check_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Invalid("empty"));
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::Invalid("longer than 65,535 bytes"));
    }
    if s.contains('\0') {
        return Err(TopicError::Invalid("contains U+0000"));
    }
    Ok(())
}

/// A topic name a PUBLISH may carry: non-empty, no wildcards, no NUL, at most 65,535 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicName(String);

impl TopicName {
    pub fn parse(s: &str) -> Result<TopicName, TopicError> {
        check_common(s)?;
        if s.contains(['+', '#']) {
            return Err(TopicError::Invalid(
                "wildcards are not allowed in a topic name",
            ));
        }
        Ok(TopicName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A subscription filter: `+` matches one level, `#` (last) any number of levels.
///
/// A filter of the form `$share/{group}/{filter}` is a shared subscription; [`TopicFilter::shared`]
/// splits it, and [`TopicFilter::matches`] matches with the inner filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicFilter(String);

impl TopicFilter {
    pub fn parse(s: &str) -> Result<TopicFilter, TopicError> {
        check_common(s)?;
        match s.strip_prefix(SHARE_PREFIX) {
            Some(rest) => {
                let (group, inner) = rest.split_once('/').ok_or(TopicError::Invalid(
                    "a shared subscription needs $share/{group}/{filter}",
                ))?;
                if group.is_empty() {
                    return Err(TopicError::Invalid("empty share group"));
                }
                if group.contains(['+', '#']) {
                    return Err(TopicError::Invalid("wildcards in a share group"));
                }
                if inner.is_empty() {
                    return Err(TopicError::Invalid("empty filter in a shared subscription"));
                }
                check_levels(inner)?;
            }
            None => check_levels(s)?,
        }
        Ok(TopicFilter(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when the filter has `+` or `#`.
    pub fn has_wildcards(&self) -> bool {
        // A share group never holds a wildcard (parse refuses it), so the whole string will do.
        self.0.contains(['+', '#'])
    }

    /// `Some((group, filter))` for a shared subscription `$share/{group}/{filter}`.
    pub fn shared(&self) -> Option<(&str, &str)> {
        self.0.strip_prefix(SHARE_PREFIX)?.split_once('/')
    }

    /// The filter that topics are matched against: the inner filter of a shared subscription,
    /// otherwise the whole filter.
    pub fn match_filter(&self) -> &str {
        self.shared().map_or(self.0.as_str(), |(_, filter)| filter)
    }

    /// MQTT matching; topics starting with `$` are not matched by a leading `+` or `#`.
    ///
    /// `+` matches exactly one level (an empty one too), `#` matches its parent level and any number
    /// of levels below it, so `a/#` matches `a`, `a/` and `a/b/c`. Allocation-free.
    pub fn matches(&self, topic: &str) -> bool {
        filter_matches(self.match_filter(), topic)
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TopicFilter {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// `#` only as the whole last level, `+` only as a whole level (MQTT 5.0 §4.7.1).
fn check_levels(filter: &str) -> Result<(), TopicError> {
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        match level {
            "+" => {}
            "#" if levels.peek().is_none() => {}
            "#" => return Err(TopicError::Invalid("`#` must be the last level")),
            _ if level.contains(['+', '#']) => {
                return Err(TopicError::Invalid("a wildcard must fill a whole level"))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Matches an already validated (non-shared) `filter` against `topic`.
fn filter_matches(filter: &str, topic: &str) -> bool {
    // §4.7.2: `$SYS/…` and our `$file…` topics must not leak to `#` or `+/…` subscribers.
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            // `#` also matches when the topic has run out: `a/#` matches `a`.
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(s: &str) -> TopicFilter {
        match TopicFilter::parse(s) {
            Ok(f) => f,
            Err(e) => panic!("{s:?}: {e}"),
        }
    }

    #[test]
    fn names() {
        for ok in ["a", "/", "a/b", "a//b", "/a", "a/", "$SYS/x", "ü/€", " "] {
            assert!(TopicName::parse(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", "a/+", "a/#", "+", "#", "a+", "a\0b"] {
            assert!(TopicName::parse(bad).is_err(), "{bad:?}");
        }
        let long = "x".repeat(MAX_TOPIC_LEN);
        assert!(TopicName::parse(&long).is_ok());
        assert!(TopicName::parse(&format!("{long}x")).is_err());
    }

    #[test]
    fn filters() {
        for ok in [
            "#",
            "+",
            "+/+",
            "a/#",
            "a/+/b",
            "/#",
            "+/",
            "a//+",
            "$SYS/#",
            "a/b",
            "$share/g/#",
            "$share/g/a/+",
            "$share/g//",
            "$share",
        ] {
            assert!(TopicFilter::parse(ok).is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            "a#",
            "#/a",
            "a/#/b",
            "a/b#",
            "a+/b",
            "+a",
            "##",
            "a\0",
            "$share/",
            "$share/g",
            "$share//a",
            "$share/g+/a",
            "$share/#/a",
            "$share/g/",
            "$share/g/a/#/b",
        ] {
            assert!(TopicFilter::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn wildcards() {
        assert!(!filter("a/b").has_wildcards());
        assert!(filter("a/+").has_wildcards());
        assert!(filter("$share/g/#").has_wildcards());
        assert!(!filter("$share/g/a").has_wildcards());
    }

    #[test]
    fn shared() {
        assert_eq!(filter("$share/g/a/+").shared(), Some(("g", "a/+")));
        assert_eq!(filter("$share/g//").shared(), Some(("g", "/")));
        assert_eq!(filter("a/+").shared(), None);
        assert_eq!(filter("$share").shared(), None);
        assert!(filter("$share/g/a/+").matches("a/b"));
        assert!(!filter("$share/g/a/+").matches("$share/g/a/b"));
        assert!(!filter("$share/g/#").matches("$SYS/x"));
    }

    #[test]
    fn matching() {
        let cases: &[(&str, &str, bool)] = &[
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("a/b", "a/b/c", false),
            ("a/b/c", "a/b", false),
            ("+", "a", true),
            ("+", "", true),
            ("+", "a/b", false),
            ("+", "/", false),
            ("+/+", "/", true),
            ("a/+", "a/", true),
            ("a/+", "a", false),
            ("a/+/c", "a/b/c", true),
            ("a/+/c", "a//c", true),
            ("#", "a", true),
            ("#", "a/b/c", true),
            ("#", "/", true),
            ("a/#", "a", true),
            ("a/#", "a/", true),
            ("a/#", "a/b/c", true),
            ("a/#", "ab", false),
            ("a/#", "b/a", false),
            ("/#", "/a", true),
            ("/#", "a", false),
            ("+/#", "a", true),
            // §4.7.2: wildcards at the first level never match `$` topics.
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("+", "$file", false),
            ("$SYS/#", "$SYS/x", true),
            ("$SYS/#", "$SYS", true),
            ("$SYS/+", "$SYS/x", true),
            ("a/#", "a/$x", true),
        ];
        for &(f, t, want) in cases {
            assert_eq!(filter(f).matches(t), want, "{f:?} vs {t:?}");
        }
    }
}
