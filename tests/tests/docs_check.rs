//! Every configuration key, server flag and HTTP route the documentation names exists in the code
//! (issue 18): README.md and docs/*.md are read, and
//!
//! * config keys — written `` `[section] key` `` (or `` `section.key` ``) in the text, and every
//!   line of a ```` ```toml ```` block — are fed to `quicft_server::Config` (which refuses unknown
//!   fields); every ```` ```toml ```` block must also be a configuration the server would start
//!   with (parsed and validated, as `quicft-server check-config` does);
//! * server flags — code spans starting with `--`, and the flags after `quicft-server` in shell
//!   blocks — are looked up in the server's clap `Args`;
//! * routes — `/api/…` paths anywhere, and `GET /x`-style mentions — are matched against the
//!   OpenAPI document the server serves (`/api/v1/openapi.json`), method included when one is named.
//!
//! `checker_catches_what_does_not_exist` shows that the check fails on a name that is not there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use axum::body::Body;
use axum::http::Request;
use quicft_tests::TestServer;
use tower::ServiceExt;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// What one document names.
#[derive(Debug, Default)]
struct Named {
    /// (section, key); section "" for a top-level key.
    keys: BTreeSet<(String, String)>,
    flags: BTreeSet<String>,
    /// (method, path) with the method upper-case when the text names one.
    routes: BTreeSet<(Option<String>, String)>,
    toml_blocks: Vec<String>,
}

const METHODS: [&str; 6] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"];

fn extract(text: &str) -> Named {
    let mut n = Named::default();
    let mut fence: Option<(String, String)> = None; // (info string, content)
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            match fence.take() {
                Some((info, body)) => {
                    if info == "toml" {
                        toml_keys(&body, &mut n.keys);
                        n.toml_blocks.push(body);
                    }
                }
                None => fence = Some((info.trim().to_owned(), String::new())),
            }
            continue;
        }
        routes(line, &mut n.routes);
        match &mut fence {
            Some((info, body)) => {
                body.push_str(line);
                body.push('\n');
                if matches!(
                    info.as_str(),
                    "sh" | "bash" | "shell" | "console" | "text" | ""
                ) {
                    server_command_flags(line, &mut n.flags);
                }
            }
            None => {
                for span in line.split('`').skip(1).step_by(2) {
                    span_names(span, &mut n);
                }
            }
        }
    }
    n
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `[section] key…`, `section.key` and `--flag…` in one code span.
fn span_names(span: &str, n: &mut Named) {
    let span = span.trim();
    if let Some(rest) = span.strip_prefix("--") {
        let flag: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        if !flag.is_empty() {
            n.flags.insert(format!("--{flag}"));
        }
        return;
    }
    if let Some(rest) = span.strip_prefix('[') {
        if rest.starts_with('[') {
            return; // `[[auth.users]]`: an array of tables, checked in TOML blocks
        }
        if let Some((section, after)) = rest.split_once(']') {
            let key: String = after
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if is_ident(section) && is_ident(&key) {
                n.keys.insert((section.to_owned(), key));
            }
        }
        return;
    }
    // `section.key` (e.g. `tls.cert_client_id`): checked when `section` is a real section and the
    // span is not a file name (`auth.rs`, `tls.key`).
    const EXTENSIONS: [&str; 9] = ["rs", "md", "toml", "pem", "key", "json", "py", "sh", "log"];
    if let Some((section, key)) = span.split_once('.') {
        if is_ident(section)
            && is_ident(key)
            && SECTION_WORDS.contains(&section)
            && !EXTENSIONS.contains(&key)
        {
            n.keys.insert((section.to_owned(), key.to_owned()));
        }
    }
}

/// Words that, before a dot in a code span, mean a config section (`limits.max_packet_size`);
/// that they are sections at all is checked too.
const SECTION_WORDS: [&str; 7] = [
    "listeners",
    "tls",
    "auth",
    "limits",
    "quic",
    "file_transfer",
    "http",
];

/// Every `key = …` line of a TOML block, under the table it is in.
fn toml_keys(body: &str, keys: &mut BTreeSet<(String, String)>) {
    let mut table = String::new();
    let mut in_array = false; // inside a multi-line `key = [` … `]`
    for line in body.lines() {
        let line = line.split(" #").next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if in_array {
            in_array = !line.starts_with(']');
            continue;
        }
        if line.starts_with('[') {
            table = line.trim_matches(['[', ']']).to_owned();
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            let key = key.trim();
            if is_ident(key) && !table.contains('.') && !line.starts_with('{') {
                keys.insert((table.clone(), key.to_owned()));
            }
            let v = value.trim();
            in_array = v.starts_with('[') && !v.ends_with(']');
        }
    }
}

/// The flags after `quicft-server` on a shell line (not cargo's own flags before it).
fn server_command_flags(line: &str, flags: &mut BTreeSet<String>) {
    let mut tokens = line.split_whitespace();
    if !tokens.any(|t| t.ends_with("quicft-server")) {
        return;
    }
    for t in tokens {
        if matches!(t, "|" | "&" | "&&" | ";" | "#" | ">" | "2>&1") || t.starts_with('#') {
            break;
        }
        if let Some(rest) = t.strip_prefix("--").filter(|r| !r.is_empty()) {
            let flag = rest.split('=').next().unwrap_or(rest);
            flags.insert(format!("--{flag}"));
        }
    }
}

