//! The HTTP API (issue 5, DESIGN §4): transfers in progress and cancel, exported files with cursor
//! pagination and ranged download, connected clients, token protection, error shape, OpenAPI — all
//! through the router without a socket — and one test over a real socket for /healthz and /metrics.

use std::collections::HashSet;
use std::net::SocketAddr;

use anyhow::{ensure, Context, Result};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use quicft_proto::ReasonCode;
use quicft_tests::ft::{self, content, sha256_hex};
use quicft_tests::{TestServer, Transport};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

const TOKEN: &str = "api-token-for-tests-0123456789";

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| format!("not JSON: {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the JSON error shape and returns its code.
    fn error_code(&self) -> Result<String> {
        ensure!(
            self.header("content-type") == Some("application/json"),
            "error content type: {:?}",
            self.headers
        );
        let v = self.json()?;
        let obj = v.as_object().context("error body is an object")?;
        ensure!(obj.len() == 1, "only `error` at the top: {v}");
        ensure!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "message: {v}"
        );
        Ok(v["error"]["code"].as_str().context("code")?.to_owned())
    }
}

async fn call(app: &Router, method: &str, uri: &str, headers: &[(&str, &str)]) -> Result<Reply> {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app.clone().oneshot(req.body(Body::empty())?).await?;
    let (parts, body) = resp.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await?;
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

async fn get(app: &Router, uri: &str) -> Result<Reply> {
    call(app, "GET", uri, &[]).await
}

/// Files under `dir` named `name`, recursively.
fn find_named(dir: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(find_named(&p, name));
        } else if p.file_name().is_some_and(|n| n == name) {
            out.push(p);
        }
    }
    out
}

