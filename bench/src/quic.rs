//! The QUIC and TLS settings the bench tools share.
//!
//! [`transport_config`] is quicft-server's own transport (`quicft_server::quic_transport_config`)
//! for a [`QuicConfig`], so a bench endpoint (the raw-QUIC sink, `relay_broker`, the upload
//! client) runs with the windows, controller and idle timeout the server runs with; it is one
//! function so that they cannot drift apart. The server also accepts client-opened unidirectional
//! streams (mirrors); no bench peer uses them, so they stay off here.
//!
//! Clients that deliberately differ keep their own transport: `mqtt_load` (windows only, an MTU
//! option), `devices` (long idle timeout and keep-alive for 1000 quiet devices) and `cc_bench`
//! (the controller under test, by name).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use quicft_server::config::QuicConfig;

/// The server's transport settings (windows, congestion controller, idle timeout), from the
/// server's own function; without the mirrors' unidirectional streams, which no bench peer opens.
pub fn transport_config(q: &QuicConfig) -> Result<quinn::TransportConfig> {
    let mut t = quicft_server::quic_transport_config(q)?;
    t.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    Ok(t)
}

/// rustls (ring) client trusting `ca` only (the server's development CA), ALPN `mqtt`.
pub fn client_tls(ca: &Path) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let pem = std::fs::read(ca).with_context(|| format!("read {}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"mqtt".to_vec()];
    Ok(tls)
}
