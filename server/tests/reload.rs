//! SIGHUP reloads what an operator changes while devices stay connected: the accounts (users file),
//! the ACL rules, the server certificate and key, the HTTP token. A configuration that does not load
//! is refused and the running one stays. Driven with mosquitto's clients and openssl, not ours.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use common::Running;

/// A self-signed certificate for localhost named `cn`, written as `{cn}.pem` and `{cn}.key`.
fn certificate(dir: &Path, cn: &str) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{cn}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{cn}.key")), key.serialize_pem()).unwrap();
}

/// A users file with one account whose password is its name.
fn users_file(path: &Path, user: &str) {
    let hash = quicft_server::auth::hash_password(user).unwrap();
    std::fs::write(
        path,
        format!("[[users]]\nusername = \"{user}\"\npassword_hash = \"{hash}\"\n"),
    )
    .unwrap();
}

fn config(dir: &Path, cert: &str, acl: &str, max_connections: u32) -> String {
    let d = dir.display();
    format!(
        r#"data_dir = "{d}/data"
[listeners]
quic = "off"
tcp = "127.0.0.1:0"
tls = "127.0.0.1:0"
http = "127.0.0.1:0"
ws = "off"
wss = "off"
[tls]
cert = "{d}/{cert}.pem"
key = "{d}/{cert}.key"
[auth]
users_file = "{d}/users.toml"
allow_anonymous = false
[[auth.acl]]
pattern = "{acl}/#"
access = "readwrite"
[http]
token_file = "{d}/token"
[limits]
max_connections = {max_connections}
"#
    )
}

/// Whether `user` (password = name, client id = name) may connect and publish at QoS 1 to `topic`.
fn publish(tcp: &str, user: &str, topic: &str) -> (bool, String) {
    let (host, port) = tcp.rsplit_once(':').unwrap();
    let out = Command::new("mosquitto_pub")
        .args(["-h", host, "-p", port, "-V", "mqttv5", "-q", "1"])
        .args(["-u", user, "-P", user, "-i", user, "-t", topic, "-m", "x"])
        .output()
        .expect("mosquitto_pub (package mosquitto-clients) must be installed");
    let said =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.success() && !said.contains("failed"), said)
}

/// The subject of the certificate the TLS listener presents.
fn presented_subject(tls: &str) -> String {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", tls, "-servername", "localhost"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or_else(|| panic!("no certificate in: {text}"))
        .to_owned()
}

/// The status code of `GET /api/v1/transfers` with `token`.
fn http_status(http: &str, token: &str) -> u16 {
    let mut s = std::net::TcpStream::connect(http).unwrap();
    write!(
        s,
        "GET /api/v1/transfers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP reply: {reply}"))
}

#[test]
fn sighup_reloads_users_acl_certificate_and_token_and_refuses_a_broken_config() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    certificate(dir, "first-cert");
    certificate(dir, "second-cert");
    users_file(&dir.join("users.toml"), "alice");
    std::fs::write(dir.join("token"), "old-token\n").unwrap();
    let cfg = dir.join("quicft.toml");
    std::fs::write(&cfg, config(dir, "first-cert", "open", 100)).unwrap();

    let server = Running::start(&["--config", cfg.to_str().unwrap()]);
    let tcp = server.listening("MQTT over TCP listening");
    let tls = server.listening("MQTT over TLS listening");
    let http = server.listening("HTTP API listening");

    // Before: alice may publish under open/, bob does not exist, the first certificate and the old
    // token are in force.
    let (ok, said) = publish(&tcp, "alice", "open/a");
    assert!(ok, "{said}");
    assert!(!publish(&tcp, "bob", "open/a").0);
    assert!(!publish(&tcp, "alice", "closed/a").0, "ACL denies closed/");
    assert!(presented_subject(&tls).contains("first-cert"));
    assert_eq!(http_status(&http, "old-token"), 200);
    assert_eq!(http_status(&http, "new-token"), 401);
    // alice's device stays connected until the reload.
    let (host, port) = tcp.rsplit_once(':').unwrap();
    let mut alice = Command::new("mosquitto_sub")
        .args(["-h", host, "-p", port, "-V", "mqttv5", "-q", "1"])
        .args(["-u", "alice", "-P", "alice", "-i", "alice", "-t", "open/#"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    server.wait_for("connected");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(alice.try_wait().unwrap().is_none(), "alice is connected");

    // The operator replaces the account, the rules, the certificate and the token, and changes a
    // limit (which needs a restart), then sends SIGHUP.
    users_file(&dir.join("users.toml"), "bob");
    std::fs::write(dir.join("token"), "new-token\n").unwrap();
    std::fs::write(&cfg, config(dir, "second-cert", "closed", 50)).unwrap();
    server.signal("-HUP");
    let v = server.wait_for("SIGHUP: configuration reloaded");
    let f = &v["fields"];
    assert_eq!(f["users_added"], "[\"bob\"]", "{v}");
    assert_eq!(f["users_removed"], "[\"alice\"]", "{v}");
    assert_eq!(f["acl_changed"], true, "{v}");
    assert_eq!(f["certificate_changed"], true, "{v}");
    assert_eq!(f["http_token_changed"], true, "{v}");
    let v = server.wait_for("SIGHUP: these settings changed but apply only after a restart");
    assert!(
        v["fields"]["sections"]
            .as_str()
            .is_some_and(|s| s.contains("limits")),
        "the limit change is named as needing a restart: {v}"
    );

    // alice's connection is closed (her account is gone: DISCONNECT 0x87, on which mosquitto_sub
    // exits), and she cannot log in again (below).
    let start = std::time::Instant::now();
    while alice.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "the removed account's connection stays up"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    let (ok, said) = publish(&tcp, "bob", "closed/a");
    assert!(ok, "the new account under the new rule: {said}");
    assert!(!publish(&tcp, "bob", "open/a").0, "the old rule is gone");
    assert!(!publish(&tcp, "alice", "closed/a").0, "the removed account");
    assert!(presented_subject(&tls).contains("second-cert"));
    assert_eq!(http_status(&http, "old-token"), 401);
    assert_eq!(http_status(&http, "new-token"), 200);

    // A configuration that does not load (here: a users file that is not TOML) is refused with a
    // log line, and everything stays as it was.
    std::fs::write(dir.join("users.toml"), "[[users]\nthis is not toml").unwrap();
    std::fs::write(dir.join("token"), "third-token\n").unwrap();
    server.signal("-HUP");
    let v = server.wait_for("SIGHUP: configuration not reloaded; the running configuration stays");
    assert!(
        v["fields"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("users.toml")),
        "the error names the file: {v}"
    );
    assert!(publish(&tcp, "bob", "closed/a").0);
    assert_eq!(http_status(&http, "new-token"), 200);
    assert_eq!(http_status(&http, "third-token"), 401);

    server.signal("-TERM");
}