/// Bytes in partial files under the store (only f1 of dev-a ever receives data).
fn held_on_disk(store: &std::path::Path) -> u64 {
    find_named(store, "data.part")
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::test]
async fn transfers_clients_and_cancel() -> Result<()> {
    let srv = TestServer::start().await?;
    let app = srv.api();
    let data = content(3000, 1);

    let mut a = srv.connect(Transport::Quic, "dev-a").await?;
    let sa = a.data().await?;
    ensure!(ft::init(sa, "f1", "a.bin", Some(3000)).await? == ReasonCode::SUCCESS);
    let codes = ft::segments(sa, "f1", &[(0, &data[..1000])]).await?;
    ensure!(codes == vec![(0, ReasonCode::SUCCESS)], "{codes:?}");
    let mut b = srv.connect(Transport::Tcp, "dev-b").await?;
    let sb = b.data().await?;
    ensure!(ft::init(sb, "f2", "b.bin", None).await? == ReasonCode::SUCCESS);

    let r = get(&app, "/api/v1/transfers").await?;
    ensure!(r.status == StatusCode::OK);
    let v = r.json()?;
    let list = v["transfers"].as_array().context("transfers")?;
    ensure!(list.len() == 2, "{v}");
    let t1 = list
        .iter()
        .find(|t| t["file_id"] == "f1")
        .context("f1 listed")?;
    ensure!(
        t1["client_id"] == "dev-a" && t1["name"] == "a.bin" && t1["size"] == 3000,
        "{t1}"
    );
    ensure!(
        t1["bytes_held"] == 1000 && t1["ranges"] == serde_json::json!([[0, 1000]]),
        "{t1}"
    );
    ensure!(
        t1["state"] == "receiving" && t1["transport"] == "quic",
        "{t1}"
    );
    ensure!(
        t1["rate_bytes_per_sec"].is_number() && t1["meta"]["name"] == "a.bin",
        "{t1}"
    );
    let t2 = list
        .iter()
        .find(|t| t["file_id"] == "f2")
        .context("f2 listed")?;
    ensure!(
        t2["transport"] == "tcp" && t2["bytes_held"] == 0 && t2["size"].is_null(),
        "{t2}"
    );

    let r = get(&app, "/api/v1/transfers/dev-a/f1").await?;
    ensure!(r.status == StatusCode::OK && r.json()?["bytes_held"] == 1000);
    let r = get(&app, "/api/v1/transfers/dev-a/nope").await?;
    ensure!(r.status == StatusCode::NOT_FOUND && r.error_code()? == "not_found");

    // Connected clients: transport, address, streams (QUIC: control + one data stream), bytes.
    let v = get(&app, "/api/v1/clients").await?.json()?;
    let clients = v["clients"].as_array().context("clients")?;
    ensure!(clients.len() == 2, "{v}");
    let ca = &clients[0];
    ensure!(
        ca["client_id"] == "dev-a" && ca["transport"] == "quic" && ca["streams"] == 2,
        "{ca}"
    );
    ensure!(ca["address"]
        .as_str()
        .context("address")?
        .parse::<SocketAddr>()?
        .ip()
        .is_loopback());
    ensure!(
        ca["bytes_in"].as_u64().context("bytes_in")? > 1000
            && ca["bytes_out"].as_u64().context("out")? > 0,
        "{ca}"
    );
    ensure!(ca["packets_in"].as_u64().context("packets")? >= 3, "{ca}");
    ensure!(
        clients[1]["client_id"] == "dev-b"
            && clients[1]["transport"] == "tcp"
            && clients[1]["streams"] == 1
    );

    let store = srv.dir.path().join("transfers");
    ensure!(held_on_disk(&store) >= 1000);

    // Cancel: 204, gone from the list, stored data removed, the device's next command gets 0x83.
    let r = call(&app, "DELETE", "/api/v1/transfers/dev-a/f1", &[]).await?;
    ensure!(
        r.status == StatusCode::NO_CONTENT && r.body.is_empty(),
        "{:?}",
        r.status
    );
    ensure!(get(&app, "/api/v1/transfers/dev-a/f1").await?.status == StatusCode::NOT_FOUND);
    ensure!(
        get(&app, "/api/v1/transfers").await?.json()?["transfers"]
            .as_array()
            .map(Vec::len)
            == Some(1)
    );
    ensure!(
        held_on_disk(&store) == 0,
        "the cancelled transfer's partial file is removed"
    );
    let codes = ft::segments(sa, "f1", &[(1000, &data[1000..2000])]).await?;
    ensure!(
        codes == vec![(1000, ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR)],
        "{codes:?}"
    );
    ensure!(ft::fin(sa, "f1", &data).await? == ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR);
    // Idempotent for a cancelled transfer; 404 for one that never was.
    ensure!(
        call(&app, "DELETE", "/api/v1/transfers/dev-a/f1", &[])
            .await?
            .status
            == StatusCode::NO_CONTENT
    );
    let r = call(&app, "DELETE", "/api/v1/transfers/dev-a/never", &[]).await?;
    ensure!(r.status == StatusCode::NOT_FOUND && r.error_code()? == "not_found");

    // Client ids with `/` work percent-encoded.
    let mut c = srv.connect(Transport::Tls, "site/7").await?;
    ensure!(ft::init(c.data().await?, "f3", "c.bin", None).await? == ReasonCode::SUCCESS);
    let r = get(&app, "/api/v1/transfers/site%2F7/f3").await?;
    ensure!(
        r.status == StatusCode::OK && r.json()?["transport"] == "tls",
        "{:?}",
        r.status
    );

    // A disconnected client drops out of the client list; its transfer stays, without transport.
    b.disconnect().await?;
    for _ in 0..100 {
        if get(&app, "/api/v1/clients").await?.json()?["clients"]
            .as_array()
            .map(Vec::len)
            == Some(2)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let v = get(&app, "/api/v1/clients").await?.json()?;
    let ids: HashSet<&str> = v["clients"]
        .as_array()
        .context("clients")?
        .iter()
        .filter_map(|c| c["client_id"].as_str())
        .collect();
    ensure!(ids == HashSet::from(["dev-a", "site/7"]), "{v}");
    ensure!(get(&app, "/api/v1/transfers/dev-b/f2").await?.json()?["transport"].is_null());
    a.disconnect().await?;
    c.disconnect().await?;
    Ok(())
}

#[tokio::test]
async fn files_pagination_manifest_and_ranged_download() -> Result<()> {
    let srv = TestServer::start().await?;
    let app = srv.api();
    let mut conn = srv.connect(Transport::Quic, "dev-f").await?;
    let s = conn.data().await?;
    let mut uploaded = Vec::new();
    for i in 0..5u64 {
        // One file crosses the 64 KiB chunks the download is streamed in.
        let len = if i == 2 { 200_000 } else { 1000 + i as usize };
        let data = content(len, 10 + i);
        ft::upload(
            s,
            &format!("file-{i}"),
            &format!("n{i}.bin"),
            &data,
            16 * 1024,
        )
        .await?;
        uploaded.push((format!("file-{i}"), data));
    }

    // Pages of 2 follow the full list, in order, and end with a null cursor.
    let all = get(&app, "/api/v1/files?limit=1000").await?.json()?;
    let all_ids: Vec<Value> = all["files"]
        .as_array()
        .context("files")?
        .iter()
        .map(|f| f["file_id"].clone())
        .collect();
    ensure!(all_ids.len() == 5 && all["next_cursor"].is_null(), "{all}");
    let mut paged = Vec::new();
    let mut uri = "/api/v1/files?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let v = get(&app, &uri).await?.json()?;
        let files = v["files"].as_array().context("files")?;
        ensure!(files.len() <= 2, "{v}");
        paged.extend(files.iter().map(|f| f["file_id"].clone()));
        pages += 1;
        match v["next_cursor"].as_str() {
            Some(c) => uri = format!("/api/v1/files?limit=2&cursor={c}"),
            None => break,
        }
    }
    ensure!(pages == 3 && paged == all_ids, "{paged:?} vs {all_ids:?}");
    ensure!(
        get(&app, "/api/v1/files").await?.json()?["files"]
            .as_array()
            .map(Vec::len)
            == Some(5),
        "default limit"
    );
    for bad in ["limit=0", "limit=1001", "limit=abc", "limit=-1"] {
        let r = get(&app, &format!("/api/v1/files?{bad}")).await?;
        ensure!(
            r.status == StatusCode::BAD_REQUEST && r.error_code()? == "invalid_parameter",
            "{bad}: {:?}",
            r.status
        );
    }
    for bad in ["zz", "00", "5b315d"] {
        let r = get(&app, &format!("/api/v1/files?cursor={bad}")).await?;
        ensure!(
            r.status == StatusCode::BAD_REQUEST && r.error_code()? == "invalid_cursor",
            "{bad}"
        );
    }

    // Manifest.
    let (id, data) = &uploaded[2];
    let m = get(&app, &format!("/api/v1/files/dev-f/{id}"))
        .await?
        .json()?;
    ensure!(
        m["client_id"] == "dev-f" && m["file_id"] == id.as_str() && m["name"] == "n2.bin",
        "{m}"
    );
    ensure!(
        m["size"] == data.len()
            && m["sha256"] == sha256_hex(data)
            && m["meta"]["size"] == data.len(),
        "{m}"
    );
    ensure!(
        m["content_url"] == format!("/api/v1/files/dev-f/{id}/content"),
        "{m}"
    );
    ensure!(std::path::Path::new(m["export_path"].as_str().context("path")?).exists());
    let r = get(&app, "/api/v1/files/dev-f/none").await?;
    ensure!(r.status == StatusCode::NOT_FOUND && r.error_code()? == "not_found");
    let r = get(&app, "/api/v1/files/dev-f/none/content").await?;
    ensure!(r.status == StatusCode::NOT_FOUND && r.error_code()? == "not_found");

    // Whole file.
    let url = format!("/api/v1/files/dev-f/{id}/content");
    let len = data.len();
    let r = get(&app, &url).await?;
    ensure!(
        r.status == StatusCode::OK && r.body[..] == data[..],
        "{:?} {} bytes",
        r.status,
        r.body.len()
    );
    ensure!(
        r.header("content-length") == Some(len.to_string().as_str())
            && r.header("accept-ranges") == Some("bytes")
    );
    let etag = format!("\"{}\"", sha256_hex(data));
    ensure!(
        r.header("etag") == Some(etag.as_str())
            && r.header("content-disposition")
                .is_some_and(|d| d.contains("n2.bin"))
    );

    // Single ranges: 206 with Content-Range, across chunk boundaries too.
    for (range, start, end) in [
        ("bytes=10-19".to_owned(), 10, 19),
        ("bytes=60000-140000".to_owned(), 60_000, 140_000),
        ("bytes=-5".to_owned(), len - 5, len - 1),
        (format!("bytes={}-", len - 100), len - 100, len - 1),
        (format!("bytes=0-{}", len + 50), 0, len - 1),
    ] {
        let r = call(&app, "GET", &url, &[("range", &range)]).await?;
        ensure!(
            r.status == StatusCode::PARTIAL_CONTENT,
            "{range}: {:?}",
            r.status
        );
        ensure!(
            r.header("content-range") == Some(format!("bytes {start}-{end}/{len}").as_str()),
            "{range}: {:?}",
            r.headers
        );
        ensure!(r.body[..] == data[start..=end], "{range}: body");
        ensure!(r.header("content-length") == Some((end - start + 1).to_string().as_str()));
    }
    // Outside the file: 416 with `bytes */len` and the JSON error.
    for range in [
        format!("bytes={len}-"),
        format!("bytes={}-{}", len + 1, len + 9),
        "bytes=-0".to_owned(),
    ] {
        let r = call(&app, "GET", &url, &[("range", &range)]).await?;
        ensure!(
            r.status == StatusCode::RANGE_NOT_SATISFIABLE,
            "{range}: {:?}",
            r.status
        );
        ensure!(
            r.header("content-range") == Some(format!("bytes */{len}").as_str())
                && r.error_code()? == "range_not_satisfiable"
        );
    }
    // Several ranges, nonsense, or a stale If-Range: the whole file.
    for headers in [
        vec![("range", "bytes=0-1,5-6")],
        vec![("range", "bytes=9-3")],
        vec![("range", "bytes=0-9"), ("if-range", "\"stale\"")],
    ] {
        let r = call(&app, "GET", &url, &headers).await?;
        ensure!(
            r.status == StatusCode::OK && r.body.len() == len,
            "{headers:?}: {:?}",
            r.status
        );
    }
    let r = call(
        &app,
        "GET",
        &url,
        &[("range", "bytes=0-9"), ("if-range", &etag)],
    )
    .await?;
    ensure!(r.status == StatusCode::PARTIAL_CONTENT && r.body[..] == data[..10]);
    conn.disconnect().await?;
    Ok(())
}

