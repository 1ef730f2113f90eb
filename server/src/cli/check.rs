//! `quicft-server check-config [--config FILE]`: the effective configuration after the file and
//! the flags, validated as a start would, in a few lines an operator can read.

use std::fmt::Write;
use std::net::SocketAddr;

use quicft_server::config::{ClientAuth, Config};

fn listener(a: Option<SocketAddr>) -> String {
    a.map_or_else(|| "off".to_owned(), |a| a.to_string())
}

/// Who may connect on a listener bound to `a`.
fn auth_on(cfg: &Config, a: SocketAddr) -> String {
    let mut ways = Vec::new();
    if !cfg.auth.users.is_empty() || cfg.auth.users_file.is_some() {
        ways.push("password");
    }
    if cfg.tls.client_auth != ClientAuth::Off {
        ways.push("client certificate");
    }
    if cfg
        .auth
        .allow_anonymous
        .unwrap_or_else(|| a.ip().is_loopback())
    {
        ways.push("anonymous");
    }
    if ways.is_empty() {
        "nobody".to_owned()
    } else {
        ways.join(", ")
    }
}

pub fn report(cfg: &Config) -> anyhow::Result<String> {
    cfg.validate()?;
    let mut out = String::new();
    let l = &cfg.listeners;
    writeln!(out, "configuration is valid")?;
    writeln!(out, "data dir        {}", cfg.data_dir.display())?;
    for (name, a) in [
        ("QUIC", l.quic),
        ("TCP", l.tcp),
        ("TLS", l.tls),
        ("WebSocket", l.ws),
        ("WebSocket TLS", l.wss),
    ] {
        let who = a.map(|a| auth_on(cfg, a)).unwrap_or_default();
        let who = if who.is_empty() {
            String::new()
        } else {
            format!("  ({who})")
        };
        writeln!(out, "{name:<16}{}{who}", listener(a))?;
    }
    let token = if cfg.http.token.is_some() {
        "bearer token"
    } else {
        "no token"
    };
    writeln!(out, "HTTP API        {}  ({token})", listener(l.http))?;
    let tls = match (&cfg.tls.cert, &cfg.tls.key) {
        (Some(c), Some(_)) => c.display().to_string(),
        _ => format!("development CA in {}", cfg.data_dir.join("certs").display()),
    };
    writeln!(out, "TLS certificate {tls}")?;
    let ids = cfg.auth.client_id.as_deref().unwrap_or("%u");
    writeln!(
        out,
        "auth            {} users inline{}, client ids {ids} by default, {} ACL rules, client certificates {:?}",
        cfg.auth.users.len(),
        cfg.auth
            .users_file
            .as_ref()
            .map(|p| format!(" + users file {}", p.display()))
            .unwrap_or_default(),
        cfg.auth.acl.len(),
        cfg.tls.client_auth,
    )?;
    let lim = &cfg.limits;
    writeln!(
        out,
        "limits          max_connections {}, max_packet_size {}, inflight_window {}, max_queued_messages {}",
        lim.max_connections, lim.max_packet_size, lim.inflight_window, lim.max_queued_messages
    )?;
    let ft = &cfg.file_transfer;
    writeln!(
        out,
        "file transfer   max_file_size {}, client_quota {}, min_free_disk {}",
        ft.max_file_size, ft.client_quota, ft.min_free_disk
    )?;
    Ok(out)
}
