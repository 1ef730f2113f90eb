//! `quicft-server`: flags, subcommands and signals; the server itself is the library.

mod cli;

use std::path::PathBuf;

use clap::Parser;
use cli::logging::LogFormat;
use quicft_server::config::{Config, Congestion};

/// MQTT 5 server over QUIC, TCP and TLS with durable, resumable file transfer.
///
/// With no arguments it listens on loopback only (QUIC 127.0.0.1:14567, TCP :1883, TLS :8883,
/// WebSocket :8083 and :8084),
/// accepts anonymous clients there, keeps its data in ./quicft-data and creates a development CA in
/// ./quicft-data/certs/ (clients trust ca.pem).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// TOML configuration file; flags override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Directory for certificates, transfers and exports.
    #[arg(long, global = true)]
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
    /// MQTT over WebSocket listen address (path /mqtt, subprotocol mqtt), or "off".
    #[arg(long, value_parser = parse_listen)]
    ws: Option<Listen>,
    /// MQTT over secure WebSocket (TLS) listen address, or "off".
    #[arg(long, value_parser = parse_listen)]
    wss: Option<Listen>,
    /// HTTP API listen address, or "off".
    #[arg(long, value_parser = parse_listen)]
    http: Option<Listen>,
    /// File whose first line is the HTTP API's bearer token ([http] token_file).
    #[arg(long)]
    http_token_file: Option<PathBuf>,
    /// Accept clients without credentials on every listener (by default: on loopback ones only).
    #[arg(long)]
    allow_anonymous: bool,
    /// Log lines as text (colours only on a terminal) or JSON, on standard error.
    #[arg(long, value_enum, default_value_t)]
    log_format: LogFormat,
    /// Log level or filter (`debug`, `info,quicft_server=debug`); default: RUST_LOG, else info.
    #[arg(long)]
    log_level: Option<String>,
    /// QUIC congestion controller: delay (the default), cubic or bbr.
    #[arg(long)]
    congestion: Option<Congestion>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Prints the argon2id PHC string of a password (prompted for without echo; the first line of
    /// standard input when it is not a terminal), for `password_hash` in `[[auth.users]]`.
    HashPassword,
    /// Validates the configuration (file and flags) and prints the effective listeners, who may
    /// connect on each, and the limits; exits non-zero when the server would refuse to start.
    CheckConfig,
    /// Edits a users file (`[auth] users_file`), as mosquitto_passwd does.
    #[command(subcommand)]
    Users(cli::users::UsersCommand),
    /// Certificates from the development CA.
    #[command(subcommand)]
    Cert(CertCommand),
}

#[derive(clap::Subcommand, Debug)]
enum CertCommand {
    /// Issues a device (client) certificate named NAME from the development CA in
    /// <data-dir>/certs/, for trying mutual TLS (`quicft --cert NAME.pem --key NAME.key`).
    Device {
        name: String,
        /// Where NAME.pem and NAME.key go (default: <data-dir>/certs/devices).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy)]
struct Listen(Option<std::net::SocketAddr>);

fn parse_listen(s: &str) -> Result<Listen, String> {
    quicft_server::config::parse_listen(s).map(Listen)
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
    let args = Args::parse();
    cli::logging::init(args.log_format, args.log_level.as_deref())?;
    let config = effective_config(&args)?;
    match args.command {
        Some(Command::HashPassword) => {
            println!(
                "{}",
                quicft_server::auth::hash_password(&cli::password::read()?)?
            );
            return Ok(());
        }
        Some(Command::CheckConfig) => {
            print!("{}", cli::check::report(&config)?);
            return Ok(());
        }
        Some(Command::Users(cmd)) => return cli::users::run(cmd),
        Some(Command::Cert(CertCommand::Device { name, out })) => {
            let out = out.unwrap_or_else(|| config.data_dir.join("certs/devices"));
            let (cert, key) = cli::device_cert::issue(&config.data_dir, &name, &out)?;
            println!("{}\n{}", cert.display(), key.display());
            return Ok(());
        }
        None => {}
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        // Signals are caught from before the first listener is bound: a SIGHUP (or SIGTERM) that
        // arrives while the server starts must not take the default action and kill it.
        let mut signals = Signals::new()?;
        let server = quicft_server::Server::start(config).await?;
        cli::systemd::ready();
        tokio::spawn(cli::systemd::watchdog());
        while let Signal::Reload = signals.next().await {
            cli::systemd::reloading();
            reload(&server, &args);
            cli::systemd::ready();
        }
        cli::systemd::stopping();
        tracing::info!("shutting down");
        server.shutdown().await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(())
}

/// The configuration file with the flags applied.
fn effective_config(args: &Args) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_toml(path)?,
        None => Config::default(),
    };
    if let Some(dir) = &args.data_dir {
        config.set_data_dir(dir.clone());
    }
    let l = &mut config.listeners;
    for (flag, slot) in [
        (args.quic, &mut l.quic),
        (args.tcp, &mut l.tcp),
        (args.tls, &mut l.tls),
        (args.ws, &mut l.ws),
        (args.wss, &mut l.wss),
        (args.http, &mut l.http),
    ] {
        if let Some(Listen(addr)) = flag {
            *slot = addr;
        }
    }
    if args.allow_anonymous {
        config.auth.allow_anonymous = Some(true);
    }
    if let Some(path) = &args.http_token_file {
        config.http.token_file = Some(path.clone());
        config.http.load_token_file()?;
    }
    if let Some(c) = args.congestion {
        config.quic.congestion = c;
    }
    Ok(config)
}

/// SIGHUP: reads the configuration file (and the files it names) again and applies what can change
/// while running; a configuration that does not load is refused and the running one stays.
fn reload(server: &quicft_server::Server, args: &Args) {
    let loaded = effective_config(args).map_err(|e| format!("{e:#}"));
    match loaded.and_then(|c| server.reload(c).map_err(|e| e.to_string())) {
        Err(e) => tracing::error!(
            error = %e,
            "SIGHUP: configuration not reloaded; the running configuration stays"
        ),
        Ok(r) => {
            let u = &r.users;
            tracing::info!(
                users_added = ?u.added,
                users_removed = ?u.removed,
                users_changed = ?u.changed,
                anonymous_changed = u.anonymous_changed,
                acl_changed = r.acl,
                certificate_changed = r.certificate,
                http_token_changed = r.http_token,
                "SIGHUP: configuration reloaded"
            );
            if !r.needs_restart.is_empty() {
                tracing::warn!(
                    sections = ?r.needs_restart,
                    "SIGHUP: these settings changed but apply only after a restart"
                );
            }
        }
    }
}

enum Signal {
    Stop,
    Reload,
}

/// SIGINT, SIGTERM and SIGHUP, caught.
struct Signals {
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The next signal: SIGINT or SIGTERM stop the server, SIGHUP reloads its configuration.
    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.int.recv() => Signal::Stop,
            _ = self.term.recv() => Signal::Stop,
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}
