//! Service tests on a real filesystem (tempdir): uploads in every order, limits, lifecycle, recovery.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use quicft_proto::ft::{Command, FileId, FtReason, FtTopic, Mode, Sha256};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sha2::Digest;
use tokio::sync::mpsc;

use super::*;

struct Env {
    dir: tempfile::TempDir,
    svc: FtService,
    events: mpsc::Receiver<FtEvent>,
}

fn config(root: &Path) -> FtConfig {
    FtConfig {
        store_dir: root.join("transfers"),
        export_root: root.join("exports"),
        min_free_disk: 0,
        ..FtConfig::default()
    }
}

impl Env {
    fn new() -> Env {
        Env::with(|_| {})
    }

    fn with(tweak: impl FnOnce(&mut FtConfig)) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        tweak(&mut cfg);
        let (svc, events) = FtService::open(cfg).unwrap();
        Env { dir, svc, events }
    }

    /// Drops the service (as a crash would, minus the page cache) and opens the same directories.
    fn reopen(self) -> Env {
        let cfg = self.svc.config().clone();
        drop(self.svc);
        let (svc, events) = FtService::open(cfg).unwrap();
        Env {
            dir: self.dir,
            svc,
            events,
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the service, lets `damage` change what is on disk under the root, and reopens.
    fn reopen_after(self, damage: impl FnOnce(&Path)) -> Env {
        let cfg = self.svc.config().clone();
        drop(self.svc);
        damage(self.dir.path());
        let (svc, events) = FtService::open(cfg).unwrap();
        Env {
            dir: self.dir,
            svc,
            events,
        }
    }

    async fn cmd(&self, client: &str, file: &str, command: Command, payload: &[u8]) -> FtOutcome {
        let topic = FtTopic {
            mode: Mode::Sync,
            file_id: FileId::parse(file).unwrap(),
            command,
        };
        self.svc
            .handle(client, &topic, Bytes::copy_from_slice(payload))
            .await
    }

    async fn init(&self, client: &str, file: &str, meta: serde_json::Value) -> FtOutcome {
        self.cmd(client, file, Command::Init, meta.to_string().as_bytes())
            .await
    }

    async fn seg(&self, client: &str, file: &str, offset: u64, data: &[u8]) -> FtOutcome {
        self.cmd(
            client,
            file,
            Command::Segment {
                offset,
                checksum: None,
            },
            data,
        )
        .await
    }

    async fn fin(
        &self,
        client: &str,
        file: &str,
        size: u64,
        checksum: Option<Sha256>,
    ) -> FtOutcome {
        self.cmd(client, file, Command::Fin { size, checksum }, &[])
            .await
    }

    async fn status(&self, client: &str, file: &str) -> FtOutcome {
        self.cmd(client, file, Command::Status, &[]).await
    }

    fn export_of(&self, client: &str, file: &str, name: &str) -> PathBuf {
        self.root()
            .join("exports")
            .join(escape_component(client))
            .join(escape_component(file))
            .join(escape_component(name))
    }

    fn drain_events(&mut self) -> Vec<EventBody> {
        let mut out = Vec::new();
        while let Ok(ev) = self.events.try_recv() {
            let body: EventBody = serde_json::from_slice(&ev.payload).unwrap();
            assert_eq!(
                ev.topic,
                format!("$events/file/{}/{}", body.client_id, body.file_id)
            );
            out.push(body);
        }
        out
    }
}

fn sha(data: &[u8]) -> Sha256 {
    Sha256(sha2::Sha256::digest(data).into())
}

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

fn segments(len: usize, seg: usize) -> Vec<(u64, usize, usize)> {
    (0..len)
        .step_by(seg.max(1))
        .map(|s| (s as u64, s, (s + seg).min(len)))
        .collect()
}

fn assert_reason_of(got: FtReason, want: FtReason) {
    assert_eq!(got, want);
}

fn assert_reason(out: &FtOutcome, reason: FtReason) {
    assert_eq!(out.reason, reason, "outcome: {out:?}");
}

fn meta(name: &str, data: &[u8]) -> serde_json::Value {
    serde_json::json!({"name": name, "size": data.len(), "checksum": sha(data).to_hex()})
}

/// Asserts the exported file and its manifest.
fn assert_exported(env: &Env, client: &str, file: &str, name: &str, data: &[u8]) {
    let path = env.export_of(client, file, name);
    let got = std::fs::read(&path).unwrap();
    assert!(
        got == data,
        "exported bytes differ ({} vs {} bytes)",
        got.len(),
        data.len()
    );
    let mpath = path.parent().unwrap().join(disk::MANIFEST_FILE);
    let m: Manifest = serde_json::from_slice(&std::fs::read(mpath).unwrap()).unwrap();
    assert_eq!((m.client_id.as_str(), m.file_id.as_str()), (client, file));
    assert_eq!((m.name.as_str(), m.size), (name, data.len() as u64));
    assert_eq!(m.sha256, sha(data).to_hex());
    assert!(m.finished_at >= m.started_at);
}

async fn upload_in_order(env: &Env, client: &str, file: &str, data: &[u8], seg: usize) {
    assert_reason(
        &env.init(client, file, meta("f.bin", data)).await,
        FtReason::Success,
    );
    for (off, a, b) in segments(data.len(), seg) {
        assert_reason(
            &env.seg(client, file, off, &data[a..b]).await,
            FtReason::Success,
        );
    }
    let out = env
        .fin(client, file, data.len() as u64, Some(sha(data)))
        .await;
    assert_reason(&out, FtReason::Success);
}

#[tokio::test]
async fn uploads_of_every_size_in_order() {
    let mut env = Env::new();
    let seg = 4096;
    for (i, len) in [0usize, 1, 4 * seg, 10_000, (3 << 20) + 17]
        .into_iter()
        .enumerate()
    {
        let data = random_bytes(i as u64, len);
        let file = format!("f{i}");
        let chunk = if len > 1 << 20 { 64 << 10 } else { seg };
        upload_in_order(&env, "dev1", &file, &data, chunk).await;
        assert_exported(&env, "dev1", &file, "f.bin", &data);
        // The transfer directory is gone once published.
        assert!(!env.root().join("transfers/dev1").join(&file).exists());
    }
    let events = env.drain_events();
    let completed: Vec<_> = events.iter().filter(|e| e.event == "completed").collect();
    assert_eq!(completed.len(), 5);
    assert_eq!(events.iter().filter(|e| e.event == "started").count(), 5);
    let last = completed[4];
    assert_eq!(last.size, Some((3 << 20) + 17));
    assert_eq!(last.name, "f.bin");
    let path = env.export_of("dev1", "f4", "f.bin");
    assert_eq!(last.export_path.as_deref(), Some(path.to_str().unwrap()));
    assert!(env.svc.transfers().is_empty());
    assert_eq!(env.svc.finished().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_duplicates_overlaps_concurrent() {
    let env = Env::new();
    let data = random_bytes(7, (2 << 20) + 333);
    let init = serde_json::json!({"name": "shuffled.bin"});
    assert_reason(&env.init("dev", "x", init).await, FtReason::Success);
    let mut rng = StdRng::seed_from_u64(99);
    let mut pieces: Vec<(usize, usize)> = segments(data.len(), 32 << 10)
        .into_iter()
        .map(|(_, a, b)| (a, b))
        .collect();
    // Duplicates and overlapping segments at odd offsets.
    for _ in 0..40 {
        let a = rng.gen_range(0..data.len());
        let b = (a + rng.gen_range(1..100_000)).min(data.len());
        pieces.push((a, b));
    }
    let dups: Vec<_> = pieces[..10].to_vec();
    pieces.extend(dups);
    pieces.shuffle(&mut rng);
    let env = std::sync::Arc::new(env);
    let data = std::sync::Arc::new(data);
    let mut tasks = Vec::new();
    for (a, b) in pieces {
        let (env, data) = (env.clone(), data.clone());
        tasks.push(tokio::spawn(async move {
            env.seg("dev", "x", a as u64, &data[a..b]).await
        }));
    }
    for t in tasks {
        assert_reason(&t.await.unwrap(), FtReason::Success);
    }
    let st = env.status("dev", "x").await;
    assert_eq!(st.ranges, Some(vec![(0, data.len() as u64)]));
    let out = env
        .fin("dev", "x", data.len() as u64, Some(sha(&data)))
        .await;
    assert_reason(&out, FtReason::Success);
    assert_exported(&env, "dev", "x", "shuffled.bin", &data);
}

/// Large segments at unaligned offsets take both write paths (direct for their aligned middle,
/// buffered for head and tail), and a reverse-order upload larger than the running hash keeps in
/// memory makes it read the rest back from the file: both must export the exact bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_writes_unaligned_and_hash_beyond_memory() {
    let env = std::sync::Arc::new(Env::new());
    let data = std::sync::Arc::new(random_bytes(11, (5 << 20) + 4321));
    let init = serde_json::json!({"name": "odd.bin", "checksum": sha(&data).to_hex()});
    assert_reason(&env.init("dev", "odd", init).await, FtReason::Success);
    let mut pieces: Vec<(usize, usize)> = segments(data.len(), 300_007)
        .into_iter()
        .map(|(_, a, b)| (a, b))
        .collect();
    // An overlapping segment across a block boundary, and one from an aligned offset.
    pieces.push((4095, 4095 + 200_000));
    pieces.push((1 << 20, (1 << 20) + 700_000));
    pieces.shuffle(&mut StdRng::seed_from_u64(5));
    let mut tasks = Vec::new();
    for (a, b) in pieces {
        let (env, data) = (env.clone(), data.clone());
        tasks.push(tokio::spawn(async move {
            env.seg("dev", "odd", a as u64, &data[a..b]).await
        }));
    }
    for t in tasks {
        assert_reason(&t.await.unwrap(), FtReason::Success);
    }
    let out = env.fin("dev", "odd", data.len() as u64, None).await;
    assert_reason(&out, FtReason::Success);
    assert_exported(&env, "dev", "odd", "odd.bin", &data);

    let big = random_bytes(12, (40 << 20) + 1000);
    assert_reason(
        &env.init("dev", "rev", meta("f.bin", &big)).await,
        FtReason::Success,
    );
    for (off, a, b) in segments(big.len(), 1 << 20).into_iter().rev() {
        assert_reason(
            &env.seg("dev", "rev", off, &big[a..b]).await,
            FtReason::Success,
        );
    }
    let out = env.fin("dev", "rev", big.len() as u64, None).await;
    assert_reason(&out, FtReason::Success);
    assert_exported(&env, "dev", "rev", "f.bin", &big);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_share_commits() {
    let env = std::sync::Arc::new(Env::new());
    let mut tasks = Vec::new();
    for i in 0..6u64 {
        let env = env.clone();
        tasks.push(tokio::spawn(async move {
            let data = random_bytes(100 + i, 300_000 + i as usize * 999);
            let client = format!("dev{}", i % 3);
            let file = format!("file{i}");
            upload_in_order(&env, &client, &file, &data, 16 << 10).await;
            (client, file, data)
        }));
    }
    for t in tasks {
        let (client, file, data) = t.await.unwrap();
        assert_exported(&env, &client, &file, "f.bin", &data);
    }
}

#[tokio::test]
async fn segment_checksum_mismatch_stores_nothing() {
    let env = Env::new();
    let data = random_bytes(1, 5000);
    assert_reason(
        &env.init("d", "f", meta("a.bin", &data)).await,
        FtReason::Success,
    );
    let bad = Command::Segment {
        offset: 0,
        checksum: Some(sha(b"something else")),
    };
    let out = env.cmd("d", "f", bad, &data[..1000]).await;
    assert_reason(&out, FtReason::Retransmit);
    assert_eq!(env.status("d", "f").await.ranges, Some(vec![]));
    let good = Command::Segment {
        offset: 0,
        checksum: Some(sha(&data[..1000])),
    };
    assert_reason(
        &env.cmd("d", "f", good, &data[..1000]).await,
        FtReason::Success,
    );
    assert_eq!(env.status("d", "f").await.ranges, Some(vec![(0, 1000)]));
}

#[tokio::test]
async fn file_checksum_mismatch_fails_the_transfer() {
    let mut env = Env::new();
    let data = random_bytes(2, 3000);
    let mut wrong = data.clone();
    wrong[10] ^= 1;
    assert_reason(
        &env.init("d", "f", meta("a.bin", &wrong)).await,
        FtReason::Success,
    );
    assert_reason(&env.seg("d", "f", 0, &data).await, FtReason::Success);
    let out = env.fin("d", "f", 3000, None).await;
    assert_reason(&out, FtReason::Cancel);
    assert!(out.description.unwrap().contains("checksum mismatch"));
    let ev = env.drain_events();
    assert_eq!(ev.last().map(|e| e.event.as_str()), Some("failed"));
    assert_reason(&env.status("d", "f").await, FtReason::Restart);
    assert!(!env.export_of("d", "f", "a.bin").exists());
    // fin's checksum wins over init's.
    let env = Env::new();
    assert_reason(
        &env.init("d", "g", meta("a.bin", &wrong)).await,
        FtReason::Success,
    );
    assert_reason(&env.seg("d", "g", 0, &data).await, FtReason::Success);
    assert_reason(
        &env.fin("d", "g", 3000, Some(sha(&data))).await,
        FtReason::Success,
    );
    assert_exported(&env, "d", "g", "a.bin", &data);
}

#[tokio::test]
async fn bad_names_and_metadata_are_refused() {
    let env = Env::with(|c| c.max_file_size = 1000);
    let long = "x".repeat(241);
    for name in [
        "../../etc/passwd",
        "",
        ".",
        "..",
        "a/b",
        "a\\b",
        "c:d",
        "nul\u{0}",
        "bell\u{7}",
        &long,
    ] {
        let out = env
            .init("d", "f", serde_json::json!({ "name": name }))
            .await;
        assert_reason(&out, FtReason::Cancel);
    }
    for payload in [&b"not json"[..], b"[\"a\"]", b"{}", b"{\"name\": 5}"] {
        assert_reason(
            &env.cmd("d", "f", Command::Init, payload).await,
            FtReason::Cancel,
        );
    }
    let out = env
        .init("d", "f", serde_json::json!({"name": "big", "size": 1001}))
        .await;
    assert_reason(&out, FtReason::Cancel);
    // Without a declared size the limit applies to segments and to fin.
    assert_reason(
        &env.init("d", "f", serde_json::json!({"name": "ok"})).await,
        FtReason::Success,
    );
    assert_reason(&env.seg("d", "f", 1000, b"x").await, FtReason::Cancel);
    assert_reason(&env.seg("d", "f", u64::MAX, b"xy").await, FtReason::Cancel);
    assert_reason(&env.seg("d", "f", 999, b"x").await, FtReason::Success);
    // A declared size bounds segments.
    assert_reason(
        &env.init("d", "g", serde_json::json!({"name": "ok", "size": 10}))
            .await,
        FtReason::Success,
    );
    assert_reason(&env.seg("d", "g", 8, b"abc").await, FtReason::Cancel);
    // Nothing was created outside the two roots.
    let mut entries: Vec<_> = std::fs::read_dir(env.root())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    entries.sort();
    assert_eq!(entries, ["exports", "transfers"]);
}

#[tokio::test]
async fn limits_answer_quota() {
    // Per-client concurrency.
    let env = Env::with(|c| c.max_transfers_per_client = 2);
    for f in ["a", "b"] {
        assert_reason(
            &env.init("d", f, serde_json::json!({"name": "n"})).await,
            FtReason::Success,
        );
    }
    assert_reason(
        &env.init("d", "c", serde_json::json!({"name": "n"})).await,
        FtReason::Quota,
    );
    assert_reason(
        &env.init("e", "c", serde_json::json!({"name": "n"})).await,
        FtReason::Success,
    );
    // A repeated init of a live transfer is not a new one.
    assert_reason(
        &env.init("d", "a", serde_json::json!({"name": "n"})).await,
        FtReason::Success,
    );

    // Global concurrency.
    let env = Env::with(|c| c.max_transfers = 1);
    assert_reason(
        &env.init("d", "a", serde_json::json!({"name": "n"})).await,
        FtReason::Success,
    );
    assert_reason(
        &env.init("e", "b", serde_json::json!({"name": "n"})).await,
        FtReason::Quota,
    );
    assert_reason(
        &env.cmd("d", "a", Command::Abort, &[]).await,
        FtReason::Success,
    );
    assert_reason(
        &env.init("e", "b", serde_json::json!({"name": "n"})).await,
        FtReason::Success,
    );

    // Per-client storage: declared sizes, held bytes, and exported files all count.
    let env = Env::with(|c| c.client_quota = 10_000);
    let out = env
        .init("d", "a", serde_json::json!({"name": "n", "size": 10_001}))
        .await;
    assert_reason(&out, FtReason::Quota);
    let six = random_bytes(3, 6000);
    upload_in_order(&env, "d", "a", &six, 4096).await;
    let out = env
        .init("d", "b", serde_json::json!({"name": "n", "size": 5000}))
        .await;
    assert_reason(&out, FtReason::Quota);
    assert_reason(
        &env.init("d", "b", serde_json::json!({"name": "n"})).await,
        FtReason::Success,
    );
    assert_reason(&env.seg("d", "b", 0, &[1u8; 3000]).await, FtReason::Success);
    assert_reason(
        &env.seg("d", "b", 3000, &[1u8; 2000]).await,
        FtReason::Quota,
    );
    // Another client has its own quota.
    let out = env
        .init("other", "a", serde_json::json!({"name": "n", "size": 9000}))
        .await;
    assert_reason(&out, FtReason::Success);

    // Disk watermark.
    let env = Env::with(|c| c.min_free_disk = u64::MAX / 2);
    assert_reason(
        &env.init("d", "a", serde_json::json!({"name": "n"})).await,
        FtReason::Quota,
    );
    assert!(env.svc.transfers().is_empty());
}

#[tokio::test]
async fn status_lists_held_ranges_and_fin_lists_gaps() {
    let env = Env::new();
    let data = random_bytes(4, 10_000);
    let m = meta("s.bin", &data);
    assert_reason(&env.init("d", "f", m.clone()).await, FtReason::Success);
    assert_reason(
        &env.seg("d", "f", 0, &data[..1000]).await,
        FtReason::Success,
    );
    assert_reason(
        &env.seg("d", "f", 3000, &data[3000..5000]).await,
        FtReason::Success,
    );
    assert_reason(
        &env.seg("d", "f", 5000, &data[5000..6000]).await,
        FtReason::Success,
    );
    let st = env.status("d", "f").await;
    assert_reason(&st, FtReason::Success);
    assert_eq!(st.state.as_deref(), Some("receiving"));
    assert_eq!(st.ranges, Some(vec![(0, 1000), (3000, 6000)]));
    assert_eq!(st.missing, Some(vec![(1000, 3000), (6000, 10_000)]));
    assert_eq!(st.meta.as_ref().map(|m| m.name.as_str()), Some("s.bin"));
    let info = env.svc.transfers();
    assert_eq!(info.len(), 1);
    assert_eq!((info[0].bytes_held, info[0].size), (4000, Some(10_000)));

    let out = env.fin("d", "f", 10_000, None).await;
    assert_reason(&out, FtReason::Retransmit);
    assert_eq!(out.missing, Some(vec![(1000, 3000), (6000, 10_000)]));
    assert_eq!(out.ranges, Some(vec![(0, 1000), (3000, 6000)]));
    // The transfer goes on after a fin with gaps.
    assert_reason(
        &env.seg("d", "f", 1000, &data[1000..3000]).await,
        FtReason::Success,
    );
    assert_reason(
        &env.seg("d", "f", 6000, &data[6000..]).await,
        FtReason::Success,
    );
    assert_reason(&env.fin("d", "f", 10_000, None).await, FtReason::Success);
    assert_exported(&env, "d", "f", "s.bin", &data);
    let st = env.status("d", "f").await;
    assert_eq!(st.state.as_deref(), Some("complete"));
    assert_eq!(st.ranges, Some(vec![(0, 10_000)]));
}

#[tokio::test]
async fn status_with_metadata_inits_only_what_the_server_does_not_know() {
    let env = Env::new();
    let data = random_bytes(5, 3000);
    let m = meta("a.bin", &data);
    let status_init = |file: &'static str, m: serde_json::Value| {
        let env = &env;
        async move {
            env.cmd("d", file, Command::Status, m.to_string().as_bytes())
                .await
        }
    };
    // Unknown: initialised, and reported as a transfer holding nothing.
    let st = status_init("f", m.clone()).await;
    assert_reason(&st, FtReason::Success);
    assert_eq!(st.state.as_deref(), Some("receiving"));
    assert_eq!(st.ranges, Some(vec![]));
    assert_eq!(st.missing, Some(vec![(0, 3000)]));
    assert_eq!(st.meta.as_ref().map(|m| m.name.as_str()), Some("a.bin"));
    assert_reason(
        &env.seg("d", "f", 0, &data[..1000]).await,
        FtReason::Success,
    );

    // Known: reported as it is, whatever metadata comes with the status.
    let st = status_init("f", m.clone()).await;
    assert_eq!(st.ranges, Some(vec![(0, 1000)]));
    let other = meta("b.bin", b"other");
    let st = status_init("f", other.clone()).await;
    assert_reason(&st, FtReason::Success);
    assert_eq!(st.meta.as_ref().map(|m| m.name.as_str()), Some("a.bin"));
    assert_eq!(st.ranges, Some(vec![(0, 1000)]));

    // A finished file is not replaced by a status carrying another file's metadata.
    assert_reason(
        &env.seg("d", "f", 1000, &data[1000..]).await,
        FtReason::Success,
    );
    assert_reason(&env.fin("d", "f", 3000, None).await, FtReason::Success);
    let st = status_init("f", other).await;
    assert_eq!(st.state.as_deref(), Some("complete"));
    assert_eq!(st.meta.as_ref().map(|m| m.name.as_str()), Some("a.bin"));
    assert_exported(&env, "d", "f", "a.bin", &data);

    // What init refuses, status refuses the same way, and nothing is created.
    let bad = status_init("g", serde_json::json!({"name": "../x"})).await;
    assert_reason(&bad, FtReason::Cancel);
    assert_reason(&env.status("d", "g").await, FtReason::Restart);
    // Without a payload, status never creates anything.
    assert_reason(&env.status("d", "h").await, FtReason::Restart);
    assert_reason(&env.status("d", "h").await, FtReason::Restart);
}

#[tokio::test]
async fn abort_deletes_and_is_idempotent() {
    let mut env = Env::new();
    assert_reason(
        &env.init("d", "f", serde_json::json!({"name": "n"})).await,
        FtReason::Success,
    );
    assert_reason(&env.seg("d", "f", 0, b"hello").await, FtReason::Success);
    let dir = env.root().join("transfers/d/f");
    assert!(dir.join("data.part").exists());
    assert_reason(
        &env.cmd("d", "f", Command::Abort, &[]).await,
        FtReason::Success,
    );
    assert!(!dir.exists());
    assert_reason(&env.status("d", "f").await, FtReason::Restart);
    assert_reason(&env.seg("d", "f", 5, b"x").await, FtReason::Restart);
    assert_reason(&env.fin("d", "f", 6, None).await, FtReason::Restart);
    assert_reason(
        &env.cmd("d", "f", Command::Abort, &[]).await,
        FtReason::Success,
    );
    assert_reason(
        &env.cmd("d", "never", Command::Abort, &[]).await,
        FtReason::Success,
    );
    let ev = env.drain_events();
    assert_eq!(
        ev.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(),
        ["started", "aborted"]
    );
    // The same id can start over.
    assert_reason(
        &env.init("d", "f", serde_json::json!({"name": "m"})).await,
        FtReason::Success,
    );
    assert_eq!(env.status("d", "f").await.ranges, Some(vec![]));
}

#[tokio::test]
async fn fin_is_idempotent_and_init_conflicts() {
    let env = Env::new();
    let data = random_bytes(5, 777);
    let m = meta("i.bin", &data);
    assert_reason(&env.init("d", "f", m.clone()).await, FtReason::Success);
    assert_reason(&env.init("d", "f", m.clone()).await, FtReason::Success);
    let other = serde_json::json!({"name": "other.bin"});
    let out = env.init("d", "f", other).await;
    assert_reason(&out, FtReason::Cancel);
    assert!(out.description.unwrap().contains("conflict"));
    assert_reason(&env.seg("d", "f", 0, &data).await, FtReason::Success);
    assert_reason(&env.fin("d", "f", 777, None).await, FtReason::Success);
    assert_reason(&env.fin("d", "f", 777, None).await, FtReason::Success);
    assert_reason(
        &env.fin("d", "f", 777, Some(sha(&data))).await,
        FtReason::Success,
    );
    assert_reason(&env.fin("d", "f", 778, None).await, FtReason::Cancel);
    assert_reason(
        &env.fin("d", "f", 777, Some(sha(b"x"))).await,
        FtReason::Cancel,
    );
    // Late duplicates and a repeated init of the finished file are harmless.
    assert_reason(&env.seg("d", "f", 0, &data[..10]).await, FtReason::Success);
    assert_reason(&env.init("d", "f", m).await, FtReason::Success);
    assert_reason(
        &env.cmd("d", "f", Command::Abort, &[]).await,
        FtReason::Success,
    );
    assert_exported(&env, "d", "f", "i.bin", &data);
    // fin with a size other than init's fails the transfer.
    assert_reason(
        &env.init("d", "g", meta("g", &data)).await,
        FtReason::Success,
    );
    assert_reason(&env.seg("d", "g", 0, &data).await, FtReason::Success);
    assert_reason(&env.fin("d", "g", 776, None).await, FtReason::Cancel);
    assert_reason(&env.status("d", "g").await, FtReason::Restart);
}

#[tokio::test]
async fn unknown_transfers_answer_restart() {
    let env = Env::new();
    assert_reason(&env.seg("d", "nope", 0, b"abc").await, FtReason::Restart);
    assert_reason(&env.fin("d", "nope", 3, None).await, FtReason::Restart);
    let st = env.status("d", "nope").await;
    assert_reason(&st, FtReason::Restart);
    assert_eq!(st.state.as_deref(), Some("unknown"));
    assert!(env.svc.cancel("d", "nope").await.is_err());
}

#[tokio::test]
async fn reopen_mid_transfer_resumes_byte_identical() {
    let env = Env::new();
    let data = random_bytes(6, (1 << 20) + 4321);
    assert_reason(
        &env.init("d", "f", meta("r.bin", &data)).await,
        FtReason::Success,
    );
    // First half in order, plus one piece far ahead.
    let half = data.len() / 2;
    for (off, a, b) in segments(half, 50_000) {
        assert_reason(
            &env.seg("d", "f", off, &data[a..b]).await,
            FtReason::Success,
        );
    }
    let tail = data.len() - 10_000;
    assert_reason(
        &env.seg("d", "f", tail as u64, &data[tail..]).await,
        FtReason::Success,
    );
    let before = env.status("d", "f").await.ranges;

    let env = env.reopen();
    let st = env.status("d", "f").await;
    assert_reason(&st, FtReason::Success);
    assert_eq!(st.ranges, before);
    assert_eq!(
        st.ranges,
        Some(vec![(0, half as u64), (tail as u64, data.len() as u64)])
    );
    for (lo, hi) in st.missing.unwrap() {
        let (lo, hi) = (lo as usize, hi as usize);
        for (off, a, b) in segments(hi - lo, 50_000) {
            let seg = &data[lo + a..lo + b];
            assert_reason(
                &env.seg("d", "f", lo as u64 + off, seg).await,
                FtReason::Success,
            );
        }
    }
    assert_reason(
        &env.fin("d", "f", data.len() as u64, None).await,
        FtReason::Success,
    );
    assert_exported(&env, "d", "f", "r.bin", &data);

    // Finished files and their idempotent fin survive a restart too.
    let env = env.reopen();
    assert_reason(
        &env.fin("d", "f", data.len() as u64, None).await,
        FtReason::Success,
    );
    assert_eq!(
        env.status("d", "f").await.state.as_deref(),
        Some("complete")
    );
}

#[tokio::test]
async fn torn_journal_tail_and_unanswered_init_are_recovered() {
    let env = Env::new();
    assert_reason(
        &env.init("d", "f", serde_json::json!({"name": "n"})).await,
        FtReason::Success,
    );
    assert_reason(
        &env.seg("d", "f", 0, b"0123456789").await,
        FtReason::Success,
    );
    let dir = env.root().join("transfers/d/f");
    let cfg = env.svc.config().clone();
    drop(env.svc);
    // A torn record at the end of the journal, as a crash mid-append leaves it.
    let mut j = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("ranges.log"))
        .unwrap();
    std::io::Write::write_all(&mut j, &[0xAB; 13]).unwrap();
    drop(j);
    // An init that crashed before answering left a directory without transfer.json.
    let ghost = env.dir.path().join("transfers/d/ghost");
    std::fs::create_dir_all(&ghost).unwrap();
    std::fs::write(ghost.join("data.part"), b"junk").unwrap();
    let (svc, _ev) = FtService::open(cfg).unwrap();
    let env = Env {
        dir: env.dir,
        svc,
        events: _ev,
    };
    assert!(!ghost.exists());
    assert_eq!(env.status("d", "f").await.ranges, Some(vec![(0, 10)]));
    assert_eq!(
        std::fs::metadata(dir.join("ranges.log")).unwrap().len(),
        8 + 24
    );
    assert_reason(&env.seg("d", "f", 10, b"abc").await, FtReason::Success);
    assert_reason(&env.fin("d", "f", 13, None).await, FtReason::Success);
    assert_exported(&env, "d", "f", "n", b"0123456789abc");
}

#[tokio::test]
async fn interrupted_publish_is_finished_on_reopen() {
    let env = Env::new();
    let data = random_bytes(8, 5555);
    assert_reason(
        &env.init("d", "f", meta("p.bin", &data)).await,
        FtReason::Success,
    );
    assert_reason(&env.seg("d", "f", 0, &data).await, FtReason::Success);
    // A crash right after fin.json was written, before the rename.
    let dir = env.root().join("transfers/d/f");
    let fin = disk::FinRecord {
        size: 5555,
        sha256: sha(&data).to_hex(),
        finished_at: now_unix(),
    };
    disk::write_atomic(&dir, disk::FIN_FILE, &disk::to_json(&fin).unwrap()).unwrap();
    let env = env.reopen();
    assert!(!dir.exists());
    assert_exported(&env, "d", "f", "p.bin", &data);
    assert_reason(&env.fin("d", "f", 5555, None).await, FtReason::Success);
}

#[tokio::test]
async fn ids_and_names_never_escape_the_roots() {
    let env = Env::new();
    let evil = "../../etc/passwd";
    let data = b"payload".to_vec();
    for file in ["..", ".", "%2E%2E", "..\\..", "a b"] {
        upload_in_order(&env, evil, file, &data, 3).await;
        let path = env.export_of(evil, file, "f.bin");
        assert_exported(&env, evil, file, "f.bin", &data);
        let rel = path.strip_prefix(env.root().join("exports")).unwrap();
        assert_eq!(rel.components().count(), 3, "{rel:?}");
        for c in rel.components() {
            assert!(matches!(c, std::path::Component::Normal(_)), "{rel:?}");
        }
    }
    // The name is refused by validation before it reaches any path.
    let out = env.init("d", "f", serde_json::json!({"name": evil})).await;
    assert_reason(&out, FtReason::Cancel);
    // Everything stayed under the temporary directory, in the two roots.
    let mut top: Vec<_> = std::fs::read_dir(env.root())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    top.sort();
    assert_eq!(top, ["exports", "transfers"]);
    let clients: Vec<_> = std::fs::read_dir(env.root().join("exports"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(clients, ["..%2F..%2Fetc%2Fpasswd"]);
    // Distinct ids that look alike stay distinct.
    assert_ne!(
        env.export_of(evil, "..", "f.bin"),
        env.export_of(evil, "%2E%2E", "f.bin")
    );
    // Restart finds them all under their real ids.
    let env = env.reopen();
    assert_eq!(env.svc.finished().len(), 5);
    assert_reason(
        &env.fin(evil, "..", data.len() as u64, None).await,
        FtReason::Success,
    );
}

#[tokio::test]
async fn operator_cancel() {
    let mut env = Env::new();
    assert_reason(
        &env.init("d", "f", serde_json::json!({"name": "n"})).await,
        FtReason::Success,
    );
    assert_reason(&env.seg("d", "f", 0, b"abc").await, FtReason::Success);
    env.svc.cancel("d", "f").await.unwrap();
    env.svc.cancel("d", "f").await.unwrap();
    assert!(!env.root().join("transfers/d/f/data.part").exists());
    assert_reason(&env.seg("d", "f", 3, b"d").await, FtReason::Cancel);
    let st = env.status("d", "f").await;
    assert_reason(&st, FtReason::Cancel);
    assert_eq!(st.state.as_deref(), Some("cancelled"));
    assert_reason(&env.fin("d", "f", 4, None).await, FtReason::Cancel);
    assert_reason(
        &env.init("d", "f", serde_json::json!({"name": "n"})).await,
        FtReason::Cancel,
    );
    let ev = env.drain_events();
    assert_eq!(
        ev.last().and_then(|e| e.reason.as_deref()),
        Some("cancelled by the operator")
    );
    let env = env.reopen();
    assert_reason(&env.seg("d", "f", 3, b"d").await, FtReason::Cancel);
    // The tombstone goes after segments_ttl_max.
    env.svc
        .gc_once(now_unix() + env.svc.config().segments_ttl_max_secs + 1)
        .await;
    assert_reason(&env.status("d", "f").await, FtReason::Restart);
    assert!(!env.root().join("transfers/d/f").exists());
}

#[tokio::test]
async fn gc_drops_idle_transfers_and_expired_exports() {
    let mut env = Env::with(|c| {
        c.segments_ttl_default_secs = 100;
        c.segments_ttl_max_secs = 1000;
    });
    let now = now_unix();
    assert_reason(
        &env.init(
            "d",
            "short",
            serde_json::json!({"name": "n", "segments_ttl": 10}),
        )
        .await,
        FtReason::Success,
    );
    assert_reason(
        &env.init("d", "default", serde_json::json!({"name": "n"}))
            .await,
        FtReason::Success,
    );
    assert_reason(
        &env.init(
            "d",
            "clamped",
            serde_json::json!({"name": "n", "segments_ttl": 99_999}),
        )
        .await,
        FtReason::Success,
    );
    for f in ["short", "default", "clamped"] {
        assert_reason(&env.seg("d", f, 0, b"abc").await, FtReason::Success);
    }
    let data = b"keep me".to_vec();
    let m = serde_json::json!({"name": "e.bin", "expire_at": now + 500});
    assert_reason(&env.init("d", "exp", m).await, FtReason::Success);
    assert_reason(&env.seg("d", "exp", 0, &data).await, FtReason::Success);
    assert_reason(&env.fin("d", "exp", 7, None).await, FtReason::Success);

    env.svc.gc_once(now + 5).await;
    assert_eq!(env.svc.transfers().len(), 3);
    env.svc.gc_once(now + 20).await;
    assert_reason(&env.seg("d", "short", 3, b"d").await, FtReason::Restart);
    assert_reason(&env.status("d", "default").await, FtReason::Success);
    env.svc.gc_once(now + 200).await;
    assert_reason(&env.status("d", "default").await, FtReason::Restart);
    assert_reason(&env.status("d", "clamped").await, FtReason::Success);
    assert!(env.export_of("d", "exp", "e.bin").exists());
    env.svc.gc_once(now + 1001).await;
    assert_reason(&env.status("d", "clamped").await, FtReason::Restart);
    assert!(!env.export_of("d", "exp", "e.bin").exists());
    assert_reason(&env.status("d", "exp").await, FtReason::Restart);
    assert!(env.svc.finished().is_empty());
    let ev = env.drain_events();
    assert_eq!(
        ev.iter()
            .filter(|e| e.reason.as_deref() == Some("expired"))
            .count(),
        3
    );
}

#[tokio::test]
async fn reupload_with_new_metadata_replaces_the_export() {
    let env = Env::new();
    let v1 = b"first".to_vec();
    assert_reason(
        &env.init("d", "f", meta("one.txt", &v1)).await,
        FtReason::Success,
    );
    assert_reason(&env.seg("d", "f", 0, &v1).await, FtReason::Success);
    assert_reason(&env.fin("d", "f", 5, None).await, FtReason::Success);
    let v2 = b"second".to_vec();
    assert_reason(
        &env.init("d", "f", meta("two.txt", &v2)).await,
        FtReason::Success,
    );
    assert_eq!(
        env.status("d", "f").await.state.as_deref(),
        Some("receiving")
    );
    assert_reason(&env.seg("d", "f", 0, &v2).await, FtReason::Success);
    assert_reason(&env.fin("d", "f", 6, None).await, FtReason::Success);
    assert_exported(&env, "d", "f", "two.txt", &v2);
    assert!(!env.export_of("d", "f", "one.txt").exists());
    assert_eq!(env.svc.finished().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fin_racing_segments_and_abort_is_consistent() {
    // Many rounds of: segments in flight while fin or abort runs. Whatever the interleaving, an
    // exported file is byte-identical and every 0x00 segment of a finished file is in it.
    for round in 0..20u64 {
        let env = std::sync::Arc::new(Env::new());
        let data = std::sync::Arc::new(random_bytes(round, 200_000));
        let m = serde_json::json!({"name": "race.bin", "size": data.len()});
        assert_reason(&env.init("d", "f", m).await, FtReason::Success);
        let mut tasks = Vec::new();
        for (off, a, b) in segments(data.len(), 10_000) {
            let (env, data) = (env.clone(), data.clone());
            tasks.push(tokio::spawn(async move {
                env.seg("d", "f", off, &data[a..b]).await.reason
            }));
        }
        // Let a varying number of segments land first, so the race hits different moments.
        let rest = tasks.split_off((round as usize / 2) % 10);
        for t in tasks {
            assert_reason_of(t.await.unwrap(), FtReason::Success);
        }
        let racer = {
            let env = env.clone();
            let len = data.len() as u64;
            tokio::spawn(async move {
                if round % 2 == 0 {
                    env.fin("d", "f", len, None).await.reason
                } else {
                    env.cmd("d", "f", Command::Abort, &[]).await.reason
                }
            })
        };
        for t in rest {
            let r = t.await.unwrap();
            assert!(matches!(r, FtReason::Success | FtReason::Restart), "{r:?}");
        }
        let r = racer.await.unwrap();
        if round % 2 == 0 && r == FtReason::Retransmit {
            assert_reason(
                &env.fin("d", "f", data.len() as u64, None).await,
                FtReason::Success,
            );
        }
        if round % 2 == 0 {
            assert_exported(&env, "d", "f", "race.bin", &data);
        } else {
            assert_reason(&env.status("d", "f").await, FtReason::Restart);
        }
    }
}

/// Not a test: a throughput print for a human (`cargo test --release -- --ignored --nocapture
/// throughput_print`). Compares with writing the same bytes once and one fdatasync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput_print() {
    let env = std::sync::Arc::new(Env::new());
    let seg = 1 << 20;
    let total = 256usize << 20;
    let data = std::sync::Arc::new(random_bytes(1, total));
    let t0 = std::time::Instant::now();
    {
        let mut f = std::fs::File::create(env.root().join("raw")).unwrap();
        std::io::Write::write_all(&mut f, &data).unwrap();
        f.sync_data().unwrap();
    }
    let raw = t0.elapsed();
    assert_reason(
        &env.init("d", "f", serde_json::json!({"name": "t"})).await,
        FtReason::Success,
    );
    let t0 = std::time::Instant::now();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = Vec::new();
    for (off, a, b) in segments(total, seg) {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let (env, data) = (env.clone(), data.clone());
        tasks.push(tokio::spawn(async move {
            let r = env.seg("d", "f", off, &data[a..b]).await;
            drop(permit);
            r.reason
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), FtReason::Success);
    }
    let up = t0.elapsed();
    let sum = sha(&data);
    let t1 = std::time::Instant::now();
    assert_reason(
        &env.fin("d", "f", total as u64, Some(sum)).await,
        FtReason::Success,
    );
    let fin = t1.elapsed();
    let mbps = |d: std::time::Duration| total as f64 / d.as_secs_f64() / 1e6;
    eprintln!(
        "raw write+fdatasync {:.0} MB/s; segments {:.0} MB/s; fin {:?}",
        mbps(raw),
        mbps(up),
        fin
    );
}

#[tokio::test]
async fn lost_files_answer_restart() {
    let env = Env::new();
    for f in ["a", "b", "c"] {
        assert_reason(
            &env.init("d", f, serde_json::json!({"name": "n"})).await,
            FtReason::Success,
        );
        assert_reason(&env.seg("d", f, 0, b"abc").await, FtReason::Success);
    }
    let store = env.root().join("transfers/d");
    // Metadata lost, then data lost, while the server is down.
    std::fs::remove_file(store.join("a/transfer.json")).unwrap();
    std::fs::remove_file(store.join("b/data.part")).unwrap();
    let env = env.reopen();
    for f in ["a", "b"] {
        assert_reason(&env.seg("d", f, 3, b"d").await, FtReason::Restart);
        assert_reason(&env.status("d", f).await, FtReason::Restart);
        assert!(!store.join(f).exists());
    }
    // Data lost while running (descriptors are not cached after a restart).
    std::fs::remove_file(store.join("c/data.part")).unwrap();
    assert_reason(&env.seg("d", "c", 3, b"d").await, FtReason::Restart);
    assert_reason(&env.status("d", "c").await, FtReason::Restart);
    // Each can start over.
    assert_reason(
        &env.init("d", "c", serde_json::json!({"name": "n"})).await,
        FtReason::Success,
    );
    assert_reason(&env.seg("d", "c", 0, b"xyz").await, FtReason::Success);
    assert_reason(&env.fin("d", "c", 3, None).await, FtReason::Success);
    assert_exported(&env, "d", "c", "n", b"xyz");
}

// ---- Issue 17: what a device's bytes and a damaged or full disk must never do. ----

/// A device uploads a file called `x.manifest.json` that reads like a manifest of another
/// client's file pointing at /etc/passwd: after a restart it is the device's own file and nothing
/// else (before issue 17 the scan served /etc/passwd as victim/stolen).
#[tokio::test]
async fn an_uploaded_manifest_lookalike_is_only_a_file() {
    let env = Env::new();
    for (name, forged_file) in [
        ("x.manifest.json", "/etc/passwd"),
        ("%manifest.json", "../../etc/passwd"),
    ] {
        let forged = serde_json::to_vec(&serde_json::json!({
            "client_id": "victim", "file_id": "stolen", "name": "passwd", "size": 1,
            "sha256": "00", "meta": {"name": "passwd"}, "started_at": 0, "finished_at": 0,
            "file": forged_file,
        }))
        .unwrap();
        let file_id = format!("upl-{}", name.len());
        assert_reason(
            &env.init("attacker", &file_id, meta(name, &forged)).await,
            FtReason::Success,
        );
        assert_reason(
            &env.seg("attacker", &file_id, 0, &forged).await,
            FtReason::Success,
        );
        assert_reason(
            &env.fin(
                "attacker",
                &file_id,
                forged.len() as u64,
                Some(sha(&forged)),
            )
            .await,
            FtReason::Success,
        );
        assert_exported(&env, "attacker", &file_id, name, &forged);
    }
    let env = env.reopen();
    let finished = env.svc.finished();
    assert_eq!(finished.len(), 2, "{finished:?}");
    for f in &finished {
        assert_eq!(f.manifest.client_id, "attacker");
        assert!(
            f.export_path
                .starts_with(env.root().join("exports/attacker")),
            "{:?}",
            f.export_path
        );
        assert_eq!(
            std::fs::metadata(&f.export_path).unwrap().len(),
            f.manifest.size
        );
    }
    let st = env.status("victim", "stolen").await;
    assert_reason(&st, FtReason::Restart);
    // The victim's quota is untouched: its init of that id is an ordinary init.
    assert_reason(
        &env.init("victim", "stolen", meta("v", b"v")).await,
        FtReason::Success,
    );
}

/// A manifest whose ids do not match its directory, or whose file is missing or of another size,
/// is ignored; a manifest of the layout before issue 17 is checked the same way and moved.
#[tokio::test]
async fn manifests_are_checked_against_where_they_lie() {
    let env = Env::new();
    let data = random_bytes(17, 3000);
    upload_in_order(&env, "d", "legacy", &data, 1000).await;
    upload_in_order(&env, "d", "moved", &data, 1000).await;
    let dir = env.root().join("exports/d");
    // Rewrite one export in the old layout: `<name>.manifest.json` with a `file` field.
    let m: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("legacy").join(disk::MANIFEST_FILE)).unwrap(),
    )
    .unwrap();
    let mut old = m.clone();
    old["file"] = "f.bin".into();
    std::fs::write(
        dir.join("legacy/f.bin.manifest.json"),
        serde_json::to_vec(&old).unwrap(),
    )
    .unwrap();
    std::fs::remove_file(dir.join("legacy").join(disk::MANIFEST_FILE)).unwrap();
    // Move another export's directory under a different file id: its manifest now lies.
    std::fs::rename(dir.join("moved"), dir.join("elsewhere")).unwrap();
    let env = env.reopen();
    let ids: Vec<_> = env
        .svc
        .finished()
        .into_iter()
        .map(|f| f.manifest.file_id)
        .collect();
    assert_eq!(ids, ["legacy"]);
    assert!(dir.join("legacy").join(disk::MANIFEST_FILE).exists());
    assert!(!dir.join("legacy/f.bin.manifest.json").exists());
    assert_exported(&env, "d", "legacy", "f.bin", &data);
    // A file of another size than its manifest says is not served.
    std::fs::write(dir.join("legacy/f.bin"), b"short").unwrap();
    let env = env.reopen();
    assert!(env.svc.finished().is_empty());
}

/// Recovery must not depend on compacting the journal (issue 17: ENOSPC there skipped recovery
/// and the device's re-init deleted 50 MiB it had been acknowledged). Here the compaction fails
/// because its temporary file's name is taken by a directory.
#[tokio::test]
async fn recovery_survives_a_failed_journal_compaction() {
    let env = Env::new();
    assert_reason(
        &env.init("d", "f", serde_json::json!({"name": "n"})).await,
        FtReason::Success,
    );
    assert_reason(
        &env.seg("d", "f", 0, b"0123456789").await,
        FtReason::Success,
    );
    let env = env.reopen_after(|root| {
        let dir = root.join("transfers/d/f");
        tear_journal_tail(&dir);
        std::fs::create_dir_all(dir.join("%tmp-ranges.log/blocker")).unwrap();
    });
    assert_eq!(env.status("d", "f").await.ranges, Some(vec![(0, 10)]));
    assert_reason(&env.seg("d", "f", 10, b"abc").await, FtReason::Success);
    let env = env.reopen();
    assert_eq!(env.status("d", "f").await.ranges, Some(vec![(0, 13)]));
    assert_reason(&env.fin("d", "f", 13, None).await, FtReason::Success);
    assert_exported(&env, "d", "f", "n", b"0123456789abc");
}

/// A transfer that cannot be recovered is kept: the device's new init moves it aside.
#[tokio::test]
async fn an_unrecoverable_transfer_is_never_deleted_by_a_reinit() {
    let env = Env::new();
    assert_reason(
        &env.init("d", "f", serde_json::json!({"name": "n"})).await,
        FtReason::Success,
    );
    assert_reason(
        &env.seg("d", "f", 0, b"acknowledged").await,
        FtReason::Success,
    );
    let env = env.reopen_after(|root| {
        std::fs::write(root.join("transfers/d/f/ranges.log"), b"not a journal").unwrap();
    });
    assert_reason(&env.status("d", "f").await, FtReason::Restart);
    assert_reason(
        &env.init("d", "f", serde_json::json!({"name": "n"})).await,
        FtReason::Success,
    );
    let q = env.root().join("transfers/%quarantine/d");
    let kept: Vec<_> = std::fs::read_dir(&q)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        std::fs::read(kept[0].join("data.part")).unwrap(),
        b"acknowledged"
    );
    // The quarantine is not a client's directory: a restart leaves it alone.
    let env = env.reopen();
    assert_eq!(env.status("d", "f").await.ranges, Some(vec![]));
    assert!(kept[0].join("data.part").exists());
}

/// A small tmpfs for full-disk tests (needs root, as CI has); `None` elsewhere.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(bytes: u64) -> Option<SmallFs> {
        if !rustix::process::geteuid().is_root() {
            eprintln!("not root: full-disk test skipped");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(ok.success(), "mount tmpfs failed");
        Some(SmallFs { dir })
    }

    /// Writes a filler file until the filesystem is full.
    fn fill(&self) {
        let mut f = std::fs::File::create(self.dir.path().join("filler")).unwrap();
        let chunk = vec![0u8; 4096];
        loop {
            if let Err(e) = std::io::Write::write_all(&mut f, &chunk) {
                assert_eq!(
                    e.raw_os_error(),
                    Some(rustix::io::Errno::NOSPC.raw_os_error())
                );
                break;
            }
        }
        let _ = f.sync_all();
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// Init of `d`/`f` as `big.bin` and every segment of `data`, no fin.
async fn init_and_send(env: &Env, data: &[u8]) {
    assert_reason(
        &env.init("d", "f", meta("big.bin", data)).await,
        FtReason::Success,
    );
    for (off, a, b) in segments(data.len(), 64 * 1024) {
        assert_reason(
            &env.seg("d", "f", off, &data[a..b]).await,
            FtReason::Success,
        );
    }
}

/// A torn record at the end of a transfer's journal, as a crash mid-append leaves it.
fn tear_journal_tail(dir: &Path) {
    let mut j = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.join("ranges.log"))
        .unwrap();
    std::io::Write::write_all(&mut j, &[0xAB; 13]).unwrap();
}

fn env_on(fs: &SmallFs) -> Env {
    let dir = tempfile::tempdir_in(fs.dir.path()).unwrap();
    let (svc, events) = FtService::open(config(dir.path())).unwrap();
    Env { dir, svc, events }
}

/// A restart on a full disk recovers every acknowledged byte (issue 17, 4).
#[tokio::test]
async fn restart_on_a_full_disk_keeps_acknowledged_data() {
    let Some(fs) = SmallFs::mount(4 << 20) else {
        return;
    };
    let env = env_on(&fs);
    let data = random_bytes(4, 1 << 20);
    init_and_send(&env, &data).await;
    // A torn tail makes the start want to compact the journal, which needs room.
    let env = env.reopen_after(|root| {
        tear_journal_tail(&root.join("transfers/d/f"));
        fs.fill();
    });
    let st = env.status("d", "f").await;
    assert_reason(&st, FtReason::Success);
    assert_eq!(st.ranges, Some(vec![(0, data.len() as u64)]));
    std::fs::remove_file(fs.dir.path().join("filler")).unwrap();
    assert_reason(
        &env.fin("d", "f", data.len() as u64, Some(sha(&data))).await,
        FtReason::Success,
    );
    assert_exported(&env, "d", "f", "big.bin", &data);
}

/// An operator cancel on a full disk frees the data and says it did (issue 17, 5).
#[tokio::test]
async fn cancel_on_a_full_disk_frees_the_data() {
    let Some(fs) = SmallFs::mount(4 << 20) else {
        return;
    };
    let env = env_on(&fs);
    let data = random_bytes(5, 1 << 20);
    init_and_send(&env, &data).await;
    fs.fill();
    let before = disk::free_space(fs.dir.path()).unwrap();
    env.svc.cancel("d", "f").await.unwrap();
    let after = disk::free_space(fs.dir.path()).unwrap();
    assert!(
        after >= before + (1 << 20),
        "freed {} bytes",
        after - before
    );
    assert!(!env.root().join("transfers/d/f/data.part").exists());
    assert_reason(&env.status("d", "f").await, FtReason::Cancel);
    assert_reason(&env.seg("d", "f", 0, b"x").await, FtReason::Cancel);
}

/// The quarantine path is built from the client id and file id: escaped, it stays under the store,
/// whatever a device names itself.
#[tokio::test]
async fn quarantine_paths_never_escape_the_store() {
    let evil = "../../etc";
    let env = Env::new();
    assert_reason(
        &env.init(evil, "..", serde_json::json!({"name": "n"})).await,
        FtReason::Success,
    );
    assert_reason(&env.seg(evil, "..", 0, b"held").await, FtReason::Success);
    let tdir = env
        .root()
        .join("transfers")
        .join(escape_component(evil))
        .join(escape_component(".."));
    let env =
        env.reopen_after(|_| std::fs::write(tdir.join("ranges.log"), b"not a journal").unwrap());
    assert_reason(
        &env.init(evil, "..", serde_json::json!({"name": "n"})).await,
        FtReason::Success,
    );
    let q = env
        .root()
        .join("transfers/%quarantine")
        .join(escape_component(evil));
    let kept: Vec<_> = std::fs::read_dir(&q)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let rel = kept[0].strip_prefix(env.root().join("transfers")).unwrap();
    assert!(
        rel.components()
            .all(|c| matches!(c, std::path::Component::Normal(_))),
        "{rel:?}"
    );
    assert_eq!(std::fs::read(kept[0].join("data.part")).unwrap(), b"held");
    let top: Vec<_> = std::fs::read_dir(env.root())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top.len(), 2, "{top:?}");
}
