//! Resumable, pipelined file upload over the file-transfer protocol (DESIGN §2).
//!
//! One task per upload drives the transfer as a state machine:
//!
//! ```text
//!  ┌─► sync: status ──► (unknown) init ──► ranges held ─┐
//!  │                                                     ▼
//!  │   pump: producer reads + hashes the source in order, segments not held go out on the
//!  │         file channel(s), up to `window` bytes awaiting their PUBACK (0x00 = durable)
//!  │         0x80 resend · 0x97 back off · 0x10 restart · 0x83 stop
//!  │                                                     ▼
//!  │   fin/{size}/{sha256} ──► 0x00 done · 0x80 status, resend what is missing
//!  └── connection lost: segments in flight are kept, wait for the reconnect, sync again
//! ```
//!
//! Segments in flight stay in memory until acknowledged, so a reconnect re-sends at most the
//! window, and only the parts the server's status does not list as held.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures::stream::{FuturesUnordered, StreamExt};
use quicft_proto::ft::{
    Command, FileId, FileMeta, FtReason, Mode, RangeSet, Response, Sha256, MAX_NAME_LEN,
};
use quicft_proto::{Properties, Protocol, QoS, ReasonCode};
use sha2::Digest;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, watch};

use crate::channel::ChannelKind;
use crate::client::{Channel, Client, Message};
use crate::error::{Error, Result};
use crate::options::{Reconnect, Transport};
use crate::responses::{Key, Responses};

/// What to upload: a file (re-readable, so any restart can be served) or any async reader (read
/// once, front to back; its size may be unknown until the end).
pub enum UploadSource {
    Path(PathBuf),
    Reader {
        reader: Box<dyn AsyncRead + Send + Unpin>,
        /// The size when known up front; it is then declared in init and checked at the end.
        size: Option<u64>,
    },
}

impl UploadSource {
    pub fn reader(reader: impl AsyncRead + Send + Unpin + 'static, size: Option<u64>) -> Self {
        UploadSource::Reader {
            reader: Box::new(reader),
            size,
        }
    }
}

impl From<PathBuf> for UploadSource {
    fn from(p: PathBuf) -> Self {
        UploadSource::Path(p)
    }
}

impl From<&Path> for UploadSource {
    fn from(p: &Path) -> Self {
        UploadSource::Path(p.to_owned())
    }
}

impl From<&str> for UploadSource {
    fn from(p: &str) -> Self {
        UploadSource::Path(p.into())
    }
}

/// How to upload. `UploadOptions::default()` suits most devices.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    /// The transfer's id (one MQTT topic level). `None`: for a path, derived from the path, size and
    /// modification time ([`derive_file_id`]), so a device that restarts resumes the same transfer;
    /// for a reader, random.
    pub file_id: Option<String>,
    /// The file name the server exports under; default: the path's file name (`upload` for readers).
    pub name: Option<String>,
    /// Bytes per segment. `None`: 256 KiB over QUIC, 64 KiB over TLS/TCP, where a segment is the
    /// slice that telemetry may have to wait behind.
    pub segment_size: Option<usize>,
    /// Bytes sent and not yet acknowledged as durable, across all streams of the upload. Also the
    /// most a reconnect can make us send twice.
    pub window: usize,
    /// File channels (QUIC streams) the upload spreads its segments over.
    pub streams: usize,
    /// Put each segment's SHA-256 in its topic so the server verifies it (0x80 on mismatch).
    /// QUIC and TLS already protect the bytes in transit; this costs a hash per segment.
    pub segment_checksums: bool,
    /// Init metadata passed through to the server.
    pub expire_at: Option<u64>,
    pub segments_ttl: Option<u64>,
    pub user_data: Option<serde_json::Value>,
    /// Backoff after 0x97 (quota exceeded: retry later).
    pub quota_backoff: Reconnect,
    /// How long to wait for the answer to a status query (or, under 3.1.1, to any command) before
    /// asking again.
    pub response_timeout: Duration,
}

impl Default for UploadOptions {
    fn default() -> Self {
        UploadOptions {
            file_id: None,
            name: None,
            segment_size: None,
            window: 8 << 20,
            streams: 1,
            segment_checksums: false,
            expire_at: None,
            segments_ttl: None,
            user_data: None,
            quota_backoff: Reconnect {
                initial_delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(60),
                jitter: 0.5,
                max_attempts: None,
            },
            response_timeout: Duration::from_secs(30),
        }
    }
}

/// Largest segment accepted in options (the server's default packet limit is 16 MiB).
const MAX_SEGMENT: usize = 8 << 20;
/// A segment the server keeps answering 0x80 for is given up after this many tries.
const MAX_RETRANSMITS: u32 = 8;

/// Where an upload stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadState {
    /// Asking the server what it holds, sending init.
    Starting,
    Uploading,
    Paused,
    /// The server said 0x97 (quota): waiting before trying again.
    BackingOff,
    /// The connection is down; waiting for the client to reconnect.
    Reconnecting,
    /// fin sent, the server is assembling and verifying.
    Finishing,
    Done,
    Failed,
}

/// A snapshot of an upload's progress (see [`Upload::progress`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Progress {
    pub state: UploadState,
    /// Bytes the server holds durably.
    pub bytes_acked: u64,
    /// The size, once known.
    pub total: Option<u64>,
    /// Segment bytes sent by this process, re-sends included.
    pub bytes_sent: u64,
    /// Of those, bytes sent more than once (after a reconnect, 0x80 or 0x97).
    pub bytes_resent: u64,
    /// Bytes per second acknowledged, over the last few seconds.
    pub rate: f64,
    /// At the current rate, when the size is known.
    pub eta: Option<Duration>,
    /// Reconnects of the client since the upload started.
    pub reconnects: u32,
}

/// What a finished upload did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UploadReport {
    pub file_id: String,
    pub name: String,
    /// The file's size.
    pub bytes: u64,
    /// SHA-256 of the file, lowercase hex (verified by the server at fin).
    pub sha256: String,
    pub seconds: f64,
    /// Bits per second of file data made durable by this run.
    pub goodput_bps: f64,
    /// The transport of the connection that finished the upload.
    pub transport: Transport,
    /// Reconnects of the client while the upload ran.
    pub reconnects: u32,
    /// Segment bytes this upload handed to the connection, re-sends included (what a restarted
    /// device found already held by the server is not sent, so not counted).
    pub bytes_sent: u64,
    /// Of those, bytes sent more than once by this upload: after a reconnect (what was in flight
    /// and the server did not hold), 0x80, 0x97 or 0x10. Counted when handed to the connection, so
    /// a segment still queued in it when the connection dropped counts too; transport-level
    /// retransmissions (TCP, QUIC) are not counted.
    pub bytes_resent: u64,
}

