//! The SDK's reconnect (issue 4): backoff until the server is back, subscriptions that keep
//! delivering across the drop, whether the server kept the session or not, and a QUIC upload that
//! carries on over the resumed session.

mod sdk;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use quicft_client::UploadOptions;
use quicft_client::{Client, ConnectionState, QoS, Transport};
use quicft_tests::{within, TestServer};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// A TCP forwarder to `to` whose live connections can be cut (the listener stays).
struct Proxy {
    port: u16,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(to: std::net::SocketAddr) -> Result<Proxy> {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        let port = l.local_addr()?.port();
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let c2 = conns.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = l.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut out) = TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                c2.lock().expect("lock").push(task);
            }
        });
        Ok(Proxy { port, conns })
    }

    /// Drops every forwarded connection: both peers see a reset/EOF.
    fn cut(&self) {
        for t in self.conns.lock().expect("lock").drain(..) {
            t.abort();
        }
    }
}

async fn wait_state(client: &Client, want: impl Fn(&ConnectionState) -> bool) -> Result<()> {
    let mut changes = client.state_changes();
    let wait = async {
        loop {
            if want(&client.state()) {
                return;
            }
            if changes.next().await.is_none() {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .context("state not reached")?;
    Ok(())
}

/// With a session that outlives the connection, messages published while the device was away are
/// delivered after the reconnect on the resumed session, to the subscription made before the drop
/// (not acknowledged and dropped for want of a route).
#[tokio::test]
async fn resumed_session_delivers_what_queued_while_away() -> Result<()> {
    within(Duration::from_secs(60), async {
        let server = TestServer::start().await?;
        let proxy = Proxy::start(server.addr(quicft_tests::Transport::Tcp)).await?;
        let mut o = sdk::options(&server, Transport::Tcp, "resume-sub");
        o.port = Some(proxy.port);
        o.session_expiry = Some(300);
        let device = Client::connect(o).await?;
        let mut sub = device
            .subscribe("cmd/resume-sub/#", QoS::AtLeastOnce)
            .await?;
        let cloud = Client::connect(sdk::options(&server, Transport::Quic, "cloud")).await?;

        proxy.cut();
        wait_state(&device, |s| !matches!(s, ConnectionState::Connected(_))).await?;
        // While away (the server may not have noticed yet: publish until the reconnect, QoS 1).
        cloud
            .publish("cmd/resume-sub/1", "while away", QoS::AtLeastOnce)
            .await?;
        wait_state(&device, |s| matches!(s, ConnectionState::Connected(_))).await?;
        ensure!(
            device.info().session_present,
            "the session was resumed: {:?}",
            device.info()
        );
        ensure!(device.reconnects() == 1);
        let msg = tokio::time::timeout(Duration::from_secs(10), sub.recv()).await??;
        ensure!(&msg.payload[..] == b"while away");
        cloud
            .publish("cmd/resume-sub/2", "after", QoS::AtLeastOnce)
            .await?;
        let msg = tokio::time::timeout(Duration::from_secs(10), sub.recv()).await??;
        ensure!(&msg.payload[..] == b"after");
        Ok(())
    })
    .await
}

/// The server restarts and forgets every session: the SDK reconnects with backoff and subscribes
/// again, over QUIC, so the subscription keeps delivering.
#[tokio::test]
async fn subscriptions_are_restored_after_a_server_restart() -> Result<()> {
    within(Duration::from_secs(60), async {
        let mut server = sdk::Restartable::start().await?;
        let device = Client::connect(sdk::options(&server, Transport::Quic, "restore-sub")).await?;
        let mut sub = device
            .subscribe("cmd/restore-sub", QoS::AtLeastOnce)
            .await?;
        server.restart().await?;
        wait_state(&device, |s| matches!(s, ConnectionState::Connected(_))).await?;
        tokio::time::timeout(Duration::from_secs(20), async {
            while device.reconnects() == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await?;
        let cloud = Client::connect(sdk::options(&server, Transport::Tcp, "cloud")).await?;
        // The re-subscription runs in the background right after the reconnect: retry until routed.
        let got = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                cloud
                    .publish("cmd/restore-sub", "again", QoS::AtLeastOnce)
                    .await?;
                if let Ok(m) = tokio::time::timeout(Duration::from_millis(300), sub.recv()).await {
                    return anyhow::Ok(m?);
                }
            }
        })
        .await??;
        ensure!(&got.payload[..] == b"again");
        ensure!(device.info().transport == Transport::Quic);
        Ok(())
    })
    .await
}

/// Reconnecting switched off: the client closes with its connection.
#[tokio::test]
async fn without_reconnect_the_client_closes() -> Result<()> {
    within(Duration::from_secs(60), async {
        let server = TestServer::start().await?;
        let proxy = Proxy::start(server.addr(quicft_tests::Transport::Tcp)).await?;
        let mut o = sdk::options(&server, Transport::Tcp, "no-reconnect");
        o.port = Some(proxy.port);
        o.reconnect = None;
        let device = Client::connect(o).await?;
        proxy.cut();
        let reason = tokio::time::timeout(Duration::from_secs(10), device.closed()).await?;
        ensure!(
            matches!(reason, quicft_client::CloseReason::Transport(_)),
            "{reason:?}"
        );
        ensure!(device.publish("x", "y", QoS::AtLeastOnce).await.is_err());
        Ok(())
    })
    .await
}

/// A UDP forwarder to `to` (one upstream socket per device address, as a NAT would) that can
/// black-hole everything, both ways: a QUIC path that goes silent, as a tunnel or a cell handover
/// does, while the server keeps the session.
struct UdpProxy {
    port: u16,
    blocked: Arc<AtomicBool>,
}

impl UdpProxy {
    async fn start(to: std::net::SocketAddr) -> Result<UdpProxy> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let port = front.local_addr()?.port();
        let blocked = Arc::new(AtomicBool::new(false));
        let b = blocked.clone();
        tokio::spawn(async move {
            let mut backs: HashMap<std::net::SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut buf = vec![0u8; 1 << 16];
            while let Ok((n, from)) = front.recv_from(&mut buf).await {
                if b.load(Ordering::SeqCst) {
                    continue;
                }
                let back = match backs.get(&from) {
                    Some(s) => s.clone(),
                    None => {
                        let Ok(s) = UdpSocket::bind("127.0.0.1:0").await else {
                            continue;
                        };
                        if s.connect(to).await.is_err() {
                            continue;
                        }
                        let s = Arc::new(s);
                        let (s2, front2, b2) = (s.clone(), front.clone(), b.clone());
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 1 << 16];
                            while let Ok(n) = s2.recv(&mut buf).await {
                                if !b2.load(Ordering::SeqCst) {
                                    let _ = front2.send_to(&buf[..n], from).await;
                                }
                            }
                        });
                        backs.insert(from, s.clone());
                        s
                    }
                };
                let _ = back.send(&buf[..n]).await;
            }
        });
        Ok(UdpProxy { port, blocked })
    }

    fn block(&self, on: bool) {
        self.blocked.store(on, Ordering::SeqCst);
    }
}

