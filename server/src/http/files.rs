//! `GET /api/v1/files`, `GET /api/v1/files/{clientId}/{fileId}` and its `/content`.

use std::io::SeekFrom;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use utoipa::{IntoParams, ToSchema};

use super::range::{self, Plan};
use super::transfers::ids;
use super::{ApiError, ApiState};
use crate::ft::{ExportState, FinishedInfo};

/// Page size when `limit` is not given.
const DEFAULT_LIMIT: usize = 100;
/// Largest page.
const MAX_LIMIT: usize = 1000;
/// Bytes read from disk per body chunk.
const CHUNK: u64 = 64 * 1024;

/// An exported file and its manifest.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileView {
    pub client_id: String,
    pub file_id: String,
    /// The name the device gave.
    pub name: String,
    pub size: u64,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
    /// Unix seconds.
    pub started_at: u64,
    pub finished_at: u64,
    /// Unix seconds after which the export may be deleted.
    pub expire_at: Option<u64>,
    /// The metadata the device sent with init.
    #[schema(value_type = Object)]
    pub meta: serde_json::Value,
    /// Where the file is: on the server's disk, or its object-store `location`.
    pub export_path: String,
    /// `exporting` (kept on the server while a background export runs), `exported`, or
    /// `export_failed` (see `export_error`; the file is kept and the export retried).
    pub export_state: String,
    /// Why the last export attempt failed.
    pub export_error: Option<String>,
    /// `s3://bucket/key` of a file exported to an object store.
    pub location: Option<String>,
    /// Where to download it.
    pub content_url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FileList {
    pub files: Vec<FileView>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Files per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The sort key of the file list: oldest finished first. Unique, so a cursor names one position.
fn key(f: &FinishedInfo) -> (u64, &str, &str) {
    (
        f.manifest.finished_at,
        &f.manifest.client_id,
        &f.manifest.file_id,
    )
}

/// Cursors are the hex of the JSON key of the last file sent: opaque to clients, and still valid
/// when that file has since expired.
fn encode_cursor(f: &FinishedInfo) -> String {
    hex::encode(serde_json::to_vec(&key(f)).unwrap_or_default())
}

fn decode_cursor(c: &str) -> Result<(u64, String, String), ApiError> {
    let bytes = hex::decode(c).map_err(|_| ApiError::invalid_cursor())?;
    serde_json::from_slice(&bytes).map_err(|_| ApiError::invalid_cursor())
}

fn view(f: &FinishedInfo) -> FileView {
    let m = &f.manifest;
    FileView {
        client_id: m.client_id.clone(),
        file_id: m.file_id.clone(),
        name: m.name.clone(),
        size: m.size,
        sha256: m.sha256.clone(),
        started_at: m.started_at,
        finished_at: m.finished_at,
        expire_at: m.expire_at,
        meta: serde_json::to_value(&m.meta).unwrap_or_default(),
        export_path: f.export_path.to_string_lossy().into_owned(),
        export_state: f.export.as_str().to_owned(),
        export_error: match &f.export {
            ExportState::ExportFailed { error, .. } => Some(error.clone()),
            _ => None,
        },
        location: match f.export {
            ExportState::Exported => m.location.clone(),
            _ => None,
        },
        content_url: format!(
            "/api/v1/files/{}/{}/content",
            path_escape(&m.client_id),
            path_escape(&m.file_id)
        ),
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (ids may contain `/`).
fn path_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            o.push(char::from(b));
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

fn find(s: &ApiState, client_id: &str, file_id: &str) -> Result<FinishedInfo, ApiError> {
    s.ft()
        .finished()
        .into_iter()
        .find(|f| f.manifest.client_id == client_id && f.manifest.file_id == file_id)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no exported file {file_id:?} of client {client_id:?}"
            ))
        })
}

/// Exported files, oldest finished first, a page at a time.
#[utoipa::path(get, path = "/api/v1/files", operation_id = "listFiles", tag = "files", params(ListQuery),
    responses(
        (status = 200, description = "One page of exported files", body = FileList),
        (status = 400, description = "Bad limit or cursor", body = super::ErrorBody),
        (status = 401, description = "Token missing or wrong", body = super::ErrorBody),
    ))]
pub async fn list(
    State(s): State<ApiState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<FileList>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::invalid_parameter(e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid_parameter(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let all = s.ft().finished();
    let start = match &q.cursor {
        None => 0,
        Some(c) => {
            let (t, c, f) = decode_cursor(c)?;
            let after = (t, c.as_str(), f.as_str());
            all.partition_point(|x| key(x) <= after)
        }
    };
    let page = all.get(start..).unwrap_or_default();
    let page = page.get(..limit).unwrap_or(page);
    let more = start + page.len() < all.len();
    let next_cursor = if more {
        page.last().map(encode_cursor)
    } else {
        None
    };
    Ok(Json(FileList {
        files: page.iter().map(view).collect(),
        next_cursor,
    }))
}

/// The manifest of one exported file.
#[utoipa::path(get, path = "/api/v1/files/{clientId}/{fileId}", operation_id = "getFile", tag = "files",
    params(("clientId" = String, Path, description = "MQTT client id"), ("fileId" = String, Path, description = "File id")),
    responses(
        (status = 200, description = "The manifest", body = FileView),
        (status = 404, description = "No such exported file", body = super::ErrorBody),
        (status = 401, description = "Token missing or wrong", body = super::ErrorBody),
    ))]
