//! The dashboard at `/` (issue 13, "A page to look at"): served without a token but with no data in
//! it, a strict Content-Security-Policy, its script and style as their own routes, the API behind
//! the token as before. Through the in-process router, as http_api.rs does. The page itself is
//! exercised in a real browser by tests/browser/run.sh.

use std::collections::HashSet;

use anyhow::{ensure, Context, Result};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use quicft_proto::ReasonCode;
use quicft_tests::ft::{self, content};
use quicft_tests::{TestServer, Transport};
use serde_json::Value;
use tower::ServiceExt;

const TOKEN: &str = "dashboard-token-for-tests-0123456789";

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn text(&self) -> Result<&str> {
        std::str::from_utf8(&self.body).context("UTF-8 body")
    }
}

async fn call(app: &Router, uri: &str, headers: &[(&str, &str)]) -> Result<Reply> {
    let mut req = Request::builder().method("GET").uri(uri);
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

/// What `html` loads (`src="…"` and `href="…"`).
fn refs(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\""] {
        let mut rest = html;
        while let Some(i) = rest.find(attr) {
            rest = &rest[i + attr.len()..];
            let end = rest.find('"').unwrap_or(rest.len());
            out.push(rest[..end].to_owned());
        }
    }
    out
}

/// Whether `html` has an event-handler attribute (` onclick=` and the like).
fn has_handler_attribute(html: &str) -> bool {
    let lower = html.to_ascii_lowercase();
    lower.match_indices(" on").any(|(i, _)| {
        let rest = &lower[i + 3..];
        let name_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        name_len > 0 && rest[name_len..].trim_start().starts_with('=')
    })
}

/// The policy must keep scripts and styles to files from this origin: no inline code, no eval, no
/// other origin.
fn check_csp(r: &Reply, what: &str) -> Result<()> {
    let csp = r
        .header("content-security-policy")
        .with_context(|| format!("{what}: no Content-Security-Policy"))?;
    let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
    for needed in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'none'",
    ] {
        ensure!(
            directives.contains(&needed),
            "{what}: CSP lacks {needed}: {csp}"
        );
    }
    for banned in ["unsafe-inline", "unsafe-eval", "http:", "https:", "*"] {
        ensure!(!csp.contains(banned), "{what}: CSP allows {banned}: {csp}");
    }
    ensure!(
        r.header("x-content-type-options") == Some("nosniff"),
        "{what}: nosniff"
    );
    Ok(())
}