#[tokio::test]
async fn token_protects_everything_but_healthz() -> Result<()> {
    let srv = TestServer::start_with(|c| c.http.token = Some(TOKEN.into())).await?;
    let app = srv.api();
    let r = get(&app, "/healthz").await?;
    ensure!(r.status == StatusCode::OK && r.json()?["status"] == "ok");
    let bearer = format!("Bearer {TOKEN}");
    let lower = format!("bearer {TOKEN}");
    for uri in [
        "/api/v1/transfers",
        "/api/v1/files",
        "/api/v1/clients",
        "/api/v1/openapi.json",
        "/metrics",
        "/api/v1/files/a/b/content",
    ] {
        for headers in [
            vec![],
            vec![("authorization", "Bearer wrong")],
            vec![("authorization", "Bearer ")],
            vec![("authorization", TOKEN)],
            vec![("authorization", "Basic YWRtaW46YWRtaW4=")],
        ] {
            let r = call(&app, "GET", uri, &headers).await?;
            ensure!(
                r.status == StatusCode::UNAUTHORIZED,
                "{uri} {headers:?}: {:?}",
                r.status
            );
            ensure!(
                r.header("www-authenticate") == Some("Bearer") && r.error_code()? == "unauthorized"
            );
        }
        let r = call(&app, "GET", uri, &[("authorization", &bearer)]).await?;
        let expected = if uri.ends_with("/content") {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::OK
        };
        ensure!(r.status == expected, "{uri} with token: {:?}", r.status);
        ensure!(
            call(&app, "GET", uri, &[("authorization", &lower)])
                .await?
                .status
                == expected
        );
    }
    let r = call(&app, "DELETE", "/api/v1/transfers/a/b", &[]).await?;
    ensure!(r.status == StatusCode::UNAUTHORIZED);

    // Without a token configured, the (loopback) default is open.
    let open = TestServer::start().await?;
    ensure!(get(&open.api(), "/api/v1/transfers").await?.status == StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn http_on_a_public_address_needs_a_token() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = quicft_tests::test_config(dir.path().to_path_buf());
    cfg.auth.allow_anonymous = Some(true);
    cfg.listeners.http = Some("0.0.0.0:0".parse()?);
    let err = quicft_server::Server::start(cfg)
        .await
        .err()
        .context("must refuse to start")?;
    ensure!(err.to_string().contains("token"), "{err}");
    Ok(())
}

#[tokio::test]
async fn errors_are_json_with_stable_codes() -> Result<()> {
    let srv = TestServer::start().await?;
    let app = srv.api();
    let r = get(&app, "/api/v2/nothing").await?;
    ensure!(r.status == StatusCode::NOT_FOUND && r.error_code()? == "not_found");
    let r = call(&app, "POST", "/api/v1/transfers", &[]).await?;
    ensure!(
        r.status == StatusCode::METHOD_NOT_ALLOWED && r.error_code()? == "method_not_allowed",
        "{:?}",
        r.status
    );
    let r = call(&app, "PUT", "/api/v1/transfers/a/b", &[]).await?;
    ensure!(r.status == StatusCode::METHOD_NOT_ALLOWED && r.error_code()? == "method_not_allowed");
    let r = get(&app, "/api/v1/transfers/a/b").await?;
    let v = r.json()?;
    ensure!(
        v["error"]["code"] == "not_found"
            && v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("\"b\"")),
        "{v}"
    );
    Ok(())
}

