//! Cloud-to-device delivery (issue 14, DESIGN §7): the REST API over a real socket with curl
//! (create streamed to disk, list, get, delete, token, bad input, OpenAPI, durable across a
//! restart), and a device written from AWS's published MQTT-based file delivery description
//! (paho-mqtt + cbor2) fetching its delivery and provoking every error.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use quicft_server::Server;
use quicft_tests::ft::{content, sha256_hex};
use quicft_tests::{init_tracing, test_config};
use serde_json::Value;
use tokio::process::Command;

const TOKEN: &str = "delivery-token-for-tests-0123456789";

async fn start(dir: &Path) -> Result<Server> {
    init_tracing();
    let mut cfg = test_config(dir.to_path_buf());
    cfg.listeners.http = Some("127.0.0.1:0".parse()?);
    cfg.http.token = Some(TOKEN.into());
    Ok(Server::start(cfg).await?)
}

fn url(srv: &Server, path: &str) -> Result<String> {
    let a = srv.http_addr.context("HTTP listener")?;
    Ok(format!("http://{a}{path}"))
}

/// `curl` with the token (unless `token` is false); the status and the body as JSON (Null when empty).
async fn curl(method: &str, url: &str, body: Option<&Path>, token: bool) -> Result<(u16, Value)> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-X", method, "-w", "\n%{http_code}"]);
    if token {
        cmd.args(["-H", &format!("Authorization: Bearer {TOKEN}")]);
    }
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/octet-stream"]);
        cmd.arg("--data-binary").arg(format!("@{}", b.display()));
    }
    cmd.arg(url);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.kill_on_drop(true).output())
        .await
        .context("curl timed out")??;
    ensure!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let (body, code) = text.rsplit_once('\n').context("status line")?;
    let v = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).with_context(|| format!("not JSON: {body}"))?
    };
    Ok((code.trim().parse()?, v))
}

/// `METHOD path` with the token and no body.
async fn api(srv: &Server, method: &str, path: &str) -> Result<(u16, Value)> {
    curl(method, &url(srv, path)?, None, true).await
}

async fn create(srv: &Server, file: &Path, query: &str) -> Result<Value> {
    let (code, v) = curl(
        "POST",
        &url(srv, &format!("/api/v1/deliveries?{query}"))?,
        Some(file),
        true,
    )
    .await?;
    ensure!(code == 201, "create {query}: {code} {v}");
    Ok(v)
}

