//! The generated development certificate names the addresses the encrypted listeners are bound to,
//! so a client can verify the server by IP (as in the benchmark namespaces) without `--server-name`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;
use quicft_tests::{client_tls, test_config};

#[tokio::test]
async fn dev_certificate_names_the_listener_address() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = test_config(dir.path().to_path_buf());
    // Another loopback address than the ones the certificate always names.
    let addr: SocketAddr = "127.0.0.2:0".parse()?;
    cfg.listeners.tls = Some(addr);
    cfg.listeners.quic = Some(addr);
    cfg.listeners.tcp = None;
    cfg.listeners.ws = None;
    cfg.listeners.wss = None;
    let server = quicft_server::Server::start(cfg).await?;
    let ca = dir.path().join("certs/ca.pem");
    let ip = rustls::pki_types::ServerName::IpAddress(addr.ip().into());

    let tls_addr = server.tls_addr.expect("TLS listener");
    let tcp = tokio::net::TcpStream::connect(tls_addr).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls(&ca)?));
    connector.connect(ip.clone(), tcp).await?;

    // The same over QUIC.
    let quic_addr = server.quic_addr.expect("QUIC listener");
    let ep = quicft_tests::quic_client(&ca)?;
    let conn = ep.connect(quic_addr, "127.0.0.2")?.await?;
    conn.close(0u32.into(), b"");
    server.shutdown().await;
    Ok(())
}