/// A QUIC path goes silent mid-upload; the device notices (idle timeout), reconnects with
/// clean_start=false and gets its session back (session present: no re-SUBSCRIBE of
/// `$file-response/…`). Its upload then asks `status` and sends only what the server lacks.
///
/// The server quirk this covers: it cannot see a QUIC data stream until the stream carries a byte,
/// and it holds deliveries of a resumed session (the status answer, the responses left
/// unacknowledged by the dead connection) until it knows a data stream. The SDK announces its
/// telemetry stream with a PINGREQ right after CONNACK and routes deliveries by subscription
/// whatever stream they arrive on, so the status answer must come back without a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_upload_continues_on_the_resumed_session() -> Result<()> {
    within(Duration::from_secs(120), async {
        let server = TestServer::start().await?;
        let proxy = UdpProxy::start(server.addr(quicft_tests::Transport::Quic)).await?;
        let files = tempfile::tempdir()?;
        let size = 16 << 20;
        let (path, data) = sdk::write_file(files.path(), "resume.bin", size, 33)?;
        let mut o = sdk::options(&server, Transport::Quic, "resume-quic");
        o.port = Some(proxy.port);
        o.session_expiry = Some(300);
        // Notice the silent path within seconds (the default is a minute); the server takes the
        // smaller of both idle timeouts too.
        o.quic.idle_timeout = Duration::from_secs(2);
        o.quic.keep_alive_interval = Some(Duration::from_millis(300));
        let device = Client::connect(o).await?;
        ensure!(!device.info().session_present);
        let window = 2 << 20;
        let opts = UploadOptions {
            window,
            segment_size: Some(256 << 10),
            ..UploadOptions::default()
        };
        let upload = device.upload(path.as_path(), opts).await?;
        let file_id = upload.file_id().to_owned();
        let mut progress = upload.progress();
        progress
            .wait_for(|p| p.bytes_acked >= size as u64 / 3)
            .await?;

        proxy.block(true);
        wait_state(&device, |s| !matches!(s, ConnectionState::Connected(_))).await?;
        let held_at_drop = progress.borrow().bytes_acked;
        ensure!(held_at_drop < size as u64, "finished before the drop");
        proxy.block(false);
        wait_state(&device, |s| matches!(s, ConnectionState::Connected(_))).await?;
        let info = device.info();
        ensure!(
            info.session_present && info.transport == Transport::Quic,
            "the session was not resumed over QUIC: {info:?}"
        );

        let started = std::time::Instant::now();
        let report = upload.wait().await?;
        // A status answer lost to the stream quirk would cost the 30 s response timeout.
        ensure!(
            started.elapsed() < Duration::from_secs(20),
            "resumed upload took {:?}",
            started.elapsed()
        );
        let export = sdk::export_path(server.dir.path(), "resume-quic", &file_id, "resume.bin");
        ensure!(std::fs::read(export)? == data, "export differs");
        ensure!(report.reconnects == 1, "{report:?}");
        // Only what was in flight (unacknowledged) at the drop went twice.
        ensure!(
            report.bytes_resent <= window as u64
                && report.bytes_sent <= size as u64 + window as u64,
            "re-sent more than the window: {report:?}"
        );
        eprintln!("held {held_at_drop} at the drop; {report:?}");
        Ok(())
    })
    .await
}

