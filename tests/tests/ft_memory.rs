//! The server-wide budget for file-transfer payload held in memory (`limits.max_ft_inflight_bytes`):
//! past it, segments are answered 0x97 (pause and retry, DESIGN §2) instead of growing memory
//! with devices × segments in flight, and nothing is lost.

use anyhow::{bail, Result};
use quicft_proto::{Packet, QoS, ReasonCode};
use quicft_tests::ft::{self, content, split};
use quicft_tests::{publish, TestServer, Transport};

const SEG: usize = 100 * 1024;

#[tokio::test]
async fn segments_past_the_memory_budget_get_0x97_and_complete_when_retried() -> Result<()> {
    // Room for one segment in flight, server-wide.
    let srv = TestServer::start_with(|c| {
        c.limits.max_packet_size = 128 * 1024;
        c.limits.max_ft_inflight_bytes = 128 * 1024;
    })
    .await?;
    for t in [Transport::Quic, Transport::Tcp] {
        let mut c = srv.connect(t, &format!("mem-{t:?}")).await?;
        let s = c.data().await?;
        let data = content(64 * SEG + 777, 7);
        let file_id = format!("f-{t:?}");
        assert_eq!(
            ft::init(s, &file_id, "big.bin", Some(data.len() as u64)).await?,
            ReasonCode::SUCCESS
        );
        // All 65 segments in one burst: each needs a pwrite + fdatasync before its budget is
        // free again, far longer than the next segment takes to arrive over loopback, so most of
        // them find the budget taken.
        let mut pending = split(&data, SEG);
        let mut refused = 0;
        let mut rounds = 0;
        while !pending.is_empty() {
            rounds += 1;
            if rounds > 1000 {
                bail!("{} segments still refused after 1000 rounds", pending.len());
            }
            let codes = ft::segments(s, &file_id, &pending).await?;
            let mut again = Vec::new();
            for (off, code) in codes {
                match code {
                    ReasonCode::SUCCESS => {}
                    c if c.0 == 0x97 => {
                        refused += 1;
                        let i = pending.iter().position(|(o, _)| *o == off).expect("sent");
                        again.push(pending[i]);
                    }
                    other => bail!("segment {off}: unexpected {other}"),
                }
            }
            pending = again;
        }
        assert!(
            refused > 0,
            "{t:?}: no segment was refused: the budget of one segment did not bind"
        );
        assert_eq!(ft::fin(s, &file_id, &data).await?, ReasonCode::SUCCESS);
        let export = srv
            .dir
            .path()
            .join("exports")
            .join(format!("mem-{t:?}"))
            .join(&file_id)
            .join("big.bin");
        assert!(std::fs::read(&export)? == data, "{t:?}: export differs");
        // Once everything is durable the whole budget is free again: one more full segment of a
        // new transfer is admitted straight away (a leaked permit would refuse it).
        let f2 = format!("g-{t:?}");
        ft::init(s, &f2, "small.bin", None).await?;
        s.send(&publish(
            &format!("$file/{f2}/0"),
            &data[..SEG],
            QoS::AtLeastOnce,
            1,
        ))
        .await?;
        match s.recv().await? {
            Packet::PubAck(a) => assert_eq!(a.code, ReasonCode::SUCCESS, "{t:?}"),
            other => bail!("expected PUBACK, got {other:?}"),
        }
    }
    Ok(())
}
