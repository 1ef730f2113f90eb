//! The routing table: which sessions want which topics.
//!
//! Filters without wildcards (the common case for devices: `$file-response/{id}`, `cmd/{id}`) are a
//! hash lookup; wildcard filters are matched one by one. A trie would route faster with many wildcard
//! subscriptions; this keeps the code obvious until a benchmark asks for more.
//!
//! Shared subscriptions (`$share/{group}/{filter}`, MQTT 5 §4.8.2) live apart from the others, one
//! [`ShareGroup`] per full filter string: a message goes to one member of a group, chosen by the
//! broker (`broker::shared`), not to each of them.

use std::collections::HashMap;
use std::sync::Arc;

use quicft_proto::topic::TopicFilter;
use quicft_proto::SubscriptionOptions;

use super::message::StreamId;

/// One session's subscription to one filter.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub filter: TopicFilter,
    pub options: SubscriptionOptions,
    pub sub_id: Option<u32>,
    pub stream: StreamId,
}

#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) client: Arc<str>,
    pub(super) sub: Subscription,
}

/// The members of one shared subscription `$share/{group}/{filter}`, in the order they joined.
#[derive(Debug)]
pub(super) struct ShareGroup {
    /// The full `$share/…` filter; [`TopicFilter::matches`] matches its inner filter.
    pub(super) filter: TopicFilter,
    /// The same string, shared by every delivery made for the group (`Delivery::shared`).
    pub(super) key: Arc<str>,
    pub(super) members: Vec<Entry>,
    /// Round-robin cursor: the member to try first for the next message.
    pub(super) next: usize,
}

/// All subscriptions of all sessions.
#[derive(Debug, Default)]
pub struct SubscriptionTable {
    exact: HashMap<String, Vec<Entry>>,
    wild: Vec<Entry>,
    /// Shared subscriptions by their full `$share/{group}/{filter}` string.
    shared: HashMap<String, ShareGroup>,
}

impl SubscriptionTable {
    /// Adds or replaces `client`'s subscription to `sub.filter`. Returns true if it replaced one.
    pub fn insert(&mut self, client: &Arc<str>, sub: Subscription) -> bool {
        let existed = self.remove(client, sub.filter.as_str());
        let entry = Entry {
            client: client.clone(),
            sub,
        };
        if entry.sub.filter.shared().is_some() {
            self.shared
                .entry(entry.sub.filter.as_str().to_owned())
                .or_insert_with(|| ShareGroup {
                    filter: entry.sub.filter.clone(),
                    key: entry.sub.filter.as_str().into(),
                    members: Vec::new(),
                    next: 0,
                })
                .members
                .push(entry);
        } else if entry.sub.filter.has_wildcards() {
            self.wild.push(entry);
        } else {
            self.exact
                .entry(entry.sub.filter.as_str().to_owned())
                .or_default()
                .push(entry);
        }
        existed
    }

    /// Removes `client`'s subscription to `filter`; true if there was one.
    pub fn remove(&mut self, client: &str, filter: &str) -> bool {
        let before;
        if let Some(group) = self.shared.get_mut(filter) {
            before = group.members.len();
            group.members.retain(|e| &*e.client != client);
            let removed = group.members.len() != before;
            if group.members.is_empty() {
                self.shared.remove(filter);
            }
            return removed;
        }
        if let Some(list) = self.exact.get_mut(filter) {
            before = list.len();
            list.retain(|e| &*e.client != client);
            let removed = list.len() != before;
            if list.is_empty() {
                self.exact.remove(filter);
            }
            return removed;
        }
        before = self.wild.len();
        self.wild
            .retain(|e| !(&*e.client == client && e.sub.filter.as_str() == filter));
        self.wild.len() != before
    }

    /// Calls `f` for every subscription whose filter matches `topic`.
    pub fn for_each_match(&self, topic: &str, mut f: impl FnMut(&Arc<str>, &Subscription)) {
        if let Some(list) = self.exact.get(topic) {
            for e in list {
                f(&e.client, &e.sub);
            }
        }
        for e in &self.wild {
            if e.sub.filter.matches(topic) {
                f(&e.client, &e.sub);
            }
        }
    }

    /// The shared subscription groups whose (inner) filter matches `topic`.
    pub(super) fn shared_matches<'a>(
        &'a mut self,
        topic: &'a str,
    ) -> impl Iterator<Item = &'a mut ShareGroup> + 'a {
        self.shared
            .values_mut()
            .filter(move |g| g.filter.matches(topic))
    }

    /// The group of the shared subscription `filter` (a full `$share/…` string), if it has members.
    pub(super) fn share_group(&mut self, filter: &str) -> Option<&mut ShareGroup> {
        self.shared.get_mut(filter)
    }

    /// Number of subscriptions (for metrics and tests).
    pub fn len(&self) -> usize {
        self.exact.values().map(Vec::len).sum::<usize>()
            + self.wild.len()
            + self.shared.values().map(|g| g.members.len()).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(f: &str) -> Subscription {
        Subscription {
            filter: TopicFilter::parse(f).expect("filter"),
            options: SubscriptionOptions::default(),
            sub_id: None,
            stream: 0,
        }
    }

    fn matches(t: &SubscriptionTable, topic: &str) -> Vec<String> {
        let mut v = Vec::new();
        t.for_each_match(topic, |c, s| v.push(format!("{c}:{}", s.filter.as_str())));
        v.sort();
        v
    }

    #[test]
    fn exact_and_wildcard() {
        let mut t = SubscriptionTable::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        assert!(!t.insert(&a, sub("x/y")));
        t.insert(&b, sub("x/+"));
        t.insert(&b, sub("#"));
        assert_eq!(matches(&t, "x/y"), ["a:x/y", "b:#", "b:x/+"]);
        assert_eq!(matches(&t, "$SYS/x"), Vec::<String>::new());
        assert!(t.insert(&a, sub("x/y")), "resubscribe replaces");
        assert_eq!(t.len(), 3);
        assert!(t.remove("b", "x/+"));
        assert!(!t.remove("b", "x/+"));
        assert!(t.remove("a", "x/y"));
        assert_eq!(matches(&t, "x/y"), ["b:#"]);
    }

    #[test]
    fn shared_subscriptions_are_kept_apart() {
        let mut t = SubscriptionTable::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        t.insert(&a, sub("$share/g/x/+"));
        t.insert(&b, sub("$share/g/x/+"));
        t.insert(&b, sub("$share/h/x/y"));
        assert!(matches(&t, "x/y").is_empty(), "not routed as ordinary ones");
        let groups: Vec<(String, usize)> = t
            .shared_matches("x/y")
            .map(|g| (g.filter.as_str().to_owned(), g.members.len()))
            .collect();
        assert_eq!(groups.len(), 2);
        assert!(groups.contains(&("$share/g/x/+".into(), 2)));
        assert!(t.shared_matches("$share/g/x/y").next().is_none());
        assert!(t.insert(&a, sub("$share/g/x/+")), "resubscribe replaces");
        assert_eq!(t.len(), 3);
        assert!(t.remove("a", "$share/g/x/+"));
        assert!(!t.remove("a", "$share/g/x/+"));
        assert!(t.remove("b", "$share/h/x/y"));
        assert!(
            t.share_group("$share/h/x/y").is_none(),
            "empty group removed"
        );
        assert_eq!(t.len(), 1);
    }
}