#[tokio::test]
async fn the_page_is_served_without_a_token_and_carries_no_data() -> Result<()> {
    let srv = TestServer::start_with(|c| c.http.token = Some(TOKEN.into())).await?;
    let app = srv.api();
    let bearer = format!("Bearer {TOKEN}");

    // A transfer in progress whose ids must not leak into the public page.
    let mut conn = srv.connect(Transport::Quic, "secret-device-17").await?;
    let s = conn.data().await?;
    ensure!(
        ft::init(s, "secret-file", "secret-name.bin", Some(4000)).await? == ReasonCode::SUCCESS
    );
    let data = content(1000, 3);
    ensure!(
        ft::segments(s, "secret-file", &[(0, &data[..])]).await? == vec![(0, ReasonCode::SUCCESS)]
    );

    let page = call(&app, "/", &[]).await?;
    ensure!(page.status == StatusCode::OK, "/: {:?}", page.status);
    ensure!(
        page.header("content-type") == Some("text/html; charset=utf-8"),
        "{:?}",
        page.headers
    );
    check_csp(&page, "/")?;
    ensure!(page.header("x-frame-options") == Some("DENY"));
    ensure!(page.header("referrer-policy") == Some("no-referrer"));
    let html = page.text()?;
    ensure!(html.starts_with("<!doctype html>"), "not HTML");
    for secret in ["secret-device-17", "secret-file", "secret-name"] {
        ensure!(!html.contains(secret), "the page leaks {secret}");
    }
    // No inline script or style and no event-handler attributes: all of it would be refused by the
    // policy anyway, and would be a bug.
    let lower = html.to_ascii_lowercase();
    ensure!(
        lower.matches("<script").count() == lower.matches("<script src=\"/dashboard/").count(),
        "inline <script> in the page"
    );
    ensure!(
        !lower.contains("<style") && !lower.contains(" style="),
        "inline style"
    );
    ensure!(!has_handler_attribute(html), "event-handler attribute");
    ensure!(
        has_handler_attribute("<a onclick =\"x\">") && !has_handler_attribute("<p>on = off</p>")
    );

    // Everything the page loads is from this origin and there, without a token, with the same
    // headers.
    let refs = refs(html);
    ensure!(
        refs.iter()
            .all(|r| r.starts_with('/') && !r.starts_with("//")),
        "a reference to another origin: {refs:?}"
    );
    ensure!(
        refs.contains(&"/dashboard/app.js".to_owned())
            && refs.contains(&"/dashboard/style.css".to_owned()),
        "{refs:?}"
    );
    for path in &refs {
        let r = call(&app, path, &[]).await?;
        ensure!(r.status == StatusCode::OK, "{path}: {:?}", r.status);
        check_csp(&r, path)?;
    }
    let js = call(&app, "/dashboard/app.js", &[]).await?;
    ensure!(
        js.header("content-type") == Some("text/javascript; charset=utf-8"),
        "{:?}",
        js.headers
    );
    let js = js.text()?;
    // Device-chosen strings go through textContent: none of the markup-parsing sinks is used.
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
    ] {
        ensure!(!js.contains(sink), "app.js uses {sink}");
    }
    ensure!(js.contains("Authorization") && js.contains("sessionStorage"));
    let css = call(&app, "/dashboard/style.css", &[]).await?;
    ensure!(css.header("content-type") == Some("text/css; charset=utf-8"));
    ensure!(!css.text()?.contains("@import") && !css.text()?.contains("url("));

    // The API the page calls still needs the token.
    for uri in [
        "/api/v1/transfers",
        "/api/v1/files",
        "/api/v1/clients",
        "/metrics",
    ] {
        let r = call(&app, uri, &[]).await?;
        ensure!(
            r.status == StatusCode::UNAUTHORIZED,
            "{uri}: {:?}",
            r.status
        );
        let r = call(&app, uri, &[("authorization", &bearer)]).await?;
        ensure!(
            r.status == StatusCode::OK,
            "{uri} with token: {:?}",
            r.status
        );
    }
    let r = call(&app, "/api/v1/transfers", &[("authorization", &bearer)]).await?;
    ensure!(String::from_utf8_lossy(&r.body).contains("secret-device-17"));
    // Unknown paths under /dashboard/ are the API's JSON 404, not the page.
    let r = call(&app, "/dashboard/nothing.js", &[]).await?;
    ensure!(r.status == StatusCode::NOT_FOUND);
    conn.disconnect().await?;
    Ok(())
}

#[tokio::test]
async fn without_a_token_the_page_is_the_same() -> Result<()> {
    let open = TestServer::start().await?;
    let secured = TestServer::start_with(|c| c.http.token = Some(TOKEN.into())).await?;
    for path in ["/", "/dashboard/app.js", "/dashboard/style.css"] {
        let a = call(&open.api(), path, &[]).await?;
        let b = call(&secured.api(), path, &[]).await?;
        ensure!(
            a.status == StatusCode::OK && b.status == StatusCode::OK,
            "{path}"
        );
        ensure!(a.body == b.body, "{path} differs with a token configured");
    }
    Ok(())
}

/// Every `quicft_…` metric name in `expr`.
fn metric_names(expr: &str) -> Vec<&str> {
    expr.match_indices("quicft_")
        .filter(|(i, _)| {
            !expr[..*i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(|(i, _)| {
            let len = expr[i..]
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
                .count();
            &expr[i..i + len]
        })
        .collect()
}

/// The label names an expression groups by (`by (a, b)`) or selects on (`{a="…", b=~"…"}`).
fn label_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (open, close, sep) in [("by (", ')', ','), ("{", '}', ',')] {
        for (i, _) in expr.match_indices(open) {
            let inner = &expr[i + open.len()..];
            let inner = &inner[..inner.find(close).unwrap_or(inner.len())];
            for part in inner.split(sep) {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    out.push(name);
                }
            }
        }
    }
    out
}

/// A metric family's name and type (`# TYPE` lines).
type Families = Vec<(String, String)>;
/// Each sample name with the label names it was seen with.
type Samples = Vec<(String, Vec<String>)>;

/// `# TYPE` families and, for each sample name, the label names it was seen with.
fn exposition(text: &str) -> (Families, Samples) {
    let mut families = Vec::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (it.next(), it.next()) {
                families.push((name.to_owned(), kind.to_owned()));
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let labels = match line[name_end..].strip_prefix('{') {
                Some(rest) => rest[..rest.rfind('}').unwrap_or(0)]
                    .split("\",")
                    .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.trim().to_owned()))
                    .collect(),
                None => Vec::new(),
            };
            samples.push((line[..name_end].to_owned(), labels));
        }
    }
    (families, samples)
}

