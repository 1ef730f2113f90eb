//! MQTT over WebSocket (`ws`, `wss`): MQTT.js (a client nobody on the project wrote, tests/js) and
//! paho-mqtt's websockets transport publish and subscribe through quicft; a raw WebSocket client
//! splits packets across frames and packs several into one; upgrades without the `mqtt`
//! subprotocol or at another path are refused.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use quicft_proto::{Packet, Protocol, QoS, ReasonCode};
use quicft_tests::peers::{js_dir, need, paho, run_json};
use quicft_tests::{connect_packet, publish, subscribe, TestServer};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

fn ws_port(srv: &TestServer) -> u16 {
    srv.server.ws_addr.expect("ws listener").port()
}

fn wss_port(srv: &TestServer) -> u16 {
    srv.server.wss_addr.expect("wss listener").port()
}

async fn mqttjs(sub: &str, publ: &str, ca: &str) -> Result<serde_json::Value> {
    need("node")?;
    if !js_dir().join("node_modules/mqtt").exists() {
        bail!("MQTT.js is not installed; run `npm ci` in tests/js (`bash .ci/run` does)");
    }
    run_json(
        Command::new("node")
            .arg(js_dir().join("ws_pubsub.mjs"))
            .args([sub, publ, ca]),
    )
    .await
}

#[tokio::test]
async fn mqttjs_publishes_and_subscribes_over_ws_and_wss() -> Result<()> {
    let srv = TestServer::start().await?;
    let ws = format!("ws://127.0.0.1:{}/mqtt", ws_port(&srv));
    let wss = format!("wss://localhost:{}/mqtt", wss_port(&srv));
    let ca = srv.ca().display().to_string();
    for (sub, publ) in [(&ws, &wss), (&wss, &ws)] {
        let r = mqttjs(sub, publ, &ca).await?;
        assert_eq!(r["connack"]["reason"], 0, "{r}");
        assert_eq!(
            r["connack"]["shared"], true,
            "Shared Subscription Available: {r}"
        );
        assert_eq!(r["granted"], serde_json::json!([1]), "{r}");
        assert_eq!(r["acks"], serde_json::json!([0]), "PUBACK success: {r}");
        let m = &r["messages"];
        assert_eq!(m[0]["topic"], "ws/big", "{r}");
        assert_eq!(m[0]["len"], 200 * 1024, "{r}");
        assert_eq!(m[0]["ok"], true, "200 KB payload intact: {r}");
        assert_eq!(m[0]["qos"], 1, "{r}");
        assert_eq!(m[1]["text"], "hello 0", "{r}");
        assert_eq!(m[2]["text"], "hello 1", "{r}");
        assert_eq!(m[2]["qos"], 1, "{r}");
    }
    Ok(())
}

#[tokio::test]
async fn paho_websockets_transport_pubsub() -> Result<()> {
    let srv = TestServer::start().await?;
    let port = ws_port(&srv).to_string();
    let r = paho("paho_pubsub.py", &["127.0.0.1", &port, "websockets"]).await?;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["connack"], 0, "{r}");
    assert_eq!(r["messages"].as_array().map(Vec::len), Some(3), "{r}");
    Ok(())
}

/// A WebSocket connection to `/mqtt` offering `protocols`.
async fn ws_connect(
    port: u16,
    path: &str,
    protocols: &str,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, tokio_tungstenite::tungstenite::Error> {
    let mut req = format!("ws://127.0.0.1:{port}{path}").into_client_request()?;
    if !protocols.is_empty() {
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_str(protocols).expect("header"),
        );
    }
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(tokio_tungstenite::tungstenite::Error::Io)?;
    let (ws, _) = tokio_tungstenite::client_async(req, tcp).await?;
    Ok(ws)
}

fn bytes_of(p: &Packet) -> BytesMut {
    let mut b = BytesMut::new();
    p.encode(Protocol::V5, &mut b).expect("encode");
    b
}

