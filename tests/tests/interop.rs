//! Clients that are not ours: mosquitto_pub/mosquitto_sub, paho-mqtt (Python) and an independent QUIC
//! stack (aioquic). `.ci/run` installs them; a missing peer fails the test with a hint, never skips it.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use quicft_proto::{QoS, ReasonCode};
use quicft_tests::peers::{need, python_dir, run_json};
use quicft_tests::{TestServer, Transport};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

#[tokio::test]
async fn mosquitto_sub_receives_and_mosquitto_pub_sends() -> Result<()> {
    need("mosquitto_sub")?;
    let srv = TestServer::start().await?;
    let tcp = srv.addr(Transport::Tcp);
    let tls = srv.addr(Transport::Tls);
    for (label, port, tls_args) in [
        ("tcp", tcp.port(), vec![]),
        (
            "tls",
            tls.port(),
            vec!["--cafile".to_string(), srv.ca().display().to_string()],
        ),
    ] {
        // mosquitto_sub (MQTT 5) subscribed through quicft, we publish.
        let mut sub = Command::new("mosquitto_sub")
            .args([
                "-h",
                "localhost",
                "-p",
                &port.to_string(),
                "-V",
                "mqttv5",
                "-q",
                "1",
                "-C",
                "2",
                "-t",
                "interop/#",
                "-i",
                &format!("mosq-sub-{label}"),
            ])
            .args(&tls_args)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut lines = BufReader::new(sub.stdout.take().context("stdout")?).lines();
        let mut publ = srv
            .connect(Transport::Quic, &format!("rust-pub-{label}"))
            .await?;
        // mosquitto_sub subscribes asynchronously: publish until the first message shows up.
        let first = loop {
            publ.data()
                .await?
                .publish_qos1("interop/a", b"from quicft", 1)
                .await?;
            if let Ok(line) =
                tokio::time::timeout(Duration::from_millis(300), lines.next_line()).await
            {
                break line?;
            }
        };
        assert_eq!(first.as_deref(), Some("from quicft"));
        publ.data()
            .await?
            .publish_qos1("interop/b", b"second", 2)
            .await?;
        // A retry may have queued duplicates of the first message; skip them.
        let mut second = lines.next_line().await?;
        while second.as_deref() == Some("from quicft") {
            second = lines.next_line().await?;
        }
        assert_eq!(second.as_deref(), Some("second"), "{label}");

        // mosquitto_pub publishing into quicft, we subscribe over QUIC.
        let mut rust_sub = srv
            .connect(Transport::Quic, &format!("rust-sub-{label}"))
            .await?;
        rust_sub
            .data()
            .await?
            .subscribe("from-mosquitto/+", QoS::AtLeastOnce, 1)
            .await?;
        let status = Command::new("mosquitto_pub")
            .args([
                "-h",
                "localhost",
                "-p",
                &port.to_string(),
                "-V",
                "mqttv5",
                "-q",
                "1",
                "-t",
                "from-mosquitto/x",
                "-m",
                "hi quicft",
            ])
            .args(&tls_args)
            .status()
            .await?;
        assert!(status.success());
        let got = rust_sub.data().await?.next_publish().await?;
        assert_eq!(
            (got.topic.as_str(), &got.payload[..]),
            ("from-mosquitto/x", &b"hi quicft"[..])
        );
    }
    Ok(())
}

#[tokio::test]
async fn paho_mqtt5_over_tcp() -> Result<()> {
    need("python3")?;
    let srv = TestServer::start().await?;
    let port = srv.addr(Transport::Tcp).port();
    let v = run_json(
        Command::new("python3")
            .arg(python_dir().join("paho_pubsub.py"))
            .arg("127.0.0.1")
            .arg(port.to_string()),
    )
    .await?;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["connack"], 0);
    assert_eq!(
        v["acks"],
        serde_json::json!([0, 0, 0]),
        "PUBACK/PUBCOMP reason codes: {v}"
    );
    let msgs = v["messages"].as_array().context("messages")?;
    assert_eq!(msgs.len(), 3);
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m["topic"], format!("paho/q{i}"));
        assert_eq!(m["payload"], format!("hello {i}"));
        assert_eq!(m["qos"], i);
        assert_eq!(
            m["user"]["origin"], "paho",
            "user properties forwarded: {m}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn aioquic_control_and_data_streams() -> Result<()> {
    need("python3")?;
    let srv = TestServer::start().await?;
    let mut sub = srv.connect(Transport::Tcp, "watch").await?;
    sub.data()
        .await?
        .subscribe("quic/interop", QoS::AtLeastOnce, 1)
        .await?;
    let port = srv.addr(Transport::Quic).port();
    let v = run_json(
        Command::new("python3")
            .arg(python_dir().join("aioquic_mqtt.py"))
            .args(["127.0.0.1", &port.to_string()])
            .arg(srv.ca())
            .args(["quic/interop", "hello from aioquic"]),
    )
    .await?;
    assert_eq!(v["connack_type"], 2, "{v}");
    assert_eq!(v["connack_code"], 0);
    assert_eq!(v["ack_type"], 4, "PUBACK on the data stream: {v}");
    assert_eq!(v["ack_pkid"], 7);
    assert_eq!(v["ack_code"], u64::from(ReasonCode::SUCCESS.0));
    let got = sub.data().await?.next_publish().await?;
    assert_eq!(&got.payload[..], b"hello from aioquic");
    Ok(())
}