#[tokio::test]
async fn deliveries_over_rest_survive_a_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = content(300_001, 1);
    let file = dir.path().join("model.bin");
    std::fs::write(&file, &data)?;
    let srv = start(dir.path()).await?;

    let v = create(
        &srv,
        &file,
        "name=model.bin&version=1.2.0&targets=dev-a,truck-*",
    )
    .await?;
    let id = v["id"].as_str().context("id")?.to_owned();
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    assert_eq!(v["sha256"], sha256_hex(&data));
    assert_eq!(v["size"], data.len());
    assert_eq!(v["version"], "1.2.0");
    assert_eq!(v["stream_version"], 1);
    assert_eq!(v["targets"], serde_json::json!(["dev-a", "truck-*"]));
    assert_eq!(v["devices"]["dev-a"]["state"], "pending", "{v}");
    let stored = dir.path().join("deliveries").join(&id).join("content");
    assert!(std::fs::read(&stored)? == data, "stored bytes differ");

    // The token is required, like the rest of the API.
    let (code, _) = curl(
        "POST",
        &url(&srv, "/api/v1/deliveries?name=x&targets=a")?,
        Some(&file),
        false,
    )
    .await?;
    assert_eq!(code, 401);
    let (code, _) = curl("GET", &url(&srv, "/api/v1/deliveries")?, None, false).await?;
    assert_eq!(code, 401);

    // Bad input: a clear 400, nothing left behind.
    for (query, why) in [
        (
            format!("name=x&targets=a&sha256={}", "0".repeat(64)),
            "SHA-256 differs",
        ),
        ("name=x&targets=".to_owned(), "no target"),
        ("name=x&targets=a/b".to_owned(), "a target with /"),
        ("targets=a".to_owned(), "no name"),
        ("name=&targets=a".to_owned(), "an empty name"),
    ] {
        let (code, v) = curl(
            "POST",
            &url(&srv, &format!("/api/v1/deliveries?{query}"))?,
            Some(&file),
            true,
        )
        .await?;
        assert_eq!(code, 400, "{why}: {v}");
        assert_eq!(v["error"]["code"], "invalid_parameter", "{why}: {v}");
    }
    let left: Vec<_> = std::fs::read_dir(dir.path().join("deliveries"))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    assert_eq!(
        left,
        vec![std::ffi::OsString::from(&id)],
        "only the one delivery is stored"
    );

    // A matching SHA-256 is accepted.
    let second = create(
        &srv,
        &file,
        &format!(
            "name=again.bin&targets=x&expires_in=3600&sha256={}",
            sha256_hex(&data)
        ),
    )
    .await?;
    assert!(second["expires_at"].as_u64().is_some(), "{second}");
    // Expired at once: a device not done with it shows as expired.
    let gone = create(&srv, &file, "name=old.bin&targets=dev-x&expires_in=0").await?;
    assert_eq!(gone["devices"]["dev-x"]["state"], "expired", "{gone}");
    let gone_id = gone["id"].as_str().context("id")?.to_owned();
    let (code, _) = api(&srv, "DELETE", &format!("/api/v1/deliveries/{gone_id}")).await?;
    assert_eq!(code, 204);

    let (code, list) = api(&srv, "GET", "/api/v1/deliveries").await?;
    assert_eq!(code, 200);
    let ids: Vec<&str> = list["deliveries"]
        .as_array()
        .context("list")?
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2, "{list}");
    assert!(ids.contains(&id.as_str()));
    for bad in ["0000000000000000", "..%2F..%2Fetc", "nope"] {
        let (code, v) = api(&srv, "GET", &format!("/api/v1/deliveries/{bad}")).await?;
        assert_eq!(code, 404, "{bad}: {v}");
    }

    let (code, doc) = api(&srv, "GET", "/api/v1/openapi.json").await?;
    assert_eq!(code, 200);
    assert!(
        doc["paths"]["/api/v1/deliveries"]["post"].is_object(),
        "OpenAPI: create"
    );
    assert!(
        doc["paths"]["/api/v1/deliveries/{id}"]["delete"].is_object(),
        "OpenAPI: delete"
    );

    // Durable: a new server on the same data directory has both.
    srv.shutdown().await;
    let srv = start(dir.path()).await?;
    let (code, v) = api(&srv, "GET", &format!("/api/v1/deliveries/{id}")).await?;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["sha256"], sha256_hex(&data));
    assert_eq!(v["name"], "model.bin");

    let (code, _) = api(&srv, "DELETE", &format!("/api/v1/deliveries/{id}")).await?;
    assert_eq!(code, 204);
    let (code, _) = api(&srv, "GET", &format!("/api/v1/deliveries/{id}")).await?;
    assert_eq!(code, 404);
    let (code, _) = api(&srv, "DELETE", &format!("/api/v1/deliveries/{id}")).await?;
    assert_eq!(code, 404);
    assert!(!stored.exists(), "the file is removed with its delivery");
    srv.shutdown().await;
    Ok(())
}

fn python_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python")
}

