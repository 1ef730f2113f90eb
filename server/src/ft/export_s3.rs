//! The S3-compatible exporter (`[export] backend = "s3"`): uploads the assembled file to an object
//! store with `object_store`'s S3 client, as `{prefix}{esc clientId}/{esc fileId}/{esc name}` plus
//! the manifest JSON beside it as `…/%manifest.json`, and keeps a local record of the export (the
//! manifest with its `location`, under `export_root`) so a restart knows it without listing the
//! bucket.
//!
//! Files of a part or more go up as a multipart upload read straight from `data.part`, one part
//! at a time per request and at most `parallel_parts` requests at once, so memory stays at about
//! `(parallel_parts + 1) × part_size` whatever the file's size. Each request is retried with
//! exponential backoff by the client (connection refused, 5xx, throttling); an upload that still
//! fails leaves the file where it is and the service retries the export later (`export_queue.rs`).
//!
//! Progress is durable: `%export.json` in the transfer directory records the upload id and every
//! part the store acknowledged (its ETag and MD5), so an export interrupted by SIGKILL or by the
//! store going away sends only the parts it lacks. Before the local data may go, the stored object
//! is checked: its size, and its ETag against the one S3 defines for what was sent (the MD5 of a
//! single PUT; for a multipart upload the MD5 of the parts' MD5s, `-N`). Stores whose ETags are not
//! MD5-based (SSE-KMS, some non-AWS stores) are checked on size only, with a warning.
//!
//! Checked against non-AWS stores: path-style requests are the default (virtual-host style needs
//! DNS for every bucket), the region is whatever the store accepts (`us-east-1` when unset), and
//! `allow_http` is needed for an `http://` endpoint. The additional S3 checksums
//! (`x-amz-checksum-*`) are not used: several S3-compatible stores reject or ignore them.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use md5::{Digest, Md5};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjPath;
use object_store::signer::Signer;
use object_store::{BackoffConfig, ObjectStoreExt, PutPayload, RetryConfig};
use serde::{Deserialize, Serialize};
use tokio::runtime::Handle;
use tokio::task::JoinSet;

use super::config::S3Config;
use super::disk::{self, FinRecord, Manifest, TransferRecord};
use super::escape::escape;
use super::export::Exporter;

/// The upload's progress, in the transfer directory.
const PROGRESS_FILE: &str = "%export.json";
/// The manifest object beside the file (a name `escape` never produces, as on disk).
const MANIFEST_OBJECT: &str = "%manifest.json";

/// `%export.json`: an upload in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Progress {
    key: String,
    upload_id: String,
    part_size: u64,
    size: u64,
    /// Per part: the store's ETag and our MD5 (hex) of what was sent, once acknowledged.
    parts: Vec<Option<Part>>,
    /// Attempts in a row that sent no part. A store that lost the upload should answer 404
    /// (NoSuchUpload), but some answer 500: after [`MAX_STALE_ATTEMPTS`] the upload is begun again.
    #[serde(default)]
    failed_attempts: u32,
}

/// Failed attempts in a row after which an upload is taken as lost and begun again.
const MAX_STALE_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Part {
    etag: String,
    md5: String,
}

/// Exports to an S3-compatible object store. See the module doc.
pub struct S3Exporter {
    store: Arc<AmazonS3>,
    cfg: S3Config,
    /// Where the local records of exports are kept (`file_transfer.export_root`).
    local_root: PathBuf,
    rt: Handle,
}

