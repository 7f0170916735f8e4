//! kith-api: the node's one HTTP port.
//!
//! Owns:
//! - [`routes`]: the public `/v1/…` JSON API (kv, health, cluster, membership, ledger);
//! - [`watch`]: `/v1/watch`, the Server-Sent Events stream of changes;
//! - [`jobs`]: the job queue — enqueue, claim (long poll), reports with fencing, inspection;
//! - [`files`]: streamed file upload and download (ranges, ETags), listings, share links,
//!   and the peer routes that move chunks between nodes;
//! - [`rooms`]: chat rooms — post, history, and the live `/v1/rooms/{room}/stream`;
//! - [`internal`]: the `/internal/…` peer routes (Raft RPCs and forwarded requests, postcard
//!   bodies) — the server half of `kith_node::network`;
//! - [`web`]: the embedded web UI (dashboard, chat); [`metrics`]: `/metrics` for Prometheus;
//! - [`dev`]: the playground routes, enabled only on nodes started by `kith dev`;
//! - [`error`]: every error a client can see, mapped to an HTTP status in one `match`.
//!
//! Refuses: consensus, storage and forwarding decisions (that is `kith-node`). Nothing here
//! changes state except by calling [`kith_node::Node`].

pub mod dev;
pub mod error;
pub mod files;
pub mod internal;
pub mod jobs;
pub mod metrics;
pub mod rooms;
pub mod routes;
pub mod watch;
pub mod web;

use std::future::Future;
use std::sync::Arc;

use axum::serve::ListenerExt;
use axum::Router;
use kith_node::Node;
use tokio::net::TcpListener;

/// The complete router: public API and peer routes.
pub fn router(node: Arc<Node>) -> Router {
    // CORS wraps everything, fallbacks included, so a browser's preflight for any route
    // gets its answer.
    routes::router(node.clone())
        .merge(files::router(node.clone()))
        .merge(internal::router(node.clone()))
        .merge(files::internal_router(node))
        .layer(routes::cors())
}

/// Serves `node` on `listener` until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Answers go out as soon as they are written: with Nagle's algorithm on, a small write
    // behind an unacknowledged one waits for the peer's delayed ACK (up to 40 ms on Linux).
    let listener = listener.tap_io(|stream| {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on an accepted connection");
        }
    });
    axum::serve(listener, router(node))
        .with_graceful_shutdown(shutdown)
        .await
}
