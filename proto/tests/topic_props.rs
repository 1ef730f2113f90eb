//! Property tests for topic names, filters and matching: seeded random loops checked against a
//! straightforward (allocating) model of MQTT 5.0 §4.7.

use quicft_proto::topic::{TopicFilter, TopicName};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const ROUNDS: usize = 20_000;

/// Level contents chosen to collide often, with `$` and multi-byte text in the mix.
const LEVELS: &[&str] = &["", "a", "b", "ab", "$SYS", "$x", "ü", "x y"];

fn rng() -> StdRng {
    StdRng::seed_from_u64(0x7175_6963_6674)
}

/// 1..=5 levels, never the single empty level (an empty topic is invalid).
fn random_levels(rng: &mut StdRng) -> Vec<&'static str> {
    let n = rng.gen_range(1..=5);
    let mut levels: Vec<&str> = (0..n)
        .map(|_| *LEVELS.choose(rng).unwrap_or(&"a"))
        .collect();
    if levels == [""] {
        levels[0] = "a";
    }
    levels
}

fn filter(s: &str) -> TopicFilter {
    TopicFilter::parse(s).unwrap_or_else(|e| panic!("{s:?} should be a valid filter: {e}"))
}

/// The model: levels compared one by one, recursion for `#`.
fn model_matches(filter: &[&str], topic: &[&str]) -> bool {
    match (filter.split_first(), topic.split_first()) {
        (Some((&"#", _)), _) => true,
        (Some((&"+", f)), Some((_, t))) => model_matches(f, t),
        (Some((f0, f)), Some((t0, t))) => f0 == t0 && model_matches(f, t),
        (None, None) => true,
        _ => false,
    }
}

fn model(filter: &str, topic: &str) -> bool {
    let dollar_rule = topic.starts_with('$') && filter.starts_with(['+', '#']);
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    !dollar_rule && model_matches(&f, &t)
}

#[test]
fn a_topic_matches_itself() {
    let mut rng = rng();
    for _ in 0..ROUNDS {
        let topic = random_levels(&mut rng).join("/");
        assert!(TopicName::parse(&topic).is_ok(), "{topic:?}");
        assert!(filter(&topic).matches(&topic), "{topic:?}");
    }
}

#[test]
fn plus_for_any_level_matches_except_first_level_of_dollar_topics() {
    let mut rng = rng();
    for _ in 0..ROUNDS {
        let levels = random_levels(&mut rng);
        let topic = levels.join("/");
        let replaced: Vec<bool> = levels.iter().map(|_| rng.gen_bool(0.5)).collect();
        let f: Vec<&str> = levels
            .iter()
            .zip(&replaced)
            .map(|(l, &r)| if r { "+" } else { *l })
            .collect();
        let f = f.join("/");
        let expected = !(topic.starts_with('$') && replaced.first() == Some(&true));
        assert_eq!(filter(&f).matches(&topic), expected, "{f:?} vs {topic:?}");
    }
}

#[test]
fn hash_for_any_suffix_matches_including_the_parent() {
    let mut rng = rng();
    for _ in 0..ROUNDS {
        let levels = random_levels(&mut rng);
        let topic = levels.join("/");
        // k == levels.len() gives `topic/#`, which must match `topic` itself (its parent).
        let k = rng.gen_range(0..=levels.len());
        let mut f: Vec<&str> = levels.iter().take(k).copied().collect();
        f.push("#");
        let f = f.join("/");
        let expected = !(topic.starts_with('$') && k == 0);
        assert_eq!(filter(&f).matches(&topic), expected, "{f:?} vs {topic:?}");
    }
}

#[test]
fn a_changed_literal_level_never_matches() {
    let mut rng = rng();
    for _ in 0..ROUNDS {
        let levels = random_levels(&mut rng);
        let topic = levels.join("/");
        let i = rng.gen_range(0..levels.len());
        let mut f: Vec<String> = levels.iter().map(|l| (*l).to_owned()).collect();
        f[i].push('~');
        let f = f.join("/");
        assert!(!filter(&f).matches(&topic), "{f:?} vs {topic:?}");
    }
}

#[test]
fn matching_agrees_with_the_model_on_random_pairs() {
    let mut rng = rng();
    for _ in 0..ROUNDS * 5 {
        let topic = random_levels(&mut rng).join("/");
        let mut f: Vec<&str> = random_levels(&mut rng)
            .into_iter()
            .map(|l| if rng.gen_bool(0.3) { "+" } else { l })
            .collect();
        if rng.gen_bool(0.3) {
            f.push("#");
        }
        let f = f.join("/");
        let parsed = filter(&f);
        assert_eq!(
            parsed.matches(&topic),
            model(&f, &topic),
            "{f:?} vs {topic:?}"
        );
        // A shared subscription matches exactly like its inner filter.
        let shared = filter(&format!("$share/g/{f}"));
        assert_eq!(shared.shared(), Some(("g", f.as_str())));
        assert_eq!(shared.matches(&topic), parsed.matches(&topic));
    }
}

/// The model of a valid filter: each level is `+`, `#` when last, or free of both.
fn model_valid_filter(s: &str) -> bool {
    let levels: Vec<&str> = s.split('/').collect();
    let last = levels.len() - 1;
    !s.is_empty()
        && !s.contains('\0')
        && levels
            .iter()
            .enumerate()
            .all(|(i, l)| *l == "+" || (*l == "#" && i == last) || !l.contains(['+', '#']))
}

#[test]
fn parsing_random_strings_agrees_with_the_model_and_never_panics() {
    const CHARS: &[char] = &['a', '/', '+', '#', '$', '\0', 'ü'];
    let mut rng = rng();
    for _ in 0..ROUNDS * 5 {
        let len = rng.gen_range(0..8);
        let s: String = (0..len)
            .map(|_| *CHARS.choose(&mut rng).unwrap_or(&'a'))
            .collect();
        let name_ok = !s.is_empty() && !s.contains(['+', '#', '\0']);
        assert_eq!(TopicName::parse(&s).is_ok(), name_ok, "name {s:?}");
        // `$share/…` has its own grammar, checked in the unit tests.
        if !s.starts_with("$share/") {
            assert_eq!(
                TopicFilter::parse(&s).is_ok(),
                model_valid_filter(&s),
                "filter {s:?}"
            );
        }
        if let Ok(f) = TopicFilter::parse(&s) {
            // Any topic at all: must not panic, and agree with the model.
            let topic = random_levels(&mut rng).join("/");
            assert_eq!(f.matches(&topic), model(f.match_filter(), &topic));
        }
    }
}
