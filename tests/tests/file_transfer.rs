//! File transfer over MQTT (DESIGN §2) end to end, over QUIC and TCP, against a real server.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use quicft_proto::ft::Response;
use quicft_proto::{Packet, Protocol, PubResp, QoS, ReasonCode};
use quicft_tests::ft::{self, content, sha256_hex, split};
use quicft_tests::{connect_packet, publish, Conn, RawStream, TestServer, Transport};

const BOTH: [Transport; 2] = [Transport::Quic, Transport::Tcp];
const SEG: usize = 64 * 1024;

fn export_root(srv: &TestServer) -> PathBuf {
    srv.dir.path().join("exports")
}

/// The path of the export reported by the `completed` event.
async fn completed_export(events: &mut RawStream, file_id: &str) -> Result<PathBuf> {
    loop {
        let p = events.next_publish().await?;
        if !p.topic.ends_with(&format!("/{file_id}")) {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&p.payload)?;
        if v["event"] == "completed" {
            return Ok(PathBuf::from(
                v["export_path"].as_str().context("export_path")?,
            ));
        }
    }
}

fn assert_inside(root: &Path, p: &Path) {
    let root = root.canonicalize().expect("root");
    let p = p.canonicalize().expect("export exists");
    assert!(
        p.starts_with(&root),
        "{} escapes {}",
        p.display(),
        root.display()
    );
}

#[tokio::test]
async fn uploads_of_every_shape_are_byte_identical() -> Result<()> {
    let srv = TestServer::start().await?;
    for t in BOTH {
        let id = format!("cam-{t:?}");
        let mut c = srv.connect(t, &id).await?;
        let mut watcher = srv.connect(Transport::Tcp, &format!("w-{t:?}")).await?;
        watcher
            .data()
            .await?
            .subscribe(&format!("$events/file/{id}/+"), QoS::AtLeastOnce, 1)
            .await?;
        for (i, len) in [0usize, 1, 4 * SEG, 3 * SEG + 12_345, 50 * 1024 * 1024]
            .into_iter()
            .enumerate()
        {
            let data = content(len, i as u64);
            let file_id = format!("f{i}");
            let s = c.data().await?;
            ft::upload(s, &file_id, &format!("file-{i}.bin"), &data, 256 * 1024).await?;
            let path = completed_export(watcher.data().await?, &file_id).await?;
            assert_inside(&export_root(&srv), &path);
            let got = std::fs::read(&path)?;
            assert!(got == data, "{t:?} len {len}: exported bytes differ");
            let manifest: serde_json::Value =
                serde_json::from_slice(&std::fs::read(path.with_file_name("%manifest.json"))?)?;
            assert_eq!(manifest["sha256"], sha256_hex(&data));
            assert_eq!(manifest["size"], len);
        }
    }
    Ok(())
}

#[tokio::test]
async fn out_of_order_duplicates_and_overlaps() -> Result<()> {
    let srv = TestServer::start().await?;
    for t in BOTH {
        let mut c = srv.connect(t, &format!("ooo-{t:?}")).await?;
        let data = content(10 * SEG + 777, 9);
        let s = c.data().await?;
        assert_eq!(
            ft::init(s, "x", "x.bin", Some(data.len() as u64)).await?,
            ReasonCode::SUCCESS
        );
        let mut segs = split(&data, SEG);
        segs.reverse();
        // Duplicates, and overlapping pieces straddling segment boundaries.
        segs.push((0, &data[..SEG]));
        segs.push((SEG as u64 / 2, &data[SEG / 2..SEG / 2 + SEG]));
        segs.push((3 * SEG as u64 - 10, &data[3 * SEG - 10..3 * SEG + 10]));
        for (off, code) in ft::segments(s, "x", &segs).await? {
            assert_eq!(code, ReasonCode::SUCCESS, "{t:?} offset {off}");
        }
        assert_eq!(ft::fin(s, "x", &data).await?, ReasonCode::SUCCESS);
    }
    Ok(())
}

