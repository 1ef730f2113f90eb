//! The `quicft-server` binary as an operator runs it: subcommands, log output, signals.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Running, BIN};

fn run(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every listener off but TCP, on a free loopback port.
fn quiet_flags(dir: &str) -> Vec<String> {
    [
        "--data-dir",
        dir,
        "--quic",
        "off",
        "--tls",
        "off",
        "--http",
        "off",
        "--ws",
        "off",
        "--wss",
        "off",
        "--tcp",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn check_config_prints_the_effective_configuration_or_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let (ok, out, _) = run(&["--data-dir", d, "--http", "off", "check-config"], "");
    assert!(ok);
    assert!(out.contains("configuration is valid"), "{out}");
    assert!(
        out.contains("QUIC            127.0.0.1:14567  (anonymous)"),
        "{out}"
    );
    assert!(out.contains("HTTP API        off"), "{out}");
    // A file can turn a listener off, as the flags can.
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[listeners]\ntls = \"off\"\nquic = \"0.0.0.0:14567\"\n",
    )
    .unwrap();
    let (ok, _, err) = run(&["--config", cfg.to_str().unwrap(), "check-config"], "");
    assert!(!ok);
    assert!(
        err.contains("refusing to listen on non-loopback address 0.0.0.0:14567"),
        "{err}"
    );
    // Everything missing in one message; the token has a flag.
    let http = [
        "--data-dir",
        d,
        "--quic",
        "0.0.0.0:14567",
        "--http",
        "0.0.0.0:8080",
    ];
    let (ok, _, err) = run(&[&http[..], &["check-config"]].concat(), "");
    assert!(!ok && err.contains("2 things to fix"), "{err}");
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let t = token.to_str().unwrap();
    let args = [
        &http[..],
        &["--allow-anonymous", "--http-token-file", t, "check-config"],
    ]
    .concat();
    let (ok, out, err) = run(&args, "");
    assert!(ok, "{err}");
    assert!(
        out.contains("HTTP API        0.0.0.0:8080  (bearer token)"),
        "{out}"
    );
}

#[test]
fn users_are_added_listed_removed_and_their_passwords_verify() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.toml");
    let f = file.to_str().unwrap();
    let (ok, _, err) = run(&["users", "add", "--file", f, "truck-1"], "s3cret\n");
    assert!(ok, "{err}");
    let (ok, _, _) = run(
        &["users", "add", "--file", f, "cam", "--client-id", "cam-*"],
        "pw2\n",
    );
    assert!(ok);
    let (_, out, _) = run(&["users", "list", "--file", f], "");
    assert!(
        out.contains("truck-1\t") && out.contains("cam\tclient ids: cam-*"),
        "{out}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // What the server reads: the hash verifies the password.
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("s3cret"));
    let cfg = quicft_server::config::AuthConfig {
        users_file: Some(file.clone()),
        ..Default::default()
    };
    quicft_server::auth::Auth::new(&cfg).unwrap();
    let (ok, _, _) = run(&["users", "remove", "--file", f, "truck-1"], "");
    assert!(ok);
    let (_, out, _) = run(&["users", "list", "--file", f], "");
    assert!(!out.contains("truck-1"), "{out}");
    let (ok, _, err) = run(&["users", "remove", "--file", f, "truck-1"], "");
    assert!(!ok && err.contains("no user \"truck-1\""), "{err}");
    let (ok, out, _) = run(&["hash-password"], "pw\n");
    assert!(ok && out.starts_with("$argon2id$"), "{out}");
}

#[test]
fn device_certificates_chain_to_the_development_ca() {
    let dir = tempfile::tempdir().unwrap();
    quicft_server::tls::generate_dev_certs(&dir.path().join("certs"), &[]).unwrap();
    let d = dir.path().to_str().unwrap();
    let (ok, out, err) = run(&["--data-dir", d, "cert", "device", "truck-17"], "");
    assert!(ok, "{err}");
    assert!(out.contains("certs/devices/truck-17.pem"), "{out}");
    let chain: Vec<_> = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(dir.path().join("certs/devices/truck-17.pem")).unwrap(),
    ))
    .collect::<Result<_, _>>()
    .unwrap();
    assert_eq!(
        quicft_server::tls::cert_name(&chain[0]).as_deref(),
        Some("truck-17")
    );
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(dir.path().join("certs/ca.pem")).unwrap(),
    )) {
        roots.add(ca.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.into(),
        quicft_server::tls::provider(),
    )
    .build()
    .unwrap();
    verifier
        .verify_client_cert(&chain[0], &chain[1..], rustls::pki_types::UnixTime::now())
        .expect("the device certificate verifies against ca.pem");
    use std::os::unix::fs::PermissionsExt;
    let key = dir.path().join("certs/devices/truck-17.key");
    assert_eq!(
        std::fs::metadata(key).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// SIGHUP used to kill the server (exit 129); now it reloads and the server keeps serving. The
/// logs are JSON lines with `--log-format json`. (What a reload changes: tests/reload.rs.)
#[test]
fn sighup_leaves_the_server_running_and_json_logs_are_json() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Running::start(&quiet_flags(dir.path().to_str().unwrap()));
    // `next_line` fails on anything that is not JSON.
    server.listening("MQTT over TCP listening");
    server.signal("-HUP");
    server.wait_for("SIGHUP: configuration reloaded");
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server died on SIGHUP"
    );
    server.signal("-TERM");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// A listener that cannot bind is named, and its error said once (it was "Address already in use
/// (os error 98): Address already in use (os error 98)").
#[test]
fn bind_errors_name_the_listener_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let args = [
        "--data-dir",
        d,
        "--quic",
        "off",
        "--tcp",
        "off",
        "--http",
        "off",
        "--ws",
        "off",
        "--wss",
        "off",
        "--tls",
        &addr,
    ];
    let (ok, _, err) = run(&args, "");
    assert!(!ok);
    let want = format!("TLS listener {addr}: address already in use");
    assert_eq!(err.matches(&want).count(), 1, "{err}");
    assert!(!err.contains("os error"), "{err}");
}

/// Every refused connection gets a log line with its reason.
#[test]
fn refused_connections_are_logged_with_their_reason() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let server = Running::start(&[
        "--data-dir",
        d,
        "--quic",
        "off",
        "--http",
        "off",
        "--tcp",
        "127.0.0.1:0",
        "--tls",
        "127.0.0.1:0",
        "--ws",
        "off",
        "--wss",
        "off",
    ]);
    let (tcp, tls) = (
        Some(server.listening("MQTT over TCP listening")),
        Some(server.listening("MQTT over TLS listening")),
    );
    let poke = |addr: &str, bytes: &[u8]| {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(bytes).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.read(&mut [0u8; 64]);
    };
    poke(
        tls.as_deref().unwrap(),
        b"this is not a TLS ClientHello\r\n",
    );
    poke(tcp.as_deref().unwrap(), &[0xC0, 0x00]); // PINGREQ before CONNECT
    let mut seen = Vec::new();
    let start = Instant::now();
    while seen.len() < 2 {
        let v = server.next_line();
        let msg = v["fields"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if msg.contains("connection refused") {
            assert_eq!(v["level"], "INFO", "{v}");
            assert!(
                v["fields"]["reason"]
                    .as_str()
                    .is_some_and(|r| !r.is_empty()),
                "{v}"
            );
            seen.push(msg);
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{seen:?}");
    }
    assert!(
        seen.iter()
            .any(|m| m == "TLS connection refused: handshake failed"),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|m| m == "connection refused: no CONNECT"),
        "{seen:?}"
    );
}
