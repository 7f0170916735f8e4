//! One raw connection to a kith endpoint, plain or TLS, ready for a hyper handshake.
//!
//! Owns: parsing kith endpoint URLs (`http://HOST:PORT` or `https://HOST:PORT`, nothing
//! after the port), the client TLS configuration of a run ([`ClientTls`], built once from
//! `--ca`, `--cert` and `--key`, its session cache shared by every connection so a
//! reconnect resumes instead of doing a full handshake), and opening the TCP stream with
//! the TLS handshake on top when the endpoint is `https`. ALPN offers exactly the protocol
//! the run speaks (`h2` or `http/1.1`), and an HTTP/2 run refuses a server that does not
//! agree to `h2`.
//!
//! Refuses: system roots (a kith cluster's certificates come from its own CA, so `https`
//! needs `--ca`), and HTTP itself (the callers' hyper handshakes).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::HeaderValue;
use hyper_util::rt::TokioIo;
use kith_client::tls::TlsOptions;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::args::HttpVersion;
use crate::error::BenchError;

/// Sessions remembered for resumption; a run talks to a handful of endpoints.
const SESSIONS_MAX: usize = 64;

/// A parsed kith endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `HOST:PORT`, as the `Host` header and the HTTP/2 authority carry it.
    pub authority: String,
    /// The name the server's certificate must carry; `Some` exactly for `https`.
    server_name: Option<ServerName<'static>>,
}

impl Endpoint {
    /// Parses `http://HOST:PORT` or `https://HOST:PORT` (a trailing `/` allowed).
    pub fn parse(url: &str) -> Result<Endpoint, BenchError> {
        let bad = |why: &str| BenchError::InvalidArgs(format!("kith endpoint {url:?} {why}"));
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(bad("must start with http:// or https://"));
        };
        let authority = rest.trim_end_matches('/');
        let host = match authority.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => host,
            _ => return Err(bad("must be http(s)://HOST:PORT")),
        };
        if authority.contains('/') {
            return Err(bad("must be http(s)://HOST:PORT"));
        }
        let server_name = if tls {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(host.to_owned())
                .map_err(|_| bad("names no valid host for TLS"))?;
            Some(name)
        } else {
            None
        };
        Ok(Endpoint {
            authority: authority.to_owned(),
            server_name,
        })
    }

    pub fn is_tls(&self) -> bool {
        self.server_name.is_some()
    }

    /// The scheme, as an HTTP/2 request's absolute URI carries it.
    pub fn scheme(&self) -> &'static str {
        if self.is_tls() {
            "https"
        } else {
            "http"
        }
    }
}

/// The TLS client configuration of one run, one per HTTP version (they differ only in
/// ALPN) over one session cache.
#[derive(Clone)]
pub struct ClientTls {
    h1: Arc<rustls::ClientConfig>,
    h2: Arc<rustls::ClientConfig>,
}

impl ClientTls {
    /// Trusts the PEM certificates in `ca` and, given `identity` (certificate and key
    /// files), presents that certificate.
    pub fn new(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<ClientTls, BenchError> {
        let config = |e: kith_client::tls::TlsError| BenchError::InvalidArgs(e.to_string());
        let mut options = TlsOptions::trusting(ca).map_err(config)?;
        if let Some((cert, key)) = identity {
            options = options.presenting(cert, key).map_err(config)?;
        }
        let mut h1 = options.client_config(&[b"http/1.1"]).map_err(config)?;
        h1.resumption = rustls::client::Resumption::in_memory_sessions(SESSIONS_MAX);
        // A clone shares the verifier and the session store: rustls resumes a session only
        // with the same verifier, so both versions' connections can resume each other's.
        let mut h2 = h1.clone();
        h2.alpn_protocols = vec![b"h2".to_vec()];
        Ok(ClientTls {
            h1: Arc::new(h1),
            h2: Arc::new(h2),
        })
    }

    fn config(&self, http: HttpVersion) -> Arc<rustls::ClientConfig> {
        match http {
            HttpVersion::Http1 => self.h1.clone(),
            HttpVersion::Http2 => self.h2.clone(),
        }
    }
}

/// A byte stream hyper can run a connection over: TCP, or TLS over TCP.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// An open connection, handshakes done, for `http1::handshake` or `http2::handshake`.
pub type Io = TokioIo<Box<dyn Stream>>;

/// Opens a connection to `endpoint` within `timeout` (TCP connect and TLS handshake
/// together). An `https` endpoint needs `tls`.
pub async fn open(
    endpoint: &Endpoint,
    tls: Option<&ClientTls>,
    http: HttpVersion,
    timeout: Duration,
) -> Result<Io, String> {
    let authority = &endpoint.authority;
    tokio::time::timeout(timeout, async {
        let tcp = TcpStream::connect(authority)
            .await
            .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let Some(name) = &endpoint.server_name else {
            return Ok(TokioIo::new(Box::new(tcp) as Box<dyn Stream>));
        };
        let tls = tls.ok_or_else(|| format!("{authority}: https needs --ca"))?;
        let stream = tokio_rustls::TlsConnector::from(tls.config(http))
            .connect(name.clone(), tcp)
            .await
            .map_err(|e| format!("TLS with {authority}: {e}"))?;
        if http == HttpVersion::Http2 && stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(format!(
                "{authority} does not speak HTTP/2 over TLS (ALPN h2)"
            ));
        }
        Ok(TokioIo::new(Box::new(stream) as Box<dyn Stream>))
    })
    .await
    .map_err(|_| format!("connecting to {authority} timed out"))?
}

