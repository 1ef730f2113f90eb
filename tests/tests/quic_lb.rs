//! QUIC-LB routable connection ids (`[cluster] server_id`): the test stands where a QUIC-LB load
//! balancer would, as a UDP relay between a real quinn client and the server, and decodes the
//! server id from the destination connection id of every packet the client sends, across several
//! client migrations (each makes the client switch to a fresh server-issued connection id).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use quicft_proto::Packet;
use quicft_server::quic_lb::{ClusterConfig, QuicLb};
use quicft_tests::{connect, Target, TestServer, Transport};
use tokio::net::UdpSocket;

const SERVER_ID: [u8; 3] = [0xc0, 0xff, 0xee];
const ROTATION: u8 = 1;
/// First octet + server id + nonce.
const CID_LEN: usize = 1 + 3 + 8;

/// Every destination connection id the client sent, with whether it came in a long header.
type Seen = Arc<Mutex<Vec<(bool, Vec<u8>)>>>;

fn dcid(packet: &[u8]) -> Option<(bool, Vec<u8>)> {
    let first = *packet.first()?;
    if first & 0x80 != 0 {
        let len = usize::from(*packet.get(5)?);
        Some((true, packet.get(6..6 + len)?.to_vec()))
    } else {
        Some((false, packet.get(1..1 + CID_LEN)?.to_vec()))
    }
}

/// A UDP relay on 127.0.0.1: a new upstream socket per client address, as a load balancer that
/// forwards would have; records the client's destination connection ids.
async fn relay(server: SocketAddr, seen: Seen) -> Result<SocketAddr> {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    let addr = front.local_addr()?;
    tokio::spawn(async move {
        let mut up: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = front.recv_from(&mut buf).await {
            let Some(pkt) = buf.get(..n) else { continue };
            if let Some(d) = dcid(pkt) {
                seen.lock().expect("lock").push(d);
            }
            let sock = match up.get(&from) {
                Some(s) => s.clone(),
                None => {
                    let Ok(s) = UdpSocket::bind("127.0.0.1:0").await else {
                        continue;
                    };
                    let s = Arc::new(s);
                    if s.connect(server).await.is_err() {
                        continue;
                    }
                    let (back, front2, s2) = (from, front.clone(), s.clone());
                    tokio::spawn(async move {
                        let mut b = vec![0u8; 65536];
                        while let Ok(n) = s2.recv(&mut b).await {
                            let _ = front2.send_to(&b[..n], back).await;
                        }
                    });
                    up.insert(from, s.clone());
                    s
                }
            };
            let _ = sock.send(pkt).await;
        }
    });
    Ok(addr)
}

/// The server as reached through the relay.
struct ViaRelay<'a> {
    relay: SocketAddr,
    server: &'a TestServer,
}

impl Target for ViaRelay<'_> {
    fn addr(&self, _: Transport) -> SocketAddr {
        self.relay
    }
    fn ca(&self) -> PathBuf {
        self.server.ca()
    }
}

#[tokio::test]
async fn every_connection_id_the_client_uses_carries_the_server_id() -> Result<()> {
    let server = TestServer::start_with(|c| {
        c.cluster = ClusterConfig {
            server_id: Some(hex::encode(SERVER_ID)),
            config_rotation: ROTATION,
            nonce_len: Some(8),
        }
    })
    .await?;
    let seen: Seen = Arc::default();
    let relay = relay(server.addr(Transport::Quic), seen.clone()).await?;
    let target = ViaRelay {
        relay,
        server: &server,
    };
    let mut c = connect(&target, Transport::Quic, "lb-dev").await?;
    for _ in 0..4 {
        // A migration: the client moves to a new port and must use a new connection id there.
        let ep = c.quic_endpoint().expect("quic");
        ep.rebind(std::net::UdpSocket::bind("127.0.0.1:0")?)?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.ctl.send(&Packet::PingReq).await?;
        assert_eq!(c.ctl.recv().await?, Packet::PingResp);
    }
    c.disconnect().await?;
    let seen = seen.lock().expect("lock").clone();
    // The client's very first Initial packets carry the id it chose itself (unroutable by design:
    // a load balancer's fallback routes them); every later one must decode to this server.
    let first = seen.first().map(|(_, d)| d.clone()).expect("packets");
    let mut short = 0;
    let mut distinct = std::collections::HashSet::new();
    for (long, d) in &seen {
        if *long && *d == first {
            continue;
        }
        assert_eq!(d.len(), CID_LEN, "{d:02x?}");
        assert_eq!(
            QuicLb::decode(d, ROTATION, SERVER_ID.len()),
            Some(&SERVER_ID[..]),
            "connection id {d:02x?} does not route to this server"
        );
        short += usize::from(!*long);
        distinct.insert(d.clone());
    }
    assert!(short > 10, "short-header packets: {short}");
    assert!(
        distinct.len() >= 4,
        "the client moved through {} connection ids",
        distinct.len()
    );
    Ok(())
}
