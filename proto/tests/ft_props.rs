//! Property tests for the file-transfer wire types: topics, digests, metadata and responses
//! round-trip, and random input never panics.

use quicft_proto::ft::{
    parse_topic, Command, FileId, FileMeta, FtReason, FtTopic, Mode, Response, Sha256,
    MAX_FILE_ID_LEN, MAX_NAME_LEN,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

const ROUNDS: usize = 20_000;

fn rng() -> StdRng {
    StdRng::seed_from_u64(0x6674_5f70_726f_7073)
}

/// Characters that stress the parsers: separators, wildcards, keywords' letters, digits, multi-byte.
const CHARS: &[char] = &[
    'a', 'f', 'i', 'n', 't', '0', '1', '9', '-', '.', '$', '/', '+', '#', '\0', ':', '\\', '\n',
    'ü', '語', '🚗',
];

fn random_string(rng: &mut StdRng, max_len: usize) -> String {
    let len = rng.gen_range(0..=max_len);
    (0..len)
        .map(|_| *CHARS.choose(rng).unwrap_or(&'a'))
        .collect()
}

fn random_file_id(rng: &mut StdRng) -> FileId {
    loop {
        let s: String = random_string(rng, 12)
            .chars()
            .filter(|c| !matches!(c, '/' | '+' | '#' | '\0'))
            .collect();
        if let Ok(id) = FileId::parse(&s) {
            return id;
        }
    }
}

fn random_u64(rng: &mut StdRng) -> u64 {
    match rng.gen_range(0..4) {
        0 => 0,
        1 => u64::MAX,
        2 => rng.gen_range(0..1 << 20),
        _ => rng.gen(),
    }
}

fn random_sha(rng: &mut StdRng) -> Option<Sha256> {
    rng.gen_bool(0.5).then(|| Sha256(rng.gen()))
}

fn random_ft_topic(rng: &mut StdRng) -> FtTopic {
    let command = match rng.gen_range(0..5) {
        0 => Command::Init,
        1 => Command::Abort,
        2 => Command::Status,
        3 => Command::Segment {
            offset: random_u64(rng),
            checksum: random_sha(rng),
        },
        _ => Command::Fin {
            size: random_u64(rng),
            checksum: random_sha(rng),
        },
    };
    FtTopic {
        mode: if rng.gen() { Mode::Sync } else { Mode::Async },
        file_id: random_file_id(rng),
        command,
    }
}

#[test]
fn ft_topics_round_trip() {
    let mut rng = rng();
    for _ in 0..ROUNDS {
        let topic = random_ft_topic(&mut rng);
        let text = topic.to_string();
        assert_eq!(parse_topic(&text), Some(Ok(topic)), "{text:?}");
    }
}

#[test]
fn random_topics_never_panic_and_canonical_forms_are_stable() {
    let mut rng = rng();
    for _ in 0..ROUNDS * 5 {
        let prefix = ["$file/", "$file-async/", "$file", ""]
            .choose(&mut rng)
            .copied()
            .unwrap_or("");
        let mut text = format!("{prefix}{}", random_string(&mut rng, 24));
        // Now and then a well-formed digest, so the checksum paths are reached too.
        if rng.gen_bool(0.2) {
            text.push('/');
            text.push_str(&Sha256(rng.gen()).to_hex());
        }
        match parse_topic(&text) {
            None => assert!(!text.starts_with("$file/") && !text.starts_with("$file-async/")),
            Some(Err(e)) => assert!(!e.to_string().is_empty()),
            Some(Ok(topic)) => {
                // Accepted topics may differ from the canonical form only by leading zeros or
                // upper-case hex; the canonical form parses back to the same value.
                let canonical = topic.to_string();
                assert_eq!(parse_topic(&canonical), Some(Ok(topic)), "{text:?}");
            }
        }
    }
}

#[test]
fn segment_and_fin_numbers_accept_exactly_the_u64_decimals() {
    let mut rng = rng();
    for _ in 0..ROUNDS {
        let n = random_u64(&mut rng);
        // Leading zeros are tolerated (EMQX does), a sign or one past u64::MAX is not.
        let zeros = "0".repeat(rng.gen_range(0..3));
        let seg = parse_topic(&format!("$file/f/{zeros}{n}"));
        let want = Command::Segment {
            offset: n,
            checksum: None,
        };
        assert_eq!(seg.and_then(Result::ok).map(|t| t.command), Some(want));
        assert!(matches!(
            parse_topic(&format!("$file/f/+{n}")),
            Some(Err(_))
        ));
        assert!(matches!(
            parse_topic(&format!("$file/f/fin/-{n}")),
            Some(Err(_))
        ));
        let past_max = u128::from(u64::MAX) + 1 + u128::from(n);
        assert!(matches!(
            parse_topic(&format!("$file/f/{past_max}")),
            Some(Err(_))
        ));
        assert!(matches!(
            parse_topic(&format!("$file/f/fin/{past_max}")),
            Some(Err(_))
        ));
    }
}

#[test]
fn sha256_hex_round_trips_in_either_case() {
    let mut rng = rng();
    for _ in 0..ROUNDS {
        let sum = Sha256(rng.gen());
        let hex = sum.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(Sha256::parse_hex(&hex), Ok(sum));
        assert_eq!(Sha256::parse_hex(&hex.to_uppercase()), Ok(sum));
        // Cutting or extending by one digit is always refused.
        assert!(Sha256::parse_hex(&hex[1..]).is_err());
        assert!(Sha256::parse_hex(&format!("{hex}0")).is_err());
    }
}

#[test]
fn file_ids_follow_the_grammar() {
    let mut rng = rng();
    for _ in 0..ROUNDS {
        let s = random_string(&mut rng, 8);
        let ok = !s.is_empty() && s.len() <= MAX_FILE_ID_LEN && !s.contains(['/', '+', '#', '\0']);
        assert_eq!(FileId::parse(&s).is_ok(), ok, "{s:?}");
    }
}

/// DESIGN §2, written independently of the implementation.
fn model_valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| !matches!(c, '/' | '\\' | ':') && !c.is_control())
}

