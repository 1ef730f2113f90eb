//! The routing table: which sessions want which topics.
//!
//! Filters without wildcards (the common case for devices: `$file-response/{id}`, `cmd/{id}`) are a
//! hash lookup; wildcard filters are matched one by one. A trie would route faster with many wildcard
//! subscriptions; this keeps the code obvious until a benchmark asks for more.

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
struct Entry {
    client: Arc<str>,
    sub: Subscription,
}

/// All subscriptions of all sessions.
#[derive(Debug, Default)]
pub struct SubscriptionTable {
    exact: HashMap<String, Vec<Entry>>,
    wild: Vec<Entry>,
}

impl SubscriptionTable {
    /// Adds or replaces `client`'s subscription to `sub.filter`. Returns true if it replaced one.
    pub fn insert(&mut self, client: &Arc<str>, sub: Subscription) -> bool {
        let existed = self.remove(client, sub.filter.as_str());
        let entry = Entry {
            client: client.clone(),
            sub,
        };
        if entry.sub.filter.has_wildcards() {
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

    /// Number of subscriptions (for metrics and tests).
    pub fn len(&self) -> usize {
        self.exact.values().map(Vec::len).sum::<usize>() + self.wild.len()
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
}
