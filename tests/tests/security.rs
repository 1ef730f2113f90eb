//! Holes an outside fault campaign found (issue 17) and the anonymous-access default (issue 11 §1),
//! each checked over real connections: what a device can and cannot do to another device's data
//! under each authentication mode (README, "What a device can do to another device's data").

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use quicft_proto::{Connect, Packet, Properties, Protocol, Publish, QoS, ReasonCode};
use quicft_server::acl::{Access, Rule};
use quicft_server::config::User;
use quicft_tests::ft::{self, pkid};
use quicft_tests::{
    connect_packet, Conn, RawStream, Target, TestServer, Transport, ALL_TRANSPORTS,
};

/// A server whose listeners are bound to the unspecified address (not loopback), reached through
/// 127.0.0.1: what the server sees is a non-loopback listener, while every packet of the test stays
/// on loopback.
struct OffLoopback<'a>(&'a TestServer);

impl Target for OffLoopback<'_> {
    fn addr(&self, t: Transport) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.0.addr(t).port()))
    }
    fn ca(&self) -> PathBuf {
        self.0.ca()
    }
}

fn user(name: &str, password: &str, client_id: Option<&str>) -> Result<User> {
    Ok(User {
        username: name.into(),
        password_hash: quicft_server::auth::hash_password(password)?,
        client_id: client_id.map(Into::into),
    })
}

fn with_password(client_id: &str, user: &str, password: &str) -> Connect {
    let mut c = connect_packet(client_id, Protocol::V5);
    c.username = Some(user.into());
    c.password = Some(Bytes::copy_from_slice(password.as_bytes()));
    c
}

async fn code_of(target: &impl Target, t: Transport, c: Connect) -> Result<ReasonCode> {
    Ok(Conn::open(target, t, c).await?.1.code)
}

