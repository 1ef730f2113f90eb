//! `$SYS/broker/…` topics, read by paho-mqtt (tests/python/paho_sys.py).

use anyhow::Result;
use quicft_server::acl::{Access, Rule};
use quicft_tests::peers::paho;
use quicft_tests::{TestServer, Transport};

#[tokio::test]
async fn paho_reads_broker_counters_retained_and_refreshed() -> Result<()> {
    let srv = TestServer::start_with(|c| c.sys_interval = 1).await?;
    let port = srv.addr(Transport::Tcp).port().to_string();
    let r = paho("paho_sys.py", &["127.0.0.1", &port, "read"]).await?;
    let latest = &r["latest"];
    let num = |t: &str| -> u64 {
        latest[format!("$SYS/broker/{t}")]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{t} missing or not a number: {r}"))
    };
    assert!(
        latest["$SYS/broker/version"]
            .as_str()
            .is_some_and(|v| v.starts_with("quicft-server ")),
        "{r}"
    );
    assert!(
        latest["$SYS/broker/uptime"]
            .as_str()
            .is_some_and(|v| v.ends_with(" seconds")),
        "{r}"
    );
    assert_eq!(num("clients/connected"), 2, "the two paho clients: {r}");
    assert!(
        num("messages/received") >= 4,
        "2 CONNECTs, 2 SUBSCRIBEs: {r}"
    );
    assert!(num("bytes/received") > 0 && num("bytes/sent") > 0, "{r}");
    let _ = num("messages/sent");
    assert_eq!(num("file-transfers/in-progress"), 0, "{r}");
    assert_eq!(
        r["first_retained"]["$SYS/broker/version"], true,
        "retained on subscribe: {r}"
    );
    assert!(
        r["uptimes"].as_array().map_or(0, Vec::len) >= 3,
        "published every second: {r}"
    );
    assert_eq!(
        r["leaked"],
        serde_json::json!([]),
        "# does not match $SYS: {r}"
    );
    Ok(())
}

#[tokio::test]
async fn sys_follows_the_acl_and_can_be_turned_off() -> Result<()> {
    let srv = TestServer::start_with(|c| {
        c.sys_interval = 1;
        c.auth.acl = vec![Rule {
            pattern: "devices/%c/#".into(),
            access: Access::Readwrite,
            username: None,
        }]
    })
    .await?;
    let port = srv.addr(Transport::Tcp).port().to_string();
    let r = paho("paho_sys.py", &["127.0.0.1", &port, "acl"]).await?;
    assert_eq!(r["codes"], serde_json::json!([0x87]), "{r}");

    let off = TestServer::start_with(|c| c.sys_interval = 0).await?;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let f = quicft_proto::topic::TopicFilter::parse("$SYS/#")?;
    assert!(off.server.broker().retained_matching(&f).is_empty());
    Ok(())
}