#[tokio::test]
async fn paho_emqx_style_upload_reads_puback_reason_codes() -> Result<()> {
    need("python3")?;
    let srv = TestServer::start().await?;
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let file = srv.dir.path().join("upload.bin");
    std::fs::write(&file, &data)?;
    let port = srv.addr(Transport::Tcp).port();
    let v = run_json(
        Command::new("python3")
            .arg(python_dir().join("paho_upload.py"))
            .args(["127.0.0.1", &port.to_string()])
            .arg(&file),
    )
    .await?;
    assert_eq!(v["init"], 0, "{v}");
    assert_eq!(v["segments"], serde_json::json!([0]), "{v}");
    assert_eq!(v["count"], 13);
    assert_eq!(
        v["corrupt"], 0x80,
        "bad segment checksum answered 0x80: {v}"
    );
    assert_eq!(v["fin"], 0, "{v}");
    let exported = std::fs::read(
        srv.dir
            .path()
            .join("exports/paho-uploader/paho-file/paho.bin"),
    )?;
    assert!(exported == data);
    Ok(())
}

/// msquic/NanoSDK/emqtt-style single-stream MQTT over QUIC, from aioquic: everything on the
/// control stream — SUBSCRIBE, PINGREQ, PUBLISH QoS 0/1/2 with their acks, deliveries at QoS 1
/// and 2 back to it, and an EMQX-style `$file` upload (init, segments with SHA-256, fin).
#[tokio::test]
async fn aioquic_single_stream_mode_pub_sub_qos_and_upload() -> Result<()> {
    need("python3")?;
    let srv = TestServer::start().await?;
    // Someone else sees what it publishes.
    let mut watch = srv.connect(Transport::Tcp, "watch").await?;
    watch
        .data()
        .await?
        .subscribe("single/#", QoS::ExactlyOnce, 1)
        .await?;
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let file = srv.dir.path().join("single.bin");
    std::fs::write(&file, &data)?;
    let port = srv.addr(Transport::Quic).port();
    let v = run_json(
        Command::new("python3")
            .arg(python_dir().join("aioquic_single_stream.py"))
            .args(["single", "127.0.0.1", &port.to_string()])
            .arg(srv.ca())
            .arg(&file),
    )
    .await?;
    assert_eq!(v["connack"], 0, "{v}");
    assert_eq!(v["suback"], serde_json::json!([2]), "{v}");
    assert_eq!(v["suback_response"], serde_json::json!([1]), "{v}");
    assert_eq!(v["pingresp"], true);
    assert_eq!(
        (&v["puback"], &v["pubrec"], &v["pubcomp"]),
        (&0.into(), &0.into(), &0.into())
    );
    assert_eq!(
        v["delivered"],
        serde_json::json!([
            ["single/q0", 0, "zero"],
            ["single/q1", 1, "one"],
            ["single/q2", 2, "two"]
        ]),
        "its own messages delivered on the control stream, QoS kept: {v}"
    );
    assert_eq!(v["init"], 0, "{v}");
    assert_eq!(v["segments"], serde_json::json!([0, 0, 0]), "{v}");
    assert_eq!(v["fin"], 0, "{v}");
    assert_eq!(v["responses"], serde_json::json!([0, 0, 0, 0, 0]), "{v}");
    let exported = std::fs::read(
        srv.dir
            .path()
            .join("exports/aioquic-single/ss-file/single.bin"),
    )?;
    assert!(exported == data, "the uploaded file is byte-identical");
    for (topic, payload) in [
        ("single/q0", "zero"),
        ("single/q1", "one"),
        ("single/q2", "two"),
    ] {
        let got = watch.data().await?.next_publish().await?;
        assert_eq!(
            (got.topic.as_str(), &got.payload[..]),
            (topic, payload.as_bytes())
        );
    }
    Ok(())
}