/// A running upload. Dropping it lets the upload go on in the background; [`Upload::wait`] for it,
/// or [`Upload::cancel`] it.
pub struct Upload {
    file_id: String,
    progress: watch::Receiver<Progress>,
    ctl: watch::Sender<Ctl>,
    task: tokio::task::JoinHandle<Result<UploadReport>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Ctl {
    paused: bool,
    cancelled: bool,
}

impl Upload {
    pub fn file_id(&self) -> &str {
        &self.file_id
    }

    /// Progress updates; `borrow()` for the latest, `changed().await` to follow them.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// Stops sending new segments (those in flight are still acknowledged).
    pub fn pause(&self) {
        self.ctl.send_modify(|c| c.paused = true);
    }

    pub fn resume(&self) {
        self.ctl.send_modify(|c| c.paused = false);
    }

    /// Waits for the upload to finish.
    pub async fn wait(self) -> Result<UploadReport> {
        join(self.task, &self.file_id).await
    }

    /// Stops the upload and aborts the transfer on the server (`$file/{id}/abort`, which deletes
    /// what it stored). Returns once the upload task has ended; `Ok` also when the upload had
    /// completed before the cancel took effect.
    pub async fn cancel(self) -> Result<()> {
        self.ctl.send_modify(|c| c.cancelled = true);
        match join(self.task, &self.file_id).await {
            Ok(_) | Err(Error::UploadCancelled(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

async fn join(
    task: tokio::task::JoinHandle<Result<UploadReport>>,
    file_id: &str,
) -> Result<UploadReport> {
    task.await.map_err(|e| Error::Upload {
        file_id: file_id.to_owned(),
        why: format!("upload task failed: {e}"),
    })?
}

/// A file id for `path` that stays the same while the file does: SHA-256 over the canonical path,
/// the size and the modification time, 32 hex digits. A restarted device derives the same id and
/// resumes; a rewritten file gets a new one.
///
/// ```
/// let path = std::env::temp_dir().join("quicft-derive-file-id-example.bin");
/// std::fs::write(&path, b"forklift log")?;
/// let id = quicft_client::derive_file_id(&path)?;
/// assert_eq!(id, quicft_client::derive_file_id(&path)?);
/// assert_eq!(id.len(), 32);
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn derive_file_id(path: &Path) -> std::io::Result<String> {
    let meta = std::fs::metadata(path)?;
    let canonical = std::fs::canonicalize(path)?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok(file_id_of(&canonical, meta.len(), mtime))
}

fn file_id_of(canonical: &Path, size: u64, mtime_nanos: u128) -> String {
    let mut h = sha2::Sha256::new();
    h.update(canonical.as_os_str().as_encoded_bytes());
    h.update([0]);
    h.update(size.to_be_bytes());
    h.update(mtime_nanos.to_be_bytes());
    hex::encode(&h.finalize()[..16])
}

/// A name the server accepts (DESIGN §2): separators and control characters become `_`, cut to
/// 240 bytes on a character boundary.
fn sanitize_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if matches!(c, '/' | '\\' | ':') || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    while out.len() > MAX_NAME_LEN {
        out.pop();
    }
    if out.is_empty() || out == "." || out == ".." {
        out = "upload".into();
    }
    out
}

impl Client {
    /// Starts uploading `source` (a path, or [`UploadSource::reader`]) on this connection; see the
    /// [module docs](crate#uploads) and [`UploadOptions`]. The upload survives reconnects and
    /// resumes where the server stands.
    ///
    /// ```no_run
    /// use quicft_client::{Client, ClientOptions, UploadOptions};
    ///
    /// # async fn run() -> Result<(), quicft_client::Error> {
    /// let mut options = ClientOptions::auto("localhost");
    /// options.client_id = "camera-12".into();
    /// let client = Client::connect(options).await?;
    /// let upload = client.upload("clip-0042.mp4", UploadOptions::default()).await?;
    /// let mut progress = upload.progress();
    /// tokio::spawn(async move {
    ///     while progress.changed().await.is_ok() {
    ///         let p = progress.borrow().clone();
    ///         println!("{} of {:?} bytes, {:.0} B/s", p.bytes_acked, p.total, p.rate);
    ///     }
    /// });
    /// let report = upload.wait().await?;
    /// println!("{} bytes in {:.1} s over {}", report.bytes, report.seconds, report.transport);
    /// # Ok(())
    /// # }
    /// ```
    pub async fn upload(
        &self,
        source: impl Into<UploadSource>,
        options: UploadOptions,
    ) -> Result<Upload> {
        let source = source.into();
        let (file_id, name, size, source) = match source {
            UploadSource::Path(path) => {
                let meta = tokio::fs::metadata(&path)
                    .await
                    .map_err(|error| Error::Source {
                        what: path.display().to_string(),
                        error,
                    })?;
                if !meta.is_file() {
                    return Err(Error::InvalidOptions(format!(
                        "{} is not a regular file",
                        path.display()
                    )));
                }
                let file_id = match &options.file_id {
                    Some(id) => id.clone(),
                    None => {
                        let p = path.clone();
                        tokio::task::spawn_blocking(move || derive_file_id(&p))
                            .await
                            .map_err(|e| Error::InvalidOptions(e.to_string()))?
                            .map_err(|error| Error::Source {
                                what: path.display().to_string(),
                                error,
                            })?
                    }
                };
                let name = options.name.clone().unwrap_or_else(|| {
                    path.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "upload".into())
                });
                (file_id, name, Some(meta.len()), Source::Path(path))
            }
            UploadSource::Reader { reader, size } => {
                let file_id = options
                    .file_id
                    .clone()
                    .unwrap_or_else(|| hex::encode(rand::random::<[u8; 16]>()));
                let name = options.name.clone().unwrap_or_else(|| "upload".into());
                (
                    file_id,
                    name,
                    size,
                    Source::Reader(std::sync::Mutex::new(Some(reader))),
                )
            }
        };
        let topic_id = FileId::parse(&file_id)
            .map_err(|e| Error::InvalidOptions(format!("file id {file_id:?}: {e}")))?;
        let meta = FileMeta {
            name: sanitize_name(&name),
            size,
            checksum: None,
            expire_at: options.expire_at,
            segments_ttl: options.segments_ttl,
            user_data: options.user_data.clone(),
        };
        meta.validate()
            .map_err(|e| Error::InvalidOptions(e.to_string()))?;
        if options.window == 0 || options.streams == 0 {
            return Err(Error::InvalidOptions(
                "upload window and streams must be at least 1".into(),
            ));
        }
        let transport = self.info().transport;
        let segment_size = options
            .segment_size
            .unwrap_or(match transport {
                Transport::Quic => 256 * 1024,
                Transport::Tls | Transport::Tcp => 64 * 1024,
            })
            .clamp(1, MAX_SEGMENT);
        let mut channels = Vec::with_capacity(options.streams);
        for _ in 0..options.streams {
            channels.push(self.open_channel(ChannelKind::File).await?);
        }
        let progress0 = Progress {
            state: UploadState::Starting,
            bytes_acked: 0,
            total: size,
            bytes_sent: 0,
            bytes_resent: 0,
            rate: 0.0,
            eta: None,
            reconnects: 0,
        };
        let (progress_tx, progress) = watch::channel(progress0);
        let (ctl, ctl_rx) = watch::channel(Ctl::default());
        let mode = match self.info().protocol {
            Protocol::V5 => Mode::Sync,
            Protocol::V311 => Mode::Async,
        };
        let span = tracing::info_span!("upload", file_id = %file_id);
        let engine = Engine {
            client: self.clone(),
            file_id: topic_id,
            meta,
            mode,
            opts: options,
            segment_size,
            source,
            producer: None,
            next_off: 0,
            discarded: false,
            end: None,
            acked: RangeSet::new(),
            sent: RangeSet::new(),
            retry: BTreeMap::new(),
            channels,
            progress: progress_tx,
            ctl: ctl_rx,
            bytes_sent: 0,
            bytes_resent: 0,
            acked_here: 0,
            samples: VecDeque::new(),
            quota_attempt: 0,
            backoff_until: None,
            started: Instant::now(),
            reconnects0: self.reconnects(),
        };
        let task = tokio::spawn(tracing::Instrument::instrument(engine.run(), span));
        Ok(Upload {
            file_id,
            progress,
            ctl,
            task,
        })
    }

    /// Asks the server what it holds of transfer `file_id` (of this client id): the `status`
    /// command, answered on `$file-response/{clientId}`.
    pub async fn file_status(&self, file_id: &str) -> Result<Response> {
        let topic_id = FileId::parse(file_id)
            .map_err(|e| Error::InvalidOptions(format!("file id {file_id:?}: {e}")))?;
        let channel = self.telemetry();
        let mode = match self.info().protocol {
            Protocol::V5 => Mode::Sync,
            Protocol::V311 => Mode::Async,
        };
        let topic = topic_id.topic(mode, &Command::Status);
        let (_, r) = command(
            self,
            &channel,
            mode,
            topic,
            Bytes::new(),
            true,
            Duration::from_secs(30),
        )
        .await?;
        r.ok_or_else(|| Error::Upload {
            file_id: file_id.to_owned(),
            why: "no status response".into(),
        })
    }
}

/// Sends one file-transfer command and returns its reason code and, when asked for (or in async
/// mode, where it is the outcome), the JSON response.
async fn command(
    client: &Client,
    channel: &Channel,
    mode: Mode,
    topic: String,
    payload: Bytes,
    want_response: bool,
    timeout: Duration,
) -> Result<(ReasonCode, Option<Response>)> {
    let core = client.core();
    let need_response = want_response || mode == Mode::Async;
    if need_response {
        Responses::ensure_subscribed(core).await?;
        core.subscriptions_restored().await;
    }
    let mut properties = Properties::default();
    let mut key = None;
    if need_response && client.info().protocol == Protocol::V5 {
        let c = core.ft.correlation();
        properties.response_topic = Some(quicft_proto::ft::response_topic(&core.client_id()));
        properties.correlation_data = Some(c.clone());
        key = Some(Key::Correlation(c));
    }
    let waiter = key.clone().map(|k| (k.clone(), core.ft.expect(k)));
    let message = Message::new(topic.clone(), payload)
        .qos(QoS::AtLeastOnce)
        .properties(properties);
    let inflight = match channel.start(message).await {
        Ok(i) => i,
        Err(e) => {
            if let Some(k) = &key {
                core.ft.forget(k);
            }
            return Err(e);
        }
    };
    let pkid = inflight.pkid;
    let conn = inflight.conn.clone();
    let outcome = inflight.outcome().await?;
    if !need_response {
        return Ok((outcome.code, None));
    }
    let (key, rx) = match waiter {
        Some(w) => w,
        None => {
            let k = Key::Command {
                topic,
                packet_id: pkid,
            };
            (k.clone(), core.ft.expect(k))
        }
    };
    let r = tokio::select! {
        r = rx => r.ok(),
        _ = tokio::time::sleep(timeout) => None,
        _ = conn.shared.cancel.cancelled() => {
            core.ft.forget(&key);
            return Err(conn.shared.closed_error());
        }
    };
    core.ft.forget(&key);
    match r {
        Some(r) => {
            let code = match mode {
                Mode::Async => ReasonCode(r.reason_code),
                Mode::Sync => outcome.code,
            };
            Ok((code, Some(r)))
        }
        None => Err(Error::Upload {
            file_id: String::new(),
            why: format!("no response to {} within {timeout:?}", inflight_topic(&key)),
        }),
    }
}

fn inflight_topic(key: &Key) -> String {
    match key {
        Key::Command { topic, .. } => topic.clone(),
        Key::Correlation(_) => "the command".into(),
    }
}

enum Source {
    Path(PathBuf),
    /// Taken by the first producer: a reader is read once. (In a mutex only so that the engine is
    /// `Sync`; nothing contends for it.)
    Reader(std::sync::Mutex<Option<Box<dyn AsyncRead + Send + Unpin>>>),
}

/// What the producer hands over, in file order.
enum Chunk {
    Data(u64, Bytes),
    End { size: u64, sha256: [u8; 32] },
    Failed(std::io::Error),
}

/// Reads the source front to back in segment-size chunks, hashing everything (held ranges too:
/// fin carries the SHA-256 of the whole file).
fn spawn_producer(
    mut reader: Pin<Box<dyn AsyncRead + Send>>,
    segment: usize,
) -> mpsc::Receiver<Chunk> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut hash = sha2::Sha256::new();
        let mut off = 0u64;
        loop {
            let mut buf = BytesMut::with_capacity(segment);
            while buf.len() < segment {
                match reader.read_buf(&mut buf).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Chunk::Failed(e)).await;
                        return;
                    }
                }
            }
            if buf.is_empty() {
                let sha256: [u8; 32] = hash.finalize().into();
                let _ = tx.send(Chunk::End { size: off, sha256 }).await;
                return;
            }
            hash.update(&buf);
            let len = buf.len() as u64;
            if tx.send(Chunk::Data(off, buf.freeze())).await.is_err() {
                return;
            }
            off += len;
        }
    });
    rx
}