fn meta_named(name: String) -> FileMeta {
    FileMeta {
        name,
        size: None,
        checksum: None,
        expire_at: None,
        segments_ttl: None,
        user_data: None,
    }
}

#[test]
fn file_names_follow_design_section_2() {
    let mut rng = rng();
    for _ in 0..ROUNDS {
        // Long enough now and then to cross the 240-byte limit with multi-byte characters.
        let name = if rng.gen_bool(0.1) {
            "語".repeat(rng.gen_range(78..=82))
        } else {
            random_string(&mut rng, 6)
        };
        let meta = meta_named(name.clone());
        assert_eq!(meta.validate().is_ok(), model_valid_name(&name), "{name:?}");
    }
}

#[test]
fn valid_metadata_round_trips_through_json() {
    let mut rng = rng();
    let mut checked = 0;
    while checked < ROUNDS / 10 {
        let name = random_string(&mut rng, 6);
        if !model_valid_name(&name) {
            continue;
        }
        let sum = random_sha(&mut rng);
        let meta = FileMeta {
            name,
            size: rng.gen_bool(0.5).then(|| random_u64(&mut rng)),
            checksum: sum.map(|s| s.to_hex()),
            expire_at: rng.gen_bool(0.5).then(|| rng.gen()),
            segments_ttl: rng.gen_bool(0.5).then(|| rng.gen_range(1..=u64::MAX)),
            user_data: rng
                .gen_bool(0.5)
                .then(|| serde_json::json!({"n": rng.gen::<u32>(), "s": "ü"})),
        };
        let json = serde_json::to_vec(&meta).unwrap_or_default();
        let back = FileMeta::parse(&json);
        assert_eq!(back.as_ref().ok(), Some(&meta), "{back:?}");
        assert_eq!(back.ok().and_then(|m| m.checksum_bytes()), sum);
        checked += 1;
    }
}

#[test]
fn random_metadata_bytes_never_panic() {
    let mut rng = rng();
    const PIECES: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        "\"name\"",
        "\"size\"",
        "\"checksum\"",
        ":",
        ",",
        "\"a\"",
        "1",
        "-1",
        "null",
        "\"..\"",
        "\"\\u0000\"",
        " ",
    ];
    for _ in 0..ROUNDS {
        let n = rng.gen_range(0..10);
        let text: String = (0..n)
            .map(|_| *PIECES.choose(&mut rng).unwrap_or(&"{"))
            .collect();
        if let Ok(meta) = FileMeta::parse(text.as_bytes()) {
            assert!(meta.validate().is_ok());
        }
    }
}

#[test]
fn responses_round_trip() {
    let mut rng = rng();
    let reasons = [
        FtReason::Success,
        FtReason::Restart,
        FtReason::Retransmit,
        FtReason::Cancel,
        FtReason::Quota,
    ];
    for _ in 0..ROUNDS / 10 {
        let topic = random_ft_topic(&mut rng);
        let reason = *reasons.choose(&mut rng).unwrap_or(&FtReason::Success);
        let mut r = Response::new(topic.to_string(), rng.gen(), reason);
        if rng.gen() {
            let mut at = 0u64;
            let ranges: Vec<(u64, u64)> = (0..rng.gen_range(0..5))
                .map(|_| {
                    let start = at + rng.gen_range(0..1000);
                    at = start + rng.gen_range(1..1000);
                    (start, at)
                })
                .collect();
            r = r.with_ranges(ranges.clone()).with_missing(ranges);
        }
        if rng.gen() {
            r = r
                .with_state("receiving")
                .with_description(random_string(&mut rng, 10));
        }
        let back = Response::parse(&r.to_bytes()).ok();
        assert_eq!(back.as_ref().and_then(Response::reason), Some(reason));
        assert_eq!(back, Some(r));
    }
}