#[tokio::test]
async fn quic_upload_spread_across_two_streams() -> Result<()> {
    let srv = TestServer::start().await?;
    let c = srv.connect(Transport::Quic, "two-streams").await?;
    let mut a = c.open_stream().await?;
    let mut b = c.open_stream().await?;
    let data = content(8 * SEG + 5, 3);
    assert_eq!(
        ft::init(&mut a, "s2", "s2.bin", None).await?,
        ReasonCode::SUCCESS
    );
    let segs = split(&data, SEG);
    let (even, odd): (Vec<_>, Vec<_>) = segs.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let even: Vec<_> = even.into_iter().map(|(_, s)| *s).collect();
    let odd: Vec<_> = odd.into_iter().map(|(_, s)| *s).collect();
    let (ra, rb) = tokio::join!(
        ft::segments(&mut a, "s2", &even),
        ft::segments(&mut b, "s2", &odd)
    );
    assert!(ra?
        .iter()
        .chain(rb?.iter())
        .all(|(_, c)| *c == ReasonCode::SUCCESS));
    assert_eq!(ft::fin(&mut b, "s2", &data).await?, ReasonCode::SUCCESS);
    Ok(())
}

async fn status(s: &mut RawStream, client_id: &str, file_id: &str) -> Result<Response> {
    let topic = format!("$file-response/{client_id}");
    assert_eq!(
        ft::cmd(s, &format!("$file/{file_id}/status"), b"").await?,
        ReasonCode::SUCCESS
    );
    loop {
        let p = s.next_publish_on(&topic).await?;
        let r = Response::parse(&p.payload)?;
        if r.topic.ends_with("/status") {
            return Ok(r);
        }
    }
}

#[tokio::test]
async fn resume_across_a_reconnect_with_status() -> Result<()> {
    let srv = TestServer::start().await?;
    for t in BOTH {
        let id = format!("truck-{t:?}");
        let data = content(6 * SEG, 5);
        let segs = split(&data, SEG);
        {
            let mut c = srv.connect(t, &id).await?;
            let s = c.data().await?;
            assert_eq!(
                ft::init(s, "log", "log.txt", Some(data.len() as u64)).await?,
                ReasonCode::SUCCESS
            );
            // Segments 0, 1 and 4 arrive, then the link dies.
            let sent: Vec<_> = [0, 1, 4].iter().map(|i| segs[*i]).collect();
            assert!(ft::segments(s, "log", &sent)
                .await?
                .iter()
                .all(|(_, c)| *c == ReasonCode::SUCCESS));
            c.kill();
        }
        let mut c = srv.connect(t, &id).await?;
        let s = c.data().await?;
        s.subscribe(&format!("$file-response/{id}"), QoS::AtLeastOnce, 1)
            .await?;
        let st = status(s, &id, "log").await?;
        assert_eq!(st.reason_code, 0, "{st:?}");
        let seg = SEG as u64;
        assert_eq!(
            st.ranges,
            Some(vec![(0, 2 * seg), (4 * seg, 5 * seg)]),
            "{t:?}"
        );
        assert_eq!(st.meta.as_ref().map(|m| m.name.as_str()), Some("log.txt"));
        // fin now: 0x80 with the missing ranges in the response.
        assert_eq!(ft::fin(s, "log", &data).await?, ReasonCode(0x80));
        let r = loop {
            let p = s.next_publish_on(&format!("$file-response/{id}")).await?;
            let r = Response::parse(&p.payload)?;
            if r.topic.contains("/fin/") {
                break r;
            }
        };
        assert_eq!(
            r.missing,
            Some(vec![(2 * seg, 4 * seg), (5 * seg, 6 * seg)])
        );
        // Send only what is missing, finish.
        let rest: Vec<_> = [2, 3, 5].iter().map(|i| segs[*i]).collect();
        assert!(ft::segments(s, "log", &rest)
            .await?
            .iter()
            .all(|(_, c)| *c == ReasonCode::SUCCESS));
        assert_eq!(ft::fin(s, "log", &data).await?, ReasonCode::SUCCESS);
        // fin is idempotent.
        assert_eq!(ft::fin(s, "log", &data).await?, ReasonCode::SUCCESS);
    }
    Ok(())
}