/// A segment of file data sent, or to be sent.
struct Seg {
    off: u64,
    data: Bytes,
    retransmits: u32,
}

impl Seg {
    fn end(&self) -> u64 {
        self.off + self.data.len() as u64
    }
}

/// Why the pump or the sync stopped.
enum Stop {
    /// The connection ended: wait for the reconnect, then sync again.
    Lost,
    /// The server has no usable state (0x10).
    Restart,
    Cancelled,
    Fatal(Error),
}

impl From<Error> for Stop {
    fn from(e: Error) -> Stop {
        match e {
            Error::ConnectionClosed(_) | Error::ChannelClosed => Stop::Lost,
            e => Stop::Fatal(e),
        }
    }
}

type Outcome = (u64, usize, Result<ReasonCode>);

/// The fin command of a file of `size` bytes with SHA-256 `sha`, as the server verifies it.
fn fin_command(size: u64, sha: [u8; 32]) -> Command {
    Command::Fin {
        size,
        checksum: Some(Sha256(sha)),
    }
}
/// A fin in flight, with its response.
type EarlyFin =
    Pin<Box<dyn std::future::Future<Output = Result<(ReasonCode, Option<Response>)>> + Send>>;

struct Engine {
    client: Client,
    file_id: FileId,
    meta: FileMeta,
    mode: Mode,
    opts: UploadOptions,
    segment_size: usize,
    source: Source,
    producer: Option<mpsc::Receiver<Chunk>>,
    /// Offset after the last chunk taken from the producer.
    next_off: u64,
    /// Some bytes were dropped from memory (acknowledged or already held): a reader source can no
    /// longer start over.
    discarded: bool,
    /// Size and SHA-256, once the producer reached the end.
    end: Option<(u64, [u8; 32])>,
    /// What the server holds durably, as far as we know.
    acked: RangeSet,
    /// Everything this process ever sent (to count re-sends).
    sent: RangeSet,
    /// Segments to send before taking new ones from the producer, by offset.
    retry: BTreeMap<u64, Seg>,
    channels: Vec<Channel>,
    progress: watch::Sender<Progress>,
    ctl: watch::Receiver<Ctl>,
    bytes_sent: u64,
    bytes_resent: u64,
    /// Bytes acknowledged by PUBACKs in this run (goodput, rate).
    acked_here: u64,
    samples: VecDeque<(Instant, u64)>,
    quota_attempt: u32,
    backoff_until: Option<tokio::time::Instant>,
    started: Instant,
    reconnects0: u32,
}

