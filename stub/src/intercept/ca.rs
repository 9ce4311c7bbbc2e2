//! The pull proxy's certificate authority: made once at install time, kept under the
//! installer's state folder, reused by every re-run, and never added to a system trust
//! store (Docker trusts it per host through `/etc/docker/certs.d/<host>/ca.crt`).
//!
//! [`Authority`] holds the CA key and signs one leaf certificate per intercepted upstream
//! host ([`Authority::issue`]). Everything here is PEM text in and out: the install step
//! decides where files go and writes them atomically; the proxy only reads leaves.

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

/// What can go wrong while making or loading certificates.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// rcgen refused to make a key or certificate.
    #[error("failed to {step}")]
    Generate {
        /// The step, e.g. "sign the leaf certificate for quay.io".
        step: String,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
    /// A stored CA key is not a PEM private key rcgen can use.
    #[error("failed to read the stored CA key")]
    Key(#[source] rcgen::Error),
}

/// Result with [`CaError`].
pub type Result<T, E = CaError> = std::result::Result<T, E>;

/// A certificate and its private key, PEM-encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPem {
    /// `-----BEGIN CERTIFICATE-----` ...
    pub cert: String,
    /// `-----BEGIN PRIVATE KEY-----` ... (PKCS#8).
    pub key: String,
}

/// The CA of one installer: its key and the certificate that leaves are signed with.
pub struct Authority {
    key: KeyPair,
    /// The certificate as stored (what clients trust).
    cert_pem: String,
    /// The same subject and key, re-signed in memory: rcgen's issuer handle.
    issuer: Certificate,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

/// The CA's subject and extensions. Deterministic for a name, so a CA loaded from its key
/// signs leaves that chain to the certificate stored at install time.
fn ca_params(name: &str) -> Result<CertificateParams> {
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(|source| CaError::Generate {
            step: "describe the CA certificate".into(),
            source,
        })?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "airlock");
    dn.push(
        DnType::CommonName,
        format!("airlock pull proxy CA for {name}"),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    // Air-gapped machines often have wrong clocks: valid from long ago to far ahead.
    params.not_before = rcgen::date_time_ymd(2000, 1, 1);
    params.not_after = rcgen::date_time_ymd(2099, 12, 31);
    Ok(params)
}

/// The name a certificate is issued for: `registry.local:5000` → `registry.local`.
pub fn cert_host(host: &str) -> &str {
    if host.starts_with('[') {
        // [::1]:5000
        return host
            .split_once(']')
            .map_or(host, |(h, _)| h.trim_start_matches('['));
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// The names a leaf for upstream `host` answers to: Docker Hub's three spellings for
/// `docker.io`, else the host without its port (an IP address becomes an IP SAN).
pub fn leaf_names(host: &str) -> Vec<String> {
    match host {
        "docker.io" => vec![
            "docker.io".into(),
            "registry-1.docker.io".into(),
            "index.docker.io".into(),
        ],
        h => vec![cert_host(h).to_owned()],
    }
}

impl Authority {
    /// A new CA with a fresh key, named after installer `name`.
    pub fn generate(name: &str) -> Result<Authority> {
        let key = KeyPair::generate().map_err(|source| CaError::Generate {
            step: "generate the CA key".into(),
            source,
        })?;
        let issuer = ca_params(name)?
            .self_signed(&key)
            .map_err(|source| CaError::Generate {
                step: "sign the CA certificate".into(),
                source,
            })?;
        Ok(Authority {
            cert_pem: issuer.pem(),
            key,
            issuer,
        })
    }

    /// The CA stored earlier by the install of `name`: its key and certificate as written.
    pub fn load(name: &str, stored: &CertPem) -> Result<Authority> {
        let key = KeyPair::from_pem(&stored.key).map_err(CaError::Key)?;
        let issuer = ca_params(name)?
            .self_signed(&key)
            .map_err(|source| CaError::Generate {
                step: "load the CA certificate".into(),
                source,
            })?;
        Ok(Authority {
            cert_pem: stored.cert.clone(),
            key,
            issuer,
        })
    }

    /// The CA certificate and key, to store (the key must be stored 0600).
    pub fn to_pem(&self) -> CertPem {
        CertPem {
            cert: self.cert_pem.clone(),
            key: self.key.serialize_pem(),
        }
    }

    /// The CA certificate (what `certs.d/<host>/ca.crt` holds).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server certificate for upstream `host` (see [`leaf_names`]), with a fresh key.
    pub fn issue(&self, host: &str) -> Result<CertPem> {
        let step = |what: &str| format!("{what} for {host}");
        let key = KeyPair::generate().map_err(|source| CaError::Generate {
            step: step("generate the leaf key"),
            source,
        })?;
        let names = leaf_names(host);
        let mut params =
            CertificateParams::new(names.clone()).map_err(|source| CaError::Generate {
                step: step("describe the leaf certificate"),
                source,
            })?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, names[0].as_str());
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2099, 12, 31);
        let cert = params
            .signed_by(&key, &self.issuer, &self.key)
            .map_err(|source| CaError::Generate {
                step: step("sign the leaf certificate"),
                source,
            })?;
        Ok(CertPem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_brackets_are_cut_from_certificate_names() {
        assert_eq!(cert_host("registry.local:5000"), "registry.local");
        assert_eq!(cert_host("quay.io"), "quay.io");
        assert_eq!(cert_host("[::1]:5000"), "::1");
        assert_eq!(cert_host("10.0.0.1:443"), "10.0.0.1");
        assert_eq!(
            leaf_names("docker.io"),
            ["docker.io", "registry-1.docker.io", "index.docker.io"]
        );
    }

    #[test]
    fn a_loaded_authority_keeps_its_certificate_and_key() {
        let ca = Authority::generate("edge").unwrap();
        let stored = ca.to_pem();
        assert!(stored.cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(stored.key.contains("PRIVATE KEY"));
        let again = Authority::load("edge", &stored).unwrap();
        assert_eq!(again.to_pem(), stored);
        assert!(again.issue("quay.io").unwrap().cert.contains("CERTIFICATE"));
    }

    #[test]
    fn a_damaged_stored_key_is_an_error() {
        let ca = Authority::generate("edge").unwrap();
        let mut stored = ca.to_pem();
        stored.key = "not a key".into();
        assert!(matches!(
            Authority::load("edge", &stored),
            Err(CaError::Key(_))
        ));
    }
}
