//! Device authentication (passwords, mTLS), access control, and abuse that must leave the server
//! serving others (CONNECT floods, slowloris).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use quicft_proto::ft::Response;
use quicft_proto::{Connect, Protocol, QoS, ReasonCode};
use quicft_server::acl::{Access, Rule};
use quicft_server::config::{CertClientId, ClientAuth, User};
use quicft_tests::ft::{self, content, split};
use quicft_tests::{
    client_tls, client_tls_with_cert, connect_packet, Conn, TestServer, Transport, ALL_TRANSPORTS,
};

const BOTH: [Transport; 2] = [Transport::Quic, Transport::Tcp];

fn with_password(client_id: &str, user: &str, password: &str) -> Connect {
    let mut c = connect_packet(client_id, Protocol::V5);
    c.username = Some(user.into());
    c.password = Some(Bytes::copy_from_slice(password.as_bytes()));
    c
}

/// Publishes on one connection and receives it on another: the server is still doing its job.
async fn round_trip(srv: &TestServer, t: Transport, tag: &str) -> Result<()> {
    let topic = format!("health/{tag}");
    let mut sub = srv.connect(t, &format!("{tag}-sub")).await?;
    sub.data()
        .await?
        .subscribe(&topic, QoS::AtLeastOnce, 1)
        .await?;
    let mut publ = srv.connect(t, &format!("{tag}-pub")).await?;
    let ack = publ.data().await?.publish_qos1(&topic, b"ping", 1).await?;
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    let p = tokio::time::timeout(
        Duration::from_secs(10),
        sub.data().await?.next_publish_on(&topic),
    )
    .await??;
    assert_eq!(&p.payload[..], b"ping");
    Ok(())
}