impl Engine {
    fn fail(&self, why: impl Into<String>) -> Error {
        Error::Upload {
            file_id: self.file_id.to_string(),
            why: why.into(),
        }
    }

    /// init's JSON, also carried by the first status (see `sync`).
    fn meta_json(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(&self.meta).unwrap_or_default())
    }

    fn topic(&self, command: Command) -> String {
        self.file_id.topic(self.mode, &command)
    }

    fn set_state(&mut self, state: UploadState) {
        let reconnects = self.client.reconnects().saturating_sub(self.reconnects0);
        let now = Instant::now();
        self.samples.push_back((now, self.acked_here));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(5))
        {
            self.samples.pop_front();
        }
        let rate = match self.samples.front() {
            Some((t, b)) if now.duration_since(*t) > Duration::from_millis(200) => {
                (self.acked_here - b) as f64 / now.duration_since(*t).as_secs_f64()
            }
            _ => self.progress.borrow().rate,
        };
        let total = self.meta.size.or(self.end.map(|(s, _)| s));
        let acked = self.acked.covered_len();
        let eta = match total {
            Some(t) if rate > 0.0 => Some(Duration::from_secs_f64(
                t.saturating_sub(acked) as f64 / rate,
            )),
            _ => None,
        };
        self.progress.send_replace(Progress {
            state,
            bytes_acked: acked,
            total,
            bytes_sent: self.bytes_sent,
            bytes_resent: self.bytes_resent,
            rate,
            eta,
            reconnects,
        });
    }

    async fn run(mut self) -> Result<UploadReport> {
        let result = self.drive().await;
        let state = match &result {
            Ok(_) => UploadState::Done,
            Err(_) => UploadState::Failed,
        };
        self.set_state(state);
        match &result {
            Ok(r) => tracing::info!(
                bytes = r.bytes,
                seconds = r.seconds,
                resent = r.bytes_resent,
                "upload complete"
            ),
            Err(e) => tracing::warn!(%e, "upload ended"),
        }
        result
    }

    async fn drive(&mut self) -> Result<UploadReport> {
        loop {
            let stop = match self.attempt().await {
                Ok(report) => return Ok(report),
                Err(stop) => stop,
            };
            match stop {
                Stop::Fatal(e) => return Err(e),
                Stop::Cancelled => return self.abort().await,
                Stop::Lost => {
                    self.set_state(UploadState::Reconnecting);
                    // The client reconnects on its own; `conn()` waits for it (or fails when the
                    // client is closed for good).
                    let core = self.client.core().clone();
                    let mut ctl = self.ctl.clone();
                    let cancelled = tokio::select! {
                        c = core.conn() => { c?; false }
                        _ = cancelled(&mut ctl) => true,
                    };
                    if cancelled {
                        return self.abort().await;
                    }
                }
                Stop::Restart => self.restart()?,
            }
        }
    }

    /// The server lost the transfer: start over from byte 0.
    fn restart(&mut self) -> Result<()> {
        tracing::info!("server has no usable state: restarting from offset 0");
        self.acked = RangeSet::new();
        if !self.discarded {
            // Everything read so far is still in memory (in `retry`): just send it again.
            return Ok(());
        }
        match self.source {
            Source::Path(_) => {
                self.producer = None;
                self.retry.clear();
                self.next_off = 0;
                self.end = None;
                self.discarded = false;
                Ok(())
            }
            Source::Reader(_) => Err(self
                .fail("the server lost the transfer and the source reader cannot be read again")),
        }
    }

    async fn attempt(&mut self) -> std::result::Result<UploadReport, Stop> {
        self.set_state(UploadState::Starting);
        self.sync().await?;
        self.pump().await
    }

    /// Sends a command on the first file channel.
    async fn command(
        &self,
        command: Command,
        payload: Bytes,
        want_response: bool,
    ) -> std::result::Result<(ReasonCode, Option<Response>), Stop> {
        let r = command_on(
            &self.client,
            &self.channels[0],
            self.mode,
            self.topic(command),
            payload,
            want_response,
            self.opts.response_timeout,
        )
        .await;
        match r {
            Ok(x) => Ok(x),
            Err(Error::Upload { why, .. }) => {
                // No response in time: the server is alive but silent; ask again after a pause.
                tracing::warn!(%why, "retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                Err(Stop::Lost)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Waits out a 0x97 before the next try.
    async fn quota_wait(&mut self) -> std::result::Result<(), Stop> {
        let wait = self
            .opts
            .quota_backoff
            .delay(self.quota_attempt, rand::random::<f64>());
        self.quota_attempt = self.quota_attempt.saturating_add(1);
        self.set_state(UploadState::BackingOff);
        tracing::info!(?wait, "server quota exceeded (0x97): backing off");
        let mut ctl = self.ctl.clone();
        tokio::select! {
            _ = tokio::time::sleep(wait) => Ok(()),
            _ = cancelled(&mut ctl) => Err(Stop::Cancelled),
        }
    }

    /// Asks the server what it holds; inits the transfer when it holds nothing.
    async fn sync(&mut self) -> std::result::Result<(), Stop> {
        loop {
            if self.ctl.borrow().cancelled {
                return Err(Stop::Cancelled);
            }
            // While nothing is known to be held, status carries init's metadata (a quicft
            // extension): the server inits a transfer it does not know in the same round trip. Once
            // something was acknowledged, a server that lost the transfer must answer "unknown" so
            // that the upload starts over (below), not be re-initialised behind our back.
            let fresh = self.acked.is_empty() && !self.discarded;
            let payload = if fresh {
                self.meta_json()
            } else {
                Bytes::new()
            };
            let (_, r) = self.command(Command::Status, payload, true).await?;
            let Some(r) = r else { return Err(Stop::Lost) };
            if fresh {
                match FtReason::from_code(r.reason_code) {
                    Some(FtReason::Success | FtReason::Restart | FtReason::Quota) => {}
                    // The server refused to init (a bad name, over a size limit, a conflict).
                    _ => {
                        return Err(Stop::Fatal(self.fail(format!(
                            "init refused with {:#04x}: {}",
                            r.reason_code, r.reason_description
                        ))))
                    }
                }
            }
            match FtReason::from_code(r.reason_code) {
                Some(FtReason::Success) => {
                    if let Some(held) = &r.meta {
                        if !same_transfer(held, &self.meta) {
                            return Err(Stop::Fatal(self.fail(format!(
                                "the server holds a different file under this id ({:?}, {:?} bytes); \
                                 use another file id or abort it first",
                                held.name, held.size
                            ))));
                        }
                    }
                    self.adopt_ranges(r.ranges.unwrap_or_default());
                    tracing::debug!(state = ?r.state, held = self.acked.covered_len(), "status");
                    return Ok(());
                }
                Some(FtReason::Restart) => {
                    if self.discarded || !self.acked.is_empty() {
                        return Err(Stop::Restart);
                    }
                    let payload = self.meta_json();
                    // With its response: a refusal's reason is only there.
                    let (code, response) = self.command(Command::Init, payload, true).await?;
                    match FtReason::from_code(code.0) {
                        Some(FtReason::Success) => {
                            self.acked = RangeSet::new();
                            return Ok(());
                        }
                        Some(FtReason::Quota) => self.quota_wait().await?,
                        _ => {
                            let why = response
                                .map(|r| r.reason_description)
                                .unwrap_or_else(|| describe(code).into());
                            return Err(Stop::Fatal(
                                self.fail(format!("init refused with {code}: {why}")),
                            ));
                        }
                    }
                }
                Some(FtReason::Quota) => self.quota_wait().await?,
                _ => {
                    return Err(Stop::Fatal(self.fail(format!(
                        "status answered {:#04x}: {}",
                        r.reason_code, r.reason_description
                    ))))
                }
            }
        }
    }

    /// The server's held ranges become what we know; queued segments shrink to what it lacks.
    fn adopt_ranges(&mut self, ranges: Vec<(u64, u64)>) {
        self.acked = RangeSet::from_vec(ranges);
        let queued = std::mem::take(&mut self.retry);
        for (_, seg) in queued {
            self.queue_missing(seg);
        }
    }

    /// Queues the parts of `seg` the server does not hold.
    fn queue_missing(&mut self, seg: Seg) {
        let missing = self.acked.missing_in(seg.off, seg.end());
        let missing_len: u64 = missing.iter().map(|(a, b)| b - a).sum();
        if missing_len < seg.data.len() as u64 {
            self.discarded = true;
        }
        for (a, b) in missing {
            let from = usize::try_from(a - seg.off).unwrap_or(0);
            let to = usize::try_from(b - seg.off).unwrap_or(0);
            self.retry.insert(
                a,
                Seg {
                    off: a,
                    data: seg.data.slice(from..to),
                    retransmits: seg.retransmits,
                },
            );
        }
    }

    fn ensure_producer(&mut self) -> std::result::Result<(), Stop> {
        if self.producer.is_some() || self.end.is_some() {
            return Ok(());
        }
        let reader: Pin<Box<dyn AsyncRead + Send>> = match &self.source {
            Source::Path(path) => {
                let file = std::fs::File::open(path).map_err(|error| {
                    Stop::Fatal(Error::Source {
                        what: path.display().to_string(),
                        error,
                    })
                })?;
                // A snapshot of the size stated in init: bytes appended meanwhile are not ours.
                let size = self.meta.size.unwrap_or(u64::MAX);
                Box::pin(tokio::fs::File::from_std(file).take(size))
            }
            Source::Reader(r) => {
                let taken = r.lock().unwrap_or_else(|e| e.into_inner()).take();
                match taken {
                    Some(r) => Box::pin(r),
                    None => {
                        return Err(Stop::Fatal(
                            self.fail("the source reader cannot be read again"),
                        ))
                    }
                }
            }
        };
        self.producer = Some(spawn_producer(reader, self.segment_size));
        Ok(())
    }

    /// Sends segments with up to `window` bytes awaiting acknowledgement, then fin.
    async fn pump(&mut self) -> std::result::Result<UploadReport, Stop> {
        self.ensure_producer()?;
        let mut inflight: FuturesUnordered<
            Pin<Box<dyn std::future::Future<Output = Outcome> + Send>>,
        > = FuturesUnordered::new();
        let mut in_map: HashMap<u64, Seg> = HashMap::new();
        let mut loads = vec![0usize; self.channels.len()];
        let mut inflight_bytes = 0usize;
        // fin sent right behind the last segment, before their acks (see `early_fin`).
        let mut early_fin: Option<EarlyFin> = None;
        let mut early_fin_tried = false;
        let result = loop {
            // Marks the controls seen, so that the clone below waits for the next change.
            let ctl_now = *self.ctl.borrow_and_update();
            let paused = ctl_now.cancelled || ctl_now.paused;
            let backing_off = self
                .backoff_until
                .is_some_and(|t| t > tokio::time::Instant::now());
            if !backing_off {
                self.backoff_until = None;
            }
            let state = if paused {
                UploadState::Paused
            } else if backing_off {
                UploadState::BackingOff
            } else {
                UploadState::Uploading
            };
            if self.progress.borrow().state != state {
                self.set_state(state);
            }
            let room = !paused && !backing_off && inflight_bytes < self.opts.window;

            // Everything sent at least once: fin can follow at once instead of a round trip later.
            if !early_fin_tried && !paused && !backing_off && !in_map.is_empty() {
                if let Some(fin) = self.early_fin() {
                    early_fin_tried = true;
                    early_fin = Some(fin);
                }
            }

            // Everything sent and durable: finish (unless the early fin is still out).
            if let Some((size, sha)) = self.end {
                if early_fin.is_none()
                    && in_map.is_empty()
                    && self.retry.is_empty()
                    && self.acked.is_complete(size)
                {
                    match self.fin(size, sha).await {
                        Ok(Some(report)) => break Ok(report),
                        Ok(None) => continue,
                        Err(e) => break Err(e),
                    }
                }
            }

            if room {
                if let Some((_, seg)) = self.retry.pop_first() {
                    let ch = pick(&loads);
                    match self.send(ch, &seg).await {
                        Ok(fut) => {
                            loads[ch] += seg.data.len();
                            inflight_bytes += seg.data.len();
                            in_map.insert(seg.off, seg);
                            inflight.push(fut);
                            continue;
                        }
                        Err(stop) => {
                            self.retry.insert(seg.off, seg);
                            break Err(stop);
                        }
                    }
                }
            }

            let mut ctl = self.ctl.clone();
            let take_new = room && self.retry.is_empty() && self.producer.is_some();
            let backoff = self.backoff_until;
            tokio::select! {
                biased;
                _ = changed(&mut ctl) => {
                    if ctl.borrow().cancelled {
                        break Err(Stop::Cancelled);
                    }
                }
                Some((off, ch, result)) = inflight.next(), if !inflight.is_empty() => {
                    let Some(seg) = in_map.remove(&off) else { continue };
                    loads[ch] = loads[ch].saturating_sub(seg.data.len());
                    inflight_bytes = inflight_bytes.saturating_sub(seg.data.len());
                    if let Err(stop) = self.on_outcome(seg, result) {
                        break Err(stop);
                    }
                }
                r = async {
                    match early_fin.as_mut() {
                        Some(f) => f.await,
                        None => std::future::pending().await,
                    }
                }, if early_fin.is_some() => {
                    early_fin = None;
                    if let (Ok((code, _)), Some((size, sha))) = (&r, self.end) {
                        if FtReason::from_code(code.0) == Some(FtReason::Success) {
                            // The server ran fin after every segment before it: all are durable.
                            for (_, seg) in in_map.drain() {
                                self.on_outcome(seg, Ok(ReasonCode::SUCCESS))?;
                            }
                            break Ok(self.report(size, hex::encode(sha)));
                        }
                    }
                    // Anything else (a segment still to resend, a lost connection, a server
                    // that answered before the segments were in) is left to the ordinary fin,
                    // after every segment is acknowledged, which handles each answer.
                    tracing::debug!(?r, "early fin not taken");
                }
                _ = async {
                    match backoff {
                        Some(t) => tokio::time::sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                }, if backoff.is_some() => {}
                chunk = async {
                    match self.producer.as_mut() {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                }, if take_new => {
                    if let Err(stop) = self.on_chunk(chunk) {
                        break Err(stop);
                    }
                }
            }
        };
        // Whatever is still in flight is sent again after the next sync, if the server lacks it.
        for (_, seg) in in_map.drain() {
            self.retry.insert(seg.off, seg);
        }
        result
    }

    fn on_chunk(&mut self, chunk: Option<Chunk>) -> std::result::Result<(), Stop> {
        tracing::trace!(next = self.next_off, "chunk");
        match chunk {
            Some(Chunk::Data(off, data)) => {
                self.next_off = off + data.len() as u64;
                self.queue_missing(Seg {
                    off,
                    data,
                    retransmits: 0,
                });
                Ok(())
            }
            Some(Chunk::End { size, sha256 }) => {
                self.producer = None;
                if let Some(declared) = self.meta.size {
                    if declared != size {
                        return Err(Stop::Fatal(self.fail(format!(
                            "the source ended at {size} bytes, {declared} were declared"
                        ))));
                    }
                }
                self.end = Some((size, sha256));
                Ok(())
            }
            Some(Chunk::Failed(error)) => Err(Stop::Fatal(Error::Source {
                what: format!("the source of {}", self.file_id),
                error,
            })),
            None => Err(Stop::Fatal(self.fail("the source reader task ended"))),
        }
    }

    /// Queues `seg` on channel `ch`; the returned future resolves with its outcome.
    async fn send(
        &mut self,
        ch: usize,
        seg: &Seg,
    ) -> std::result::Result<Pin<Box<dyn std::future::Future<Output = Outcome> + Send>>, Stop> {
        let topic = self.topic(Command::Segment {
            offset: seg.off,
            checksum: self
                .opts
                .segment_checksums
                .then(|| Sha256(sha2::Sha256::digest(&seg.data).into())),
        });
        let message = Message::new(topic.clone(), seg.data.clone()).qos(QoS::AtLeastOnce);
        tracing::trace!(off = seg.off, len = seg.data.len(), ch, "segment");
        let inflight = self.channels[ch].start(message).await?;
        let len = seg.data.len() as u64;
        let new: u64 = self
            .sent
            .missing_in(seg.off, seg.end())
            .iter()
            .map(|(a, b)| b - a)
            .sum();
        self.bytes_sent += len;
        self.bytes_resent += len - new;
        self.sent.insert(seg.off, seg.end());
        let off = seg.off;
        let mode = self.mode;
        let core = self.client.core().clone();
        let timeout = self.opts.response_timeout;
        Ok(Box::pin(async move {
            let pkid = inflight.pkid;
            let conn = inflight.conn.clone();
            let result = match inflight.outcome().await {
                Ok(o) if mode == Mode::Sync => Ok(o.code),
                Ok(o) if o.code.is_error() => Ok(o.code),
                // Async: the PUBACK only says "accepted"; the outcome is the response.
                Ok(_) => {
                    let key = Key::Command {
                        topic,
                        packet_id: pkid,
                    };
                    let rx = core.ft.expect(key.clone());
                    let r = tokio::select! {
                        r = rx => r.map(|r| ReasonCode(r.reason_code)).map_err(|_| conn.shared.closed_error()),
                        _ = conn.shared.cancel.cancelled() => Err(conn.shared.closed_error()),
                        // Lost response: treat the segment as needing a retransmit.
                        _ = tokio::time::sleep(timeout) => Ok(ReasonCode(FtReason::Retransmit.code())),
                    };
                    core.ft.forget(&key);
                    r
                }
                Err(e) => Err(e),
            };
            (off, ch, result)
        }))
    }

    fn on_outcome(
        &mut self,
        mut seg: Seg,
        result: Result<ReasonCode>,
    ) -> std::result::Result<(), Stop> {
        let code = match result {
            Ok(code) => code,
            Err(e) => {
                self.retry.insert(seg.off, seg);
                return Err(e.into());
            }
        };
        match FtReason::from_code(code.0) {
            Some(FtReason::Success) => {
                let before = self.acked.covered_len();
                self.acked.insert(seg.off, seg.end());
                self.acked_here += self.acked.covered_len() - before;
                self.discarded = true;
                self.quota_attempt = 0;
                self.set_state(UploadState::Uploading);
                Ok(())
            }
            Some(FtReason::Retransmit) => {
                seg.retransmits += 1;
                if seg.retransmits > MAX_RETRANSMITS {
                    return Err(Stop::Fatal(self.fail(format!(
                        "segment at {} refused {MAX_RETRANSMITS} times (0x80)",
                        seg.off
                    ))));
                }
                self.retry.insert(seg.off, seg);
                Ok(())
            }
            Some(FtReason::Quota) => {
                let wait = self
                    .opts
                    .quota_backoff
                    .delay(self.quota_attempt, rand::random::<f64>());
                self.quota_attempt = self.quota_attempt.saturating_add(1);
                tracing::info!(?wait, "segment refused with 0x97 (quota): backing off");
                self.backoff_until = Some(tokio::time::Instant::now() + wait);
                self.retry.insert(seg.off, seg);
                Ok(())
            }
            Some(FtReason::Restart) => {
                self.retry.insert(seg.off, seg);
                Err(Stop::Restart)
            }
            Some(FtReason::Cancel) | None => Err(Stop::Fatal(self.fail(format!(
                "segment at {} refused with {code}: {}",
                seg.off,
                describe(code)
            )))),
        }
    }

    /// The report of a finished upload.
    fn report(&self, size: u64, sha256: String) -> UploadReport {
        let seconds = self.started.elapsed().as_secs_f64();
        UploadReport {
            file_id: self.file_id.to_string(),
            name: self.meta.name.clone(),
            bytes: size,
            sha256,
            seconds,
            goodput_bps: self.acked_here as f64 * 8.0 / seconds.max(1e-9),
            transport: self.client.info().transport,
            reconnects: self.client.reconnects().saturating_sub(self.reconnects0),
            bytes_sent: self.bytes_sent,
            bytes_resent: self.bytes_resent,
        }
    }

    /// fin, sent as soon as the last segment is (not acknowledged), when every byte is either
    /// held or in flight on the one file channel: the server runs a fin after the same file's
    /// commands read before it on the connection, so it answers once those are durable. That
    /// saves the round trip between the last segment's PUBACK and fin. Over several channels the
    /// segments of another stream could arrive after fin: the ordinary fin is used.
    fn early_fin(&self) -> Option<EarlyFin> {
        let (size, sha) = self.end?;
        if self.channels.len() != 1 || !self.retry.is_empty() || self.producer.is_some() {
            return None;
        }
        let client = self.client.clone();
        let channel = self.channels[0].clone();
        let topic = self.topic(fin_command(size, sha));
        let (mode, timeout) = (self.mode, self.opts.response_timeout);
        Some(Box::pin(async move {
            command_on(&client, &channel, mode, topic, Bytes::new(), true, timeout).await
        }))
    }

    /// Sends fin; `Ok(None)` when the pump must go on (missing ranges, quota).
    async fn fin(
        &mut self,
        size: u64,
        sha: [u8; 32],
    ) -> std::result::Result<Option<UploadReport>, Stop> {
        self.set_state(UploadState::Finishing);
        let sha_hex = hex::encode(sha);
        let (code, response) = self
            // With its response: it lists the missing ranges, or why the file was refused.
            .command(fin_command(size, sha), Bytes::new(), true)
            .await?;
        match FtReason::from_code(code.0) {
            Some(FtReason::Success) => Ok(Some(self.report(size, sha_hex))),
            Some(FtReason::Retransmit) => {
                // Ranges missing: learn which, and read them again from the file.
                let missing = match response.and_then(|r| r.missing) {
                    Some(m) => {
                        for &(a, b) in &m {
                            self.acked = remove_range(&self.acked, a, b);
                        }
                        m
                    }
                    None => {
                        self.sync().await?;
                        self.acked.missing(size)
                    }
                };
                tracing::warn!(?missing, "fin: server lacks ranges; re-sending them");
                let Source::Path(path) = &self.source else {
                    return Err(Stop::Fatal(self.fail(
                        "the server lacks data the source reader can no longer provide",
                    )));
                };
                let path = path.clone();
                for (a, b) in missing {
                    let mut at = a;
                    while at < b {
                        let len = (b - at).min(self.segment_size as u64);
                        let data = read_at(&path, at, len).await.map_err(|error| {
                            Stop::Fatal(Error::Source {
                                what: path.display().to_string(),
                                error,
                            })
                        })?;
                        self.retry.insert(
                            at,
                            Seg {
                                off: at,
                                data,
                                retransmits: 0,
                            },
                        );
                        at += len;
                    }
                }
                Ok(None)
            }
            Some(FtReason::Quota) => {
                self.quota_wait().await?;
                Ok(None)
            }
            Some(FtReason::Restart) => Err(Stop::Restart),
            _ => Err(Stop::Fatal(self.fail(format!(
                "fin refused with {code}: {}",
                response
                    .map(|r| r.reason_description)
                    .unwrap_or_else(|| describe(code).into())
            )))),
        }
    }

    /// Cancel: abort the transfer on the server (best effort, bounded in time).
    async fn abort(&mut self) -> Result<UploadReport> {
        tracing::info!("cancelled: aborting the transfer");
        let abort = self.command(Command::Abort, Bytes::new(), false);
        match tokio::time::timeout(Duration::from_secs(10), abort).await {
            Ok(Ok((code, _))) if code.is_error() => {
                tracing::warn!(%code, "abort refused")
            }
            Ok(Ok(_)) => {}
            _ => tracing::warn!("abort not acknowledged"),
        }
        Err(Error::UploadCancelled(self.file_id.to_string()))
    }
}

/// `command` with the engine's error mapping kept separate from the public `file_status`.
async fn command_on(
    client: &Client,
    channel: &Channel,
    mode: Mode,
    topic: String,
    payload: Bytes,
    want_response: bool,
    timeout: Duration,
) -> Result<(ReasonCode, Option<Response>)> {
    command(
        client,
        channel,
        mode,
        topic,
        payload,
        want_response,
        timeout,
    )
    .await
}

/// The next change of the controls. A dropped [`Upload`] handle changes nothing: the upload goes on.
async fn changed(ctl: &mut watch::Receiver<Ctl>) {
    if ctl.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Resolves once the upload is cancelled (never, if the handle was dropped without cancelling).
async fn cancelled(ctl: &mut watch::Receiver<Ctl>) {
    if ctl.wait_for(|c| c.cancelled).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The channel with the fewest bytes in flight.
fn pick(loads: &[usize]) -> usize {
    loads
        .iter()
        .enumerate()
        .min_by_key(|(_, l)| **l)
        .map_or(0, |(i, _)| i)
}

/// Same transfer when name and size agree (the server compares the whole metadata at init; user
/// data and expiry do not change which bytes we send).
fn same_transfer(held: &FileMeta, ours: &FileMeta) -> bool {
    held.name == ours.name && held.size == ours.size
}

fn remove_range(set: &RangeSet, a: u64, b: u64) -> RangeSet {
    let mut out = RangeSet::new();
    for (s, e) in set.iter() {
        if e <= a || s >= b {
            out.insert(s, e);
        } else {
            out.insert(s, a.max(s));
            out.insert(b.min(e), e);
        }
    }
    out
}

async fn read_at(path: &Path, off: u64, len: u64) -> std::io::Result<Bytes> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(path)?;
        let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
        f.read_exact_at(&mut buf, off)?;
        Ok(Bytes::from(buf))
    })
    .await
    .map_err(std::io::Error::other)?
}

fn describe(code: ReasonCode) -> &'static str {
    match FtReason::from_code(code.0) {
        Some(r) => r.description(),
        None => "unexpected reason code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_id_is_stable_and_one_topic_level() {
        let a = file_id_of(Path::new("/data/clip.mp4"), 10, 5);
        assert_eq!(a, file_id_of(Path::new("/data/clip.mp4"), 10, 5));
        assert_ne!(a, file_id_of(Path::new("/data/clip.mp4"), 11, 5));
        assert_ne!(a, file_id_of(Path::new("/data/clip.mp4"), 10, 6));
        assert_eq!(a.len(), 32);
        assert!(quicft_proto::ft::FileId::parse(&a).is_ok());
    }

    #[test]
    fn names_are_made_acceptable() {
        assert_eq!(sanitize_name("a/b:c"), "a_b_c");
        assert_eq!(sanitize_name(".."), "upload");
        assert_eq!(sanitize_name(&"é".repeat(200)).len(), 240);
        assert!(FileMeta {
            name: sanitize_name("x\u{7}y"),
            size: None,
            checksum: None,
            expire_at: None,
            segments_ttl: None,
            user_data: None
        }
        .validate()
        .is_ok());
    }

    #[test]
    fn removing_a_range_splits() {
        let set = RangeSet::from_vec(vec![(0, 100)]);
        let out = remove_range(&set, 10, 20);
        assert_eq!(out.to_vec(), vec![(0, 10), (20, 100)]);
    }
}
