//! Which devices a delivery is for: client ids, and client-id patterns where `*` matches any run
//! of characters (`truck-*`), as in `auth.client_id` (the same [`ClientIdPattern`]).

use crate::auth::ClientIdPattern;

/// The targets of one delivery, as the operator gave them.
#[derive(Debug, Clone)]
pub struct Targets {
    given: Vec<String>,
    patterns: Vec<ClientIdPattern>,
}

/// Why a target list is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("at least one target (client id or pattern such as truck-*) is required")]
    Empty,
    #[error("target {0:?} is empty or holds a character not allowed in a client id (/ + # or a control character)")]
    Invalid(String),
    #[error("at most {MAX_TARGETS} targets")]
    TooMany,
}

pub const MAX_TARGETS: usize = 10_000;

impl Targets {
    /// Parses `a,b,truck-*`.
    pub fn parse(list: &str) -> Result<Targets, TargetError> {
        let given: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        Targets::new(given)
    }

    pub fn new(given: Vec<String>) -> Result<Targets, TargetError> {
        if given.is_empty() {
            return Err(TargetError::Empty);
        }
        if given.len() > MAX_TARGETS {
            return Err(TargetError::TooMany);
        }
        for t in &given {
            if t.is_empty()
                || t.len() > 256
                || t.chars()
                    .any(|c| matches!(c, '/' | '+' | '#') || c.is_control())
            {
                return Err(TargetError::Invalid(t.clone()));
            }
        }
        // `%u` has no meaning here: it stays literal.
        let patterns = given
            .iter()
            .map(|t| ClientIdPattern::new(t, "%u"))
            .collect();
        Ok(Targets { given, patterns })
    }

    /// Whether the delivery is for `client_id`.
    pub fn matches(&self, client_id: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(client_id))
    }

    /// The targets that name one client (no `*`).
    pub fn exact(&self) -> impl Iterator<Item = &str> {
        self.patterns.iter().filter_map(ClientIdPattern::exact)
    }

    pub fn as_list(&self) -> &[String] {
        &self.given
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_patterns() {
        let t = Targets::parse("dev-7, truck-*").unwrap();
        assert!(t.matches("dev-7"));
        assert!(!t.matches("dev-70"));
        assert!(t.matches("truck-12"));
        assert!(!t.matches("car-1"));
        assert_eq!(t.exact().collect::<Vec<_>>(), vec!["dev-7"]);
        assert_eq!(Targets::parse(" , ").unwrap_err(), TargetError::Empty);
        assert!(matches!(
            Targets::parse("a/b"),
            Err(TargetError::Invalid(_))
        ));
        assert!(matches!(Targets::parse("a#"), Err(TargetError::Invalid(_))));
    }
}