/// `/api/…` paths, and `METHOD /path` mentions.
fn routes(line: &str, out: &mut BTreeSet<(Option<String>, String)>) {
    let path_char = |c: char| c.is_ascii_alphanumeric() || "/{}_-.%~".contains(c);
    let mut rest = line;
    while let Some(i) = rest.find('/') {
        let before = &rest[..i];
        let path: String = rest[i..].chars().take_while(|c| path_char(*c)).collect();
        let path = path.trim_end_matches(['.', ',']).to_owned();
        let method = METHODS
            .iter()
            .find(|m| before.ends_with(&format!("{m} ")))
            .map(|m| (*m).to_owned());
        let in_url = before.ends_with(char::is_alphanumeric) || before.ends_with(':');
        if path.starts_with("/api/") || (method.is_some() && !in_url && path.len() > 1) {
            out.insert((method, path.clone()));
        }
        rest = &rest[i + path.len().max(1)..];
    }
}

/// The long flags of `quicft-server` and its subcommands: every clap `#[arg(long …)]` field in the
/// server's sources (the `Parser` in its binary and the subcommands beside it).
fn server_flags() -> Result<BTreeSet<String>> {
    let mut sources = Vec::new();
    let mut stack = vec![repo().join("server/src")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p)?;
                if text.contains("clap") {
                    sources.push(text);
                }
            }
        }
    }
    ensure!(
        sources.iter().any(|t| t.contains("derive(Parser")),
        "no clap Parser in server/src"
    );
    let mut flags: BTreeSet<String> = ["--help", "--version"].map(String::from).into();
    let mut pending_long: Option<Option<String>> = None;
    for line in sources.iter().flat_map(|t| t.lines()).map(str::trim) {
        if line.starts_with("#[arg(") && line.contains("long") {
            // `long = "name"` names the flag; a bare `long` takes the field's name.
            let named = line
                .split("long = \"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map(str::to_owned);
            pending_long = Some(named);
        } else if let Some(named) = pending_long.take() {
            if line.starts_with("#[") || line.starts_with("///") {
                pending_long = Some(named);
                continue;
            }
            let field = line
                .trim_start_matches("pub ")
                .split(':')
                .next()
                .unwrap_or("");
            let name = named.unwrap_or_else(|| field.trim().replace('_', "-"));
            flags.insert(format!("--{name}"));
        }
    }
    Ok(flags)
}

/// Whether `[section] key` is a field of the configuration (`section` "" for a top-level key).
fn key_exists(section: &str, key: &str, scratch: &Path) -> Result<bool> {
    let toml = if section.is_empty() {
        format!("{key} = 0\n")
    } else {
        format!("[{section}]\n{key} = 0\n")
    };
    let path = scratch.join("probe.toml");
    std::fs::write(&path, toml)?;
    let unknown = match quicft_server::Config::from_toml(&path) {
        Ok(_) => false,
        // A known field with a value of the wrong type is still a known field.
        Err(e) => e.to_string().contains("unknown field"),
    };
    if unknown {
        return Ok(false);
    }
    if section == "file_transfer" {
        // FtConfig ignores unknown fields, so ask its serialized form which fields it has.
        let ft = serde_json::to_value(quicft_server::ft::FtConfig::default())?;
        return Ok(ft.get(key).is_some());
    }
    Ok(true)
}

/// The OpenAPI paths and their methods (upper-case), from the server's own router.
async fn openapi_routes() -> Result<BTreeMap<String, BTreeSet<String>>> {
    let srv = TestServer::start().await?;
    let req = Request::get("/api/v1/openapi.json").body(Body::empty())?;
    let resp = srv.api().oneshot(req).await?;
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await?;
    let doc: serde_json::Value = serde_json::from_slice(&body)?;
    let paths = doc["paths"].as_object().context("OpenAPI paths")?;
    Ok(paths
        .iter()
        .map(|(p, ops)| {
            let methods = ops
                .as_object()
                .map(|o| o.keys().map(|m| m.to_uppercase()).collect())
                .unwrap_or_default();
            (p.clone(), methods)
        })
        .collect())
}

fn route_matches(template: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    let (t, p): (Vec<_>, Vec<_>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}') && !p.is_empty()))
}

