//! Downloading a delivery (cloud → device): [`Client::download`].
//!
//! The SDK speaks the protocol the server answers every device with — AWS IoT's MQTT-based file
//! delivery, in CBOR (docs/PROTOCOL.md §14) — rather than a protocol of its own, on a channel of
//! its own: over QUIC a stream at file priority (below telemetry and control), and since the
//! server sends a subscription's messages on the stream that subscribed, the blocks come back on
//! that stream too. It keeps up to `window` requests outstanding, each for up to 128 KiB of the
//! blocks it still lacks (a block bitmap), and asks again for what a timed-out request did not
//! bring.
//!
//! Resumable across drops, server restarts and reboots: blocks are written into `{path}.part` at
//! their offset and `{path}.part.json` records which blocks are there (written only after the data
//! is fsync'ed), so the next call asks only for the blocks missing. The SHA-256 the server
//! describes is verified before `{path}.part` is renamed to `path`. The device's state is reported
//! on `$file-delivery/status/{clientId}/{deliveryId}` (`downloading`, `verified`, `failed`).

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quicft_proto::aws_stream::{self as aws, Format, GetRequest, MAX_BYTES_PER_REQUEST};
use quicft_proto::file_delivery as fd;
use quicft_proto::QoS;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{ChannelKind, Client, Error, Result};

/// How [`Client::download`] fetches.
#[derive(Clone)]
pub struct DownloadOptions {
    /// Block size, 256 B – 128 KiB (default 64 KiB).
    pub block_size: u32,
    /// Requests outstanding (default 4, the server's limit per client).
    pub window: usize,
    /// A request not answered in full within this long is asked again (default 15 s).
    pub request_timeout: Duration,
    /// Called with (bytes the file has, its size) as blocks arrive.
    pub on_progress: Option<Arc<dyn Fn(u64, u64) + Send + Sync>>,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        DownloadOptions {
            block_size: 64 * 1024,
            window: 4,
            request_timeout: Duration::from_secs(15),
            on_progress: None,
        }
    }
}

/// What a finished download did.
#[derive(Debug, Clone, Serialize)]
pub struct DownloadReport {
    pub id: String,
    pub path: PathBuf,
    pub name: String,
    pub version: String,
    pub size: u64,
    pub sha256: String,
    /// Bytes fetched by this call (blocks fetched twice count twice).
    pub bytes_fetched: u64,
    /// Bytes a partial file from an earlier call already had.
    pub resumed_bytes: u64,
}

/// `{path}.part.json`: which blocks `{path}.part` holds, for which delivery.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct PartState {
    id: String,
    size: u64,
    sha256: String,
    block_size: u64,
    /// Block bitmap, hex (bit k of byte k / 8, least significant first).
    have: String,
}

/// What the server's description says (its `d` is JSON; docs/PROTOCOL.md §14).
#[derive(Debug, Deserialize)]
struct Described {
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
    sha256: String,
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

fn fail(m: impl Into<String>) -> Error {
    Error::Download(m.into())
}

/// One outstanding request: the blocks it still has to bring, and when it is given up.
struct Pending {
    blocks: Vec<u64>,
    deadline: Instant,
}

impl Client {
    /// Downloads delivery `id` to `path` (see the module doc); resumes from `{path}.part`.
    pub async fn download(
        &self,
        id: &str,
        path: &Path,
        options: DownloadOptions,
    ) -> Result<DownloadReport> {
        if id.is_empty() || id.contains(['/', '+', '#']) {
            return Err(fail(format!("bad delivery id {id:?}")));
        }
        let l = u64::from(options.block_size);
        if !(u64::from(aws::MIN_BLOCK_SIZE)..=u64::from(aws::MAX_BLOCK_SIZE)).contains(&l) {
            return Err(fail("block size must be 256 B to 128 KiB"));
        }
        let cid = self.client_id();
        let channel = self.open_channel(ChannelKind::File).await?;
        let topic = |action| aws::topic(&cid, id, action, Format::Cbor);
        let mut desc = channel
            .subscribe(topic(aws::Action::Description), QoS::AtLeastOnce)
            .await?;
        let mut rejected = channel
            .subscribe(topic(aws::Action::Rejected), QoS::AtLeastOnce)
            .await?;
        let mut data = channel
            .subscribe(topic(aws::Action::Data), QoS::AtMostOnce)
            .await?;
        let status_topic = format!("{}{cid}/{id}", fd::STATUS_PREFIX);
        let report = |state: &'static str, reason: Option<String>| {
            let body = serde_json::json!({ "state": state, "reason": reason }).to_string();
            let (channel, t) = (channel.clone(), status_topic.clone());
            async move {
                if let Err(e) = channel.publish(t, body, QoS::AtLeastOnce).await {
                    tracing::info!(error = %e, "cannot report the download's state");
                }
            }
        };

