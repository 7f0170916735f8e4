//! A node's TLS identity and how it recognises its peers.
//!
//! Owns: what a kith certificate says about its holder — the cluster id and node id, bound
//! into the certificate as the URI subject alternative name `urn:kith:cluster:<cluster
//! id>:node:<node id>` ([`node_uri`], written by `kith init`, read back by [`PeerCert::of`]) —
//! and the node's own TLS configuration, loaded from the directory `kith init` wrote
//! (`DIR/node-N`): the server side (the node's certificate; client certificates verified
//! against the cluster CA but optional, since public clients have none) and the client side
//! its peer transport presents.
//!
//! Refuses: deciding which peers may speak (the node does that from its membership: see
//! `peer::server`), and issuing certificates (`kith init`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use kith_client::tls::{TlsError, TlsOptions};
use kith_core::NodeId;
use rustls::pki_types::CertificateDer;

const URI_PREFIX: &str = "urn:kith:cluster:";

/// The URI naming node `node_id` of cluster `cluster_id` in its certificate.
pub fn node_uri(cluster_id: &str, node_id: NodeId) -> String {
    format!("{URI_PREFIX}{cluster_id}:node:{node_id}")
}

/// The URI naming the CA of cluster `cluster_id` in the CA's own certificate.
pub fn ca_uri(cluster_id: &str) -> String {
    format!("{URI_PREFIX}{cluster_id}")
}

/// The cluster id a CA certificate written by `kith init` names.
pub fn cluster_of_ca(cert: &CertificateDer<'_>) -> Option<String> {
    uris(cert)?.into_iter().find_map(|uri| {
        let id = uri.strip_prefix(URI_PREFIX)?;
        (!id.is_empty() && !id.contains(':')).then(|| id.to_owned())
    })
}

/// The DNS subject alternative names of `cert`.
fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            _ => None,
        })
        .collect()
}

/// The URI subject alternative names of `cert`.
fn uris(cert: &CertificateDer<'_>) -> Option<Vec<String>> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    Some(
        san.value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::URI(uri) => Some((*uri).to_owned()),
                _ => None,
            })
            .collect(),
    )
}

/// Who a verified certificate says its holder is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCert {
    pub cluster_id: String,
    pub node_id: NodeId,
}

impl PeerCert {
    /// Reads the kith URI out of `cert`; `None` when it has none (e.g. a client's own
    /// certificate from another CA that this node was told to trust).
    pub fn of(cert: &CertificateDer<'_>) -> Option<PeerCert> {
        uris(cert)?.iter().find_map(|uri| PeerCert::parse_uri(uri))
    }

    fn parse_uri(uri: &str) -> Option<PeerCert> {
        let (cluster_id, node_id) = uri.strip_prefix(URI_PREFIX)?.split_once(":node:")?;
        let node_id: NodeId = node_id.parse().ok()?;
        if cluster_id.is_empty() || node_id == 0 {
            return None;
        }
        Some(PeerCert {
            cluster_id: cluster_id.to_owned(),
            node_id,
        })
    }
}

/// Who is on the other end of one accepted connection: its address and, over TLS with a
/// client certificate the cluster CA signed, what that certificate says. Every request on
/// the connection carries it (axum's `ConnectInfo<Peer>`).
#[derive(Clone, Debug)]
pub struct Peer {
    pub remote: SocketAddr,
    pub cert: Option<PeerCert>,
}

/// This node's TLS identity, loaded once at start.
#[derive(Clone)]
pub struct NodeTls {
    cluster_id: String,
    options: TlsOptions,
    server: Arc<rustls::ServerConfig>,
    /// BLAKE3 of the first administrator's secret (`admin.hash`, from `kith init`).
    admin_hash: Option<[u8; 32]>,
    /// The DNS names in this node's certificate: names clients may reach it by.
    dns_names: Vec<String>,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTls")
            .field("cluster_id", &self.cluster_id)
            .finish_non_exhaustive()
    }
}

impl NodeTls {
    /// Loads `dir` (`kith init`'s `DIR/node-N`) and checks that its certificate names node
    /// `id`: a node started with another node's directory would speak as that node.
    pub fn load(dir: &Path, id: NodeId) -> Result<NodeTls, TlsError> {
        let options = TlsOptions::node_dir(dir)?;
        let (chain, key) = options
            .identity()
            .ok_or_else(|| TlsError::Config("no node certificate".into()))?;
        let own = PeerCert::of(&chain[0]).ok_or_else(|| {
            TlsError::Config(format!(
                "{}: not a kith node certificate (it names no cluster and node id)",
                dir.display()
            ))
        })?;
        if own.node_id != id {
            return Err(TlsError::Config(format!(
                "{} holds node {}'s certificate, but this is node {id}",
                dir.display(),
                own.node_id
            )));
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in options.roots() {
            roots
                .add(cert.clone())
                .map_err(|e| TlsError::Config(format!("the CA certificate: {e}")))?;
        }
        let provider = kith_client::tls::provider();
        // Public clients have no certificate; one that is presented must chain to the
        // cluster CA, or the handshake fails.
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.to_vec(), key.clone_key())
            .map_err(|e| TlsError::Config(format!("the node certificate: {e}")))?;
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let dns_names = dns_names(&chain[0]);
        Ok(NodeTls {
            cluster_id: own.cluster_id,
            options,
            server: Arc::new(server),
            admin_hash: read_admin_hash(&dir.join(ADMIN_HASH_FILE))?,
            dns_names,
        })
    }

    /// The DNS names this node's certificate holds.
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }

    /// BLAKE3 of the first administrator's token secret, when `kith init` gave one.
    pub fn admin_hash(&self) -> Option<[u8; 32]> {
        self.admin_hash
    }

    /// The cluster id in this node's certificate.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The server configuration for the node's port.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server.clone()
    }

    /// The CA and this node's certificate, for its outgoing connections.
    pub fn client_options(&self) -> &TlsOptions {
        &self.options
    }

    /// Whether `cert` belongs to this node's cluster (the CA already vouched for it).
    pub fn same_cluster(&self, cert: &PeerCert) -> bool {
        cert.cluster_id == self.cluster_id
    }
}

/// The file in a node's directory holding BLAKE3 of the first administrator's secret, in hex.
pub const ADMIN_HASH_FILE: &str = "admin.hash";

/// Reads `admin.hash` (absent: `None`).
fn read_admin_hash(path: &Path) -> Result<Option<[u8; 32]>, TlsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(TlsError::Read {
                path: path.to_owned(),
                message: e.to_string(),
            })
        }
    };
    let bad = || TlsError::Config(format!("{}: not 64 hex digits", path.display()));
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return Err(bad());
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(Some(hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_uri_reads_back() {
        let uri = node_uri("0123abcd", 7);
        assert_eq!(
            PeerCert::parse_uri(&uri),
            Some(PeerCert {
                cluster_id: "0123abcd".into(),
                node_id: 7
            })
        );
        for bad in [
            "urn:kith:cluster::node:7",
            "urn:kith:cluster:ab:node:0",
            "urn:kith:cluster:ab:node:x",
            "urn:kith:cluster:ab",
            "https://example.com/",
        ] {
            assert_eq!(PeerCert::parse_uri(bad), None, "{bad}");
        }
    }
}
