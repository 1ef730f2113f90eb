//! The device SDK's uploads against a real server (issue 4): pipelined, resumable across server
//! restarts and device restarts, parallel on one connection, pausable and cancellable, MQTT 5
//! (`$file/`) and 3.1.1 (`$file-async/`).

mod sdk;

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use quicft_client::{Client, Transport, UploadOptions};

use quicft_tests::ft::sha256_hex;
use quicft_tests::{within, TestServer};

#[tokio::test]
async fn upload_completes_and_is_byte_identical() -> Result<()> {
    within(Duration::from_secs(120), async {
        let server = TestServer::start().await?;
        let files = tempfile::tempdir()?;
        for (i, t) in [Transport::Quic, Transport::Tls, Transport::Tcp]
            .into_iter()
            .enumerate()
        {
            let client_id = format!("dev-{t}");
            let (path, data) =
                sdk::write_file(files.path(), &format!("f{i}.bin"), 3 << 20, i as u64)?;
            let client = Client::connect(sdk::options(&server, t, &client_id)).await?;
            let upload = client
                .upload(path.as_path(), UploadOptions::default())
                .await?;
            let file_id = upload.file_id().to_owned();
            let report = upload.wait().await?;
            ensure!(
                report.bytes == data.len() as u64 && report.transport == t,
                "{report:?}"
            );
            ensure!(report.sha256 == sha256_hex(&data));
            let export = sdk::export_path(
                server.dir.path(),
                &client_id,
                &file_id,
                &format!("f{i}.bin"),
            );
            ensure!(
                std::fs::read(&export).context("export")? == data,
                "{t}: export differs"
            );
            client.disconnect().await?;
        }
        Ok(())
    })
    .await
}

/// Waits until the upload's server-held bytes reach `at`.
async fn acked_at_least(upload: &quicft_client::Upload, at: u64) -> Result<()> {
    let mut p = upload.progress();
    tokio::time::timeout(Duration::from_secs(60), p.wait_for(|p| p.bytes_acked >= at))
        .await
        .context("upload made no progress")??;
    Ok(())
}

#[tokio::test]
async fn upload_survives_two_server_restarts() -> Result<()> {
    within(Duration::from_secs(180), async {
        for t in [Transport::Quic, Transport::Tcp] {
            let mut server = sdk::Restartable::start().await?;
            let files = tempfile::tempdir()?;
            let size = 24 << 20;
            let (path, data) = sdk::write_file(files.path(), "big.bin", size, 7)?;
            let client_id = format!("restart-{t}");
            let client = Client::connect(sdk::options(&server, t, &client_id)).await?;
            let window = 2 << 20;
            let options = UploadOptions {
                window,
                segment_size: Some(256 << 10),
                ..UploadOptions::default()
            };
            let upload = client.upload(path.as_path(), options).await?;
            let file_id = upload.file_id().to_owned();
            for third in 1..=2u64 {
                acked_at_least(&upload, size as u64 * third / 3).await?;
                server.restart().await?;
            }
            let report = upload.wait().await?;
            let export = sdk::export_path(server.dir.path(), &client_id, &file_id, "big.bin");
            ensure!(
                std::fs::read(&export).context("export")? == data,
                "{t}: export differs"
            );
            ensure!(report.reconnects >= 2, "{t}: {report:?}");
            // Only what was in flight at each restart may go twice.
            ensure!(
                report.bytes_resent <= 2 * window as u64,
                "{t}: re-sent {} > 2 windows",
                report.bytes_resent
            );
            eprintln!("{t}: {report:?}");
        }
        Ok(())
    })
    .await
}

/// A UDP port with nothing behind it: bound, read, then closed.
fn dead_udp_port() -> Result<u16> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
    Ok(s.local_addr()?.port())
}

