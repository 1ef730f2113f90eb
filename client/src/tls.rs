//! rustls client configurations for QUIC and TLS, always with the ring provider (the workspace builds
//! rustls without a default provider, and having two would make rustls panic at config time).

use std::io::BufReader;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

use crate::error::{Error, Result};
use crate::options::{CaSource, ClientCert, TlsOptions};

/// ALPN of MQTT over QUIC.
pub(crate) const ALPN_MQTT: &[u8] = b"mqtt";

/// QUIC client config: TLS 1.3 only, ALPN `mqtt`.
pub(crate) fn quic_config(tls: &TlsOptions) -> Result<quinn::crypto::rustls::QuicClientConfig> {
    let mut config = build(tls, &[&rustls::version::TLS13])?;
    config.alpn_protocols = vec![ALPN_MQTT.to_vec()];
    quinn::crypto::rustls::QuicClientConfig::try_from(config)
        .map_err(|e| Error::InvalidOptions(format!("TLS config unusable for QUIC: {e}")))
}

/// TLS-over-TCP client config: TLS 1.2 and 1.3.
pub(crate) fn tls_config(tls: &TlsOptions) -> Result<rustls::ClientConfig> {
    let mut config = build(tls, rustls::DEFAULT_VERSIONS)?;
    config.alpn_protocols = tls.tls_alpn.clone();
    Ok(config)
}

fn build(
    tls: &TlsOptions,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_root_certificates(roots(&tls.ca)?);
    match &tls.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some(cc) => {
            let (chain, key) = client_cert(cc)?;
            Ok(builder.with_client_auth_cert(chain, key)?)
        }
    }
}

fn roots(ca: &CaSource) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    match ca {
        CaSource::Platform => {
            let found = rustls_native_certs::load_native_certs();
            for err in &found.errors {
                tracing::debug!(%err, "skipping part of the platform trust store");
            }
            let (added, _ignored) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(Error::BadPem(
                    "no usable certificate in the platform trust store (pass a CA file)".into(),
                ));
            }
        }
        CaSource::File(path) => {
            let pem = read_file(path)?;
            add_pem(&mut store, &pem, &path.display().to_string())?;
        }
        CaSource::Pem(pem) => add_pem(&mut store, pem, "the CA PEM")?,
    }
    Ok(store)
}

fn add_pem(store: &mut RootCertStore, pem: &[u8], what: &str) -> Result<()> {
    let certs = parse_certs(pem, what)?;
    let (added, _ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(Error::BadPem(format!("no usable CA certificate in {what}")));
    }
    Ok(())
}

fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = rustls_pemfile::certs(&mut BufReader::new(pem))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::BadPem(format!("bad PEM in {what}: {e}")))?;
    if certs.is_empty() {
        return Err(Error::BadPem(format!("no certificate in {what}")));
    }
    Ok(certs)
}

fn read_file(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|error| Error::ReadFile {
        path: path.to_owned(),
        error,
    })
}

fn client_cert(cc: &ClientCert) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain = parse_certs(
        &read_file(&cc.cert_chain)?,
        &cc.cert_chain.display().to_string(),
    )?;
    let key_pem = read_file(&cc.key)?;
    let key = rustls_pemfile::private_key(&mut BufReader::new(key_pem.as_slice()))
        .map_err(|e| Error::BadPem(format!("bad PEM in {}: {e}", cc.key.display())))?
        .ok_or_else(|| Error::BadPem(format!("no private key in {}", cc.key.display())))?;
    Ok((chain, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_ca_file_names_the_path() {
        let tls = TlsOptions {
            ca: CaSource::File("/nonexistent/ca.pem".into()),
            ..TlsOptions::default()
        };
        let err = tls_config(&tls)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn pem_without_certificates_is_refused() {
        let tls = TlsOptions {
            ca: CaSource::Pem(bytes::Bytes::from_static(b"not a pem")),
            ..TlsOptions::default()
        };
        assert!(matches!(quic_config(&tls), Err(Error::BadPem(_))));
    }
}
