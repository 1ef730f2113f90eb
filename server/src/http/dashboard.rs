//! The operator's dashboard: `GET /` and its static assets under `/dashboard/`.
//!
//! Plain HTML, CSS and JavaScript embedded in the binary (no build step, nothing fetched from
//! elsewhere). The page is a client of the JSON API like any other: every figure it shows comes
//! from `GET /api/v1/transfers`, `/api/v1/files`, `/api/v1/clients` and `/metrics`, fetched by
//! `app.js` every 2 s; nothing here reads the server's state.
//!
//! Token rule. These routes need no token, although everything under `/api/` and `/metrics` does
//! once `[http] token` is configured. A browser cannot attach `Authorization: Bearer` to the
//! navigation that loads a page, so a page behind the token could not be opened at all; the
//! alternatives (a login form that sets a cookie, or the token in the URL) would add a second,
//! cookie-based way in, with CSRF to defend, or put the token in history and logs. So the page and
//! its assets are public and hold no data — they are the same bytes for everyone, compiled in — and
//! the page asks for the token when the API answers 401, keeps it in `sessionStorage` (gone when
//! the tab closes, never sent anywhere but as the bearer header of its own same-origin fetches)
//! and sends it on every call. Downloads are fetched with the header too and saved through a Blob
//! URL. What an unauthenticated visitor learns is that a quicft server is there, as `/healthz`
//! already says.
//!
//! Every response carries a strict Content-Security-Policy: scripts, styles and connections from
//! this origin only, no inline script or style, no frames, no forms posting anywhere. Device-chosen
//! strings (client ids, file names) are put into the page with `textContent` only.

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The policy sent with every dashboard response. `img-src blob:` is not needed (downloads go
/// through `<a download>`, which CSP does not govern); `'self'` for the icon.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");
const ICON_SVG: &str = include_str!("dashboard/icon.svg");

/// The dashboard's routes, merged into [`super::router`] outside the token check.
pub(super) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/dashboard/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/dashboard/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route(
            "/dashboard/icon.svg",
            get(|| async { asset("image/svg+xml", ICON_SVG) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, content_type),
            (CONTENT_SECURITY_POLICY, CSP),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (X_FRAME_OPTIONS, "DENY"),
            (REFERRER_POLICY, "no-referrer"),
            // The assets change with the binary: revalidate rather than keep a stale page.
            (CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