impl S3Exporter {
    /// Builds the client; no request is made yet (a wrong credential or bucket shows at the first
    /// export, as its `export_failed` state and error). Call inside the runtime.
    pub fn new(cfg: &S3Config, local_root: PathBuf) -> io::Result<S3Exporter> {
        // reqwest is built without its own crypto provider: use ring, the one rustls and quinn use.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&cfg.bucket)
            .with_virtual_hosted_style_request(cfg.virtual_hosted_style)
            .with_allow_http(cfg.allow_http)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(200),
                    max_backoff: Duration::from_secs(15),
                    base: 2.0,
                },
                max_retries: cfg.max_retries,
                retry_timeout: Duration::from_secs(cfg.retry_timeout_secs),
            });
        if let Some(e) = &cfg.endpoint {
            b = b.with_endpoint(e);
        }
        match &cfg.region {
            Some(r) => b = b.with_region(r),
            None if std::env::var_os("AWS_REGION").is_none()
                && std::env::var_os("AWS_DEFAULT_REGION").is_none() =>
            {
                b = b.with_region("us-east-1")
            }
            None => {}
        }
        if let Some(k) = &cfg.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(k) = &cfg.secret_access_key {
            b = b.with_secret_access_key(k);
        }
        if let Some(t) = &cfg.session_token {
            b = b.with_token(t);
        }
        let store = b
            .build()
            .map_err(|e| io::Error::other(format!("S3 exporter: {e}")))?;
        let rt = Handle::try_current()
            .map_err(|e| io::Error::other(format!("S3 exporter outside a runtime: {e}")))?;
        Ok(S3Exporter {
            store: Arc::new(store),
            cfg: cfg.clone(),
            local_root,
            rt,
        })
    }

    /// `{prefix}{esc clientId}/{esc fileId}/` of a transfer.
    fn key_dir(&self, client_id: &str, file_id: &str) -> String {
        format!(
            "{}{}/{}/",
            self.cfg.prefix,
            escape(client_id),
            escape(file_id)
        )
    }

    fn location(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.cfg.bucket)
    }

    /// The object key of a location this exporter wrote.
    fn key_of(&self, location: &str) -> Option<String> {
        let rest = location.strip_prefix("s3://")?;
        let (bucket, key) = rest.split_once('/')?;
        (bucket == self.cfg.bucket).then(|| key.to_owned())
    }

    /// Uploads `data` (of `size` bytes) as `key` and checks what the store holds. Async; runs on
    /// the blocking thread that called [`Exporter::publish`] (through `Handle::block_on`).
    async fn upload(&self, data: &Path, key: &str, size: u64) -> Result<(), String> {
        let path = obj_path(key)?;
        let file = File::open(data).map_err(|e| format!("open {}: {e}", data.display()))?;
        let expected = if size < self.cfg.part_size {
            let bytes = read_part(&file, 0, size)?;
            let md5 = hex::encode(Md5::digest(&bytes));
            self.store
                .put(&path, PutPayload::from(bytes))
                .await
                .map_err(|e| format!("PUT {}: {e}", self.location(key)))?;
            md5
        } else {
            self.multipart(&file, data, &path, key, size).await?
        };
        let head = self
            .store
            .head(&path)
            .await
            .map_err(|e| format!("HEAD {}: {e}", self.location(key)))?;
        if head.size != size {
            return Err(format!(
                "{} holds {} bytes, {size} were sent",
                self.location(key),
                head.size
            ));
        }
        let etag = head.e_tag.unwrap_or_default().trim_matches('"').to_owned();
        if etag != expected {
            if looks_like_md5_etag(&etag) {
                return Err(format!(
                    "{} has ETag {etag}, the bytes sent give {expected}",
                    self.location(key)
                ));
            }
            tracing::warn!(
                key,
                etag,
                "the store's ETag is not MD5-based: checked the size only"
            );
        }
        Ok(())
    }

    /// The multipart upload, resumed from `%export.json` when one for this key and part size is
    /// recorded. Answers the ETag S3 gives the completed object.
    async fn multipart(
        &self,
        file: &File,
        data: &Path,
        path: &ObjPath,
        key: &str,
        size: u64,
    ) -> Result<String, String> {
        let tdir = data.parent().unwrap_or(Path::new("."));
        let part_size = self.cfg.part_size;
        let nparts = usize::try_from(size.div_ceil(part_size)).map_err(|e| e.to_string())?;
        let loc = self.location(key);
        let mut prog = match read_progress(tdir) {
            Some(p) if p.key == key && p.part_size == part_size && p.size == size => p,
            _ => {
                let upload_id = self
                    .store
                    .create_multipart(path)
                    .await
                    .map_err(|e| format!("create multipart upload of {loc}: {e}"))?;
                let p = Progress {
                    key: key.to_owned(),
                    upload_id,
                    part_size,
                    size,
                    parts: vec![None; nparts],
                    failed_attempts: 0,
                };
                save_progress(tdir, &p)?;
                p
            }
        };
        let todo: Vec<usize> = (0..nparts)
            .filter(|i| prog.parts.get(*i).is_none_or(Option::is_none))
            .collect();
        if todo.len() < nparts {
            tracing::info!(
                key,
                done = nparts - todo.len(),
                parts = nparts,
                "resuming export"
            );
        }
        let mut running: JoinSet<(usize, String, object_store::Result<PartId>)> = JoinSet::new();
        let mut failed: Option<String> = None;
        let mut sent_any = false;
        let mut next = todo.into_iter();
        loop {
            while failed.is_none() && running.len() < self.cfg.parallel_parts {
                let Some(i) = next.next() else { break };
                let start = i as u64 * part_size;
                let bytes = read_part(file, start, part_size.min(size - start))?;
                let md5 = hex::encode(Md5::digest(&bytes));
                let (store, path, id) = (self.store.clone(), path.clone(), prog.upload_id.clone());
                running.spawn(async move {
                    let r = store.put_part(&path, &id, i, PutPayload::from(bytes)).await;
                    (i, md5, r)
                });
            }
            let Some(done) = running.join_next().await else {
                break;
            };
            match done {
                Ok((i, md5, Ok(part))) => {
                    if let Some(slot) = prog.parts.get_mut(i) {
                        *slot = Some(Part {
                            etag: part.content_id,
                            md5,
                        });
                    }
                    prog.failed_attempts = 0;
                    sent_any = true;
                    save_progress(tdir, &prog)?;
                    super::export_stats::export_part_sent();
                }
                Ok((i, _, Err(e))) => {
                    if matches!(e, object_store::Error::NotFound { .. }) {
                        // The store no longer knows the upload (aborted, expired, wiped): start over.
                        remove_progress(tdir);
                    }
                    failed.get_or_insert(format!("part {} of {loc}: {e}", i + 1));
                }
                Err(e) => {
                    failed.get_or_insert(format!("part upload task: {e}"));
                }
            }
        }
        if let Some(why) = failed {
            if !sent_any && tdir.join(PROGRESS_FILE).exists() {
                prog.failed_attempts += 1;
                if prog.failed_attempts >= MAX_STALE_ATTEMPTS {
                    tracing::warn!(
                        key,
                        attempts = prog.failed_attempts,
                        "upload taken as lost: beginning it again"
                    );
                    remove_progress(tdir);
                } else {
                    save_progress(tdir, &prog)?;
                }
            }
            return Err(why);
        }
        let parts: Vec<Part> = prog.parts.iter().flatten().cloned().collect();
        let ids = parts
            .iter()
            .map(|p| PartId {
                content_id: p.etag.clone(),
            })
            .collect();
        let mut md5s = Md5::new();
        for p in &parts {
            md5s.update(hex::decode(&p.md5).map_err(|e| format!("{PROGRESS_FILE}: {e}"))?);
        }
        let expected = format!("{}-{}", hex::encode(md5s.finalize()), parts.len());
        if let Err(e) = self
            .store
            .complete_multipart(path, &prog.upload_id, ids)
            .await
        {
            // Completed before a crash, with the progress not yet removed? Then HEAD says so.
            let done = self.store.head(path).await.ok().and_then(|h| h.e_tag);
            if done.as_deref().map(|t| t.trim_matches('"')) != Some(expected.as_str()) {
                if matches!(e, object_store::Error::NotFound { .. }) {
                    remove_progress(tdir);
                }
                return Err(format!("complete multipart upload of {loc}: {e}"));
            }
        }
        remove_progress(tdir);
        Ok(expected)
    }

    /// Writes the manifest object beside the file.
    async fn put_manifest(&self, m: &Manifest) -> Result<(), String> {
        let key = format!(
            "{}{MANIFEST_OBJECT}",
            self.key_dir(&m.client_id, &m.file_id)
        );
        let json = disk::to_json(m).map_err(|e| e.to_string())?;
        self.store
            .put(&obj_path(&key)?, PutPayload::from(json))
            .await
            .map_err(|e| format!("PUT {}: {e}", self.location(&key)))?;
        Ok(())
    }
}