/// Panels, rows' panels included.
fn panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// dist/grafana-quicft.json imports with a Prometheus data source chosen at import (or the
/// `DS_PROMETHEUS` variable when provisioned from a file), and queries only metric names and labels
/// that the server's /metrics exports, after some traffic so that labelled series exist.
#[tokio::test]
async fn the_grafana_dashboard_queries_only_exported_metrics() -> Result<()> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/grafana-quicft.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    const DS: &str = "${DS_PROMETHEUS}";
    ensure!(
        dash["__inputs"]
            .as_array()
            .is_some_and(|i| i.iter().any(|i| i["name"] == "DS_PROMETHEUS"
                && i["type"] == "datasource"
                && i["pluginId"] == "prometheus")),
        "no Prometheus data source input"
    );
    ensure!(
        dash["templating"]["list"].as_array().is_some_and(|l| l
            .iter()
            .any(|v| v["name"] == "DS_PROMETHEUS" && v["type"] == "datasource")),
        "no DS_PROMETHEUS data source variable"
    );
    ensure!(dash["title"].is_string() && dash["uid"].is_string() && dash["schemaVersion"].is_u64());

    let mut ids = HashSet::new();
    let mut exprs = Vec::new();
    let all = panels(&dash);
    for p in &all {
        let title = p["title"].as_str().context("panel title")?;
        ensure!(
            ids.insert(p["id"].as_u64().context("panel id")?),
            "{title}: duplicate id"
        );
        let g = &p["gridPos"];
        ensure!(
            ["x", "y", "w", "h"].iter().all(|k| g[k].is_u64())
                && g["x"].as_u64().unwrap_or(99) + g["w"].as_u64().unwrap_or(99) <= 24,
            "{title}: gridPos {g}"
        );
        if p["type"] == "row" {
            continue;
        }
        ensure!(
            p["datasource"]["uid"] == DS,
            "{title}: data source {}",
            p["datasource"]
        );
        let targets = p["targets"].as_array().context("targets")?;
        ensure!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            ensure!(t["datasource"]["uid"] == DS, "{title}: query data source");
            exprs.push((title, t["expr"].as_str().context("expr")?));
        }
    }

    // The server's exposition, with connections, packets, reason codes, $file commands, a
    // finished transfer and one in progress behind it.
    let srv = TestServer::start().await?;
    let mut conn = srv.connect(Transport::Quic, "grafana-dev").await?;
    let s = conn.data().await?;
    ft::upload(s, "g-done", "g.bin", &content(5000, 9), 1000).await?;
    ensure!(ft::init(s, "g-open", "h.bin", Some(100)).await? == ReasonCode::SUCCESS);
    let r = call(&srv.api(), "/metrics", &[]).await?;
    ensure!(r.status == StatusCode::OK);
    let (families, samples) = exposition(r.text()?);
    conn.disconnect().await?;

    let exported = |name: &str| {
        families.iter().any(|(f, kind)| {
            f == name
                || (kind == "histogram"
                    && ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|s| name.strip_suffix(s) == Some(f.as_str())))
        })
    };
    let mut used = HashSet::new();
    for (title, expr) in &exprs {
        let names = metric_names(expr);
        ensure!(!names.is_empty(), "{title}: no quicft_ metric in {expr}");
        for name in &names {
            ensure!(exported(name), "{title}: {name} is not in /metrics");
            used.insert(name.to_string());
            // Labels added by Prometheus at scrape time are not in the exposition.
            for label in label_names(expr) {
                if ["instance", "job"].contains(&label.as_str()) {
                    continue;
                }
                ensure!(
                    samples
                        .iter()
                        .any(|(n, ls)| n == name && ls.contains(&label)),
                    "{title}: {name} has no label {label:?} in /metrics ({expr})"
                );
            }
        }
    }
    for needed in [
        "quicft_connections",
        "quicft_connections_accepted_total",
        "quicft_clients_connected",
        "quicft_received_bytes_total",
        "quicft_sent_bytes_total",
        "quicft_packets_received_total",
        "quicft_reason_codes_sent_total",
        "quicft_file_commands_total",
        "quicft_transfers",
        "quicft_transfer_bytes_held",
        "quicft_segments_stored_total",
        "quicft_commit_errors_total",
        "quicft_fsync_seconds_bucket",
    ] {
        ensure!(used.contains(needed), "no panel shows {needed}");
    }
    // The checker itself.
    ensure!(metric_names("sum(rate(quicft_a_b{x=\"1\"}[5m])) / xquicft_c") == vec!["quicft_a_b"]);
    ensure!(
        label_names("sum by (le, code) (x{instance=~\"$i\", state!=\"c\"})")
            == vec!["le", "code", "instance", "state"]
    );
    Ok(())
}
