//! The client's side of the QUIC stream mapping (DESIGN §3), checked against a scripted server made
//! of quinn and the proto codec: CONNECT, PINGREQ and DISCONNECT only on the first stream; PUBLISH
//! and SUBSCRIBE on data streams with their acks on the same stream; a new stream per opened channel;
//! QoS 1/2 publishes pipelined up to the server's Receive Maximum and no further.
//!
//! The real broker's behaviour is tested in `tests/` against quicft-server; this only pins what the
//! client sends where.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quicft_client::{CaSource, ChannelKind, Client, ClientOptions, QoS, Transport};
use quicft_proto::{ConnAck, Packet, Properties, Protocol, PubResp, Publish, ReasonCode, SubAck};

/// (stream index in accept order, packet name) for every packet the server received.
type Log = Arc<Mutex<Vec<(usize, &'static str)>>>;

struct Server {
    addr: std::net::SocketAddr,
    ca_pem: String,
    log: Log,
    /// Most QoS 1/2 PUBLISHes that were unacknowledged at once.
    max_outstanding: Arc<AtomicUsize>,
}

const RECEIVE_MAXIMUM: u16 = 3;

async fn start_server() -> anyhow::Result<Server> {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let cert_der = certified.cert.der().clone();
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(
        rustls::pki_types::PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()),
    );
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert_der], key_der)?;
    tls.alpn_protocols = vec![b"mqtt".to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse()?)?;
    let addr = endpoint.local_addr()?;
    let log: Log = Arc::default();
    let max_outstanding = Arc::new(AtomicUsize::new(0));
    let (log2, max2) = (log.clone(), max_outstanding.clone());
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let Ok(conn) = incoming.await else { continue };
            tokio::spawn(serve(conn, log2.clone(), max2.clone()));
        }
    });
    Ok(Server {
        addr,
        ca_pem: certified.cert.pem(),
        log,
        max_outstanding,
    })
}

async fn serve(conn: quinn::Connection, log: Log, max_outstanding: Arc<AtomicUsize>) {
    let outstanding = Arc::new(AtomicUsize::new(0));
    let mut index = 0;
    while let Ok((send, recv)) = conn.accept_bi().await {
        let (log, max, out) = (log.clone(), max_outstanding.clone(), outstanding.clone());
        tokio::spawn(serve_stream(index, send, recv, log, max, out));
        index += 1;
    }
}

