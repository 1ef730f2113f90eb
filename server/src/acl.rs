//! Topic access control: which topics a device may publish to and subscribe to.
//!
//! Two layers. Built in, always: nobody subscribes to the `$file…` command topics (they are never
//! routed) or to another client's `$file-response/{clientId}`. Configured: mosquitto-style pattern
//! rules in `[[auth.acl]]`, where `%c` stands for the client id and `%u` for the username:
//!
//! ```toml
//! [[auth.acl]]
//! pattern = "devices/%c/#"
//! access = "readwrite"
//! [[auth.acl]]
//! pattern = "fleet/commands/#"
//! access = "read"
//! username = "ops"          # optional: the rule applies to this account only
//! ```
//!
//! With no rules every other topic is open (the zero-config default). With rules, a publish or
//! subscription is allowed only if a rule grants it and no `deny` rule matches it. `$file…`
//! commands are not topics in this sense: they always address the sender's own transfers, since the
//! transfer key is (its client id, file id).

use std::sync::Arc;

use arc_swap::ArcSwap;
use quicft_proto::ft as ftp;
use quicft_proto::topic::TopicFilter;
use serde::Deserialize;

/// What a rule grants (or, for `deny`, takes away).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    Write,
    Readwrite,
    Deny,
}

/// One `[[auth.acl]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// A topic filter; `%c` and `%u` are replaced per client.
    pub pattern: String,
    pub access: Access,
    /// Applies to this username only; `None` applies to everyone.
    #[serde(default)]
    pub username: Option<String>,
}

/// The rules: built at start, replaced whole by a reload (SIGHUP), which every session's next
/// publish and subscribe then obey.
#[derive(Debug, Default)]
pub struct Acl {
    rules: ArcSwap<Vec<Rule>>,
}

/// Who is asking.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    pub client_id: &'a str,
    pub username: Option<&'a str>,
}

impl Acl {
    pub fn new(rules: &[Rule]) -> Acl {
        Acl {
            rules: ArcSwap::from_pointee(rules.to_vec()),
        }
    }

    /// Puts `rules` in place of the current ones; says whether they differ.
    pub fn replace(&self, rules: &[Rule]) -> bool {
        let changed = self.rules.load().as_slice() != rules;
        self.rules.store(Arc::new(rules.to_vec()));
        changed
    }

    /// May `who` subscribe to `filter`?
    pub fn subscribe(&self, who: Who<'_>, filter: &TopicFilter) -> bool {
        let f = filter.as_str();
        if f.starts_with(ftp::SYNC_PREFIX)
            || f.starts_with(ftp::ASYNC_PREFIX)
            || f == "$file"
            || f == "$file-async"
        {
            return false;
        }
        if let Some(rest) = f.strip_prefix(ftp::RESPONSE_PREFIX) {
            if rest != who.client_id {
                return false;
            }
            // One's own response topic needs no rule: the file-transfer protocol depends on it.
            return true;
        }
        if f.starts_with("$file-response") {
            return false;
        }
        // AWS-style stream answers carry a thing's deliveries: no filter may reach another
        // thing's (the thing is the client id).
        if reaches_other_streams(f, who.client_id) {
            return false;
        }
        // Delivery notifications: one's own need no rule, nobody else's may be read.
        if let Some(rest) = f.strip_prefix(quicft_proto::file_delivery::NOTIFY_PREFIX) {
            return rest == who.client_id;
        }
        if f.starts_with("$file-delivery") {
            return false;
        }
        self.allowed(who, f, true, covers)
    }

    /// May `who` publish to `topic` (a topic name, not a `$file` command)?
    pub fn publish(&self, who: Who<'_>, topic: &str) -> bool {
        self.allowed(who, topic, false, |pattern, topic| {
            TopicFilter::parse(pattern)
                .map(|p| p.matches(topic))
                .unwrap_or(false)
        })
    }

    fn allowed(
        &self,
        who: Who<'_>,
        topic: &str,
        read: bool,
        matches: impl Fn(&str, &str) -> bool,
    ) -> bool {
        let rules = self.rules.load();
        if rules.is_empty() {
            return true;
        }
        let mut granted = false;
        for r in rules.iter() {
            if r.username
                .as_deref()
                .is_some_and(|u| Some(u) != who.username)
            {
                continue;
            }
            let Some(pattern) = substitute(&r.pattern, who) else {
                continue;
            };
            if !matches(&pattern, topic) {
                continue;
            }
            match r.access {
                Access::Deny => return false,
                Access::Readwrite => granted = true,
                Access::Read if read => granted = true,
                Access::Write if !read => granted = true,
                _ => {}
            }
        }
        granted
    }
}

/// Replaces `%c` and `%u`. A client id or username that holds `/`, `+` or `#` would widen the
/// pattern, and a `%u` without a username cannot match: such rules do not apply (`None`).
fn substitute(pattern: &str, who: Who<'_>) -> Option<String> {
    let unsafe_part = |s: &str| s.is_empty() || s.contains(['/', '+', '#']);
    let mut out = pattern.to_owned();
    if out.contains("%c") {
        if unsafe_part(who.client_id) {
            return None;
        }
        out = out.replace("%c", who.client_id);
    }
    if out.contains("%u") {
        let u = who.username.filter(|u| !unsafe_part(u))?;
        out = out.replace("%u", u);
    }
    Some(out)
}