#[tokio::test]
async fn an_aws_iot_device_fetches_its_delivery() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data = content(300_001, 2);
    let file = dir.path().join("fw.bin");
    std::fs::write(&file, &data)?;
    let srv = start(dir.path()).await?;
    let mine = create(&srv, &file, "name=fw.bin&version=7&targets=aws-*").await?;
    let other = create(&srv, &file, "name=fw.bin&targets=someone-else").await?;
    let (id, other_id) = (
        mine["id"].as_str().context("id")?,
        other["id"].as_str().context("id")?,
    );
    let port = srv.tcp_addr.context("tcp")?.port().to_string();
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new("python3")
            .arg(python_dir().join("paho_aws_stream.py"))
            .args(["127.0.0.1", &port, "aws-dev-1", id, other_id])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("device timed out")??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "AWS-protocol device failed: {stdout}\nstderr: {}\n(python3 with paho-mqtt and cbor2: `bash .ci/run` installs them)",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let v: Value = serde_json::from_str(stdout.trim()).with_context(|| stdout.to_string())?;
    assert_eq!(v["size"], data.len(), "{v}");
    assert_eq!(v["sha256"], sha256_hex(&data), "reassembled file");
    assert_eq!(v["describe_json"]["r"][0]["z"], data.len());
    let d: Value = serde_json::from_str(v["describe_json"]["d"].as_str().context("d")?)?;
    assert_eq!(
        d,
        serde_json::json!({"name": "fw.bin", "version": "7", "sha256": sha256_hex(&data)})
    );
    assert_eq!(
        v["limit_blocks"],
        serde_json::json!((0..32).collect::<Vec<u32>>()),
        "128 KiB per request"
    );
    assert_eq!(v["bitmap_json"], serde_json::json!([4, 5, 8]));
    assert_eq!(v["bitmap_cbor"], serde_json::json!([4, 5, 8]));
    assert_eq!(v["errors"].as_object().map(|m| m.len()), Some(16), "{v}");
    assert_eq!(
        v["other_subscribe"], 0x87,
        "another thing's answers: SUBACK 0x87"
    );
    assert_eq!(
        v["other_publish"], 0x87,
        "another thing's request: PUBACK 0x87"
    );
    assert_eq!(
        v["forged_data"], 0x87,
        "the server's answer topics are not the device's"
    );

    // The operator sees the device's progress.
    let (code, d) = api(&srv, "GET", &format!("/api/v1/deliveries/{id}")).await?;
    assert_eq!(code, 200);
    assert_eq!(d["devices"]["aws-dev-1"]["state"], "downloading", "{d}");
    assert_eq!(d["devices"]["aws-dev-1"]["bytes"], data.len(), "{d}");
    let (_, o) = api(&srv, "GET", &format!("/api/v1/deliveries/{other_id}")).await?;
    assert!(o["devices"].get("aws-dev-1").is_none(), "{o}");
    srv.shutdown().await;
    Ok(())
}

/// A [`Server`] started by [`start`], as the harness's connect helpers want it.
struct Target<'a>(&'a Server, PathBuf);

impl quicft_tests::Target for Target<'_> {
    fn addr(&self, t: quicft_tests::Transport) -> std::net::SocketAddr {
        use quicft_tests::Transport::*;
        match t {
            Quic => self.0.quic_addr,
            Tcp => self.0.tcp_addr,
            Tls => self.0.tls_addr,
        }
        .expect("listener enabled")
    }
    fn ca(&self) -> PathBuf {
        self.1.join("certs/ca.pem")
    }
}

