//! Certificates and rustls configuration for the QUIC and TLS listeners.
//!
//! With no certificate configured, the first start generates a development CA and a server
//! certificate signed by it under `<data-dir>/certs/`; clients trust `ca.pem`. Keys are written with
//! mode 0600 and never leave the data directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::config::{ClientAuth, TlsConfig};

/// ALPN protocol id of MQTT over QUIC (and advertised on TLS too).
pub const ALPN_MQTT: &[u8] = b"mqtt";

/// Why the server's TLS material could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: no certificate found in PEM file")]
    NoCert(PathBuf),
    #[error("{0}: no private key found in PEM file")]
    NoKey(PathBuf),
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("rustls: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client CA: {0}")]
    ClientCa(String),
}

/// A certificate chain and its key, ready for rustls.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// Verifies device certificates (mTLS) when `tls.client_auth` is not `off`.
    pub client_verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            client_verifier: self.client_verifier.clone(),
        }
    }
}

/// Builds the verifier of device certificates from `tls.client_ca`.
fn client_verifier(
    cfg: &TlsConfig,
) -> Result<Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>, TlsError> {
    let (ClientAuth::Optional | ClientAuth::Required, Some(ca)) = (cfg.client_auth, &cfg.client_ca)
    else {
        return Ok(None);
    };
    let pem = std::fs::read(ca).map_err(|source| TlsError::Io {
        path: ca.clone(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(c.map_err(|source| TlsError::Io {
            path: ca.clone(),
            source,
        })?)?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCert(ca.clone()));
    }
    let builder =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    let builder = if cfg.client_auth == ClientAuth::Optional {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    builder
        .build()
        .map(Some)
        .map_err(|e| TlsError::ClientCa(e.to_string()))
}

/// The client id a verified device certificate carries: its subject CN, else its first SAN
/// (DNS name, URI or e-mail). `None` for a certificate without a usable name.
pub fn cert_name(der: &CertificateDer<'_>) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let cn = cert
        .subject()
        .iter_common_name()
        .find_map(|cn| cn.as_str().ok().map(str::to_owned));
    let san = || {
        let ext = cert.subject_alternative_name().ok()??;
        ext.value.general_names.iter().find_map(|n| match n {
            GeneralName::DNSName(s) | GeneralName::URI(s) | GeneralName::RFC822Name(s) => {
                Some((*s).to_owned())
            }
            _ => None,
        })
    };
    cn.or_else(san).filter(|n| !n.is_empty())
}

/// The crypto provider: ring only (aws-lc-rs is not compiled in).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Loads the configured identity or creates (once) the development CA and server certificate.
pub fn load_or_generate(cfg: &TlsConfig, data_dir: &Path) -> Result<Identity, TlsError> {
    let mut id = load_or_generate_server(cfg, data_dir)?;
    id.client_verifier = client_verifier(cfg)?;
    Ok(id)
}

fn load_or_generate_server(cfg: &TlsConfig, data_dir: &Path) -> Result<Identity, TlsError> {
    match (&cfg.cert, &cfg.key) {
        (Some(cert), Some(key)) => load_pem(cert, key),
        _ => {
            let dir = data_dir.join("certs");
            let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
            if !cert.exists() || !key.exists() {
                generate_dev_certs(&dir, &cfg.dev_cert_names)?;
                tracing::info!(
                    dir = %dir.display(),
                    "generated a development CA and server certificate; clients trust {}",
                    dir.join("ca.pem").display()
                );
            } else {
                tracing::info!(cert = %cert.display(), "using development certificate");
            }
            load_pem(&cert, &key)
        }
    }
}

/// Reads a PEM chain and key.
pub fn load_pem(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Io { path, source }
    };
    let cert_pem = std::fs::read(cert).map_err(io(cert))?;
    let chain = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(io(cert))?;
    if chain.is_empty() {
        return Err(TlsError::NoCert(cert.to_owned()));
    }
    let key_pem = std::fs::read(key).map_err(io(key))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(io(key))?
        .ok_or_else(|| TlsError::NoKey(key.to_owned()))?;
    Ok(Identity {
        chain,
        key,
        client_verifier: None,
    })
}

/// Writes `ca.pem`, `ca.key`, `server.pem` (leaf + CA) and `server.key` into `dir`.
pub fn generate_dev_certs(dir: &Path, extra_names: &[String]) -> Result<(), TlsError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "quicft development CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;

    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    for n in extra_names {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let mut params = CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "quicft server");
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca_cert, &ca_key)?;

    write_private(&dir.join("ca.key"), ca_key.serialize_pem().as_bytes())?;
    write_private(&dir.join("server.key"), key.serialize_pem().as_bytes())?;
    let ca_pem = ca_cert.pem();
    std::fs::write(dir.join("ca.pem"), &ca_pem).map_err(io(&dir.join("ca.pem")))?;
    let chain = format!("{}{}", cert.pem(), ca_pem);
    std::fs::write(dir.join("server.pem"), chain).map_err(io(&dir.join("server.pem")))?;
    Ok(())
}

