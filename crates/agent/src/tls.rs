//! TLS clients (rustls) for the agent's outgoing connections: the roots a connection trusts
//! (`ca_file`, PEM, or the platform's), the name it checks in the server's certificate, and how a
//! refused certificate is worded. Webhooks ([`crate::alert`]) and the http operation use it.

use crate::config::{ConfigError, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::UnixTime;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::sync::Arc;

/// A TLS client: the roots it trusts and the name it expects in the certificate.
#[derive(Clone)]
pub struct Tls {
    /// `ca_file` as written; `None` trusts the platform's roots.
    pub ca_file: Option<String>,
    /// Any certificate is accepted (http's `insecure`): the handshake happens, nothing is checked.
    pub insecure: bool,
    /// The trusted roots, as loaded (compared on reload: a changed file is a changed sink).
    roots: Vec<CertificateDer<'static>>,
    pub(crate) server_name: ServerName<'static>,
    pub(crate) config: Arc<rustls::ClientConfig>,
}

impl PartialEq for Tls {
    fn eq(&self, o: &Self) -> bool {
        self.ca_file == o.ca_file
            && self.insecure == o.insecure
            && self.roots == o.roots
            && self.server_name == o.server_name
    }
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("ca_file", &self.ca_file)
            .field("insecure", &self.insecure)
            .field("roots", &self.roots.len())
            .field("server_name", &self.server_name)
            .finish()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn server_name(key: &str, host: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(host.to_string())
        .map_err(|_| ConfigError(format!("{key}: \"{host}\" is not a name a certificate can be checked for")))
}

impl Tls {
    /// TLS over `stream`, the server's certificate checked against the roots for the host.
    pub(crate) async fn connect(
        &self,
        stream: tokio::net::TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        tokio_rustls::TlsConnector::from(self.config.clone()).connect(self.server_name.clone(), stream).await
    }

    /// Loads the roots (`ca_file`, else the platform's) for a connection to `host`. `key` names
    /// the `ca_file` key in errors.
    pub(crate) fn new(key: &str, host: &str, ca_file: Option<&str>) -> Result<Tls> {
        let roots: Vec<CertificateDer<'static>> = match ca_file {
            Some(path) => {
                let certs: std::result::Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
                    .map_err(|e| ConfigError(format!("{key}: cannot read \"{path}\": {e}")))?
                    .collect();
                let certs = certs.map_err(|e| ConfigError(format!("{key}: \"{path}\" is not PEM: {e}")))?;
                if certs.is_empty() {
                    return Err(ConfigError(format!(
                        "{key}: \"{path}\" holds no certificate (expected PEM \"-----BEGIN CERTIFICATE-----\" blocks)"
                    )));
                }
                certs
            }
            None => rustls_native_certs::load_native_certs().certs,
        };
        let mut store = rustls::RootCertStore::empty();
        let (added, _ignored) = store.add_parsable_certificates(roots.iter().cloned());
        if added == 0 {
            return Err(ConfigError(match ca_file {
                Some(path) => format!("{key}: no usable CA certificate in \"{path}\""),
                None => format!(
                    "{key}: not set, and the platform has no trusted CA certificates (install the \
                     ca-certificates package, or set {key} to a PEM file)"
                ),
            }));
        }
        let server_name = server_name(key, host)?;
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError(format!("{key}: TLS: {e}")))?
            .with_root_certificates(store)
            .with_no_client_auth();
        Ok(Tls { ca_file: ca_file.map(str::to_string), insecure: false, roots, server_name, config: Arc::new(config) })
    }

    /// A client that accepts any certificate for `host` (still checking the handshake's
    /// signatures, so the handshake costs what a verified one does). `key` names the key in errors.
    pub(crate) fn insecure(key: &str, host: &str) -> Result<Tls> {
        let provider = provider();
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError(format!("{key}: TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        Ok(Tls {
            ca_file: None,
            insecure: true,
            roots: Vec::new(),
            server_name: server_name(key, host)?,
            config: Arc::new(config),
        })
    }

    /// What vouches for the server's certificate, in words for an error.
    pub(crate) fn trust(&self) -> String {
        match &self.ca_file {
            Some(f) => format!("the CA certificates in {f}"),
            None => "the platform's trusted CA certificates (set ca_file to trust another CA)".into(),
        }
    }
}

/// The certificate error inside a failed handshake, when the server's certificate was refused
/// (which retrying does not change).
pub(crate) fn refused_certificate(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .filter(|r| matches!(r, rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented))
}

/// The verifier of `insecure`: every certificate passes, the handshake signatures are checked.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
