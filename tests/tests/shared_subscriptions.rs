//! Shared subscriptions (`$share/{group}/{filter}`, MQTT 5 §4.8.2) with paho-mqtt, a client nobody
//! on the project wrote (tests/python/paho_shared.py prints what it saw).

use anyhow::Result;
use quicft_proto::{QoS, ReasonCode};
use quicft_server::acl::{Access, Rule};
use quicft_tests::peers::paho;
use quicft_tests::{TestServer, Transport, ALL_TRANSPORTS};

#[tokio::test]
async fn paho_members_share_messages_and_take_over_unacknowledged_ones() -> Result<()> {
    let srv = TestServer::start().await?;
    let port = srv.addr(Transport::Tcp).port().to_string();
    let r = paho("paho_shared.py", &["127.0.0.1", &port, "all"]).await?;
    assert_eq!(
        r["shared_available"], 1,
        "CONNACK says shared subscriptions are available: {r}"
    );
    assert_eq!(r["suback"], serde_json::json!([1, 1, 1]), "{r}");
    assert_eq!(
        r["each_once"], true,
        "each message to exactly one member: {r}"
    );
    assert_eq!(
        r["split"],
        serde_json::json!([10, 10]),
        "round-robin over two members: {r}"
    );
    assert_eq!(
        r["retained_seen"], false,
        "no retained message on a shared subscribe: {r}"
    );
    assert!(
        r["lazy_got"].as_u64().unwrap_or(0) > 0,
        "the lazy member took some: {r}"
    );
    assert_eq!(
        r["redelivered_all"], true,
        "what the lazy member never acknowledged went to the others: {r}"
    );
    assert_eq!(
        r["malformed"],
        serde_json::json!([0x8F, 0x8F, 0x8F]),
        "malformed share names: Topic Filter invalid: {r}"
    );
    assert_eq!(
        r["after_unsubscribe"],
        serde_json::json!([0, 6]),
        "unsubscribed with the full filter: {r}"
    );
    assert_eq!(
        r["nolocal_disconnect"], 0x82,
        "No Local on a shared subscription: {r}"
    );
    Ok(())
}

#[tokio::test]
async fn acl_applies_to_the_inner_filter() -> Result<()> {
    let srv = TestServer::start_with(|c| {
        c.auth.acl = vec![Rule {
            pattern: "public/#".into(),
            access: Access::Read,
            username: None,
        }]
    })
    .await?;
    let port = srv.addr(Transport::Tcp).port().to_string();
    let r = paho("paho_shared.py", &["127.0.0.1", &port, "acl"]).await?;
    assert_eq!(r["codes"], serde_json::json!([1, 0x87, 1]), "{r}");
    Ok(())
}

/// Share names paho will not even send (a wildcard in the group), and the others, raw over every
/// transport: SUBACK 0x8F, and the connection keeps working.
#[tokio::test]
async fn malformed_share_names_get_topic_filter_invalid() -> Result<()> {
    let srv = TestServer::start().await?;
    for t in ALL_TRANSPORTS {
        let mut c = srv.connect(t, &format!("bad-share-{t:?}")).await?;
        let s = c.data().await?;
        for (i, f) in [
            "$share/g+/x",
            "$share/g#/x",
            "$share//x",
            "$share/g",
            "$share/g/",
        ]
        .into_iter()
        .enumerate()
        {
            let codes = s.subscribe(f, QoS::AtLeastOnce, 10 + i as u16).await?;
            assert_eq!(codes, [ReasonCode::TOPIC_FILTER_INVALID], "{t:?} {f}");
        }
        let ok = s.subscribe("$share/g/x", QoS::AtLeastOnce, 1).await?;
        assert_eq!(ok, [ReasonCode::GRANTED_QOS_1], "{t:?}");
    }
    Ok(())
}