impl Exporter for S3Exporter {
    fn publish(
        &self,
        data: &Path,
        rec: &TransferRecord,
        fin: &FinRecord,
    ) -> io::Result<(Manifest, PathBuf)> {
        let key = format!(
            "{}{}",
            self.key_dir(&rec.client_id, &rec.file_id),
            escape(&rec.meta.name)
        );
        let mut manifest = Manifest::new(rec, fin);
        manifest.location = Some(self.location(&key));
        if !data.exists() {
            // Redone after the record was written and before the transfer directory went.
            let edir = self
                .local_root
                .join(escape(&rec.client_id))
                .join(escape(&rec.file_id));
            return match disk::read_manifest(&edir) {
                Ok(m) if m == manifest => Ok((m, edir)),
                _ => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "partial file is gone and was not exported",
                )),
            };
        }
        self.rt
            .block_on(async {
                self.upload(data, &key, fin.size).await?;
                self.put_manifest(&manifest).await
            })
            .map_err(io::Error::other)?;
        let edir = disk::record_remote_export(&self.local_root, &manifest)?;
        Ok((manifest, edir))
    }

    fn remove(&self, dir: &Path) -> io::Result<()> {
        let m = match disk::read_manifest(dir) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return disk::remove_dir(dir),
            Err(e) => return Err(e),
        };
        if let Some(key) = m.location.as_deref().and_then(|l| self.key_of(l)) {
            let manifest_key = format!(
                "{}{MANIFEST_OBJECT}",
                self.key_dir(&m.client_id, &m.file_id)
            );
            self.rt
                .block_on(async {
                    for k in [key, manifest_key] {
                        match self.store.delete(&obj_path(&k)?).await {
                            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                            Err(e) => return Err(format!("DELETE {}: {e}", self.location(&k))),
                        }
                    }
                    Ok(())
                })
                .map_err(io::Error::other)?;
        }
        disk::remove_dir(dir)
    }

    fn scan(&self) -> io::Result<Vec<(Manifest, PathBuf)>> {
        disk::scan_exports(&self.local_root)
    }

    fn background(&self) -> bool {
        true
    }

    fn presign(&self, m: &Manifest) -> io::Result<Option<String>> {
        let Some(key) = m.location.as_deref().and_then(|l| self.key_of(l)) else {
            return Ok(None);
        };
        let path = obj_path(&key).map_err(io::Error::other)?;
        let expiry = Duration::from_secs(self.cfg.presign_expiry_secs);
        let url = self
            .rt
            .block_on(
                self.store
                    .signed_url(axum::http::Method::GET, &path, expiry),
            )
            .map_err(|e| io::Error::other(format!("presign {}: {e}", self.location(&key))))?;
        Ok(Some(url.to_string()))
    }
}

