//! The rustls client config of `registry push`: the system's CA bundle plus `--ca`, or no
//! checks at all with `--insecure`; a refused certificate is reported with its subject.
//!
//! rustls says only "unknown issuer" when a certificate is signed by a CA it does not know;
//! the user needs to know *which* certificate (a site CA, a corporate proxy's), so the
//! verifier wraps webpki's and records the end-entity certificate's subject and issuer in a
//! [`Refusal`] slot the client reads when the connection fails.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::PushError;

/// Why the last certificate was refused, for the error message.
pub type Refusal = Arc<Mutex<Option<String>>>;

/// A client config trusting the system's roots and every certificate in `ca` (PEM), or
/// anything with `insecure`. Refusals are written to `refusal`.
pub fn client_config(
    ca: Option<&Path>,
    insecure: bool,
    refusal: Refusal,
) -> Result<ClientConfig, PushError> {
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| PushError::TlsSetup(e.to_string()))?;
    let verifier: Arc<dyn ServerCertVerifier> = if insecure {
        Arc::new(AcceptAnything(provider))
    } else {
        let mut roots = RootCertStore::empty();
        // Unreadable system certificates are skipped: `--ca` may be all that is needed.
        let system = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(system.certs);
        if let Some(path) = ca {
            let read_err = |source| PushError::Ca {
                path: path.to_owned(),
                source,
            };
            let pem = std::fs::read(path).map_err(read_err)?;
            let certs = read_pem_certs(&pem).map_err(read_err)?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(read_err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "no usable certificate in the file",
                )));
            }
        }
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| PushError::TlsSetup(e.to_string()))?;
        Arc::new(Naming { inner, refusal })
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// The `CERTIFICATE` blocks of a PEM file.
fn read_pem_certs(pem: &[u8]) -> std::io::Result<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    if certs.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no PEM certificate in the file",
        ));
    }
    Ok(certs)
}

/// webpki's verifier, recording the subject of what it refuses.
#[derive(Debug)]
struct Naming {
    inner: Arc<WebPkiServerVerifier>,
    refusal: Refusal,
}

impl ServerCertVerifier for Naming {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict =
            self.inner
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        if let Err(e) = &verdict {
            let (subject, issuer) = names_of(end_entity.as_ref())
                .unwrap_or_else(|| ("(unreadable)".into(), "(unreadable)".into()));
            let why = match e {
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
                    format!(
                        "certificate \"{subject}\" is signed by an unknown authority \"{issuer}\""
                    )
                }
                other => format!("certificate \"{subject}\" (issuer \"{issuer}\"): {other}"),
            };
            *self.refusal.lock().expect("not poisoned") = Some(why);
        }
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `--insecure`: any certificate; signatures are still checked so the handshake is sound.
#[derive(Debug)]
struct AcceptAnything(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The subject and issuer of a DER certificate as `CN=..., O=...`.
pub fn names_of(der: &[u8]) -> Option<(String, String)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some((cert.subject().to_string(), cert.issuer().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_a_certificate_are_its_subject_and_issuer() {
        let mut params = rcgen::CertificateParams::new(vec!["harbor.site".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "harbor.site");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Site Ops");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (subject, issuer) = names_of(cert.der()).unwrap();
        assert!(subject.contains("CN=harbor.site"), "{subject}");
        assert!(subject.contains("O=Site Ops"), "{subject}");
        assert_eq!(subject, issuer);
        assert_eq!(names_of(b"not a certificate"), None);
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "hello\n").unwrap();
        let err = client_config(Some(&path), false, Refusal::default()).unwrap_err();
        assert!(matches!(err, PushError::Ca { .. }), "{err}");
    }
}
