//! `quicft`: publish and subscribe from a shell (uploads come next, issue 4).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use quicft_client::{
    CaSource, Client, ClientOptions, Congestion, Message, Protocol, QoS, ReasonCode, Transport,
};

/// Where the zero-config server writes its development CA.
const DEV_CA: &str = "quicft-data/certs/ca.pem";

#[derive(Parser)]
#[command(
    name = "quicft",
    version,
    about = "MQTT over QUIC (or TLS/TCP) from the command line"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publish one message.
    Pub(PubArgs),
    /// Subscribe and print each message's payload on its own line.
    Sub(SubArgs),
}

#[derive(Args)]
struct Common {
    /// quic, tls or tcp.
    #[arg(long, global = true, default_value = "quic")]
    transport: Transport,
    /// Server as HOST or HOST:PORT (default ports: 14567 QUIC, 8883 TLS, 1883 TCP); an IPv6
    /// address with a port goes in brackets, as in `[::1]:14567`.
    #[arg(long, global = true, default_value = "localhost")]
    server: String,
    /// CA certificate (PEM) to trust. Default: ./quicft-data/certs/ca.pem if it exists, else the
    /// system trust store.
    #[arg(long, global = true)]
    ca: Option<PathBuf>,
    /// Name the server certificate must carry (default: the host).
    #[arg(long, global = true)]
    server_name: Option<String>,
    /// Client certificate chain (PEM) for mutual TLS; needs --key.
    #[arg(long, global = true, requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, global = true, requires = "cert")]
    key: Option<PathBuf>,
    /// Client identifier (default: assigned by the server).
    #[arg(short = 'i', long = "client-id", global = true)]
    client_id: Option<String>,
    /// User name for the server's password authentication.
    #[arg(short = 'u', long, global = true)]
    username: Option<String>,
    /// Password (MQTT 3.1.1 needs --username with it).
    #[arg(short = 'P', long, global = true)]
    password: Option<String>,
    /// Speak MQTT 3.1.1 instead of 5.
    #[arg(long, global = true)]
    v311: bool,
    /// Keep-alive interval in seconds (0: off).
    #[arg(short = 'k', long, global = true, default_value_t = 30)]
    keepalive: u16,
    /// Give up connecting after this many seconds.
    #[arg(long, global = true, default_value_t = 10)]
    connect_timeout: u64,
    /// QUIC congestion controller: bbr, cubic or newreno.
    #[arg(long, global = true, default_value = "bbr")]
    congestion: Congestion,
}

