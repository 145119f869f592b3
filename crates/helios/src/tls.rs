//! TLS for the listener: a rustls server configuration from PEM files or
//! bytes (ring provider, TLS 1.2 and 1.3, ALPN `http/1.1`).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;

/// Why a certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The certificate PEM holds no certificate, or is malformed.
    #[error("no valid PEM certificate in {0}")]
    Certificate(String),
    /// The key PEM holds no private key (PKCS#8, PKCS#1 or SEC1), or is
    /// malformed.
    #[error("no valid PEM private key in {0}")]
    Key(String),
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("TLS configuration refused: {0}")]
    Config(String),
}

/// A TLS server configuration, cheap to clone.
///
/// ```no_run
/// # fn demo() -> Result<(), helios::TlsError> {
/// let tls = helios::TlsConfig::from_pem_files("cert.pem", "key.pem")?;
/// # drop(tls); Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    pub(crate) server: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Loads a certificate chain and its private key from PEM files.
    ///
    /// # Errors
    /// [`TlsError`] naming the file at fault.
    pub fn from_pem_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, TlsError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| TlsError::Read {
                path: p.display().to_string(),
                source,
            })
        };
        let (cert, key) = (cert.as_ref(), key.as_ref());
        Self::from_pem_named(
            &read(cert)?,
            &read(key)?,
            &cert.display().to_string(),
            &key.display().to_string(),
        )
    }

    /// Loads a certificate chain and its private key from PEM bytes.
    ///
    /// # Errors
    /// [`TlsError`] when either is missing or they do not match.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        Self::from_pem_named(cert, key, "the certificate", "the key")
    }

    fn from_pem_named(
        cert: &[u8],
        key: &[u8],
        cert_name: &str,
        key_name: &str,
    ) -> Result<Self, TlsError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<_, _>>()
            .map_err(|_| TlsError::Certificate(cert_name.to_owned()))?;
        if chain.is_empty() {
            return Err(TlsError::Certificate(cert_name.to_owned()));
        }
        let key =
            PrivateKeyDer::from_pem_slice(key).map_err(|_| TlsError::Key(key_name.to_owned()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Config(e.to_string()))?;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            server: Arc::new(server),
        })
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server.clone())
    }
}
