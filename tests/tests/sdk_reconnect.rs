//! The SDK's reconnect (issue 4): backoff until the server is back, subscriptions that keep
//! delivering across the drop, whether the server kept the session or not.

mod sdk;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use quicft_client::{Client, ConnectionState, QoS, Transport};
use quicft_tests::TestServer;
use tokio::net::{TcpListener, TcpStream};

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
}

/// The server restarts and forgets every session: the SDK reconnects with backoff and subscribes
/// again, over QUIC, so the subscription keeps delivering.
#[tokio::test]
async fn subscriptions_are_restored_after_a_server_restart() -> Result<()> {
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
}

/// Reconnecting switched off: the client closes with its connection.
#[tokio::test]
async fn without_reconnect_the_client_closes() -> Result<()> {
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
}