/// Writes a key file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;

    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let io = |source| TlsError::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = opts.open(path).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

/// The server's certificate and key as the listeners present them: swapped whole by a reload
/// (SIGHUP), so new handshakes get the new certificate while connections already up keep theirs.
#[derive(Debug)]
pub struct ServerCert(ArcSwap<CertifiedKey>);

impl ServerCert {
    pub fn new(id: &Identity) -> Result<Arc<ServerCert>, TlsError> {
        Ok(Arc::new(ServerCert(ArcSwap::new(certified(id)?))))
    }

    /// Presents `new` from the next handshake on; says whether its chain differs from the current
    /// one.
    pub fn replace(&self, new: Arc<CertifiedKey>) -> bool {
        let changed = self.0.load().cert != new.cert;
        self.0.store(new);
        changed
    }
}

impl rustls::server::ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// The chain and key in rustls's signing form, checked to belong together.
pub fn certified(id: &Identity) -> Result<Arc<CertifiedKey>, TlsError> {
    Ok(Arc::new(CertifiedKey::from_der(
        id.chain.clone(),
        id.key.clone_key(),
        &provider(),
    )?))
}

/// rustls server configuration shared by the QUIC (TLS 1.3 only) and TLS listeners, with a fixed
/// certificate (the benchmark tools' servers).
pub fn server_config(id: &Identity, quic: bool) -> Result<rustls::ServerConfig, TlsError> {
    server_config_with(id, ServerCert::new(id)?, quic)
}

/// As [`server_config`], presenting whatever `cert` holds at each handshake; `id` gives the
/// device-certificate verifier.
pub fn server_config_with(
    id: &Identity,
    cert: Arc<ServerCert>,
    quic: bool,
) -> Result<rustls::ServerConfig, TlsError> {
    let versions: &[&rustls::SupportedProtocolVersion] = if quic {
        &[&rustls::version::TLS13]
    } else {
        rustls::ALL_VERSIONS
    };
    let builder =
        rustls::ServerConfig::builder_with_provider(provider()).with_protocol_versions(versions)?;
    let builder = match &id.client_verifier {
        Some(v) => builder.with_client_cert_verifier(v.clone()),
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_cert_resolver(cert);
    cfg.alpn_protocols = vec![ALPN_MQTT.to_vec()];
    if quic {
        // 0-RTT data could be replayed; MQTT publishes are not idempotent.
        cfg.max_early_data_size = 0;
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_and_loads() {
        let dir = std::env::temp_dir().join(format!("qft-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let id = load_or_generate(&TlsConfig::default(), &dir).expect("generate");
        assert_eq!(id.chain.len(), 2, "leaf and CA");
        let ca1 = std::fs::read(dir.join("certs/ca.pem")).expect("ca");
        load_or_generate(&TlsConfig::default(), &dir).expect("reload");
        let ca2 = std::fs::read(dir.join("certs/ca.pem")).expect("ca");
        assert_eq!(ca1, ca2, "second start reuses the CA");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("certs/server.key"))
                .expect("key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "key must not be readable by others");
        }
        server_config(&id, true).expect("quic config");
        server_config(&id, false).expect("tls config");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