/// The `Authorization` header for `token` (`ID.SECRET`), if one is given.
pub fn authorization(token: Option<&str>) -> Result<Option<HeaderValue>, BenchError> {
    token
        .map(|token| {
            HeaderValue::from_str(&format!("Bearer {}", token.trim())).map_err(|_| {
                BenchError::InvalidArgs("the token holds characters a header cannot".into())
            })
        })
        .transpose()
}

#[cfg(test)]
pub mod tests {
    use std::convert::Infallible;
    use std::sync::Mutex;

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper::{Request, Response};
    use hyper_util::rt::TokioExecutor;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::HandshakeKind;
    use tokio::net::TcpListener;

    use super::*;

    /// A self-signed certificate for 127.0.0.1, written to a temp file the client trusts.
    pub struct TestCert {
        pub ca_file: std::path::PathBuf,
        chain: Vec<CertificateDer<'static>>,
        key: Vec<u8>,
    }

    impl TestCert {
        pub fn new(name: &str) -> TestCert {
            let made =
                rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("certificate");
            let ca_file = std::env::temp_dir().join(format!(
                "kith-bench-{name}-{}-{}.crt",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            ));
            std::fs::write(&ca_file, made.cert.pem()).expect("write CA");
            TestCert {
                ca_file,
                chain: vec![made.cert.der().clone()],
                key: made.signing_key.serialize_der(),
            }
        }

