//! TLS towards a kith cluster: the cluster's CA as the only trusted root, and optionally a
//! node certificate as the client's own identity (peers present theirs; so does a node
//! asking to join).
//!
//! Owns: reading the PEM files `kith init` writes and building the rustls client
//! configuration from them (ring provider, rustls' safe defaults: TLS 1.3 and 1.2, AEAD
//! suites only). Refuses: system roots (a kith cluster's certificates come from its own CA,
//! so trusting the system's would only widen who can impersonate a node) and generating
//! certificates (`kith init`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The file names inside a node's directory (`kith init` writes them).
pub const CA_FILE: &str = "ca.crt";
pub const CERT_FILE: &str = "node.crt";
pub const KEY_FILE: &str = "node.key";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// What a client trusts and, optionally, who it is.
#[derive(Clone)]
pub struct TlsOptions {
    roots: Vec<CertificateDer<'static>>,
    identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
}

impl TlsOptions {
    /// Trusts the certificates in the PEM file `ca` and nothing else.
    pub fn trusting(ca: &Path) -> Result<Self, TlsError> {
        Ok(TlsOptions {
            roots: read_certs(ca)?,
            identity: None,
        })
    }

    /// A node's directory (`DIR/node-N` from `kith init`): trusts its `ca.crt` and presents
    /// its `node.crt` with `node.key`.
    pub fn node_dir(dir: &Path) -> Result<Self, TlsError> {
        TlsOptions::trusting(&dir.join(CA_FILE))?
            .presenting(&dir.join(CERT_FILE), &dir.join(KEY_FILE))
    }

    /// The same trust, presenting the certificate in `cert` with the key in `key` (PEM).
    pub fn presenting(mut self, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        self.identity = Some((read_certs(cert)?, Arc::new(read_key(key)?)));
        Ok(self)
    }

    /// The trusted roots, for servers that verify client certificates against them.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// The certificate chain and key presented, if any.
    pub fn identity(&self) -> Option<(&[CertificateDer<'static>], &PrivateKeyDer<'static>)> {
        self.identity
            .as_ref()
            .map(|(chain, key)| (chain.as_slice(), key.as_ref()))
    }

    /// A rustls client configuration offering `alpn` (e.g. `[b"http/1.1"]`). Session
    /// resumption is rustls' default (an in-memory cache), so reconnecting to a node skips
    /// the full handshake.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in &self.roots {
            roots
                .add(cert.clone())
                .map_err(|e| TlsError::Config(format!("the CA certificate: {e}")))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match &self.identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(|e| TlsError::Config(format!("the node certificate: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

/// The one crypto provider kith uses (ring).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring this process's default crypto provider, once. reqwest asks for the default
/// when it builds any client, a plain-HTTP one included, and panics without one; every
/// place in kith that builds a reqwest client calls this first.
pub fn install_default_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err means another provider was installed first; reqwest then uses that one.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Every certificate in the PEM file at `path` (at least one).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            message: "holds no certificate".into(),
        });
    }
    Ok(certs)
}

/// The private key in the PEM file at `path`.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        message: format!("no private key: {e}"),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read {
        path: path.to_owned(),
        message: e.to_string(),
    })
}
