//! `quicft-server`: flags and signals only; everything else is in the library.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use quicft_server::config::{Config, Congestion};

/// MQTT 5 server over QUIC, TCP and TLS with durable, resumable file transfer.
///
/// With no arguments it listens on loopback only (QUIC 127.0.0.1:14567, TCP :1883, TLS :8883),
/// accepts anonymous clients there, keeps its data in ./quicft-data and creates a development CA in
/// ./quicft-data/certs/ (clients trust ca.pem).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// TOML configuration file; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Directory for certificates, transfers and exports.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// QUIC listen address, or "off".
    #[arg(long, value_parser = parse_listen)]
    quic: Option<Listen>,
    /// Plain TCP listen address, or "off".
    #[arg(long, value_parser = parse_listen)]
    tcp: Option<Listen>,
    /// TLS listen address, or "off".
    #[arg(long, value_parser = parse_listen)]
    tls: Option<Listen>,
    /// HTTP API listen address, or "off".
    #[arg(long, value_parser = parse_listen)]
    http: Option<Listen>,
    /// Accept clients without credentials even on non-loopback addresses.
    #[arg(long)]
    allow_anonymous: bool,
    /// QUIC congestion controller: delay (the default), cubic or bbr.
    #[arg(long)]
    congestion: Option<Congestion>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Reads a password from standard input (first line) and prints its argon2id PHC string, for
    /// `password_hash` in `[[auth.users]]` or the users file.
    HashPassword,
}

#[derive(Debug, Clone, Copy)]
struct Listen(Option<SocketAddr>);

fn parse_listen(s: &str) -> Result<Listen, String> {
    if s == "off" {
        return Ok(Listen(None));
    }
    s.parse()
        .map(|a| Listen(Some(a)))
        .map_err(|e| format!("{s:?}: {e} (expected IP:PORT or off)"))
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // A plain message, not a backtrace: this is what an operator reads.
            eprintln!("quicft-server: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,quinn=warn".into()),
        )
        .init();
    let args = Args::parse();
    if let Some(Command::HashPassword) = args.command {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        let password = line.strip_suffix('\n').unwrap_or(&line);
        let password = password.strip_suffix('\r').unwrap_or(password);
        anyhow::ensure!(!password.is_empty(), "empty password on standard input");
        println!("{}", quicft_server::auth::hash_password(password)?);
        return Ok(());
    }
    let mut config = match &args.config {
        Some(path) => Config::from_toml(path)?,
        None => Config::default(),
    };
    if let Some(dir) = args.data_dir {
        config.set_data_dir(dir);
    }
    let l = &mut config.listeners;
    for (flag, slot) in [
        (args.quic, &mut l.quic),
        (args.tcp, &mut l.tcp),
        (args.tls, &mut l.tls),
        (args.http, &mut l.http),
    ] {
        if let Some(Listen(addr)) = flag {
            *slot = addr;
        }
    }
    if args.allow_anonymous {
        config.auth.allow_anonymous = Some(true);
    }
    if let Some(c) = args.congestion {
        config.quic.congestion = c;
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(quicft_server::run(config, shutdown_signal()))?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
