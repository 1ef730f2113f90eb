//! `ft::parse_topic` over arbitrary UTF-8: topics come straight from PUBLISH packets of any device.

#![no_main]

use libfuzzer_sys::fuzz_target;
use quicft_proto::ft::{parse_topic, ASYNC_PREFIX, SYNC_PREFIX};

fuzz_target!(|topic: &str| {
    let parsed = parse_topic(topic);
    // Only `$file/…` and `$file-async/…` topics are file-transfer commands.
    if !topic.starts_with(SYNC_PREFIX) && !topic.starts_with(ASYNC_PREFIX) {
        assert!(parsed.is_none(), "{topic:?} is not a file-transfer topic");
    }
});
