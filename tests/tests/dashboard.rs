//! The dashboard at `/` (issue 13, "A page to look at"): served without a token but with no data in
//! it, a strict Content-Security-Policy, its script and style as their own routes, the API behind
//! the token as before. Through the in-process router, as http_api.rs does. The page itself is
//! exercised in a real browser by tests/browser/run.sh.

use anyhow::{ensure, Context, Result};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use quicft_proto::ReasonCode;
use quicft_tests::ft::{self, content};
use quicft_tests::{TestServer, Transport};
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