/// The server quirk on its own: a device that only listens resumes its QUIC session and must get
/// what was queued while it was away although it publishes nothing. The server holds deliveries
/// until it knows a data stream, and a stream is invisible to it until it carries a byte; the SDK
/// announces its telemetry stream (PINGREQ) right after CONNACK for exactly this.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_resumed_session_delivers_to_a_silent_device() -> Result<()> {
    within(Duration::from_secs(60), async {
        let server = TestServer::start().await?;
        let proxy = UdpProxy::start(server.addr(quicft_tests::Transport::Quic)).await?;
        let mut o = sdk::options(&server, Transport::Quic, "resume-quiet");
        o.port = Some(proxy.port);
        o.session_expiry = Some(300);
        o.quic.idle_timeout = Duration::from_secs(2);
        o.quic.keep_alive_interval = Some(Duration::from_millis(300));
        let device = Client::connect(o).await?;
        let mut sub = device
            .subscribe("cmd/resume-quiet/#", QoS::AtLeastOnce)
            .await?;
        let cloud = Client::connect(sdk::options(&server, Transport::Tcp, "cloud-q")).await?;

        proxy.block(true);
        wait_state(&device, |s| !matches!(s, ConnectionState::Connected(_))).await?;
        cloud
            .publish("cmd/resume-quiet/1", "while away", QoS::AtLeastOnce)
            .await?;
        proxy.block(false);
        wait_state(&device, |s| matches!(s, ConnectionState::Connected(_))).await?;
        ensure!(
            device.info().session_present && device.info().transport == Transport::Quic,
            "{:?}",
            device.info()
        );
        let msg = tokio::time::timeout(Duration::from_secs(10), sub.recv())
            .await
            .context("nothing delivered on the resumed QUIC session")??;
        ensure!(&msg.payload[..] == b"while away");
        Ok(())
    })
    .await
}