#[tokio::test]
async fn falls_back_to_tls_when_quic_is_unreachable() -> Result<()> {
    within(Duration::from_secs(120), async {
        let server = TestServer::start().await?;
        let files = tempfile::tempdir()?;
        let (path, data) = sdk::write_file(files.path(), "fb.bin", 2 << 20, 3)?;
        // QUIC to a UDP port nobody listens on: no answer at all, only the head start runs out.
        let mut o = sdk::auto(&server, "fallback-1");
        o.port = Some(dead_udp_port()?);
        o.fallback_delay = Duration::from_millis(200);
        let started = std::time::Instant::now();
        let client = Client::connect(o).await?;
        ensure!(
            client.info().transport == Transport::Tls,
            "{:?}",
            client.info()
        );
        ensure!(
            started.elapsed() < Duration::from_secs(5),
            "fallback took {:?}",
            started.elapsed()
        );
        let upload = client
            .upload(path.as_path(), UploadOptions::default())
            .await?;
        let file_id = upload.file_id().to_owned();
        let report = upload.wait().await?;
        ensure!(report.transport == Transport::Tls);
        let export = sdk::export_path(server.dir.path(), "fallback-1", &file_id, "fb.bin");
        ensure!(std::fs::read(export)? == data);
        client.disconnect().await?;

        // A server with QUIC switched off, plain TCP as the fallback.
        let server = TestServer::start_with(|c| c.listeners.quic = None).await?;
        let mut o = sdk::options(&server, Transport::Tcp, "fallback-2");
        o.transport = Transport::Quic;
        o.port = Some(dead_udp_port()?);
        o.fallback = Some(Transport::Tcp);
        o.fallback_port = Some(server.addr(quicft_tests::Transport::Tcp).port());
        let client = Client::connect(o).await?;
        ensure!(client.info().transport == Transport::Tcp);
        let report = client
            .upload(path.as_path(), UploadOptions::default())
            .await?
            .wait()
            .await?;
        ensure!(report.bytes == data.len() as u64);

        // With QUIC answering, QUIC wins the race.
        let client = Client::connect(sdk::auto(&server_with_quic().await?, "fallback-3")).await?;
        ensure!(client.info().transport == Transport::Quic);
        Ok(())
    })
    .await
}

async fn server_with_quic() -> Result<TestServer> {
    TestServer::start().await
}

#[tokio::test]
async fn parallel_uploads_share_one_connection() -> Result<()> {
    within(Duration::from_secs(120), async {
        let server = TestServer::start().await?;
        let files = tempfile::tempdir()?;
        let client = Client::connect(sdk::options(&server, Transport::Quic, "parallel")).await?;
        let mut uploads = Vec::new();
        for i in 0..4u64 {
            let name = format!("p{i}.bin");
            let (path, data) =
                sdk::write_file(files.path(), &name, (2 << 20) + i as usize * 4099, 10 + i)?;
            // One of them spread over three streams.
            let streams = if i == 0 { 3 } else { 1 };
            let opts = UploadOptions {
                streams,
                segment_size: Some(64 << 10),
                ..UploadOptions::default()
            };
            let upload = client.upload(path.as_path(), opts).await?;
            uploads.push((name, data, upload));
        }
        let mut waits = Vec::new();
        for (name, data, upload) in uploads {
            let file_id = upload.file_id().to_owned();
            waits.push((name, data, file_id, tokio::spawn(upload.wait())));
        }
        for (name, data, file_id, wait) in waits {
            let report = wait.await??;
            let export = sdk::export_path(server.dir.path(), "parallel", &file_id, &name);
            ensure!(std::fs::read(export)? == data, "{name} differs");
            ensure!(report.reconnects == 0);
        }
        ensure!(client.reconnects() == 0);
        Ok(())
    })
    .await
}

/// A reader that yields `data` slowly, so that pausing and cancelling happen mid-way.
fn slow_reader(data: Vec<u8>) -> impl tokio::io::AsyncRead + Send + Unpin + 'static {
    let (mut w, r) = tokio::io::duplex(64 << 10);
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for chunk in data.chunks(64 << 10) {
            if w.write_all(chunk).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    r
}