#[tokio::test]
async fn reason_codes_mean_what_design_says() -> Result<()> {
    let srv = TestServer::start_with(|c| c.file_transfer.client_quota = 1024 * 1024).await?;
    for t in BOTH {
        let mut c = srv.connect(t, &format!("rc-{t:?}")).await?;
        let s = c.data().await?;
        // Bad segment checksum: 0x80, nothing stored.
        assert_eq!(
            ft::init(s, "ck", "ck.bin", None).await?,
            ReasonCode::SUCCESS
        );
        let bad = format!("$file/ck/0/{}", sha256_hex(b"something else"));
        assert_eq!(ft::cmd(s, &bad, b"payload").await?, ReasonCode(0x80));
        let good = format!("$file/ck/0/{}", sha256_hex(b"payload"));
        assert_eq!(ft::cmd(s, &good, b"payload").await?, ReasonCode::SUCCESS);
        // Once the range is held, a repeat whose bytes do not match its own checksum is still
        // answered 0x80 (a corrupt send), never 0x00 because the server has those bytes.
        assert_eq!(ft::cmd(s, &bad, b"payload").await?, ReasonCode(0x80));
        assert_eq!(ft::cmd(s, &good, b"payload").await?, ReasonCode::SUCCESS);
        // Bad names: 0x83.
        for name in [
            "../../etc/passwd",
            "..",
            "a/b",
            "c:d",
            "nul\0byte",
            &"x".repeat(241),
        ] {
            assert_eq!(
                ft::init(s, "bad", name, None).await?,
                ReasonCode(0x83),
                "{name:?}"
            );
        }
        // Over the per-client quota: 0x97.
        assert_eq!(
            ft::init(s, "huge", "huge.bin", Some(64 * 1024 * 1024)).await?,
            ReasonCode(0x97)
        );
        // Segment for a transfer the server knows nothing of: 0x10.
        assert_eq!(
            ft::cmd(s, "$file/never-inited/0", b"abc").await?,
            ReasonCode(0x10)
        );
        // Fin with a different checksum than the data: refused.
        assert_eq!(
            ft::init(s, "sum", "sum.bin", None).await?,
            ReasonCode::SUCCESS
        );
        assert_eq!(
            ft::cmd(s, "$file/sum/0", b"abc").await?,
            ReasonCode::SUCCESS
        );
        let code = ft::cmd(s, &format!("$file/sum/fin/3/{}", sha256_hex(b"abd")), b"").await?;
        assert!(code.is_error(), "checksum mismatch at fin: {code}");
        // Abort deletes what was stored: the next segment has no transfer to go to.
        assert_eq!(
            ft::init(s, "ab", "ab.bin", None).await?,
            ReasonCode::SUCCESS
        );
        assert_eq!(ft::cmd(s, "$file/ab/0", b"abc").await?, ReasonCode::SUCCESS);
        assert_eq!(
            ft::cmd(s, "$file/ab/abort", b"").await?,
            ReasonCode::SUCCESS
        );
        assert_eq!(ft::cmd(s, "$file/ab/3", b"def").await?, ReasonCode(0x10));
        // A different init for a live transfer is a conflict.
        assert_eq!(
            ft::init(s, "cf", "one.bin", None).await?,
            ReasonCode::SUCCESS
        );
        assert_eq!(
            ft::init(s, "cf", "one.bin", None).await?,
            ReasonCode::SUCCESS,
            "same init again is fine"
        );
        assert_eq!(ft::init(s, "cf", "two.bin", None).await?, ReasonCode(0x83));
    }
    Ok(())
}

#[tokio::test]
async fn qos0_and_qos2_file_commands_get_an_error_not_silence() -> Result<()> {
    let srv = TestServer::start().await?;
    let mut c = srv.connect(Transport::Tcp, "qos").await?;
    let s = c.data().await?;
    s.subscribe("$file-response/qos", QoS::AtLeastOnce, 1)
        .await?;
    s.send(&publish(
        "$file/q0/init",
        br#"{"name":"a"}"#,
        QoS::AtMostOnce,
        0,
    ))
    .await?;
    let r = Response::parse(&s.next_publish_on("$file-response/qos").await?.payload)?;
    assert_eq!((r.topic.as_str(), r.reason_code), ("$file/q0/init", 0x83));
    s.send(&publish(
        "$file/q2/init",
        br#"{"name":"a"}"#,
        QoS::ExactlyOnce,
        9,
    ))
    .await?;
    let rec = loop {
        match s.recv().await? {
            Packet::PubRec(r) => break r,
            Packet::Publish(p) => s.keep_pub(p).await?,
            other => panic!("{other:?}"),
        }
    };
    assert!(rec.code.is_error());
    let r = Response::parse(&s.next_publish_on("$file-response/qos").await?.payload)?;
    assert_eq!(r.reason_code, 0x83);
    Ok(())
}