/// Everything named in `text` that the code does not have, one line each.
async fn problems(text: &str) -> Result<Vec<String>> {
    let named = extract(text);
    let scratch = tempfile::tempdir()?;
    let mut out = Vec::new();
    for (section, key) in &named.keys {
        if !key_exists(section, key, scratch.path())? {
            out.push(format!("config key `[{section}] {key}` does not exist"));
        }
    }
    for (i, block) in named.toml_blocks.iter().enumerate() {
        let path = scratch.path().join(format!("block{i}.toml"));
        std::fs::write(&path, block)?;
        // What `quicft-server check-config` does: parse, then the checks a start makes.
        let checked = quicft_server::Config::from_toml(&path)
            .map_err(|e| e.to_string())
            .and_then(|cfg| cfg.validate().map_err(|e| e.to_string()));
        if let Err(e) = checked {
            out.push(format!(
                "TOML block {} is not a valid configuration: {e}",
                i + 1
            ));
        }
    }
    let flags = server_flags()?;
    for f in named.flags.difference(&flags) {
        out.push(format!("server flag `{f}` does not exist"));
    }
    let api = openapi_routes().await?;
    for (method, path) in &named.routes {
        let found = api.iter().find(|(t, _)| route_matches(t, path));
        match (found, method) {
            (None, _) => out.push(format!("route `{path}` is not in the OpenAPI document")),
            (Some((t, methods)), Some(m)) if !methods.contains(m) => {
                out.push(format!("route `{m} {path}` ({t}) has no {m}"))
            }
            _ => {}
        }
    }
    Ok(out)
}

fn documents() -> Result<Vec<(String, String)>> {
    let mut docs = vec![(
        "README.md".to_owned(),
        std::fs::read_to_string(repo().join("README.md"))?,
    )];
    let mut md: Vec<_> = std::fs::read_dir(repo().join("docs"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    md.sort();
    for p in md {
        let name = format!(
            "docs/{}",
            p.file_name().unwrap_or_default().to_string_lossy()
        );
        docs.push((name, std::fs::read_to_string(&p)?));
    }
    Ok(docs)
}

#[tokio::test]
async fn every_documented_key_flag_and_route_exists() -> Result<()> {
    let docs = documents()?;
    ensure!(
        docs.len() >= 3,
        "README.md, docs/PROTOCOL.md, docs/OPERATIONS.md"
    );
    let mut all = Named::default();
    let mut failures = Vec::new();
    for (name, text) in &docs {
        ensure!(
            !text.contains("../shared/"),
            "{name} points outside the repository"
        );
        for p in problems(text).await? {
            failures.push(format!("{name}: {p}"));
        }
        let n = extract(text);
        all.keys.extend(n.keys);
        all.flags.extend(n.flags);
        all.routes.extend(n.routes);
    }
    ensure!(
        failures.is_empty(),
        "the documentation names what the code does not have:\n{}",
        failures.join("\n")
    );
    // The extraction itself works: the documents do name these.
    ensure!(
        all.keys
            .contains(&("auth".into(), "allow_anonymous".into())),
        "{:?}",
        all.keys
    );
    ensure!(all
        .keys
        .contains(&("limits".into(), "max_ft_inflight_bytes".into())));
    ensure!(all
        .keys
        .contains(&("file_transfer".into(), "segments_ttl_max_secs".into())));
    ensure!(all.flags.contains("--data-dir") && all.flags.contains("--allow-anonymous"));
    ensure!(all
        .routes
        .contains(&(Some("GET".into()), "/api/v1/transfers".into())));
    ensure!(all.keys.len() >= 40, "only {} keys found", all.keys.len());
    Ok(())
}

#[tokio::test]
async fn checker_catches_what_does_not_exist() -> Result<()> {
    let good = "Set `[auth] allow_anonymous = true`, `[limits] max_packet_size`, `tls.cert_client_id`,\n\
                `--data-dir DIR`, `auth.rs`, `tls.key` and `GET /api/v1/files/{clientId}/{fileId}/content`; also\n\
                `DELETE /api/v1/transfers/truck-17/log-1` and `GET /healthz`.\n\
                ```toml\n[file_transfer]\nmax_file_size = 1\n[[auth.acl]]\npattern = \"a/#\"\naccess = \"read\"\n```\n\
                ```sh\ncargo run --release --bin quicft-server -- --quic off --tcp 127.0.0.1:1883\n```\n";
    assert_eq!(problems(good).await?, Vec::<String>::new());

    let bad =
        "Set `[auth] allow_anonymus`, `[limitz] max_packet_size`, `[file_transfer] max_files`,\n\
               `quic.no_such_window`, `--data-directory DIR`, `GET /api/v1/transfer` and\n\
               `POST /api/v1/files`.\n\
               ```toml\n[limits]\nmax_conections = 5\n```\n\
               ```toml\n[listeners]\nhttp = \"0.0.0.0:8080\"\n```\n\
               ```sh\nquicft-server --http off --verbose\n```\n";
    let found = problems(bad).await?;
    for expected in [
        "`[auth] allow_anonymus`",
        "`[limitz] max_packet_size`",
        "`[file_transfer] max_files`",
        "`[quic] no_such_window`",
        "`[limits] max_conections`",
        "TOML block 1",
        "TOML block 2 is not a valid configuration",
        "refusing to listen on non-loopback address 0.0.0.0:8080",
        "`--data-directory`",
        "`--verbose`",
        "`/api/v1/transfer`",
        "`POST /api/v1/files`",
    ] {
        ensure!(
            found.iter().any(|p| p.contains(expected)),
            "{expected} not reported; got:\n{}",
            found.join("\n")
        );
    }
    ensure!(
        found.len() == 11,
        "exactly the eleven bad names: {found:#?}"
    );
    Ok(())
}