#[tokio::test]
async fn openapi_describes_every_route() -> Result<()> {
    let srv = TestServer::start().await?;
    let r = get(&srv.api(), "/api/v1/openapi.json").await?;
    ensure!(r.status == StatusCode::OK && r.header("content-type") == Some("application/json"));
    let doc = r.json()?;
    ensure!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        doc["openapi"]
    );
    let paths = &doc["paths"];
    for (path, methods) in [
        ("/api/v1/transfers", &["get"][..]),
        (
            "/api/v1/transfers/{clientId}/{fileId}",
            &["get", "delete"][..],
        ),
        ("/api/v1/files", &["get"][..]),
        ("/api/v1/files/{clientId}/{fileId}", &["get"][..]),
        ("/api/v1/files/{clientId}/{fileId}/content", &["get"][..]),
        ("/api/v1/clients", &["get"][..]),
        ("/api/v1/deliveries", &["get", "post"][..]),
        ("/api/v1/deliveries/{id}", &["get", "delete"][..]),
        ("/api/v1/openapi.json", &["get"][..]),
        ("/healthz", &["get"][..]),
        ("/metrics", &["get"][..]),
    ] {
        for m in methods {
            ensure!(paths[path][m].is_object(), "{m} {path} missing");
        }
    }
    let ops: Vec<&str> = paths
        .as_object()
        .context("paths")?
        .values()
        .filter_map(|p| p.as_object())
        .flat_map(|p| p.values())
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    ensure!(
        ops.len() == 14 && ops.iter().collect::<HashSet<_>>().len() == 14,
        "operation ids: {ops:?}"
    );
    ensure!(
        paths["/healthz"]["get"]["security"] == serde_json::json!([{}]),
        "healthz needs no token"
    );
    ensure!(
        paths.as_object().map(|p| p.len()) == Some(11),
        "unexpected paths: {paths}"
    );
    ensure!(doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer");
    let params: Vec<&str> = paths["/api/v1/files"]["get"]["parameters"]
        .as_array()
        .context("params")?
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    ensure!(
        params.contains(&"limit") && params.contains(&"cursor"),
        "{params:?}"
    );
    ensure!(
        doc["components"]["schemas"]["TransferView"].is_object()
            && doc["components"]["schemas"]["ErrorBody"].is_object()
    );
    Ok(())
}

