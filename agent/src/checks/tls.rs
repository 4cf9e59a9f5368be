//! TLS for `https://` HTTP checks (Consul's `TLSSkipVerify` and
//! `TLSServerName`), with rustls on `ring`, plugged into the same hyper
//! client as plain HTTP checks ([`super::http`]).
//!
//! The server's certificate is verified against the system's trust store
//! (what Consul's Go client uses too), loaded once, and only when a check
//! needs it: `SSL_CERT_FILE` and `SSL_CERT_DIR` override where it is read
//! from, as for OpenSSL. `TLSServerName` is both the SNI sent and the name
//! the certificate must hold; without it, the URL's host is. With
//! `TLSSkipVerify` the certificate is not checked at all (the handshake's
//! signatures still are, so the server must hold the certificate's key).

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// The client configuration of one check. `https` is false for an
/// `http://` check, which never uses it: the trust store is then not
/// loaded (it costs memory an agent without HTTPS checks needn't hold).
pub fn client_config(https: bool, skip_verify: bool) -> ClientConfig {
    let provider = Arc::new(ring_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls's default protocol versions");
    if skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SkipVerify {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth()
    } else if https {
        builder
            .with_root_certificates(system_roots())
            .with_no_client_auth()
    } else {
        builder
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth()
    }
}

/// rustls's `ring` provider. rustls 0.23.48 deprecates it for lacking
/// post-quantum key exchange, which a health probe of a service on this
/// host or its network doesn't need; the alternative (aws-lc-rs) would add
/// a C and CMake build, and `ring` is already in the tree.
#[allow(deprecated)]
fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The system's trust anchors, read once.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(found.certs);
            for error in &found.errors {
                tracing::warn!(%error, "HTTPS checks: part of the system's trust store could not be read");
            }
            if added == 0 {
                tracing::warn!(
                    ignored,
                    "HTTPS checks: the system's trust store holds no usable certificate (set SSL_CERT_FILE, or TLSSkipVerify on the check): every certificate will be refused"
                );
            }
            Arc::new(roots)
        })
        .clone()
}

/// A `TLSServerName` as rustls takes it (a DNS name or an IP address,
/// brackets around IPv6 allowed); `Err` says why not.
pub fn server_name(text: &str) -> Result<ServerName<'static>, String> {
    let bare = text
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(text);
    ServerName::try_from(bare.to_string())
        .map_err(|_| format!("`{text}` is not a DNS name or an IP address"))
}

/// What a failed handshake's certificate error means, for the check's
/// output, when `error`'s chain holds one.
pub fn explain(error: &(dyn std::error::Error + 'static), name: &str) -> Option<String> {
    let Some(rustls::Error::InvalidCertificate(reason)) = find_rustls_error(error) else {
        return None;
    };
    let why = match reason {
        CertificateError::UnknownIssuer => {
            "it is not signed by an authority the system trusts".to_string()
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!("it is not valid for the name `{name}`")
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "it has expired".to_string()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "it is not valid yet".to_string()
        }
        CertificateError::BadSignature => {
            "its signature does not verify against the trusted authority of the same name"
                .to_string()
        }
        other => format!("{other:?}"),
    };
    Some(format!(
        "TLS: the server's certificate was refused: {why}; set TLSSkipVerify to skip verification, or TLSServerName to the name the certificate holds"
    ))
}

/// The rustls error in `error`'s chain. The TLS connector wraps it in an
/// `io::Error` inside another; `io::Error::source` skips what it wraps,
/// so wrapped errors are opened with `get_ref`.
fn find_rustls_error<'e>(
    error: &'e (dyn std::error::Error + 'static),
) -> Option<&'e rustls::Error> {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if let Some(found) = current.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        cause = match current.downcast_ref::<std::io::Error>() {
            Some(io) => match io.get_ref() {
                Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
                None => current.source(),
            },
            None => current.source(),
        };
    }
    None
}

/// `TLSSkipVerify`: any certificate is accepted; the handshake's
/// signatures are still checked against it.
#[derive(Debug)]
struct SkipVerify {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for SkipVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_are_dns_names_or_addresses() {
        assert!(server_name("shoal-test.local").is_ok());
        assert!(server_name("10.0.0.1").is_ok());
        assert!(server_name("[::1]").is_ok());
        let error = server_name("not a name").unwrap_err();
        assert!(error.contains("`not a name`"), "{error}");
    }

    #[test]
    fn certificate_errors_are_explained_through_io_errors() {
        let inner = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, inner);
        let text = explain(&io, "x").unwrap();
        assert!(text.contains("not signed by an authority") && text.contains("TLSSkipVerify"));
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
        );
        assert!(explain(&io, "db.local").unwrap().contains("`db.local`"));
        // As the connector hands it over: an io::Error in an io::Error.
        let inner = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::Expired),
        );
        let outer = std::io::Error::other(inner);
        assert!(explain(&outer, "x").unwrap().contains("expired"));
        assert_eq!(explain(&std::io::Error::other("refused"), "x"), None);
    }
}