async fn serve_stream(
    index: usize,
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    log: Log,
    max_outstanding: Arc<AtomicUsize>,
    outstanding: Arc<AtomicUsize>,
) {
    let send = Arc::new(tokio::sync::Mutex::new(send));
    let write = move |packet: Packet| {
        let send = send.clone();
        async move {
            let mut buf = BytesMut::new();
            packet.encode(Protocol::V5, &mut buf).expect("encodes");
            let _ = send.lock().await.write_all(&buf).await;
        }
    };
    let mut buf = BytesMut::new();
    loop {
        let packet = loop {
            match Packet::decode(&mut buf, Protocol::V5, 1 << 20) {
                Ok(Some(p)) => break p,
                Ok(None) => {}
                Err(e) => panic!("client sent a malformed packet: {e}"),
            }
            match recv.read_chunk(64 * 1024, true).await {
                Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
                _ => return,
            }
        };
        log.lock().expect("log").push((index, packet.name()));
        match packet {
            Packet::Connect(_) => {
                let properties = Properties {
                    receive_maximum: Some(RECEIVE_MAXIMUM),
                    ..Properties::default()
                };
                let ack = ConnAck {
                    session_present: false,
                    code: ReasonCode::SUCCESS,
                    properties,
                };
                write(Packet::ConnAck(ack)).await;
            }
            Packet::PingReq => write(Packet::PingResp).await,
            Packet::Publish(p) if p.qos != QoS::AtMostOnce => {
                let now = outstanding.fetch_add(1, Ordering::SeqCst) + 1;
                max_outstanding.fetch_max(now, Ordering::SeqCst);
                // Acknowledge late so that publishes pile up against the Receive Maximum.
                let (outstanding, write) = (outstanding.clone(), write.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let resp = PubResp::new(p.pkid, ReasonCode::SUCCESS);
                    if p.qos == QoS::AtLeastOnce {
                        outstanding.fetch_sub(1, Ordering::SeqCst);
                        write(Packet::PubAck(resp)).await;
                    } else {
                        write(Packet::PubRec(resp)).await;
                    }
                });
            }
            Packet::PubRel(r) => {
                outstanding.fetch_sub(1, Ordering::SeqCst);
                write(Packet::PubComp(PubResp::new(r.pkid, ReasonCode::SUCCESS))).await;
            }
            Packet::Subscribe(s) => {
                let ack = SubAck {
                    pkid: s.pkid,
                    codes: vec![ReasonCode::GRANTED_QOS_1],
                    properties: Properties::default(),
                };
                write(Packet::SubAck(ack)).await;
                // A delivery on the subscribing stream, echoing the subscription identifier.
                let properties = Properties {
                    subscription_identifiers: s.properties.subscription_identifiers.clone(),
                    ..Properties::default()
                };
                let delivery = Publish {
                    dup: false,
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    topic: "news/1".into(),
                    pkid: 77,
                    properties,
                    payload: Bytes::from_static(b"delivered"),
                };
                write(Packet::Publish(delivery)).await;
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn packets_go_on_the_streams_design_3_says() -> anyhow::Result<()> {
    // A hang fails the test instead of blocking CI.
    tokio::time::timeout(Duration::from_secs(60), streams_as_design_3_says()).await?
}

async fn streams_as_design_3_says() -> anyhow::Result<()> {
    let server = start_server().await?;
    let mut options = ClientOptions::new("localhost", Transport::Quic);
    options.port = Some(server.addr.port());
    options.tls.ca = CaSource::Pem(Bytes::from(server.ca_pem.clone()));
    options.keep_alive = 1;
    let client = Client::connect(options).await?;
    assert_eq!(client.info().receive_maximum, RECEIVE_MAXIMUM);

    let mut sub = client.subscribe("news/#", QoS::AtLeastOnce).await?;
    let msg = tokio::time::timeout(Duration::from_secs(5), sub.recv()).await??;
    assert_eq!(msg.payload, Bytes::from_static(b"delivered"));

    // Ten concurrent QoS 1 and 2 publishes: pipelined, never more than Receive Maximum unacked.
    let flows = (0..10).map(|i| {
        let client = client.clone();
        let qos = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        async move { client.publish(format!("t/{i}"), "x", qos).await }
    });
    for outcome in futures::future::join_all(flows).await {
        assert!(outcome?.is_success());
    }
    assert_eq!(
        server.max_outstanding.load(Ordering::SeqCst),
        usize::from(RECEIVE_MAXIMUM)
    );
    client.publish("t/q0", "x", QoS::AtMostOnce).await?;

    let file = client.open_channel(ChannelKind::File).await?;
    assert!(file
        .publish("files/1", vec![0u8; 100_000], QoS::AtLeastOnce)
        .await?
        .is_success());

    // Keep-alive is one second: wait for a PINGREQ round trip.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client.disconnect().await?;
    assert!(matches!(
        sub.recv().await,
        Err(quicft_client::Error::ConnectionClosed(_))
    ));

    let log = server.log.lock().expect("log").clone();
    let on = |stream: usize| -> Vec<&str> {
        log.iter()
            .filter(|(s, _)| *s == stream)
            .map(|(_, n)| *n)
            .collect()
    };
    let control = on(0);
    assert_eq!(control.first(), Some(&"CONNECT"), "{log:?}");
    assert_eq!(control.last(), Some(&"DISCONNECT"), "{log:?}");
    assert!(control.contains(&"PINGREQ"), "{log:?}");
    assert!(
        control
            .iter()
            .all(|n| ["CONNECT", "PINGREQ", "DISCONNECT"].contains(n)),
        "{log:?}"
    );
    let telemetry = on(1);
    // A PINGREQ announces the telemetry stream at connect (a QUIC stream is invisible to the
    // server until it carries a byte; a resumed session's deliveries go to the oldest one).
    assert_eq!(telemetry.first(), Some(&"PINGREQ"), "{log:?}");
    assert_eq!(telemetry.get(1), Some(&"SUBSCRIBE"), "{log:?}");
    assert!(
        telemetry.contains(&"PUBACK"),
        "the delivery is acknowledged on its stream"
    );
    assert_eq!(telemetry.iter().filter(|n| **n == "PUBLISH").count(), 11);
    assert_eq!(telemetry.iter().filter(|n| **n == "PUBREL").count(), 5);
    assert_eq!(
        on(2),
        ["PUBLISH"],
        "the file channel is a stream of its own"
    );
    Ok(())
}