/// One plain HTTP/1.1 request over TCP; returns status, headers (lowercase names) and body.
async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, Vec<(String, String)>, Vec<u8>)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut raw = Vec::new();
    tokio::time::timeout(quicft_tests::RECV_TIMEOUT, s.read_to_end(&mut raw)).await??;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("end of headers")?;
    let head = String::from_utf8(raw[..split].to_vec())?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .context("status line")?
        .split(' ')
        .nth(1)
        .context("status")?
        .parse()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v == "chunked")
    {
        body = dechunk(&body)?;
    }
    Ok((status, headers, body))
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("chunk size line")?;
        let size = usize::from_str_radix(std::str::from_utf8(&b[..eol])?.trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(b.get(eol + 2..eol + 2 + size).context("chunk")?);
        b = &b[eol + 4 + size..];
    }
}

#[tokio::test]
async fn healthz_and_metrics_over_a_socket() -> Result<()> {
    let srv =
        TestServer::start_with(|c| c.listeners.http = Some("127.0.0.1:0".parse().expect("addr")))
            .await?;
    let addr = srv.server.http_addr.context("http listener")?;
    ensure!(srv.http_url() == Some(format!("http://{addr}")));
    let mut conn = srv.connect(Transport::Quic, "dev-m").await?;
    let data = content(50_000, 3);
    ft::upload(conn.data().await?, "m1", "m.bin", &data, 10_000).await?;

    let (status, headers, body) = http_get(addr, "/healthz").await?;
    ensure!(status == 200, "{status}");
    ensure!(headers
        .iter()
        .any(|(k, v)| k == "content-type" && v == "application/json"));
    ensure!(serde_json::from_slice::<Value>(&body)?["status"] == "ok");

    let (status, headers, body) = http_get(addr, "/metrics").await?;
    ensure!(status == 200, "{status}");
    ensure!(headers
        .iter()
        .any(|(k, v)| k == "content-type" && v.starts_with("text/plain; version=0.0.4")));
    let text = String::from_utf8(body)?;
    let value = |series: &str| -> Option<f64> {
        text.lines().find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.parse().ok())
        })
    };
    ensure!(
        value("quicft_connections{transport=\"quic\"}") == Some(1.0),
        "{text}"
    );
    ensure!(value("quicft_connections{transport=\"tcp\"}") == Some(0.0));
    ensure!(value("quicft_clients_connected") == Some(1.0));
    ensure!(value("quicft_received_bytes_total{transport=\"quic\"}").is_some_and(|v| v > 50_000.0));
    ensure!(value("quicft_packets_received_total{type=\"publish\"}").is_some_and(|v| v >= 7.0));
    // Process-wide (other tests' servers share it), so at least this upload's 5 segments.
    ensure!(value("quicft_segments_stored_total").is_some_and(|v| v >= 5.0));
    ensure!(value("quicft_fsync_seconds_count").is_some_and(|v| v >= 1.0));
    ensure!(
        value("quicft_fsync_seconds_bucket{le=\"+Inf\"}") == value("quicft_fsync_seconds_count")
    );
    ensure!(
        value("quicft_reason_codes_sent_total{packet=\"puback\",code=\"0x00\"}")
            .is_some_and(|v| v >= 7.0)
    );
    ensure!(value("quicft_reason_codes_sent_total{packet=\"connack\",code=\"0x00\"}") == Some(1.0));
    ensure!(
        value("quicft_file_commands_total{code=\"0x00\"}") == Some(7.0),
        "init + 5 segments + fin"
    );
    ensure!(value("quicft_transfers{state=\"complete\"}") == Some(1.0));
    ensure!(value("quicft_transfers{state=\"receiving\"}") == Some(0.0));
    for family in [
        "quicft_connections",
        "quicft_fsync_seconds",
        "quicft_reason_codes_sent_total",
    ] {
        ensure!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} has no TYPE line"
        );
    }

    // The listener goes away with the server.
    conn.disconnect().await?;
    srv.server.shutdown().await;
    ensure!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "HTTP listener still open after shutdown"
    );
    Ok(())
}