        // Describe: the size, and the SHA-256 to verify against.
        let d = loop {
            channel
                .publish(topic(aws::Action::Describe), Vec::new(), QoS::AtLeastOnce)
                .await?;
            tokio::select! {
                m = desc.recv() => break aws::decode_description(Format::Cbor, &m?.payload)
                    .map_err(|r| fail(r.message))?,
                m = rejected.recv() => {
                    let (code, msg) = aws::decode_rejected(Format::Cbor, &m?.payload).map_err(|r| fail(r.message))?;
                    return Err(fail(format!("{code}: {msg}")));
                }
                _ = tokio::time::sleep(options.request_timeout) => continue,
            }
        };
        let size = d
            .files
            .iter()
            .find(|f| f.file_id == 0)
            .map(|f| f.size)
            .ok_or_else(|| fail("the stream has no file 0"))?;
        let described: Described = serde_json::from_str(&d.description)
            .map_err(|e| fail(format!("the description names no SHA-256: {e}")))?;
        let nblocks = size.div_ceil(l);

        // The partial file and what it holds.
        let part = with_suffix(path, ".part");
        let state_path = with_suffix(path, ".part.json");
        let mut have = vec![0u8; usize::try_from(nblocks.div_ceil(8)).unwrap_or(0)];
        let earlier: Option<PartState> = std::fs::read(&state_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let resume = earlier.filter(|s| {
            s.id == id && s.size == size && s.sha256 == described.sha256 && s.block_size == l
        });
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&part)?;
        match resume.and_then(|s| hex::decode(s.have).ok()) {
            Some(h) if h.len() == have.len() => have = h,
            _ => file.set_len(0)?,
        }
        file.set_len(size)?;
        let file = Arc::new(file);
        let is_set = |have: &[u8], b: u64| {
            have.get(usize::try_from(b / 8).unwrap_or(usize::MAX))
                .is_some_and(|x| x & (1 << (b % 8)) != 0)
        };
        let block_len = |b: u64| l.min(size - b * l);
        let mut held: u64 = (0..nblocks)
            .filter(|b| is_set(&have, *b))
            .map(block_len)
            .sum();
        let resumed_bytes = held;
        let mut missing = (0..nblocks).filter(|b| !is_set(&have, *b)).count();
        report("downloading", None).await;

        let save = |have: &[u8]| -> Result<()> {
            file.sync_data()?;
            let s = PartState {
                id: id.to_owned(),
                size,
                sha256: described.sha256.clone(),
                block_size: l,
                have: hex::encode(have),
            };
            let tmp = with_suffix(path, ".part.json.tmp");
            std::fs::write(&tmp, serde_json::to_vec(&s).unwrap_or_default())?;
            std::fs::rename(&tmp, &state_path)?;
            Ok(())
        };

