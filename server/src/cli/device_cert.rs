//! `quicft-server cert device NAME`: a device certificate issued by the development CA in
//! `<data-dir>/certs/`, so that mutual TLS can be tried in a minute (certs/README.md). For
//! production, bring device certificates from your own PKI.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Writes `<out>/<NAME>.pem` (the certificate, then the CA) and `<out>/<NAME>.key` (mode 0600);
/// returns their paths.
pub fn issue(data_dir: &Path, name: &str, out: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    use rcgen::{
        CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair, KeyUsagePurpose, SanType,
    };
    anyhow::ensure!(
        !name.is_empty() && !name.contains(['/', '\0']),
        "a device name must be non-empty, without '/'"
    );
    let certs = data_dir.join("certs");
    let ca_pem = std::fs::read_to_string(certs.join("ca.pem")).with_context(|| {
        format!(
            "{}: start the server once on this data dir to create the development CA",
            certs.join("ca.pem").display()
        )
    })?;
    let ca_key =
        KeyPair::from_pem(&std::fs::read_to_string(certs.join("ca.key"))?).context("ca.key")?;
    // The CA certificate is rebuilt from its PEM and key: same subject and key, so what it signs
    // chains to the ca.pem clients and the server already trust.
    let ca = CertificateParams::from_ca_cert_pem(&ca_pem)?.self_signed(&ca_key)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.subject_alt_names = vec![SanType::DnsName(name.try_into()?)];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca, &ca_key)?;
    std::fs::create_dir_all(out)?;
    let (cert_path, key_path) = (
        out.join(format!("{name}.pem")),
        out.join(format!("{name}.key")),
    );
    std::fs::write(&cert_path, format!("{}{}", cert.pem(), ca_pem))?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&key_path)?;
        f.write_all(key.serialize_pem().as_bytes())?;
    }
    Ok((cert_path, key_path))
}
