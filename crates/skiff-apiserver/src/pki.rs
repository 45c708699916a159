//! The cluster's certificates: a self-signed CA, the API serving certificate and client
//! certificates, created on first start and kept in the data directory.

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// PEM-encoded certificate and private key.
#[derive(Clone)]
pub struct CertAndKey {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertAndKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("CertAndKey").finish_non_exhaustive()
    }
}

/// The CA plus the serving certificate of the API server.
#[derive(Clone)]
pub struct Pki {
    pub ca: CertAndKey,
    pub serving: CertAndKey,
    pub dir: PathBuf,
}

const CA_CERT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";
const SERVING_CERT: &str = "serving.crt";
const SERVING_KEY: &str = "serving.key";
const SERVING_SANS: &str = "serving.sans";

impl Pki {
    /// Loads the PKI from `dir`, creating the CA on first use and (re)issuing the serving
    /// certificate when its SANs differ from `sans`.
    pub fn load_or_create(dir: &Path, sans: &[String]) -> Result<Pki> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let ca = match (read(dir, CA_CERT), read(dir, CA_KEY)) {
            (Some(cert_pem), Some(key_pem)) => CertAndKey { cert_pem, key_pem },
            _ => {
                let ca = new_ca()?;
                write_private(dir, CA_KEY, &ca.key_pem)?;
                write_private(dir, CA_CERT, &ca.cert_pem)?;
                ca
            }
        };
        let wanted = sans.join("\n");
        let serving = match (
            read(dir, SERVING_CERT),
            read(dir, SERVING_KEY),
            read(dir, SERVING_SANS),
        ) {
            (Some(cert_pem), Some(key_pem), Some(old)) if old == wanted => {
                CertAndKey { cert_pem, key_pem }
            }
            _ => {
                let s = issue(&ca, "kube-apiserver", &[], sans, true)?;
                write_private(dir, SERVING_KEY, &s.key_pem)?;
                write_private(dir, SERVING_CERT, &s.cert_pem)?;
                write_private(dir, SERVING_SANS, &wanted)?;
                s
            }
        };
        Ok(Pki {
            ca,
            serving,
            dir: dir.to_path_buf(),
        })
    }

    /// Issues a client certificate for `user` in `groups` (CN = user, O = groups), signed by the CA.
    pub fn issue_client(&self, user: &str, groups: &[&str]) -> Result<CertAndKey> {
        issue(&self.ca, user, groups, &[], false)
    }

    /// The API server's client certificate towards nodes (kube-apiserver's
    /// `--kubelet-client-certificate`): CN `kube-apiserver-kubelet-client`, O `system:masters`.
    pub fn issue_kubelet_client(&self) -> Result<CertAndKey> {
        self.issue_client(
            crate::proxy::KUBELET_CLIENT_CN,
            &[crate::auth::SYSTEM_MASTERS],
        )
    }
}

fn read(dir: &Path, name: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(name)).ok()
}

/// Writes a file readable only by its owner (keys and credentials).
pub fn write_private(dir: &Path, name: &str, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn new_ca() -> Result<CertAndKey> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "skiff-ca");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2034, 1, 1);
    let cert = params.self_signed(&key)?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn issue(
    ca: &CertAndKey,
    cn: &str,
    orgs: &[&str],
    sans: &[String],
    server: bool,
) -> Result<CertAndKey> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).context("parsing the CA key")?;
    let issuer =
        Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).context("parsing the CA certificate")?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    for o in orgs {
        dn.push(DnType::OrganizationName, *o);
    }
    params.distinguished_name = dn;
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2034, 1, 1);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    if server {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        for san in sans {
            params.subject_alt_names.push(match san.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(san.clone().try_into()?),
            });
        }
    } else {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    let cert = params.signed_by(&key, &issuer)?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_and_reissues_on_new_sans() {
        let dir = tempfile::tempdir().unwrap();
        let a = Pki::load_or_create(dir.path(), &["localhost".into(), "127.0.0.1".into()]).unwrap();
        let b = Pki::load_or_create(dir.path(), &["localhost".into(), "127.0.0.1".into()]).unwrap();
        assert_eq!(a.ca.cert_pem, b.ca.cert_pem);
        assert_eq!(a.serving.cert_pem, b.serving.cert_pem);
        let c = Pki::load_or_create(dir.path(), &["localhost".into(), "10.0.0.1".into()]).unwrap();
        assert_eq!(a.ca.cert_pem, c.ca.cert_pem);
        assert_ne!(a.serving.cert_pem, c.serving.cert_pem);
        let client = c.issue_client("alice", &["devs"]).unwrap();
        assert!(client.cert_pem.contains("BEGIN CERTIFICATE"));
    }
}