#[derive(Args)]
struct PubArgs {
    /// Topic to publish to.
    #[arg(short = 't', long)]
    topic: String,
    #[command(flatten)]
    payload: Payload,
    /// Quality of service: 0, 1 or 2.
    #[arg(short = 'q', long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Ask the server to retain the message.
    #[arg(short = 'r', long)]
    retain: bool,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct Payload {
    /// The payload.
    #[arg(short = 'm', long)]
    message: Option<String>,
    /// Send this file's contents as the payload.
    #[arg(short = 'f', long)]
    file: Option<PathBuf>,
    /// Send an empty payload.
    #[arg(short = 'n', long = "null-message")]
    null: bool,
}

#[derive(Args)]
struct SubArgs {
    /// Topic filter; repeat for several.
    #[arg(short = 't', long = "topic", required = true)]
    filters: Vec<String>,
    /// Maximum QoS to receive: 0, 1 or 2.
    #[arg(short = 'q', long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Exit after this many messages.
    #[arg(short = 'C', long = "count")]
    count: Option<u64>,
    /// Print the topic before each payload.
    #[arg(short = 'v', long)]
    verbose: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("QUICFT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("quicft: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quicft: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let options = options(&cli.common)?;
    match cli.command {
        Command::Pub(args) => publish(options, args).await,
        Command::Sub(args) => subscribe(options, args).await,
    }
}

fn qos(n: u8) -> QoS {
    QoS::from_u8(n).unwrap_or(QoS::AtMostOnce)
}

async fn connect(options: ClientOptions) -> anyhow::Result<Client> {
    let what = format!(
        "{}:{} over {}",
        options.host,
        options.port(),
        options.transport
    );
    let hint = match options.tls.ca {
        CaSource::Platform => " (to trust a server's dev CA, pass --ca quicft-data/certs/ca.pem)",
        _ => "",
    };
    Client::connect(options).await.map_err(|e| {
        let hint = if e.to_string().contains("certificate") {
            hint
        } else {
            ""
        };
        anyhow::Error::new(e).context(format!("cannot connect to {what}{hint}"))
    })
}

async fn publish(options: ClientOptions, args: PubArgs) -> anyhow::Result<()> {
    let payload = match (&args.payload.message, &args.payload.file) {
        (Some(m), _) => Bytes::from(m.clone().into_bytes()),
        (None, Some(path)) => Bytes::from(
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
        ),
        (None, None) => Bytes::new(),
    };
    let client = connect(options).await?;
    let message = Message::new(args.topic, payload)
        .qos(qos(args.qos))
        .retain(args.retain);
    let outcome = client.send(message).await.context("publish failed");
    let disconnected = client.disconnect().await;
    let outcome = outcome?;
    if !outcome.is_success() {
        let why = outcome.reason.as_deref().or(describe(outcome.code));
        match why {
            Some(why) => bail!("publish refused by the server: {} ({why})", outcome.code),
            None => bail!("publish refused by the server: {}", outcome.code),
        }
    }
    disconnected.context("disconnect failed")?;
    Ok(())
}

async fn subscribe(options: ClientOptions, args: SubArgs) -> anyhow::Result<()> {
    let client = connect(options).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    for filter in &args.filters {
        let mut sub = client
            .subscribe(filter.as_str(), qos(args.qos))
            .await
            .with_context(|| format!("cannot subscribe to {filter}"))?;
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                let next = sub.recv().await;
                let stop = next.is_err();
                if tx.send(next).await.is_err() || stop {
                    return;
                }
            }
        });
    }
    drop(tx);

    let mut seen = 0u64;
    let mut stdout = std::io::stdout().lock();
    loop {
        if args.count.is_some_and(|c| seen >= c) {
            break;
        }
        let next = tokio::select! {
            next = rx.recv() => next,
            _ = interrupted() => break,
        };
        let msg = match next {
            Some(Ok(msg)) => msg,
            Some(Err(e)) => return Err(e).context("subscription ended"),
            None => bail!("subscription ended"),
        };
        if args.verbose {
            stdout.write_all(msg.topic.as_bytes())?;
            stdout.write_all(b" ")?;
        }
        stdout.write_all(&msg.payload)?;
        stdout.write_all(b"\n")?;
        stdout.flush()?;
        seen += 1;
    }
    drop(stdout);
    // A disconnect that fails after we got what we came for is not worth a failure exit.
    if let Err(e) = tokio::time::timeout(Duration::from_secs(5), client.disconnect()).await {
        tracing::debug!(%e, "disconnect timed out");
    }
    Ok(())
}

/// Names of the PUBACK/PUBREC error codes a server may answer (MQTT 5.0 §3.4.2.1).
fn describe(code: ReasonCode) -> Option<&'static str> {
    Some(match code {
        ReasonCode::UNSPECIFIED_ERROR => "unspecified error",
        ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR => "implementation specific error",
        ReasonCode::NOT_AUTHORIZED => "not authorized",
        ReasonCode::TOPIC_NAME_INVALID => "topic name invalid",
        ReasonCode::PACKET_IDENTIFIER_IN_USE => "packet identifier in use",
        ReasonCode::QUOTA_EXCEEDED => "quota exceeded",
        ReasonCode::PAYLOAD_FORMAT_INVALID => "payload format invalid",
        _ => return None,
    })
}

