//! The durability promise (DESIGN §4): a server process is SIGKILLed in the middle of uploads,
//! restarted on the same data directory; the clients ask for status and send only what is missing.
//! Every byte acknowledged with 0x00 before the kill must still be there, and the exported files
//! must be byte-identical.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Result};
use quicft_proto::ft::Response;
use quicft_proto::{Packet, QoS, ReasonCode};
use quicft_tests::ft::{self, content, sha256_hex};
use quicft_tests::{connect, publish, ProcessServer, Transport};

const BIN: &str = env!("CARGO_BIN_EXE_quicft-test-server");
const SEG: usize = 128 * 1024;
const SEGMENTS: usize = 96; // 12 MiB per upload

/// Offsets acknowledged with 0x00.
type Acked = Arc<Mutex<Vec<u64>>>;

/// Pipelines every segment (in a scrambled order) with up to 32 in flight, recording 0x00 acks,
/// until the connection dies.
async fn pump(
    server: &ProcessServer,
    t: Transport,
    client: &str,
    data: Arc<Vec<u8>>,
    acked: Acked,
) -> Result<()> {
    let mut c = connect(server, t, client).await?;
    let s = c.data().await?;
    if ft::init(s, "big", "big.bin", Some(data.len() as u64)).await? != ReasonCode::SUCCESS {
        bail!("init refused");
    }
    // Stride through the file so that acked data is not a simple prefix.
    let order: Vec<usize> = (0..SEGMENTS).map(|i| (i * 37) % SEGMENTS).collect();
    let mut inflight: HashMap<u16, u64> = HashMap::new();
    let mut next = order.iter();
    loop {
        while inflight.len() < 32 {
            let Some(i) = next.next() else { break };
            let off = (i * SEG) as u64;
            let id = ft::pkid();
            s.send(&publish(
                &format!("$file/big/{off}"),
                &data[i * SEG..(i + 1) * SEG],
                QoS::AtLeastOnce,
                id,
            ))
            .await?;
            inflight.insert(id, off);
        }
        if inflight.is_empty() {
            return Ok(());
        }
        match s.recv().await? {
            Packet::PubAck(a) => {
                if let Some(off) = inflight.remove(&a.pkid) {
                    if a.code == ReasonCode::SUCCESS {
                        acked.lock().expect("lock").push(off);
                    }
                }
            }
            Packet::Publish(p) => s.keep_pub(p).await?,
            other => bail!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn sigkill_mid_upload_loses_no_acknowledged_byte() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = ProcessServer::start(BIN, dir.path()).await?;
    let uploads = [
        (Transport::Quic, "crash-quic", 1u64),
        (Transport::Tcp, "crash-tcp", 2u64),
    ];
    let mut pumps = Vec::new();
    let mut acks = Vec::new();
    let mut files = Vec::new();
    for (t, client, seed) in uploads {
        let data = Arc::new(content(SEG * SEGMENTS, seed));
        let acked: Acked = Arc::default();
        files.push(data.clone());
        acks.push(acked.clone());
        let srv = &server;
        pumps.push(async move { pump(srv, t, client, data, acked).await });
    }
    // Kill once both uploads are well under way but not done.
    let killer = async {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let n: Vec<usize> = acks.iter().map(|a| a.lock().expect("lock").len()).collect();
            // As soon as one upload is a third done: both are then mid-flight (a loaded machine
            // can make one transport much faster than the other, so don't wait for both).
            if n.iter().any(|n| *n >= SEGMENTS / 3) {
                return n;
            }
        }
    };
    let (r1, r2, before_kill) = {
        let mut p = pumps.into_iter();
        let (a, b) = (p.next().expect("quic"), p.next().expect("tcp"));
        tokio::select! {
            n = killer => {
                // The pumps are dropped mid-flight here, as a crashing server would leave them.
                (Ok(()), Ok(()), Some(n))
            }
            (ra, rb) = async { tokio::join!(a, b) } => (ra, rb, None),
        }
    };
    r1?;
    r2?;
    let before_kill = before_kill.expect("uploads finished before the kill: make them bigger");
    // Acks read after this point can only be from before the kill, too.
    let acked_at_kill: Vec<Vec<u64>> = acks
        .iter()
        .map(|a| a.lock().expect("lock").clone())
        .collect();
    server.kill9().await?;
    assert!(
        before_kill.iter().any(|n| *n < SEGMENTS),
        "killed mid-upload: {before_kill:?}"
    );

    let server = ProcessServer::start(BIN, dir.path()).await?;
    for (((t, client, _), data), acked) in uploads.iter().zip(&files).zip(&acked_at_kill) {
        let mut c = connect(&server, *t, client).await?;
        let s = c.data().await?;
        let resp_topic = format!("$file-response/{client}");
        s.subscribe(&resp_topic, QoS::AtLeastOnce, 1).await?;
        assert_eq!(
            ft::cmd(s, "$file/big/status", b"").await?,
            ReasonCode::SUCCESS
        );
        let status = loop {
            let r = Response::parse(&s.next_publish_on(&resp_topic).await?.payload)?;
            if r.topic.ends_with("/status") {
                break r;
            }
        };
        let held = status.ranges.clone().unwrap_or_default();
        let is_held = |off: u64| {
            held.iter()
                .any(|(a, b)| *a <= off && off + SEG as u64 <= *b)
        };
        for off in acked {
            assert!(
                is_held(*off),
                "{t:?}: acknowledged segment at {off} lost in the crash; status {held:?}"
            );
        }
        // Send only what the server says it lacks.
        let missing: Vec<u64> = (0..SEGMENTS)
            .map(|i| (i * SEG) as u64)
            .filter(|o| !is_held(*o))
            .collect();
        let resent = missing.len();
        let segs: Vec<(u64, &[u8])> = missing
            .iter()
            .map(|o| (*o, &data[*o as usize..*o as usize + SEG]))
            .collect();
        let mut codes = BTreeMap::new();
        for chunk in segs.chunks(32) {
            codes.extend(ft::segments(s, "big", chunk).await?);
        }
        assert!(
            codes.values().all(|c| *c == ReasonCode::SUCCESS),
            "{codes:?}"
        );
        assert_eq!(ft::fin(s, "big", data).await?, ReasonCode::SUCCESS);
        let path = dir
            .path()
            .join("exports")
            .join(client)
            .join("big")
            .join("big.bin");
        let exported = std::fs::read(&path)?;
        assert_eq!(
            sha256_hex(&exported),
            sha256_hex(data),
            "{t:?}: export differs"
        );
        assert!(
            resent <= SEGMENTS - acked.len(),
            "{t:?}: re-sent {resent} segments, {} were acked",
            acked.len()
        );
        eprintln!(
            "{t:?}: {} segments acked before SIGKILL, {resent} re-sent after restart",
            acked.len()
        );
    }
    Ok(())
}