#[tokio::test]
async fn pause_resume_and_cancel() -> Result<()> {
    within(Duration::from_secs(120), async {
        let server = TestServer::start().await?;
        let client = Client::connect(sdk::options(&server, Transport::Quic, "pause")).await?;

        // Pause: once the window drains, nothing more is sent until resume.
        let data = quicft_tests::ft::content(8 << 20, 21);
        let opts = UploadOptions {
            file_id: Some("paused".into()),
            name: Some("paused.bin".into()),
            window: 512 << 10,
            segment_size: Some(64 << 10),
            ..UploadOptions::default()
        };
        let upload = client
            .upload(
                quicft_client::UploadSource::reader(
                    slow_reader(data.clone()),
                    Some(data.len() as u64),
                ),
                opts,
            )
            .await?;
        acked_at_least(&upload, 1 << 20).await?;
        upload.pause();
        let mut p = upload.progress();
        tokio::time::timeout(
            Duration::from_secs(10),
            p.wait_for(|p| p.state == quicft_client::UploadState::Paused),
        )
        .await??;
        // In-flight segments may still complete; after that the count stands still.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sent = upload.progress().borrow().bytes_sent;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let p = upload.progress().borrow().clone();
        ensure!(
            p.bytes_sent == sent && p.bytes_acked < data.len() as u64,
            "sent while paused: {p:?}"
        );
        upload.resume();
        let report = upload.wait().await?;
        ensure!(report.bytes == data.len() as u64);
        let export = sdk::export_path(server.dir.path(), "pause", "paused", "paused.bin");
        ensure!(std::fs::read(export)? == data);

        // Cancel: the transfer is aborted on the server and nothing is exported.
        let opts = UploadOptions {
            file_id: Some("cancelled".into()),
            name: Some("c.bin".into()),
            window: 512 << 10,
            segment_size: Some(64 << 10),
            ..UploadOptions::default()
        };
        let upload = client
            .upload(
                quicft_client::UploadSource::reader(slow_reader(data.clone()), None),
                opts,
            )
            .await?;
        acked_at_least(&upload, 1 << 20).await?;
        upload.cancel().await?;
        let status = client.file_status("cancelled").await?;
        ensure!(
            status.reason_code == 0x10 && status.state.as_deref() == Some("unknown"),
            "{status:?}"
        );
        ensure!(!sdk::export_path(server.dir.path(), "pause", "cancelled", "c.bin").exists());
        Ok(())
    })
    .await
}