/// Whether every topic that `filter` can match is also matched by `pattern` (both topic filters).
/// Whether `filter` could match `$aws/things/{thing}/streams/…` of a thing other than `own`.
fn reaches_other_streams(filter: &str, own: &str) -> bool {
    let l: Vec<&str> = filter.split('/').collect();
    let at = |i: usize| l.get(i).copied();
    if at(0) != Some("$aws") {
        return false;
    }
    match at(1) {
        Some("#") => return true,
        Some("things" | "+") => {}
        _ => return false,
    }
    match at(2) {
        Some("#") => return true,
        Some(t) if t == own => return false,
        Some(_) => {}
        None => return false,
    }
    matches!(at(3), Some("streams" | "+" | "#"))
}

fn covers(pattern: &str, filter: &str) -> bool {
    let mut p = pattern.split('/');
    let mut f = filter.split('/');
    loop {
        match (p.next(), f.next()) {
            (Some("#"), _) => return true,
            (None, None) => return true,
            (Some("+"), Some(fl)) if fl != "#" => {}
            (Some(pl), Some(fl))
                if pl != "+" && pl != "#" && fl != "+" && fl != "#" && pl == fl => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_things_own_stream_answers() {
        let acl = Acl::default();
        let who = Who {
            client_id: "dev-1",
            username: None,
        };
        let sub = |f: &str| acl.subscribe(who, &TopicFilter::parse(f).expect("filter"));
        assert!(sub("$aws/things/dev-1/streams/abc/data/json"));
        assert!(sub("$aws/things/dev-1/streams/#"));
        assert!(!sub("$aws/things/dev-2/streams/abc/data/json"));
        assert!(!sub("$aws/things/+/streams/abc/data/json"));
        assert!(!sub("$aws/things/dev-2/+/abc/data/json"));
        assert!(!sub("$aws/#"));
        assert!(!sub("$aws/+/dev-2/streams/#"));
        assert!(sub("$aws/things/dev-2/shadow/get"));
        assert!(sub("$file-delivery/notify/dev-1"));
        assert!(!sub("$file-delivery/notify/dev-2"));
        assert!(!sub("$file-delivery/notify/+"));
        assert!(!sub("$file-delivery/#"));
    }

    fn rule(pattern: &str, access: Access) -> Rule {
        Rule {
            pattern: pattern.into(),
            access,
            username: None,
        }
    }

    fn filter(s: &str) -> TopicFilter {
        TopicFilter::parse(s).expect("filter")
    }

    const A: Who<'static> = Who {
        client_id: "dev-a",
        username: Some("alice"),
    };

    #[test]
    fn zero_config_allows_all_but_reserved() {
        let acl = Acl::default();
        assert!(acl.publish(A, "anything/at/all"));
        assert!(acl.subscribe(A, &filter("#")));
        assert!(acl.subscribe(A, &filter("$file-response/dev-a")));
        assert!(!acl.subscribe(A, &filter("$file-response/dev-b")));
        assert!(!acl.subscribe(A, &filter("$file-response/+")));
        assert!(!acl.subscribe(A, &filter("$file/#")));
    }

    #[test]
    fn patterns_with_placeholders() {
        let acl = Acl::new(&[
            rule("devices/%c/#", Access::Readwrite),
            rule("users/%u/inbox", Access::Read),
            rule("fleet/+/status", Access::Write),
            rule("devices/%c/secret", Access::Deny),
        ]);
        assert!(acl.publish(A, "devices/dev-a/telemetry"));
        assert!(!acl.publish(A, "devices/dev-b/telemetry"));
        assert!(!acl.publish(A, "devices/dev-a/secret"));
        assert!(acl.subscribe(A, &filter("devices/dev-a/+")));
        assert!(
            !acl.subscribe(A, &filter("devices/+/telemetry")),
            "would read other devices"
        );
        assert!(!acl.subscribe(A, &filter("#")));
        assert!(acl.subscribe(A, &filter("users/alice/inbox")));
        assert!(!acl.publish(A, "users/alice/inbox"), "read-only");
        assert!(acl.publish(A, "fleet/x/status"));
        assert!(!acl.subscribe(A, &filter("fleet/x/status")), "write-only");
        let anon = Who {
            client_id: "dev-a",
            username: None,
        };
        assert!(!acl.subscribe(anon, &filter("users//inbox")));
        let sneaky = Who {
            client_id: "+",
            username: None,
        };
        assert!(
            !acl.publish(sneaky, "devices/dev-a/telemetry"),
            "a wildcard client id widens nothing"
        );
    }

    #[test]
    fn username_scoped_rules() {
        let mut r = rule("ops/#", Access::Readwrite);
        r.username = Some("ops".into());
        let acl = Acl::new(&[r]);
        assert!(!acl.publish(A, "ops/restart"));
        assert!(acl.publish(
            Who {
                client_id: "x",
                username: Some("ops")
            },
            "ops/restart"
        ));
    }

    #[test]
    fn filter_coverage() {
        assert!(covers("a/#", "a/b/+"));
        assert!(covers("a/+/c", "a/b/c"));
        assert!(!covers("a/+/c", "a/#"));
        assert!(!covers("a/b", "a/+"));
        assert!(covers("a/+", "a/+"));
        assert!(!covers("a/b", "a/b/c"));
    }
}