#[tokio::test]
async fn passwords_are_checked_against_argon2_hashes() -> Result<()> {
    let hash = quicft_server::auth::hash_password("correct horse")?;
    let srv = TestServer::start_with(|c| {
        c.auth.allow_anonymous = Some(false);
        c.auth.users.push(User {
            username: "truck".into(),
            password_hash: hash,
            // The ids this test connects with (the username itself is the default).
            client_id: Some("p-*".into()),
        });
    })
    .await?;
    for t in ALL_TRANSPORTS {
        let (_ok, ack) = Conn::open(
            &srv,
            t,
            with_password(&format!("p-{t:?}"), "truck", "correct horse"),
        )
        .await?;
        assert_eq!(ack.code, ReasonCode::SUCCESS, "{t:?}");
        let (_c, ack) = Conn::open(&srv, t, with_password("p-bad", "truck", "wrong")).await?;
        assert_eq!(ack.code, ReasonCode::BAD_USER_NAME_OR_PASSWORD, "{t:?}");
        let (_c, ack) =
            Conn::open(&srv, t, with_password("p-who", "nobody", "correct horse")).await?;
        assert_eq!(ack.code, ReasonCode::BAD_USER_NAME_OR_PASSWORD, "{t:?}");
        let (_c, ack) = Conn::open(&srv, t, connect_packet("anon", Protocol::V5)).await?;
        assert_eq!(
            ack.code,
            ReasonCode::NOT_AUTHORIZED,
            "anonymous refused on {t:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn users_file_is_loaded() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("users.toml");
    let hash = quicft_server::auth::hash_password("pw-from-file")?;
    std::fs::write(
        &path,
        format!("[[users]]\nusername = \"filed\"\npassword_hash = '{hash}'\n"),
    )?;
    let srv = TestServer::start_with(|c| {
        c.auth.allow_anonymous = Some(false);
        c.auth.users_file = Some(path.clone());
    })
    .await?;
    let (_c, ack) = Conn::open(
        &srv,
        Transport::Tcp,
        with_password("filed", "filed", "pw-from-file"),
    )
    .await?;
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    Ok(())
}

/// A CA and device certificates made for one test (no key is ever written to the repository).
struct DevicePki {
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl DevicePki {
    fn new(name: &str) -> Result<DevicePki> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let ca_key = KeyPair::generate()?;
        let ca = p.self_signed(&ca_key)?;
        Ok(DevicePki { ca, ca_key })
    }

    /// (certificate PEM, key PEM) for a device whose CN is `cn`.
    fn device(&self, cn: &str) -> Result<(String, String)> {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.ca, &self.ca_key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    fn write_ca(&self, path: &Path) -> Result<()> {
        Ok(std::fs::write(path, self.ca.pem())?)
    }
}

#[tokio::test]
async fn mtls_gives_the_client_id_and_refuses_strangers() -> Result<()> {
    let pki = DevicePki::new("device CA")?;
    let other = DevicePki::new("someone else's CA")?;
    let dir = tempfile::tempdir()?;
    let ca_path = dir.path().join("devices-ca.pem");
    pki.write_ca(&ca_path)?;
    let srv = TestServer::start_with(|c| {
        c.auth.allow_anonymous = Some(false);
        c.tls.client_ca = Some(ca_path.clone());
        c.tls.client_auth = ClientAuth::Required;
        c.tls.cert_client_id = CertClientId::Match;
    })
    .await?;
    let (cert, key) = pki.device("sensor-7")?;
    let (bad_cert, bad_key) = other.device("sensor-7")?;
    for t in [Transport::Quic, Transport::Tls] {
        // An empty client id is given the certificate's name.
        let tls = client_tls_with_cert(&srv.ca(), &cert, &key)?;
        let (mut c, ack) =
            Conn::open_with_tls(&srv, t, connect_packet("", Protocol::V5), tls).await?;
        assert_eq!(ack.code, ReasonCode::SUCCESS, "{t:?}");
        assert_eq!(
            ack.properties.assigned_client_identifier.as_deref(),
            Some("sensor-7"),
            "{t:?}"
        );
        assert_eq!(
            c.data()
                .await?
                .publish_qos1("devices/sensor-7/t", b"1", 1)
                .await?
                .code,
            ReasonCode::SUCCESS
        );
        drop(c);
        // The same name is fine; another name is not that device.
        let tls = client_tls_with_cert(&srv.ca(), &cert, &key)?;
        let (_c, ack) =
            Conn::open_with_tls(&srv, t, connect_packet("sensor-7", Protocol::V5), tls).await?;
        assert_eq!(ack.code, ReasonCode::SUCCESS, "{t:?}");
        let tls = client_tls_with_cert(&srv.ca(), &cert, &key)?;
        let (_c, ack) =
            Conn::open_with_tls(&srv, t, connect_packet("sensor-8", Protocol::V5), tls).await?;
        assert_eq!(ack.code, ReasonCode::NOT_AUTHORIZED, "{t:?}");
        // No certificate, or one from another CA: the handshake fails, no CONNACK ever comes.
        for (what, tls) in [
            ("no certificate", client_tls(&srv.ca())?),
            (
                "wrong CA",
                client_tls_with_cert(&srv.ca(), &bad_cert, &bad_key)?,
            ),
        ] {
            let r = tokio::time::timeout(
                Duration::from_secs(10),
                Conn::open_with_tls(&srv, t, connect_packet("sensor-7", Protocol::V5), tls),
            )
            .await
            .context("refused handshake must end, not hang")?;
            assert!(r.is_err(), "{what} over {t:?} must not connect");
        }
    }
    Ok(())
}

#[tokio::test]
async fn mtls_assign_mode_overrides_the_connect_client_id() -> Result<()> {
    let pki = DevicePki::new("device CA")?;
    let dir = tempfile::tempdir()?;
    let ca_path = dir.path().join("devices-ca.pem");
    pki.write_ca(&ca_path)?;
    let srv = TestServer::start_with(|c| {
        c.tls.client_ca = Some(ca_path.clone());
        c.tls.client_auth = ClientAuth::Optional;
        c.tls.cert_client_id = CertClientId::Assign;
    })
    .await?;
    let (cert, key) = pki.device("meter-1")?;
    let tls = client_tls_with_cert(&srv.ca(), &cert, &key)?;
    let (_c, ack) = Conn::open_with_tls(
        &srv,
        Transport::Quic,
        connect_packet("whatever", Protocol::V5),
        tls,
    )
    .await?;
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    assert_eq!(
        ack.properties.assigned_client_identifier.as_deref(),
        Some("meter-1")
    );
    // Optional: a device without a certificate still gets in (anonymous on loopback here).
    let (_c, ack) = Conn::open_with_tls(
        &srv,
        Transport::Tls,
        connect_packet("plain", Protocol::V5),
        client_tls(&srv.ca())?,
    )
    .await?;
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    Ok(())
}

#[tokio::test]
async fn acl_patterns_deny_with_0x87() -> Result<()> {
    let srv = TestServer::start_with(|c| {
        c.auth.acl = vec![
            Rule {
                pattern: "devices/%c/#".into(),
                access: Access::Readwrite,
                username: None,
            },
            Rule {
                pattern: "fleet/broadcast".into(),
                access: Access::Read,
                username: None,
            },
        ];
    })
    .await?;
    for t in BOTH {
        let mut a = srv.connect(t, &format!("a-{t:?}")).await?;
        let s = a.data().await?;
        let own = format!("devices/a-{t:?}/temp");
        assert_eq!(
            s.publish_qos1(&own, b"21", 1).await?.code,
            ReasonCode::SUCCESS
        );
        assert_eq!(
            s.publish_qos1("devices/b/temp", b"21", 2).await?.code,
            ReasonCode::NOT_AUTHORIZED
        );
        assert_eq!(
            s.publish_qos1("fleet/broadcast", b"x", 3).await?.code,
            ReasonCode::NOT_AUTHORIZED,
            "read-only"
        );
        assert!(!s.subscribe("fleet/broadcast", QoS::AtLeastOnce, 4).await?[0].is_error());
        assert_eq!(
            s.subscribe("devices/+/temp", QoS::AtLeastOnce, 5).await?,
            [ReasonCode::NOT_AUTHORIZED]
        );
        assert_eq!(
            s.subscribe("#", QoS::AtLeastOnce, 6).await?,
            [ReasonCode::NOT_AUTHORIZED]
        );
        assert_eq!(
            s.subscribe("$file/#", QoS::AtLeastOnce, 7).await?,
            [ReasonCode::NOT_AUTHORIZED]
        );
        assert_eq!(
            s.subscribe("$file-response/b", QoS::AtLeastOnce, 8).await?,
            [ReasonCode::NOT_AUTHORIZED]
        );
        // The file-transfer protocol keeps working under a strict ACL.
        ft::upload(s, "f", "f.bin", b"acl", 1024).await?;
    }
    Ok(())
}

#[tokio::test]
async fn username_placeholders_need_a_proven_username() -> Result<()> {
    let hash = quicft_server::auth::hash_password("alice-pw")?;
    let srv = TestServer::start_with(|c| {
        c.auth.allow_anonymous = Some(true);
        c.auth.users.push(User {
            username: "alice".into(),
            password_hash: hash,
            client_id: Some("a1".into()),
        });
        c.auth.acl = vec![Rule {
            pattern: "users/%u/#".into(),
            access: Access::Readwrite,
            username: None,
        }];
    })
    .await?;
    for t in BOTH {
        let (mut c, ack) = Conn::open(&srv, t, with_password("a1", "alice", "alice-pw")).await?;
        assert_eq!(ack.code, ReasonCode::SUCCESS);
        assert_eq!(
            c.data()
                .await?
                .publish_qos1("users/alice/x", b"1", 1)
                .await?
                .code,
            ReasonCode::SUCCESS
        );
        // Claiming an account's name without its password is refused…
        let mut claim = connect_packet("a2", Protocol::V5);
        claim.username = Some("alice".into());
        let (_c, ack) = Conn::open(&srv, t, claim).await?;
        assert_eq!(ack.code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
        // …and a name without an account gets anonymous rights: `%u` does not apply to it.
        let mut claim = connect_packet("a3", Protocol::V5);
        claim.username = Some("bob".into());
        let (mut c, ack) = Conn::open(&srv, t, claim).await?;
        assert_eq!(ack.code, ReasonCode::SUCCESS);
        let code = c
            .data()
            .await?
            .publish_qos1("users/bob/x", b"1", 1)
            .await?
            .code;
        assert_eq!(code, ReasonCode::NOT_AUTHORIZED, "{t:?}");
    }
    Ok(())
}

#[tokio::test]
async fn will_topics_obey_the_same_rules() -> Result<()> {
    let srv = TestServer::start_with(|c| {
        c.auth.acl = vec![Rule {
            pattern: "devices/%c/#".into(),
            access: Access::Readwrite,
            username: None,
        }];
    })
    .await?;
    let will = |topic: &str| quicft_proto::Will {
        topic: topic.into(),
        payload: Bytes::from_static(b"{}"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
    };
    for t in BOTH {
        for topic in [
            "$file-response/victim",
            "$events/file/victim/f",
            "devices/other/status",
            "$file/f/abort",
        ] {
            let mut c = connect_packet("w", Protocol::V5);
            c.will = Some(will(topic));
            let (_c, ack) = Conn::open(&srv, t, c).await?;
            assert_eq!(
                ack.code,
                ReasonCode::NOT_AUTHORIZED,
                "will on {topic} over {t:?}"
            );
        }
        let mut c = connect_packet("w", Protocol::V5);
        c.will = Some(will("devices/w/status"));
        let (_c, ack) = Conn::open(&srv, t, c).await?;
        assert_eq!(ack.code, ReasonCode::SUCCESS, "own topic over {t:?}");
    }
    Ok(())
}

async fn status(
    s: &mut quicft_tests::RawStream,
    client_id: &str,
    file_id: &str,
) -> Result<Response> {
    let topic = format!("$file-response/{client_id}");
    assert_eq!(
        ft::cmd(s, &format!("$file/{file_id}/status"), b"").await?,
        ReasonCode::SUCCESS
    );
    loop {
        let p = s.next_publish_on(&topic).await?;
        let r = Response::parse(&p.payload)?;
        if r.topic.ends_with("/status") {
            return Ok(r);
        }
    }
}

#[tokio::test]
async fn a_device_cannot_touch_another_devices_transfer() -> Result<()> {
    let srv = TestServer::start().await?;
    for t in BOTH {
        let (a_id, b_id) = (format!("dev-a-{t:?}"), format!("dev-b-{t:?}"));
        let data = content(8 * 1024, 3);
        let segs = split(&data, 1024);
        let mut b = srv.connect(t, &b_id).await?;
        let bs = b.data().await?;
        bs.subscribe(&format!("$file-response/{b_id}"), QoS::AtLeastOnce, 1)
            .await?;
        assert_eq!(
            ft::init(bs, "shared-name", "b.bin", Some(data.len() as u64)).await?,
            ReasonCode::SUCCESS
        );
        assert!(ft::segments(bs, "shared-name", &segs[..4])
            .await?
            .iter()
            .all(|(_, c)| *c == ReasonCode::SUCCESS));

        let mut a = srv.connect(t, &a_id).await?;
        let s = a.data().await?;
        // A cannot read B's responses, nor the commands themselves.
        assert_eq!(
            s.subscribe(&format!("$file-response/{b_id}"), QoS::AtLeastOnce, 1)
                .await?,
            [ReasonCode::NOT_AUTHORIZED]
        );
        assert_eq!(
            s.subscribe("$file-response/#", QoS::AtLeastOnce, 2).await?,
            [ReasonCode::NOT_AUTHORIZED]
        );
        assert_eq!(
            s.subscribe("$file/#", QoS::AtLeastOnce, 3).await?,
            [ReasonCode::NOT_AUTHORIZED]
        );
        s.subscribe(&format!("$file-response/{a_id}"), QoS::AtLeastOnce, 4)
            .await?;
        // Status, abort and fin from A address A's own transfer of that file id: B's is not seen…
        let code = ft::cmd(s, "$file/shared-name/status", b"").await?;
        assert_eq!(
            code,
            ReasonCode(0x10),
            "A has no transfer of that id: B's is not visible"
        );
        let r = Response::parse(
            &s.next_publish_on(&format!("$file-response/{a_id}"))
                .await?
                .payload,
        )?;
        assert!(
            r.ranges.as_ref().is_none_or(|v| v.is_empty()),
            "A saw B's ranges: {r:?}"
        );
        let code = ft::fin(s, "shared-name", &data).await?;
        assert_ne!(
            code,
            ReasonCode::SUCCESS,
            "A's fin of a transfer it never started"
        );
        ft::cmd(s, "$file/shared-name/abort", b"").await?;
        // …and is untouched: B finishes its upload.
        let r = status(bs, &b_id, "shared-name").await?;
        assert_eq!(
            r.ranges,
            Some(vec![(0, 4 * 1024)]),
            "B's transfer survived A's commands"
        );
        assert!(ft::segments(bs, "shared-name", &segs[4..])
            .await?
            .iter()
            .all(|(_, c)| *c == ReasonCode::SUCCESS));
        assert_eq!(
            ft::fin(bs, "shared-name", &data).await?,
            ReasonCode::SUCCESS
        );
        // B's responses never reached A.
        while let Some(p) = s.try_recv(Duration::from_millis(200)).await? {
            if let quicft_proto::Packet::Publish(p) = p {
                assert_ne!(p.topic, format!("$file-response/{b_id}"));
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn connect_flood_leaves_the_server_serving() -> Result<()> {
    let srv = TestServer::start().await?;
    const PER_TRANSPORT: usize = 200;
    let flood = async {
        let mut tasks = Vec::new();
        for i in 0..PER_TRANSPORT * 2 {
            let t = if i % 2 == 0 {
                Transport::Tcp
            } else {
                Transport::Quic
            };
            let srv = &srv;
            tasks.push(async move {
                // Half of them go away without waiting for the CONNACK.
                let mut c = Conn::raw(srv, t, Protocol::V5).await?;
                c.ctl
                    .send(&quicft_proto::Packet::Connect(connect_packet(
                        &format!("flood-{i}"),
                        Protocol::V5,
                    )))
                    .await?;
                if i % 4 < 2 {
                    c.ctl.recv().await?;
                }
                Ok::<_, anyhow::Error>(c)
            });
        }
        futures_join_all(tasks).await
    };
    let (conns, during) = tokio::join!(flood, async {
        let mut r = Ok(());
        for t in BOTH {
            r = r.and(round_trip(&srv, t, &format!("during-{t:?}")).await);
        }
        r
    });
    during?;
    let ok = conns.iter().filter(|c| c.is_ok()).count();
    assert!(
        ok >= PER_TRANSPORT,
        "most flood connections were accepted ({ok})"
    );
    drop(conns);
    for t in BOTH {
        round_trip(&srv, t, &format!("after-{t:?}")).await?;
    }
    Ok(())
}

#[tokio::test]
async fn slowloris_connections_are_dropped_and_others_served() -> Result<()> {
    let srv = TestServer::start_with(|c| c.limits.connect_timeout = Duration::from_secs(2)).await?;
    let mut idle_tcp = Vec::new();
    for _ in 0..200 {
        idle_tcp.push(tokio::net::TcpStream::connect(srv.addr(Transport::Tcp)).await?);
    }
    let mut idle_quic = Vec::new();
    for _ in 0..30 {
        // A QUIC connection with an open control stream that never carries a CONNECT.
        let c = Conn::raw(&srv, Transport::Quic, Protocol::V5).await?;
        idle_quic.push(c);
    }
    for t in ALL_TRANSPORTS {
        round_trip(&srv, t, &format!("during-{t:?}")).await?;
    }
    // The server hangs up on every idle TCP connection once connect_timeout has passed.
    let start = std::time::Instant::now();
    for s in &mut idle_tcp {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 64];
        let r = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .context("slow connection not closed")?;
        assert!(
            matches!(r, Ok(0) | Err(_)),
            "expected the server to hang up, got {r:?}"
        );
    }
    assert!(start.elapsed() < Duration::from_secs(10));
    for c in &mut idle_quic {
        let r = tokio::time::timeout(Duration::from_secs(10), c.ctl.recv())
            .await
            .context("slow QUIC connection not closed")?;
        assert!(r.is_err(), "expected the server to close, got {r:?}");
    }
    for t in ALL_TRANSPORTS {
        round_trip(&srv, t, &format!("after-{t:?}")).await?;
    }
    Ok(())
}

/// `futures::future::join_all` without adding the dependency to this crate's tests.
async fn futures_join_all<F: std::future::Future>(fs: Vec<F>) -> Vec<F::Output> {
    let mut set = Vec::with_capacity(fs.len());
    let mut pinned: Vec<_> = fs.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if done[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => done[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    set.extend(done.into_iter().flatten());
    set
}
