//! Accepting connections on the node's one port, plain or TLS.
//!
//! Owns: the TCP accept loop, `TCP_NODELAY` on every connection, the TLS handshake (with
//! `kith serve --tls`), and the [`Peer`] each connection carries into its requests
//! (axum's `ConnectInfo<Peer>`): its address and what its client certificate says.
//!
//! Bounds: handshakes run on their own tasks, at most [`HANDSHAKES_IN_FLIGHT_MAX`] at once
//! (a connection past that is closed at once), each within [`HANDSHAKE_TIMEOUT`], so a
//! client that opens connections and says nothing holds neither the accept loop nor memory.
//!
//! Refuses: deciding who may use which route ([`crate::peer::server::members_only`]) and
//! serving HTTP (`kith-api` hands these listeners to axum).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::tls::{Peer, PeerCert};
use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;

/// TLS handshakes in progress at once.
pub const HANDSHAKES_IN_FLIGHT_MAX: usize = 256;
/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Plain TCP: every connection's [`Peer`] has no certificate.
pub struct PlainListener(pub TcpListener);

impl Listener for PlainListener {
    type Io = TcpStream;
    type Addr = Peer;

    async fn accept(&mut self) -> (TcpStream, Peer) {
        loop {
            match self.0.accept().await {
                Ok((stream, remote)) => {
                    nodelay(&stream);
                    return (stream, Peer { remote, cert: None });
                }
                Err(e) => accept_failed(e).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Peer> {
        Ok(Peer {
            remote: self.0.local_addr()?,
            cert: None,
        })
    }
}

/// TLS: connections come out of [`TlsListener::accept`] after their handshake, which runs
/// on a task of its own.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(accept_loop(
            tcp,
            tokio_rustls::TlsAcceptor::from(config),
            tx,
        ));
        Ok(TlsListener { local, ready })
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, Peer)>,
) {
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES_IN_FLIGHT_MAX));
    loop {
        let (stream, remote) = tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            // The server has stopped: stop accepting (and free the port).
            () = ready.closed() => return,
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            tracing::debug!(%remote, "too many TLS handshakes in progress; closing");
            continue;
        };
        nodelay(&stream);
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            let stream = match handshake.await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            drop(permit);
            // The verifier already checked the chain against the cluster CA; what is left
            // is to read who the certificate names.
            let cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(PeerCert::of);
            let _ = ready.send((stream, Peer { remote, cert })).await;
        });
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Peer) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop ends only when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Peer> {
        Ok(Peer {
            remote: self.local,
            cert: None,
        })
    }
}

impl Connected<IncomingStream<'_, PlainListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, PlainListener>) -> Peer {
        stream.remote_addr().clone()
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Peer {
        stream.remote_addr().clone()
    }
}

/// Answers go out as soon as they are written: with Nagle's algorithm on, a small write
/// behind an unacknowledged one waits for the peer's delayed ACK (up to 40 ms on Linux).
fn nodelay(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY on an accepted connection");
    }
}

/// An accept error (e.g. out of file descriptors) is logged and retried after a pause, so
/// the loop does not spin.
async fn accept_failed(e: std::io::Error) {
    tracing::warn!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}