/// Single- and multi-stream mode on one connection: each subscription's messages go to the stream
/// that subscribed, whichever stream they were published on.
#[tokio::test]
async fn aioquic_mixed_single_and_multi_stream() -> Result<()> {
    need("python3")?;
    let srv = TestServer::start().await?;
    let port = srv.addr(Transport::Quic).port();
    let v = run_json(
        Command::new("python3")
            .arg(python_dir().join("aioquic_single_stream.py"))
            .args(["mixed", "127.0.0.1", &port.to_string()])
            .arg(srv.ca()),
    )
    .await?;
    assert_eq!(v["connack"], 0, "{v}");
    assert_eq!(v["subacks"], serde_json::json!([[1], [1]]), "{v}");
    assert_eq!(
        (&v["puback_data"], &v["puback_ctl"]),
        (&0.into(), &0.into()),
        "{v}"
    );
    assert_eq!(v["on_control"], serde_json::json!(["mixed/ctl"]), "{v}");
    assert_eq!(v["on_data"], serde_json::json!(["mixed/data"]), "{v}");
    assert_eq!(v["pingresp"], true);
    Ok(())
}

/// Starts `paho_will.py` (a paho client holding a will with a delay) and waits for its CONNACK.
async fn paho_with_will(
    port: u16,
    client_id: &str,
    delay_s: u32,
    expiry_s: u32,
) -> Result<tokio::process::Child> {
    let mut child = Command::new("python3")
        .arg(python_dir().join("paho_will.py"))
        .args(["127.0.0.1", &port.to_string(), client_id])
        .arg(format!("wills/{client_id}"))
        .args([delay_s.to_string(), expiry_s.to_string()])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .context("paho_will.py did not connect")??
        .context("paho_will.py ended")?;
    let v: serde_json::Value = serde_json::from_str(&line)?;
    assert_eq!(v["connack"], 0, "{v}");
    Ok(child)
}

/// MQTT 5 §3.1.3.2.2 with paho-mqtt: a will with a Will Delay Interval is published after the
/// delay, not at all if the client reconnects in time, and when the session ends if that is
/// sooner.
#[tokio::test]
async fn paho_will_delay_interval() -> Result<()> {
    need("python3")?;
    let srv = TestServer::start().await?;
    let port = srv.addr(Transport::Tcp).port();
    let mut watch = srv.connect(Transport::Tcp, "will-watch").await?;
    watch
        .data()
        .await?
        .subscribe("wills/#", QoS::AtLeastOnce, 1)
        .await?;

    // Published after its 2 s delay (and not before).
    let mut dev = paho_with_will(port, "late", 2, 60).await?;
    dev.kill().await?;
    let lost = std::time::Instant::now();
    assert!(
        watch
            .data()
            .await?
            .try_recv(Duration::from_millis(1500))
            .await?
            .is_none(),
        "no will before its delay"
    );
    let got = watch.data().await?.next_publish().await?;
    let after = lost.elapsed();
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("wills/late", &b"gone late"[..])
    );
    assert!(
        after >= Duration::from_millis(1900),
        "published after {after:?}"
    );

    // Back within the delay: that will is never published; the new connection's own is.
    let mut dev = paho_with_will(port, "flaky", 5, 60).await?;
    dev.kill().await?;
    let mut dev = paho_with_will(port, "flaky", 5, 60).await?;
    assert!(
        watch
            .data()
            .await?
            .try_recv(Duration::from_secs(6))
            .await?
            .is_none(),
        "a reconnect within the delay cancels the will"
    );
    dev.kill().await?;
    let got = watch.data().await?.next_publish().await?;
    assert_eq!(got.topic, "wills/flaky");
    assert!(
        watch
            .data()
            .await?
            .try_recv(Duration::from_millis(1000))
            .await?
            .is_none(),
        "one will only"
    );

    // The session (expiry 1 s) ends before the 30 s delay: the will goes then.
    let mut dev = paho_with_will(port, "brief", 30, 1).await?;
    dev.kill().await?;
    let lost = std::time::Instant::now();
    let got = watch.data().await?.next_publish().await?;
    assert_eq!(got.topic, "wills/brief");
    assert!(
        lost.elapsed() < Duration::from_secs(5),
        "{:?}",
        lost.elapsed()
    );
    Ok(())
}