pub async fn manifest(
    State(s): State<ApiState>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<FileView>, ApiError> {
    let (client_id, file_id) = ids(p)?;
    Ok(Json(view(&find(&s, &client_id, &file_id)?)))
}

/// Downloads an exported file. One `Range: bytes=…` range gives 206 with `Content-Range`; a range
/// outside the file gives 416; several ranges, or an `If-Range` that does not match the ETag (the
/// SHA-256), give the whole file. A file exported to an object store answers 307 with a presigned
/// URL (`export.s3.presign_expiry_secs`), which serves ranges itself.
#[utoipa::path(get, path = "/api/v1/files/{clientId}/{fileId}/content", operation_id = "downloadFile", tag = "files",
    params(
        ("clientId" = String, Path, description = "MQTT client id"),
        ("fileId" = String, Path, description = "File id"),
        ("Range" = Option<String>, Header, description = "One byte range, e.g. `bytes=0-1023`"),
    ),
    responses(
        (status = 200, description = "The whole file", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "The requested range", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 307, description = "Exported to an object store: `Location` is a presigned URL"),
        (status = 404, description = "No such exported file", body = super::ErrorBody),
        (status = 416, description = "Range outside the file", body = super::ErrorBody),
        (status = 401, description = "Token missing or wrong", body = super::ErrorBody),
    ))]
pub async fn content(
    State(s): State<ApiState>,
    p: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (client_id, file_id) = ids(p)?;
    let f = find(&s, &client_id, &file_id)?;
    if f.export == ExportState::Exported {
        let url = s
            .ft()
            .presigned_url(&f.manifest)
            .await
            .map_err(|e| ApiError::internal("presign export", e))?;
        if let Some(url) = url {
            return Response::builder()
                .status(StatusCode::TEMPORARY_REDIRECT)
                .header(header::LOCATION, url)
                .header(header::CACHE_CONTROL, "no-store")
                .body(Body::empty())
                .map_err(|e| ApiError::internal("build response", e));
        }
    }
    let mut file = match tokio::fs::File::open(&f.export_path).await {
        Ok(file) => file,
        // Expired or removed since the lookup.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ApiError::not_found(format!(
                "exported file {file_id:?} of client {client_id:?} is gone"
            )))
        }
        Err(e) => return Err(ApiError::internal("open export", e)),
    };
    let len = file
        .metadata()
        .await
        .map_err(|e| ApiError::internal("stat export", e))?
        .len();
    let etag = format!("\"{}\"", f.manifest.sha256);
    let if_range_ok = headers
        .get(header::IF_RANGE)
        .is_none_or(|v| v.as_bytes() == etag.as_bytes());
    let wanted = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| if_range_ok);
    let (status, start, count) = match range::plan(wanted, len) {
        Plan::Full => (StatusCode::OK, 0, len),
        Plan::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        Plan::Unsatisfiable => return Err(ApiError::range_not_satisfiable(len)),
    };
    if start > 0 {
        file.seek(SeekFrom::Start(start))
            .await
            .map_err(|e| ApiError::internal("seek export", e))?;
    }
    let mut r = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, count)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, &etag)
        .body(Body::from_stream(read_chunks(file, count)))
        .map_err(|e| ApiError::internal("build response", e))?;
    let h = r.headers_mut();
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::try_from(format!("bytes {start}-{}/{len}", start + count - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    // RFC 6266 / 8187: the device's name, percent-encoded so any UTF-8 name is safe in a header.
    if let Ok(v) = HeaderValue::try_from(format!(
        "attachment; filename*=UTF-8''{}",
        path_escape(&f.manifest.name)
    )) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r.into_response())
}

/// `count` bytes of `file` from its current position, a chunk at a time (never the whole file in
/// memory). A file that ends early ends the body with an error, so the client sees a short read
/// rather than a silently truncated download.
fn read_chunks(
    file: tokio::fs::File,
    count: u64,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures::stream::unfold((file, count), |(mut file, left)| async move {
        if left == 0 {
            return None;
        }
        let want = usize::try_from(left.min(CHUNK)).unwrap_or(64 * 1024);
        let mut buf = vec![0u8; want];
        match file.read(&mut buf).await {
            Ok(0) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "export shrank",
                )),
                (file, 0),
            )),
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), (file, left - n as u64)))
            }
            Err(e) => Some((Err(e), (file, 0))),
        }
    })
}
