//! Topic names and filters (STUB — being written).

/// Why a topic name or filter is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("invalid topic: {0}")]
    Invalid(&'static str),
}

/// A topic name a PUBLISH may carry: non-empty, no wildcards, no NUL, at most 65,535 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicName(String);

impl TopicName {
    pub fn parse(s: &str) -> Result<TopicName, TopicError> {
        Ok(TopicName(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A subscription filter: `+` matches one level, `#` (last) any number of levels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicFilter(String);

impl TopicFilter {
    pub fn parse(s: &str) -> Result<TopicFilter, TopicError> {
        Ok(TopicFilter(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// True when the filter has `+` or `#`.
    pub fn has_wildcards(&self) -> bool {
        self.0.contains(['+', '#'])
    }
    /// MQTT matching; topics starting with `$` are not matched by a leading `+` or `#`.
    pub fn matches(&self, topic: &str) -> bool {
        self.0 == topic
    }
}