/// An object path taken as is (our keys are escaped already: `object_store` must not escape
/// them again).
fn obj_path(key: &str) -> Result<ObjPath, String> {
    ObjPath::parse(key).map_err(|e| format!("object key {key:?}: {e}"))
}

/// `len` bytes of `file` from `start` (one part: the only copy of it in memory).
fn read_part(file: &File, start: u64, len: u64) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; usize::try_from(len).map_err(|e| e.to_string())?];
    file.read_exact_at(&mut buf, start)
        .map_err(|e| format!("read the assembled file at {start}: {e}"))?;
    Ok(buf)
}

fn looks_like_md5_etag(etag: &str) -> bool {
    let hexpart = etag.split_once('-').map_or(etag, |(h, _)| h);
    hexpart.len() == 32 && hexpart.bytes().all(|b| b.is_ascii_hexdigit())
}

fn read_progress(tdir: &Path) -> Option<Progress> {
    let bytes = std::fs::read(tdir.join(PROGRESS_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn save_progress(tdir: &Path, p: &Progress) -> Result<(), String> {
    let json = serde_json::to_vec(p).map_err(|e| e.to_string())?;
    disk::write_atomic(tdir, PROGRESS_FILE, &json)
        .map_err(|e| format!("record export progress: {e}"))
}

fn remove_progress(tdir: &Path) {
    let _ = std::fs::remove_file(tdir.join(PROGRESS_FILE));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_forms() {
        assert!(looks_like_md5_etag("9b2cf535f27731c974343645a3985328"));
        assert!(looks_like_md5_etag("9b2cf535f27731c974343645a3985328-5"));
        assert!(!looks_like_md5_etag("abc"));
        assert!(!looks_like_md5_etag(""));
    }

    #[test]
    fn keys_are_not_escaped_twice() {
        let p = obj_path("q/dev%2F1/f%2E/a%20b.bin").expect("key");
        assert_eq!(p.as_ref(), "q/dev%2F1/f%2E/a%20b.bin");
    }
}