        /// A server configuration offering `alpn`, with rustls' default session cache.
        pub fn server_config(&self, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
            let key = PrivateKeyDer::Pkcs8(self.key.clone().into());
            let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), key)
            .expect("server config");
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Arc::new(config)
        }
    }

    impl Drop for TestCert {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.ca_file);
        }
    }

    /// Serves `200 ok` over TLS with `config`, speaking what ALPN agreed (HTTP/1.1 when
    /// nothing was), and records each handshake's kind.
    async fn tls_server(
        config: Arc<rustls::ServerConfig>,
    ) -> (String, Arc<Mutex<Vec<HandshakeKind>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let kinds = Arc::new(Mutex::new(Vec::new()));
        let seen = kinds.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let (_, state) = stream.get_ref();
                    let h2 = state.alpn_protocol() == Some(b"h2");
                    if let Some(kind) = state.handshake_kind() {
                        seen.lock().expect("kinds").push(kind);
                    }
                    let service = service_fn(|_req: Request<hyper::body::Incoming>| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    });
                    let io = TokioIo::new(stream);
                    let _ = if h2 {
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, service)
                            .await
                    } else {
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, service)
                            .await
                    };
                });
            }
        });
        (format!("https://{addr}"), kinds)
    }

    /// One GET of `/` over a new connection; the status.
    async fn get_once(endpoint: &Endpoint, tls: &ClientTls, http: HttpVersion) -> u16 {
        let io = open(endpoint, Some(tls), http, Duration::from_secs(5))
            .await
            .expect("open");
        let uri = format!("{}://{}/", endpoint.scheme(), endpoint.authority);
        let request = || {
            Request::get(&uri)
                .body(Full::new(Bytes::new()))
                .expect("request")
        };
        let response = match http {
            HttpVersion::Http1 => {
                let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .expect("handshake");
                tokio::spawn(conn);
                sender.send_request(request()).await.expect("send")
            }
            HttpVersion::Http2 => {
                let (mut sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                        .await
                        .expect("handshake");
                tokio::spawn(conn);
                sender.send_request(request()).await.expect("send")
            }
        };
        let status = response.status().as_u16();
        // Reading the body also reads the session ticket the server sent after its handshake.
        http_body_util::BodyExt::collect(response.into_body())
            .await
            .expect("body");
        status
    }

    #[test]
    fn endpoints_are_http_or_https_host_port() {
        let plain = Endpoint::parse("http://127.0.0.1:7001/").expect("plain");
        assert_eq!(plain.authority, "127.0.0.1:7001");
        assert!(!plain.is_tls());
        assert_eq!(plain.scheme(), "http");
        let tls = Endpoint::parse("https://127.0.0.1:7001").expect("tls");
        assert!(tls.is_tls());
        assert_eq!(tls.scheme(), "https");
        assert!(Endpoint::parse("https://node-1.example:443").is_ok());
        assert!(Endpoint::parse("https://[::1]:7001").is_ok());
        assert_ne!(plain, tls, "the scheme tells endpoints apart");
        for bad in [
            "127.0.0.1:7001",
            "ftp://127.0.0.1:7001",
            "https://",
            "https://127.0.0.1",
            "https://127.0.0.1:x",
            "http://127.0.0.1:7001/v1",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn tls_connections_speak_what_alpn_agreed_and_resume_sessions() {
        let cert = TestCert::new("conn");
        let tls = ClientTls::new(&cert.ca_file, None).expect("client TLS");
        let (url, kinds) = tls_server(cert.server_config(&[b"h2", b"http/1.1"])).await;
        let endpoint = Endpoint::parse(&url).expect("endpoint");
        for http in [HttpVersion::Http1, HttpVersion::Http2, HttpVersion::Http1] {
            assert_eq!(get_once(&endpoint, &tls, http).await, 200, "{http:?}");
        }
        let kinds = kinds.lock().expect("kinds").clone();
        assert_eq!(kinds.len(), 3);
        assert_eq!(kinds[0], HandshakeKind::Full);
        assert!(
            kinds[1..].iter().all(|k| *k == HandshakeKind::Resumed),
            "later connections resume the first one's session: {kinds:?}"
        );
    }

    #[tokio::test]
    async fn tls_refuses_an_unknown_ca_https_without_ca_and_h2_without_alpn_h2() {
        let cert = TestCert::new("server");
        let other = TestCert::new("other");
        let (url, _) = tls_server(cert.server_config(&[b"http/1.1"])).await;
        let endpoint = Endpoint::parse(&url).expect("endpoint");
        let timeout = Duration::from_secs(5);
        let strangers = ClientTls::new(&other.ca_file, None).expect("client TLS");
        let error = open(&endpoint, Some(&strangers), HttpVersion::Http1, timeout)
            .await
            .err()
            .expect("an unknown CA is refused");
        assert!(error.contains("TLS with"), "{error}");
        let error = open(&endpoint, None, HttpVersion::Http1, timeout)
            .await
            .err()
            .expect("https without a CA");
        assert!(error.contains("--ca"), "{error}");
        let trusting = ClientTls::new(&cert.ca_file, None).expect("client TLS");
        assert!(
            open(&endpoint, Some(&trusting), HttpVersion::Http2, timeout)
                .await
                .is_err()
        );
        assert!(
            open(&endpoint, Some(&trusting), HttpVersion::Http1, timeout)
                .await
                .is_ok()
        );
        // A server that ignores ALPN altogether agrees to nothing: not HTTP/2.
        let (url, _) = tls_server(cert.server_config(&[])).await;
        let endpoint = Endpoint::parse(&url).expect("endpoint");
        let error = open(&endpoint, Some(&trusting), HttpVersion::Http2, timeout)
            .await
            .err()
            .expect("h2 without ALPN");
        assert!(error.contains("HTTP/2"), "{error}");
    }
}
