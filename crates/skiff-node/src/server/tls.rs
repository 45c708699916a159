//! The node server's TLS: a serving certificate (self-signed unless given) and client
//! certificates checked against the cluster CA.

use std::net::IpAddr;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use super::{API_SERVER_CLIENT_CN, NodeServerConfig, SYSTEM_MASTERS, ServerError};

/// A PEM certificate (chain) and its private key.
#[derive(Clone)]
pub struct ServingCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert").finish_non_exhaustive()
    }
}

/// Who a verified client certificate names: CN is the user, each O a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub name: String,
    pub groups: Vec<String>,
}

impl ClientIdentity {
    /// The kubelet asks the API server (SubjectAccessReview) about `nodes/proxy`; without
    /// RBAC on the node, the API server's own identity and cluster admins are let in.
    pub fn may_stream(&self) -> bool {
        self.name == API_SERVER_CLIENT_CN || self.groups.iter().any(|g| g == SYSTEM_MASTERS)
    }
}

pub(super) fn identity_from_cert(der: &[u8]) -> Option<ClientIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(String::from))
        .collect();
    Some(ClientIdentity { name, groups })
}

/// A self-signed serving certificate for the node's names and addresses.
pub fn self_signed(sans: &[String]) -> Result<ServingCert, ServerError> {
    let tls = |e: rcgen::Error| ServerError::Tls(e.to_string());
    let key = rcgen::KeyPair::generate().map_err(tls)?;
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "skiff-node");
    params.distinguished_name = dn;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    for san in sans {
        params.subject_alt_names.push(match san.parse::<IpAddr>() {
            Ok(ip) => rcgen::SanType::IpAddress(ip),
            Err(_) => rcgen::SanType::DnsName(san.clone().try_into().map_err(tls)?),
        });
    }
    let cert = params.self_signed(&key).map_err(tls)?;
    Ok(ServingCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

pub(super) fn server_config(
    config: &NodeServerConfig,
) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let err = |what: &str, e: &dyn std::fmt::Display| ServerError::Tls(format!("{what}: {e}"));
    let serving = match &config.serving {
        Some(s) => s.clone(),
        None => self_signed(&config.sans)?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut serving.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| err("parsing the serving certificate", &e))?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut serving.key_pem.as_bytes())
        .map_err(|e| err("parsing the serving key", &e))?
        .ok_or_else(|| ServerError::Tls("no private key in the serving key".into()))?;
    let mut roots = RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut config.client_ca_pem.as_bytes()) {
        let c = c.map_err(|e| err("parsing the client CA", &e))?;
        roots.add(c).map_err(|e| err("adding the client CA", &e))?;
    }
    if roots.is_empty() {
        return Err(ServerError::Tls("no certificate in the client CA".into()));
    }
    // Unauthenticated clients complete the handshake so that they get a 401, not a reset.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| err("client certificate verifier", &e))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err("protocol versions", &e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| err("serving certificate", &e))?;
    // Upgrades (exec, port-forward) need HTTP/1.1.
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}