#[tokio::test]
async fn anonymous_clients_are_refused_off_loopback_unless_allowed_in_writing() -> Result<()> {
    let unspecified: SocketAddr = "0.0.0.0:0".parse()?;
    let users = vec![user("truck-a", "pw-a", None)?];
    let exposed = |allow: Option<bool>| {
        let users = users.clone();
        move |c: &mut quicft_server::Config| {
            c.listeners.quic = Some(unspecified);
            c.listeners.tcp = Some(unspecified);
            c.listeners.tls = Some(unspecified);
            c.listeners.insecure_tcp = true;
            c.auth.users = users;
            c.auth.allow_anonymous = allow;
        }
    };
    // Users configured, allow_anonymous not written: anonymous is refused on every transport
    // (before issue 11 it was let in), users get in.
    let srv = TestServer::start_with(exposed(None)).await?;
    for t in ALL_TRANSPORTS {
        let anon = connect_packet(&format!("anon-{t:?}"), Protocol::V5);
        assert_eq!(
            code_of(&OffLoopback(&srv), t, anon).await?,
            ReasonCode::NOT_AUTHORIZED,
            "{t:?}"
        );
        let mut v3 = connect_packet(&format!("anon3-{t:?}"), Protocol::V311);
        v3.clean_start = true;
        assert_eq!(
            code_of(&OffLoopback(&srv), t, v3).await?,
            ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            "3.1.1 {t:?}"
        );
        let ok = with_password("truck-a", "truck-a", "pw-a");
        assert_eq!(
            code_of(&OffLoopback(&srv), t, ok).await?,
            ReasonCode::SUCCESS,
            "{t:?}"
        );
    }
    drop(srv);
    // Written: anonymous clients are welcome off loopback too.
    let srv = TestServer::start_with(exposed(Some(true))).await?;
    for t in ALL_TRANSPORTS {
        let anon = connect_packet(&format!("anon-{t:?}"), Protocol::V5);
        assert_eq!(
            code_of(&OffLoopback(&srv), t, anon).await?,
            ReasonCode::SUCCESS,
            "{t:?}"
        );
    }
    drop(srv);
    // On loopback listeners anonymous is the default even with users, and `false` refuses it
    // there as well.
    for (allow, want) in [
        (None, ReasonCode::SUCCESS),
        (Some(false), ReasonCode::NOT_AUTHORIZED),
    ] {
        let users = users.clone();
        let srv = TestServer::start_with(move |c| {
            c.auth.users = users;
            c.auth.allow_anonymous = allow;
        })
        .await?;
        for t in ALL_TRANSPORTS {
            let anon = connect_packet(&format!("lo-{t:?}"), Protocol::V5);
            assert_eq!(code_of(&srv, t, anon).await?, want, "{allow:?} {t:?}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_password_proves_a_user_and_the_user_names_its_client_ids() -> Result<()> {
    let users = vec![
        user("truck-a", "pw-a", None)?,
        user("devB", "pw-b", None)?,
        user("cam", "pw-cam", Some("cam-*"))?,
        user("ops", "pw-ops", Some("*"))?,
    ];
    let srv = TestServer::start_with(move |c| {
        c.auth.allow_anonymous = Some(false);
        c.auth.users = users;
    })
    .await?;
    for t in ALL_TRANSPORTS {
        // devB has a transfer in progress.
        let (mut b, ack) = Conn::open(&srv, t, with_password("devB", "devB", "pw-b")).await?;
        assert_eq!(ack.code, ReasonCode::SUCCESS);
        let bs = b.data().await?;
        assert_eq!(
            ft::init(bs, "log-1", "b.log", Some(10)).await?,
            ReasonCode::SUCCESS
        );
        assert_eq!(
            ft::cmd(bs, "$file/log-1/0", b"01234").await?,
            ReasonCode::SUCCESS
        );
        // truck-a's valid password does not make it devB (issue 17: it could read and abort B's
        // transfer, deleting B's data).
        let code = code_of(&srv, t, with_password("devB", "truck-a", "pw-a")).await?;
        assert_eq!(code, ReasonCode::NOT_AUTHORIZED, "{t:?}");
        assert_eq!(
            code_of(&srv, t, with_password("truck-a", "truck-a", "pw-a")).await?,
            ReasonCode::SUCCESS
        );
        // An empty client id is given the one the user may have.
        let (_c, ack) = Conn::open(&srv, t, with_password("", "truck-a", "pw-a")).await?;
        assert_eq!(ack.code, ReasonCode::SUCCESS);
        assert_eq!(
            ack.properties.assigned_client_identifier.as_deref(),
            Some("truck-a")
        );
        // Patterns.
        assert_eq!(
            code_of(&srv, t, with_password("cam-7", "cam", "pw-cam")).await?,
            ReasonCode::SUCCESS
        );
        assert_eq!(
            code_of(&srv, t, with_password("devB", "cam", "pw-cam")).await?,
            ReasonCode::NOT_AUTHORIZED
        );
        assert_eq!(
            code_of(&srv, t, with_password("anything", "ops", "pw-ops")).await?,
            ReasonCode::SUCCESS
        );
        // B's transfer is untouched: it completes.
        let (mut b, _) = Conn::open(&srv, t, with_password("devB", "devB", "pw-b")).await?;
        let bs = b.data().await?;
        assert_eq!(
            ft::cmd(bs, "$file/log-1/5", b"56789").await?,
            ReasonCode::SUCCESS
        );
        assert_eq!(
            ft::cmd(bs, "$file/log-1/fin/10", b"").await?,
            ReasonCode::SUCCESS
        );
    }
    Ok(())
}

/// Anonymous clients assert their client id: under anonymous access (loopback by default, or
/// `allow_anonymous = true`), a client that knows another device's id acts as that device. This is
/// the README's first row; it is why anonymous access stays off every other listener by default.
#[tokio::test]
async fn anonymous_client_ids_are_only_asserted() -> Result<()> {
    let srv = TestServer::start().await?;
    let mut b = srv.connect(Transport::Tcp, "anon-b").await?;
    let bs = b.data().await?;
    assert_eq!(
        ft::init(bs, "f", "b.bin", Some(4)).await?,
        ReasonCode::SUCCESS
    );
    b.kill();
    let mut other = srv.connect(Transport::Tcp, "anon-b").await?;
    let s = other.data().await?;
    assert_eq!(ft::cmd(s, "$file/f/abort", b"").await?, ReasonCode::SUCCESS);
    assert_eq!(ft::cmd(s, "$file/f/status", b"").await?, ReasonCode(0x10));
    Ok(())
}

/// A `$file` command whose Response Topic is sent as an MQTT 5 property.
fn command_with_response_topic(
    topic: &str,
    payload: &[u8],
    response_topic: &str,
    id: u16,
) -> Packet {
    let properties = Properties {
        response_topic: Some(response_topic.into()),
        correlation_data: Some(Bytes::from_static(b"corr")),
        ..Properties::default()
    };
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: topic.into(),
        pkid: id,
        properties,
        payload: Bytes::copy_from_slice(payload),
    })
}

async fn puback(s: &mut RawStream, id: u16) -> Result<ReasonCode> {
    loop {
        match s.recv().await? {
            Packet::PubAck(a) if a.pkid == id => return Ok(a.code),
            Packet::Publish(p) => s.keep_pub(p).await?,
            other => bail!("expected PUBACK {id}, got {other:?}"),
        }
    }
}

/// Nothing arrives on `s` for a while.
async fn nothing_arrives(s: &mut RawStream, what: &str) -> Result<()> {
    if let Some(p) = s.try_recv(Duration::from_millis(300)).await? {
        bail!("{what} received {p:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_response_topic_is_checked_like_a_publish_by_the_device() -> Result<()> {
    let srv = TestServer::start_with(|c| {
        c.auth.acl = vec![
            Rule {
                pattern: "devices/%c/#".into(),
                access: Access::Readwrite,
                username: None,
            },
            Rule {
                pattern: "fleet/commands/#".into(),
                access: Access::Read,
                username: None,
            },
        ];
    })
    .await?;
    for t in ALL_TRANSPORTS {
        let (a_id, b_id) = (format!("devA-{t:?}"), format!("devB-{t:?}"));
        let mut b = srv.connect(t, &b_id).await?;
        let bs = b.data().await?;
        bs.subscribe(&format!("$file-response/{b_id}"), QoS::AtLeastOnce, 1)
            .await?;
        bs.subscribe("fleet/commands/all", QoS::AtLeastOnce, 2)
            .await?;
        let mut a = srv.connect(t, &a_id).await?;
        let s = a.data().await?;
        s.subscribe(&format!("devices/{a_id}/ft"), QoS::AtLeastOnce, 3)
            .await?;
        let init = br#"{"name":"a.bin","size":1}"#;
        for forbidden in [
            format!("$file-response/{b_id}"),
            "fleet/commands/all".to_owned(),
            format!("$events/file/{b_id}/f"),
            format!("$file/{a_id}/init"),
            "$SYS/broker/x".to_owned(),
        ] {
            let id = pkid();
            s.send(&command_with_response_topic(
                "$file/f/init",
                init,
                &forbidden,
                id,
            ))
            .await?;
            assert_eq!(
                puback(s, id).await?,
                ReasonCode::NOT_AUTHORIZED,
                "{forbidden} {t:?}"
            );
        }
        nothing_arrives(bs, "device B").await?;
        // The device's own response topic, and topics it may publish to, are answered there.
        for allowed in [
            format!("$file-response/{a_id}"),
            format!("devices/{a_id}/ft"),
        ] {
            let id = pkid();
            s.send(&command_with_response_topic(
                "$file/f/status",
                b"",
                &allowed,
                id,
            ))
            .await?;
            assert_eq!(puback(s, id).await?, ReasonCode(0x10), "{allowed} {t:?}");
            if allowed.starts_with("devices/") {
                let p = s.next_publish_on(&allowed).await?;
                assert_eq!(p.properties.correlation_data.as_deref(), Some(&b"corr"[..]));
            }
        }
        nothing_arrives(bs, "device B").await?;
    }
    Ok(())
}

/// `ss -Hltn` for the listener on `port`: the accept backlog (Send-Q of a listening socket).
fn listen_backlog(port: u16) -> Result<u32> {
    let out = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .output()
        .context("ss (iproute2) is needed; .ci/run installs it")?;
    let text = String::from_utf8(out.stdout)?;
    let line = text.lines().next().context("no listener")?;
    Ok(line.split_whitespace().nth(2).context("Send-Q")?.parse()?)
}

#[tokio::test]
async fn the_accept_backlog_fits_max_connections() -> Result<()> {
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")?
        .trim()
        .parse()?;
    let srv = TestServer::start_with(|c| c.limits.max_connections = 3000).await?;
    for t in [Transport::Tcp, Transport::Tls] {
        let backlog = listen_backlog(srv.addr(t).port())?;
        assert_eq!(backlog, 3000.min(somaxconn), "{t:?}");
    }
    Ok(())
}

/// Where anonymous clients are let in beside password users (loopback by default), they may not
/// take a client id a user is given: that device's transfers and session stay the user's.
#[tokio::test]
async fn anonymous_clients_cannot_take_a_password_users_client_id() -> Result<()> {
    let users = vec![
        user("truck-a", "pw-a", None)?,
        user("cam", "pw-cam", Some("cam-*"))?,
        user("ops", "pw-ops", Some("*"))?,
    ];
    let srv = TestServer::start_with(move |c| c.auth.users = users).await?;
    for t in ALL_TRANSPORTS {
        for taken in ["truck-a", "cam-3"] {
            let code = code_of(&srv, t, connect_packet(taken, Protocol::V5)).await?;
            assert_eq!(code, ReasonCode::NOT_AUTHORIZED, "{taken} {t:?}");
        }
        // Other ids are still open to anonymous clients (ops's `*` claims none of them).
        let code = code_of(&srv, t, connect_packet("sensor-9", Protocol::V5)).await?;
        assert_eq!(code, ReasonCode::SUCCESS, "{t:?}");
        let ok = with_password("truck-a", "truck-a", "pw-a");
        assert_eq!(code_of(&srv, t, ok).await?, ReasonCode::SUCCESS, "{t:?}");
    }
    Ok(())
}