        let per_request = (MAX_BYTES_PER_REQUEST / l).max(1);
        let mut pending: HashMap<String, Pending> = HashMap::new();
        let mut next_token = 0u64;
        let mut fetched = 0u64;
        let mut last_save = Instant::now();
        let mut unsaved = 0u32;
        let mut backoff_until: Option<Instant> = None;
        loop {
            if missing == 0 {
                break;
            }
            // Fill the window with requests for blocks neither held nor asked for.
            let can_send = backoff_until.is_none_or(|t| Instant::now() >= t);
            while can_send && pending.len() < options.window.max(1) {
                let asked: std::collections::HashSet<u64> = pending
                    .values()
                    .flat_map(|p| p.blocks.iter().copied())
                    .collect();
                let mut blocks = Vec::new();
                for b in (0..nblocks).filter(|b| !is_set(&have, *b) && !asked.contains(b)) {
                    if blocks.first().is_some_and(|f: &u64| b - f >= 8 * 12_000) {
                        break;
                    }
                    blocks.push(b);
                    if blocks.len() as u64 >= per_request {
                        break;
                    }
                }
                let (Some(&o), Some(&last)) = (blocks.first(), blocks.last()) else {
                    break;
                };
                let mut bitmap = vec![0u8; usize::try_from((last - o) / 8 + 1).unwrap_or(1)];
                for b in &blocks {
                    let k = b - o;
                    if let Some(x) = bitmap.get_mut(usize::try_from(k / 8).unwrap_or(usize::MAX)) {
                        *x |= 1 << (k % 8);
                    }
                }
                next_token += 1;
                let token = next_token.to_string();
                let req = GetRequest {
                    client_token: Some(token.clone()),
                    version: Some(d.version),
                    file_id: 0,
                    block_size: l,
                    block_offset: o,
                    block_count: Some(blocks.len() as u64),
                    bitmap: Some(bitmap),
                };
                channel
                    .publish(
                        topic(aws::Action::Get),
                        req.encode(Format::Cbor),
                        QoS::AtMostOnce,
                    )
                    .await?;
                pending.insert(
                    token,
                    Pending {
                        blocks,
                        deadline: Instant::now() + options.request_timeout,
                    },
                );
            }
            let next_deadline = pending
                .values()
                .map(|p| p.deadline)
                .min()
                .into_iter()
                .chain(backoff_until)
                .min()
                .unwrap_or_else(|| Instant::now() + options.request_timeout);
            tokio::select! {
                m = data.recv() => {
                    let m = m?;
                    let Ok(block) = aws::decode_data(Format::Cbor, &m.payload) else { continue };
                    let b = block.block_id;
                    if block.file_id != 0 || b >= nblocks || block.payload.len() as u64 != block_len(b) {
                        continue;
                    }
                    fetched += block.payload.len() as u64;
                    if let Some(t) = &block.client_token {
                        if let Some(p) = pending.get_mut(t) {
                            p.blocks.retain(|x| *x != b);
                            if p.blocks.is_empty() {
                                pending.remove(t);
                            }
                        }
                    }
                    if is_set(&have, b) {
                        continue;
                    }
                    let f = file.clone();
                    let payload = block.payload;
                    tokio::task::spawn_blocking(move || f.write_all_at(&payload, b * l))
                        .await
                        .map_err(|e| fail(e.to_string()))??;
                    if let Some(x) = have.get_mut(usize::try_from(b / 8).unwrap_or(usize::MAX)) {
                        *x |= 1 << (b % 8);
                    }
                    held += block_len(b);
                    missing -= 1;
                    unsaved += 1;
                    if let Some(cb) = &options.on_progress {
                        cb(held, size);
                    }
                    if unsaved >= 64 || last_save.elapsed() >= Duration::from_secs(1) {
                        save(&have)?;
                        (unsaved, last_save) = (0, Instant::now());
                    }
                }
                m = rejected.recv() => {
                    let (code, msg) = aws::decode_rejected(Format::Cbor, &m?.payload)
                        .map_err(|r| fail(r.message))?;
                    // Busy: ask again a little later; anything else ends the download.
                    if code == "InternalError" || msg.contains("in flight") {
                        pending.clear();
                        backoff_until = Some(Instant::now() + Duration::from_millis(200));
                        continue;
                    }
                    save(&have)?;
                    return Err(fail(format!("{code}: {msg}")));
                }
                _ = tokio::time::sleep_until(next_deadline.into()) => {
                    let now = Instant::now();
                    pending.retain(|_, p| p.deadline > now);
                    if backoff_until.is_some_and(|t| now >= t) {
                        backoff_until = None;
                    }
                }
            }
        }
        save(&have)?;

        // Verify, then rename into place.
        let f = file.clone();
        let digest = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut off = 0u64;
            while off < size {
                let n = usize::try_from((size - off).min(buf.len() as u64)).unwrap_or(0);
                let chunk = buf.get_mut(..n).unwrap_or_default();
                f.read_exact_at(chunk, off)?;
                h.update(&*chunk);
                off += n as u64;
            }
            Ok(hex::encode(h.finalize()))
        })
        .await
        .map_err(|e| fail(e.to_string()))??;
        if digest != described.sha256 {
            let _ = std::fs::remove_file(&part);
            let _ = std::fs::remove_file(&state_path);
            let reason = format!("SHA-256 {digest}, expected {}", described.sha256);
            report("failed", Some(reason.clone())).await;
            return Err(fail(reason));
        }
        std::fs::rename(&part, path)?;
        let _ = std::fs::remove_file(&state_path);
        report("verified", None).await;
        Ok(DownloadReport {
            id: id.to_owned(),
            path: path.to_owned(),
            name: described.name,
            version: described.version,
            size,
            sha256: digest,
            bytes_fetched: fetched,
            resumed_bytes,
        })
    }
}