#[tokio::test]
async fn devices_are_notified_and_report_their_state() -> Result<()> {
    use quicft_proto::{QoS, ReasonCode};
    let dir = tempfile::tempdir()?;
    let data = content(10_000, 3);
    let file = dir.path().join("cfg.bin");
    std::fs::write(&file, &data)?;
    let srv = start(dir.path()).await?;
    let target = Target(&srv, dir.path().to_path_buf());
    let mut conn = quicft_tests::connect(&target, quicft_tests::Transport::Tcp, "truck-9").await?;
    // Over TCP the one stream carries everything.
    let dev = &mut conn.ctl;
    let codes = dev
        .subscribe("$file-delivery/notify/truck-9", QoS::AtLeastOnce, 1)
        .await?;
    assert_eq!(codes, vec![ReasonCode(1)]);
    for (pkid, other) in [
        (2, "$file-delivery/notify/truck-8"),
        (3, "$file-delivery/notify/+"),
    ] {
        let codes = dev.subscribe(other, QoS::AtLeastOnce, pkid).await?;
        assert_eq!(codes, vec![ReasonCode::NOT_AUTHORIZED], "{other}");
    }

    // Targeted by pattern while connected: told at once.
    let v = create(&srv, &file, "name=cfg.bin&version=3&targets=truck-*").await?;
    let id = v["id"].as_str().context("id")?.to_owned();
    assert_eq!(v["devices"]["truck-9"]["state"], "notified", "{v}");
    let note = dev.next_publish_on("$file-delivery/notify/truck-9").await?;
    let n: Value = serde_json::from_slice(&note.payload)?;
    assert_eq!(n["id"], id.as_str());
    assert_eq!(n["sha256"], sha256_hex(&data));
    assert_eq!(n["size"], data.len());

    // Reports: the device's own, for a delivery that targets it.
    let status = format!("$file-delivery/status/truck-9/{id}");
    for (pkid, body, want) in [
        (10, r#"{"state":"verified"}"#, "verified"),
        (11, r#"{"state":"downloading"}"#, "verified"),
        (12, r#"{"state":"applied"}"#, "applied"),
    ] {
        let ack = dev.publish_qos1(&status, body.as_bytes(), pkid).await?;
        assert_eq!(ack.code, ReasonCode::SUCCESS);
        let mut state = Value::Null;
        for _ in 0..100 {
            let (_, d) = api(&srv, "GET", &format!("/api/v1/deliveries/{id}")).await?;
            state = d["devices"]["truck-9"]["state"].clone();
            if state == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(state, want, "after {body}");
    }
    // Not its own: refused, and nothing routed.
    let ack = dev
        .publish_qos1(
            &format!("$file-delivery/status/truck-8/{id}"),
            br#"{"state":"failed"}"#,
            20,
        )
        .await?;
    assert_eq!(ack.code, ReasonCode::NOT_AUTHORIZED);
    let ack = dev
        .publish_qos1("$file-delivery/notify/truck-9", b"{}", 21)
        .await?;
    assert_eq!(ack.code, ReasonCode::NOT_AUTHORIZED);

    // Durable: the states survive a restart.
    drop(conn);
    srv.shutdown().await;
    let srv = start(dir.path()).await?;
    let (_, d) = api(&srv, "GET", &format!("/api/v1/deliveries/{id}")).await?;
    assert_eq!(d["devices"]["truck-9"]["state"], "applied", "{d}");
    srv.shutdown().await;
    Ok(())
}

/// A device that floods `get`s and does not read its answers: past 4 requests in flight they are
/// rejected, the answers queued for it stay within its budget, and it is still served afterwards.
#[tokio::test]
async fn a_flood_of_gets_is_cut_off_and_the_device_still_served() -> Result<()> {
    use bytes::BytesMut;
    use quicft_proto::{Packet, Protocol, QoS, ReasonCode};
    let dir = tempfile::tempdir()?;
    let data = content(1 << 20, 4);
    let file = dir.path().join("big.bin");
    std::fs::write(&file, &data)?;
    let srv = start(dir.path()).await?;
    let v = create(&srv, &file, "name=big.bin&targets=flooder").await?;
    let id = v["id"].as_str().context("id")?.to_owned();
    let target = Target(&srv, dir.path().to_path_buf());
    let mut conn = quicft_tests::connect(&target, quicft_tests::Transport::Tcp, "flooder").await?;
    let dev = &mut conn.ctl;
    let base = format!("$aws/things/flooder/streams/{id}");
    for (pkid, action) in [(1, "data"), (2, "rejected")] {
        let codes = dev
            .subscribe(&format!("{base}/{action}/json"), QoS::AtMostOnce, pkid)
            .await?;
        assert_eq!(codes, vec![ReasonCode::SUCCESS]);
    }
    // 300 requests for a 128 KiB block each (~175 KB of JSON per answer, 52 MB in all), in one write.
    const FLOOD: usize = 300;
    let mut burst = BytesMut::new();
    for i in 0..FLOOD {
        let body = format!(r#"{{"c":"{i}","f":0,"l":131072,"o":{},"n":1}}"#, i % 8);
        quicft_tests::publish(
            &format!("{base}/get/json"),
            body.as_bytes(),
            QoS::AtMostOnce,
            0,
        )
        .encode(Protocol::V5, &mut burst)?;
    }
    dev.send_bytes(&burst).await?;
    // Not reading for a while: what the server holds for us is bounded meanwhile.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (mut blocks, mut rejected) = (0usize, 0usize);
    while let Some(p) = dev.try_recv(Duration::from_secs(3)).await? {
        let Packet::Publish(p) = p else { continue };
        if p.topic.ends_with("/data/json") {
            blocks += 1;
        } else if p.topic.ends_with("/rejected/json") {
            let m: Value = serde_json::from_slice(&p.payload)?;
            assert_eq!(m["o"], "InvalidRequest", "{m}");
            rejected += 1;
        }
    }
    eprintln!("flood of {FLOOD}: {blocks} blocks sent, {rejected} rejected");
    assert_eq!(blocks + rejected, FLOOD, "every request answered once");
    assert!(
        rejected >= FLOOD / 2,
        "the flood was cut off: {blocks} blocks, {rejected} rejected"
    );
    // Still served.
    dev.send(&quicft_tests::publish(
        &format!("{base}/get/json"),
        br#"{"c":"after","f":0,"l":1024,"o":3,"n":1}"#,
        QoS::AtMostOnce,
        0,
    ))
    .await?;
    let p = dev.next_publish_on(&format!("{base}/data/json")).await?;
    let m: Value = serde_json::from_slice(&p.payload)?;
    assert_eq!((m["c"].as_str(), m["i"].as_u64()), (Some("after"), Some(3)));
    drop(conn);
    srv.shutdown().await;
    Ok(())
}

/// A device with a persistent session that subscribed to its notify topic and went offline is
/// told of a delivery made meanwhile when it comes back.
#[tokio::test]
async fn an_offline_persistent_device_is_notified_when_it_returns() -> Result<()> {
    use quicft_proto::{Packet, Protocol, QoS, ReasonCode};
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("m.bin");
    std::fs::write(&file, content(5000, 5))?;
    let srv = start(dir.path()).await?;
    let target = Target(&srv, dir.path().to_path_buf());
    let persistent = |clean_start| {
        let mut c = quicft_tests::connect_packet("van-3", Protocol::V5);
        c.clean_start = clean_start;
        c.properties.session_expiry_interval = Some(600);
        c
    };
    let (mut conn, ack) =
        quicft_tests::Conn::open(&target, quicft_tests::Transport::Tcp, persistent(true)).await?;
    ensure!(!ack.code.is_error(), "{ack:?}");
    let codes = conn
        .ctl
        .subscribe("$file-delivery/notify/van-3", QoS::AtLeastOnce, 1)
        .await?;
    assert_eq!(codes, vec![ReasonCode(1)]);
    conn.ctl
        .send(&Packet::Disconnect(quicft_proto::Disconnect {
            code: ReasonCode::SUCCESS,
            properties: Default::default(),
        }))
        .await?;
    drop(conn);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let v = create(&srv, &file, "name=m.bin&targets=van-3").await?;
    assert_eq!(
        v["devices"]["van-3"]["state"], "notified",
        "queued for the offline session: {v}"
    );
    let (mut conn, ack) =
        quicft_tests::Conn::open(&target, quicft_tests::Transport::Tcp, persistent(false)).await?;
    ensure!(ack.session_present, "session kept: {ack:?}");
    let note = conn
        .ctl
        .next_publish_on("$file-delivery/notify/van-3")
        .await?;
    let n: Value = serde_json::from_slice(&note.payload)?;
    assert_eq!(n["id"], v["id"]);
    drop(conn);
    srv.shutdown().await;
    Ok(())
}