#[tokio::test]
async fn file_commands_are_never_routed_and_responses_are_private() -> Result<()> {
    let srv = TestServer::start().await?;
    let mut spy = srv.connect(Transport::Tcp, "spy").await?;
    let d = spy.data().await?;
    d.subscribe("#", QoS::AtLeastOnce, 1).await?;
    assert_eq!(
        d.subscribe("$file/#", QoS::AtLeastOnce, 2).await?,
        [ReasonCode::NOT_AUTHORIZED]
    );
    assert_eq!(
        d.subscribe("$file-response/victim", QoS::AtLeastOnce, 3)
            .await?,
        [ReasonCode::NOT_AUTHORIZED]
    );
    let mut victim = srv.connect(Transport::Quic, "victim").await?;
    ft::upload(
        victim.data().await?,
        "secret",
        "secret.bin",
        b"top secret",
        SEG,
    )
    .await?;
    assert!(
        spy.data()
            .await?
            .try_recv(Duration::from_millis(300))
            .await?
            .is_none(),
        "nothing leaked"
    );
    // A client cannot forge server topics either.
    let code = victim
        .data()
        .await?
        .publish_qos1("$file-response/spy", b"{}", 77)
        .await?
        .code;
    assert_eq!(code, ReasonCode::NOT_AUTHORIZED);
    Ok(())
}

#[tokio::test]
async fn async_mode_with_an_mqtt311_client() -> Result<()> {
    let srv = TestServer::start().await?;
    let (mut c, _) = Conn::open(
        &srv,
        Transport::Tcp,
        connect_packet("legacy-cam", Protocol::V311),
    )
    .await?;
    let s = c.data().await?;
    s.subscribe("$file-response/legacy-cam", QoS::AtLeastOnce, 1)
        .await?;
    let data = content(3 * SEG + 1, 11);
    let mut codes = Vec::new();
    let init = serde_json::json!({"name": "v3.bin", "size": data.len()}).to_string();
    codes.push(ft::cmd(s, "$file-async/v3/init", init.as_bytes()).await?);
    for (off, seg) in split(&data, SEG) {
        codes.push(ft::cmd(s, &format!("$file-async/v3/{off}"), seg).await?);
    }
    codes.push(
        ft::cmd(
            s,
            &format!("$file-async/v3/fin/{}/{}", data.len(), sha256_hex(&data)),
            b"",
        )
        .await?,
    );
    assert!(
        codes.iter().all(|c| *c == ReasonCode::SUCCESS),
        "3.1.1 PUBACKs carry no reason code"
    );
    // Outcomes arrive on the response topic: init, 4 segments, fin — all 0.
    let mut seen = 0;
    while seen < 6 {
        let r = Response::parse(
            &s.next_publish_on("$file-response/legacy-cam")
                .await?
                .payload,
        )?;
        assert_eq!(r.reason_code, 0, "{r:?}");
        seen += 1;
    }
    Ok(())
}

#[tokio::test]
async fn hostile_client_id_stays_inside_the_export_root() -> Result<()> {
    let srv = TestServer::start().await?;
    let id = "../../etc/passwd";
    let mut watcher = srv.connect(Transport::Tcp, "watch").await?;
    watcher
        .data()
        .await?
        .subscribe("$events/file/#", QoS::AtLeastOnce, 1)
        .await?;
    let mut c = srv.connect(Transport::Quic, id).await?;
    ft::upload(c.data().await?, "..", "passwd", b"root:x:0:0", SEG).await?;
    let path = completed_export(watcher.data().await?, "..").await?;
    assert_inside(&export_root(&srv), &path);
    assert_eq!(std::fs::read(&path)?, b"root:x:0:0");
    Ok(())
}