/// Reads frames until `n` packets have arrived.
async fn packets(
    ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>,
    n: usize,
) -> Result<Vec<Packet>> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    while out.len() < n {
        while let Some(p) = Packet::decode(&mut buf, Protocol::V5, 1 << 20)? {
            out.push(p);
        }
        if out.len() >= n {
            break;
        }
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .context("no frame")?
            .context("closed")??;
        match msg {
            Message::Binary(b) => buf.extend_from_slice(&b),
            other => bail!("unexpected frame {other:?}"),
        }
    }
    Ok(out)
}

#[tokio::test]
async fn packets_split_across_frames_and_joined_in_one() -> Result<()> {
    let srv = TestServer::start().await?;
    let mut ws = ws_connect(ws_port(&srv), "/mqtt", "mqtt").await?;
    // CONNECT in three frames, cut inside the fixed header and inside the body.
    let connect = bytes_of(&Packet::Connect(connect_packet("ws-raw", Protocol::V5)));
    for part in [&connect[..1], &connect[1..5], &connect[5..]] {
        ws.send(Message::binary(part.to_vec())).await?;
    }
    match packets(&mut ws, 1).await?.as_slice() {
        [Packet::ConnAck(a)] => assert_eq!(a.code, ReasonCode::SUCCESS),
        other => bail!("expected CONNACK, got {other:?}"),
    }
    // SUBSCRIBE and a QoS 1 PUBLISH to it in one frame.
    let mut both = bytes_of(&subscribe("raw/#", QoS::AtLeastOnce, 1));
    both.extend_from_slice(&bytes_of(&publish("raw/t", b"joined", QoS::AtLeastOnce, 2)));
    ws.send(Message::binary(both.to_vec())).await?;
    let got = packets(&mut ws, 3).await?;
    assert!(matches!(got[0], Packet::SubAck(_)), "{got:?}");
    let delivered = got
        .iter()
        .any(|p| matches!(p, Packet::Publish(p) if &p.payload[..] == b"joined"));
    let acked = got
        .iter()
        .any(|p| matches!(p, Packet::PubAck(a) if a.pkid == 2));
    assert!(delivered && acked, "{got:?}");
    // A TCP client sees the WebSocket client's messages and vice versa: the same broker.
    let mut tcp = srv
        .connect(quicft_tests::Transport::Tcp, "tcp-peer")
        .await?;
    tcp.data()
        .await?
        .subscribe("raw/#", QoS::AtLeastOnce, 1)
        .await?;
    ws.send(Message::binary(
        bytes_of(&publish("raw/from-ws", b"x", QoS::AtMostOnce, 0)).to_vec(),
    ))
    .await?;
    let p = tcp.data().await?.next_publish_on("raw/from-ws").await?;
    assert_eq!(&p.payload[..], b"x");
    Ok(())
}

#[tokio::test]
async fn upgrades_without_mqtt_subprotocol_or_at_another_path_are_refused() -> Result<()> {
    use tokio_tungstenite::tungstenite::Error;
    let srv = TestServer::start().await?;
    let port = ws_port(&srv);
    for (path, protocols, status) in [
        ("/mqtt", "", 400),
        ("/mqtt", "mqttv3.1, chat", 400),
        ("/other", "mqtt", 404),
    ] {
        match ws_connect(port, path, protocols).await {
            Err(Error::Http(resp)) => {
                assert_eq!(resp.status().as_u16(), status, "{path} {protocols:?}")
            }
            Err(e) => bail!("{path} {protocols:?}: expected HTTP {status}, got {e}"),
            Ok(_) => bail!("{path} {protocols:?}: upgrade accepted"),
        }
    }
    // The listener keeps serving.
    let mut ws = ws_connect(port, "/mqtt", "mqtt").await?;
    ws.send(Message::binary(
        bytes_of(&Packet::Connect(connect_packet("after", Protocol::V5))).to_vec(),
    ))
    .await?;
    assert!(matches!(
        packets(&mut ws, 1).await?[..],
        [Packet::ConnAck(_)]
    ));
    Ok(())
}