/// Ctrl-C, or SIGTERM on Unix: either ends `sub` with a clean DISCONNECT.
async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn options(c: &Common) -> anyhow::Result<ClientOptions> {
    let (host, port) = split_server(&c.server)?;
    let mut o = ClientOptions::new(host, c.transport);
    o.port = port;
    o.protocol = if c.v311 { Protocol::V311 } else { Protocol::V5 };
    o.client_id = c.client_id.clone().unwrap_or_default();
    o.username = c.username.clone();
    o.password = c.password.clone().map(|p| Bytes::from(p.into_bytes()));
    o.keep_alive = c.keepalive;
    o.connect_timeout = Duration::from_secs(c.connect_timeout.max(1));
    o.quic.congestion = c.congestion.clone();
    o.tls.server_name = c.server_name.clone();
    o.tls.ca = match &c.ca {
        Some(path) => CaSource::File(path.clone()),
        None if std::path::Path::new(DEV_CA).exists() => CaSource::File(DEV_CA.into()),
        None => CaSource::Platform,
    };
    if let (Some(cert), Some(key)) = (&c.cert, &c.key) {
        o.tls.client_cert = Some(quicft_client::ClientCert {
            cert_chain: cert.clone(),
            key: key.clone(),
        });
    }
    Ok(o)
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`, or a bare IPv6 address.
fn split_server(s: &str) -> anyhow::Result<(String, Option<u16>)> {
    let parse_port = |p: &str| {
        p.parse::<u16>()
            .with_context(|| format!("bad port in --server {s:?}"))
    };
    if let Some(rest) = s.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            bail!("missing ] in --server {s:?}");
        };
        return match after.strip_prefix(':') {
            Some(p) => Ok((host.to_owned(), Some(parse_port(p)?))),
            None if after.is_empty() => Ok((host.to_owned(), None)),
            None => bail!("bad --server {s:?}"),
        };
    }
    match s.matches(':').count() {
        0 => Ok((s.to_owned(), None)),
        1 => {
            let (host, p) = s.split_once(':').unwrap_or((s, ""));
            Ok((host.to_owned(), Some(parse_port(p)?)))
        }
        _ => Ok((s.to_owned(), None)),
    }
    .and_then(|(h, p)| {
        if h.is_empty() {
            bail!("empty host in --server {s:?}")
        } else {
            Ok((h, p))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_forms() {
        let ok = |s: &str| split_server(s).expect(s);
        assert_eq!(ok("localhost"), ("localhost".into(), None));
        assert_eq!(ok("example.com:1883"), ("example.com".into(), Some(1883)));
        assert_eq!(ok("[::1]:14567"), ("::1".into(), Some(14567)));
        assert_eq!(ok("[::1]"), ("::1".into(), None));
        assert_eq!(ok("::1"), ("::1".into(), None));
        assert!(split_server("host:notaport").is_err());
        assert!(split_server(":1883").is_err());
    }

    #[test]
    fn cli_parses_pub_and_sub() {
        let cli = Cli::try_parse_from([
            "quicft",
            "pub",
            "-t",
            "a/b",
            "-m",
            "hi",
            "--qos",
            "2",
            "--retain",
            "--transport",
            "tcp",
        ])
        .expect("parses");
        assert_eq!(cli.common.transport, Transport::Tcp);
        assert!(matches!(
            cli.command,
            Command::Pub(PubArgs {
                qos: 2,
                retain: true,
                ..
            })
        ));
        let cli = Cli::try_parse_from([
            "quicft", "--server", "h:1", "sub", "-t", "x/#", "-t", "y", "-C", "3",
        ])
        .expect("parses");
        assert!(matches!(
            cli.command,
            Command::Sub(SubArgs { count: Some(3), .. })
        ));
        assert!(
            Cli::try_parse_from(["quicft", "pub", "-t", "a"]).is_err(),
            "needs a payload"
        );
        assert!(Cli::try_parse_from(["quicft", "pub", "-t", "a", "-m", "x", "-q", "3"]).is_err());
    }
}