#[tokio::test]
async fn v5_response_topic_and_correlation_data_are_used() -> Result<()> {
    let srv = TestServer::start().await?;
    let mut c = srv.connect(Transport::Quic, "rt").await?;
    let s = c.data().await?;
    s.subscribe("my/answers", QoS::AtLeastOnce, 1).await?;
    let mut p = publish("$file/r1/init", br#"{"name":"r.bin"}"#, QoS::AtLeastOnce, 5);
    if let Packet::Publish(x) = &mut p {
        x.properties.response_topic = Some("my/answers".into());
        x.properties.correlation_data = Some(bytes::Bytes::from_static(b"corr-1"));
    }
    s.send(&p).await?;
    let ack = loop {
        match s.recv().await? {
            Packet::PubAck(a) => break a,
            Packet::Publish(p) => s.keep_pub(p).await?,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(ack, PubResp::new(5, ReasonCode::SUCCESS));
    let got = s.next_publish_on("my/answers").await?;
    assert_eq!(
        got.properties.correlation_data.as_deref(),
        Some(&b"corr-1"[..])
    );
    assert_eq!(Response::parse(&got.payload)?.reason_code, 0);
    Ok(())
}

#[tokio::test]
async fn transfer_files_deleted_under_the_server_mean_restart() -> Result<()> {
    // An operator (or a clean-up job) removes live transfers' files: the server has no usable state
    // any more, which DESIGN §2 answers with 0x10 (restart from 0) — not 0x00 for bytes written into
    // an unlinked file, and not a retry-later code that would never succeed.
    let srv = TestServer::start().await?;
    let store = srv.dir.path().join("transfers");
    let wipe = || -> Result<()> {
        for e in std::fs::read_dir(&store)? {
            std::fs::remove_dir_all(e?.path())?;
        }
        Ok(())
    };
    for t in BOTH {
        let id = format!("gone-{t:?}");
        let mut c = srv.connect(t, &id).await?;
        let s = c.data().await?;
        let data = content(3 * SEG, 11);
        let segs = split(&data, SEG);
        // Complete, then deleted: fin.
        ft::init(s, "f", "f.bin", Some(data.len() as u64)).await?;
        for (_, code) in ft::segments(s, "f", &segs).await? {
            assert_eq!(code, ReasonCode::SUCCESS);
        }
        wipe()?;
        assert_eq!(ft::fin(s, "f", &data).await?, ReasonCode(0x10), "{t:?} fin");
        // Half sent, then deleted: the next segment.
        ft::init(s, "g", "g.bin", Some(data.len() as u64)).await?;
        assert_eq!(
            ft::segments(s, "g", &segs[..1]).await?[0].1,
            ReasonCode::SUCCESS
        );
        wipe()?;
        assert_eq!(
            ft::segments(s, "g", &segs[1..2]).await?[0].1,
            ReasonCode(0x10),
            "{t:?} segment"
        );
        // Starting over works for both.
        ft::upload(s, "f", "f.bin", &data, SEG).await?;
        ft::upload(s, "g", "g.bin", &data, SEG).await?;
    }
    Ok(())
}

/// A whole upload pipelined: init, every segment, fin and a repeated segment are sent before any
/// acknowledgement is read (as a device may, to save round trips; EMQX processes them in order).
/// Every answer is 0x00: the segments wait for their init, fin for the segments before it, the
/// repeat for fin. Over QUIC and TCP, on a multi-threaded runtime like the real server's, where a
/// task spawned last may run first (tokio's LIFO slot): without the ordering a segment overtook
/// its init (0x10) or fin its last segments (0x80).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_upload_pipelined_without_waiting_for_acks() -> Result<()> {
    let srv = TestServer::start().await?;
    for t in BOTH {
        let mut c = srv.connect(t, &format!("pipe-{t:?}")).await?;
        let s = c.data().await?;
        for round in 0..5u64 {
            let data = content(48 * SEG + 1234, round);
            let file_id = format!("p{round}");
            let mut sent = Vec::new();
            let meta = serde_json::json!({ "name": "p.bin", "size": data.len() });
            sent.push((
                format!("$file/{file_id}/init"),
                meta.to_string().into_bytes(),
            ));
            for (off, seg) in split(&data, SEG) {
                sent.push((format!("$file/{file_id}/{off}"), seg.to_vec()));
            }
            let fin = format!("$file/{file_id}/fin/{}/{}", data.len(), sha256_hex(&data));
            sent.push((fin, Vec::new()));
            // After the fin: the transfer is complete by then, so this repeat is answered as one.
            sent.push((format!("$file/{file_id}/0"), data[..SEG].to_vec()));
            let mut by_pkid = std::collections::HashMap::new();
            for (topic, payload) in &sent {
                let id = ft::pkid();
                s.send(&publish(topic, payload, QoS::AtLeastOnce, id))
                    .await?;
                by_pkid.insert(id, topic.clone());
            }
            while !by_pkid.is_empty() {
                match s.recv().await? {
                    Packet::PubAck(a) => {
                        let topic = by_pkid.remove(&a.pkid).context("unexpected PUBACK")?;
                        assert_eq!(a.code, ReasonCode::SUCCESS, "{t:?} round {round}: {topic}");
                    }
                    Packet::Publish(p) => s.keep_pub(p).await?,
                    other => anyhow::bail!("expected PUBACK, got {other:?}"),
                }
            }
        }
    }
    Ok(())
}