/// A device that dies mid-upload and starts again (new process: nothing in memory) resumes the
/// same transfer: the file id is derived from the file, status tells what the server holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_device_resumes_from_the_server_status() -> Result<()> {
    within(Duration::from_secs(120), async {
        let server = TestServer::start().await?;
        let files = tempfile::tempdir()?;
        let size = 16 << 20;
        let (path, data) = sdk::write_file(files.path(), "resume.bin", size, 5)?;
        let options = sdk::options(&server, Transport::Quic, "device-9");
        let window = 1 << 20;
        let opts = UploadOptions {
            window,
            ..UploadOptions::default()
        };

        // "Process" one: its own runtime, dropped mid-upload like a crash.
        let (o1, p1, opts1) = (options.clone(), path.clone(), opts.clone());
        // (Off the test's runtime, which serves the server meanwhile.)
        let held_before = tokio::task::spawn_blocking(move || -> Result<u64> {
            let rt = tokio::runtime::Runtime::new()?;
            let held = rt.block_on(async move {
                let client = Client::connect(o1).await?;
                let upload = client.upload(p1.as_path(), opts1).await?;
                acked_at_least(&upload, size as u64 / 2).await?;
                anyhow::Ok(upload.progress().borrow().bytes_acked)
            })?;
            rt.shutdown_background();
            Ok(held)
        })
        .await??;

        let file_id = quicft_client::derive_file_id(&path)?;
        let client = Client::connect(options).await?;
        // Segments that reached the server before the "crash" may still be committing: wait until
        // what it holds stops changing, so that the resumed upload sees the same.
        let mut held = u64::MAX;
        loop {
            let status = client.file_status(&file_id).await?;
            let now: u64 = status.ranges.iter().flatten().map(|(a, b)| b - a).sum();
            if now == held {
                break;
            }
            held = now;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        ensure!(
            held >= held_before,
            "server holds {held}, {held_before} were acknowledged"
        );
        let upload = client.upload(path.as_path(), opts).await?;
        ensure!(upload.file_id() == file_id);
        let report = upload.wait().await?;
        let export = sdk::export_path(server.dir.path(), "device-9", &file_id, "resume.bin");
        ensure!(std::fs::read(export)? == data);
        // Only what the server lacked went out again.
        ensure!(
            report.bytes_sent == size as u64 - held,
            "sent {} of {size}, server held {held}",
            report.bytes_sent
        );
        eprintln!("held {held} of {size} at restart; {report:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn mqtt_311_uses_async_commands() -> Result<()> {
    within(Duration::from_secs(120), async {
        let server = TestServer::start().await?;
        let files = tempfile::tempdir()?;
        let (path, data) = sdk::write_file(files.path(), "old.bin", (1 << 20) + 17, 8)?;
        for t in [Transport::Quic, Transport::Tcp] {
            let client_id = format!("v311-{t}");
            let mut o = sdk::options(&server, t, &client_id);
            o.protocol = quicft_client::Protocol::V311;
            let client = Client::connect(o).await?;
            let opts = UploadOptions {
                segment_size: Some(100_000),
                ..UploadOptions::default()
            };
            let upload = client.upload(path.as_path(), opts).await?;
            let file_id = upload.file_id().to_owned();
            upload.wait().await?;
            let export = sdk::export_path(server.dir.path(), &client_id, &file_id, "old.bin");
            ensure!(std::fs::read(export)? == data, "{t}");
        }
        Ok(())
    })
    .await
}

/// `quicft_file_commands_total` by reason code, from the server's /metrics.
async fn file_commands(server: &TestServer) -> Result<Vec<(String, u64)>> {
    use tower::ServiceExt;
    let request = axum::http::Request::get("/metrics").body(axum::body::Body::empty())?;
    let response = server.api().oneshot(request).await?;
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await?;
    let text = String::from_utf8(body.to_vec())?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("quicft_file_commands_total{code=\""))
        .filter_map(|l| {
            let (code, n) = l.split_once("\"} ")?;
            Some((code.to_owned(), n.trim().parse().ok()?))
        })
        .collect())
}

/// A fresh upload asks one question before its first segment: status carries init's metadata, and
/// the server inits a transfer it does not know in that round trip (no status 0x10, then init).
/// A finished file under the same id is still reported, not replaced by another file.
#[tokio::test]
async fn fresh_upload_inits_with_its_status() -> Result<()> {
    within(Duration::from_secs(60), async {
        let server = TestServer::start().await?;
        let files = tempfile::tempdir()?;
        let (path, data) = sdk::write_file(files.path(), "one.bin", 1000, 3)?;
        let client = Client::connect(sdk::options(&server, Transport::Quic, "fresh")).await?;
        let options = UploadOptions {
            file_id: Some("same-id".into()),
            ..UploadOptions::default()
        };
        let report = client
            .upload(path.as_path(), options.clone())
            .await?
            .wait()
            .await?;
        ensure!(report.bytes == data.len() as u64, "{report:?}");
        // status (which inits), one segment, fin: three commands, all 0x00.
        let counts = file_commands(&server).await?;
        ensure!(counts == [("0x00".to_owned(), 3)], "{counts:?}");

        let (other, _) = sdk::write_file(files.path(), "other.bin", 2000, 4)?;
        let err = client
            .upload(other.as_path(), options)
            .await?
            .wait()
            .await
            .err()
            .context("another file under a finished file's id was accepted")?;
        ensure!(err.to_string().contains("different file"), "{err}");
        let export = sdk::export_path(server.dir.path(), "fresh", "same-id", "one.bin");
        ensure!(std::fs::read(&export)? == data, "the finished file changed");
        client.disconnect().await?;
        Ok(())
    })
    .await
}

/// Round trips of a small upload: status (which inits the transfer), then the segment with fin
/// right behind it: two, where status, init, the segment and fin took four. Through a link with
/// 300 ms each way, so that a round trip is far longer than the work on either side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_upload_takes_two_round_trips() -> Result<()> {
    within(Duration::from_secs(60), async {
        let server = TestServer::start().await?;
        let rtt = Duration::from_millis(600);
        let way = sdk::Shape {
            rate_bps: 100e6,
            queue: Duration::from_secs(1),
            delay: rtt / 2,
        };
        let port = sdk::link(server.addr(quicft_tests::Transport::Quic), way, way).await?;
        let mut o = sdk::options(&server, Transport::Quic, "round-trips");
        o.port = Some(port);
        let client = Client::connect(o).await?;
        // The response subscription, sent at connect on the telemetry stream, is in place once a
        // later QoS 1 publish on that stream is acknowledged.
        client
            .publish("t/warm", "1", quicft_client::QoS::AtLeastOnce)
            .await?;
        let files = tempfile::tempdir()?;
        let (path, data) = sdk::write_file(files.path(), "small.bin", 1000, 5)?;
        let started = std::time::Instant::now();
        let report = client
            .upload(path.as_path(), UploadOptions::default())
            .await?
            .wait()
            .await?;
        let rtts = started.elapsed().as_secs_f64() / rtt.as_secs_f64();
        ensure!(report.bytes == data.len() as u64, "{report:?}");
        eprintln!("round trips: {rtts:.3}");
        ensure!(
            (1.9..2.5).contains(&rtts),
            "the upload took {rtts:.2} round trips"
        );
        client.disconnect().await?;
        Ok(())
    })
    .await
}
