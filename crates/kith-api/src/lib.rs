//! kith-api: the node's one HTTP port.
//!
//! Owns:
//! - [`routes`]: the table of every public route and the layers around them;
//! - [`kv`]: the key-value routes; [`cluster`]: health, cluster view, membership, ledger;
//! - [`params`]: the query extractor and parameter parsing every route shares; [`sse`]: what
//!   the streams share (`Last-Event-ID`);
//! - [`watch`]: `/v1/watch`, the Server-Sent Events stream of changes;
//! - [`jobs`]: the job queue — enqueue, claim (long poll), reports with fencing, inspection;
//! - [`files`]: streamed file upload and download (ranges, ETags), listings, share links;
//! - [`rooms`]: chat rooms — post, history, and the live `/v1/rooms/{room}/stream`;
//! - [`web`]: the embedded web UI (dashboard, chat); [`metrics`]: `/metrics` for Prometheus;
//! - [`dev`]: the playground routes, enabled only on nodes started by `kith dev`;
//! - the peer routes (`/internal/…`) are `kith_node::peer::server`'s: this crate only
//!   mounts them;
//! - [`access`]: every public route's access rule and the token check;
//!   [`tokens`]: creating, listing and revoking tokens, and the login cookie;
//! - [`backup`]: `/v1/backup`, a consistent copy of the state streamed to the client;
//! - [`error`]: every error a client can see, mapped to an HTTP status in one place.
//!
//! Refuses: consensus, storage and forwarding decisions (that is `kith-node`). Nothing here
//! changes state except by calling [`kith_node::Node`], and nothing reads it except through
//! [`kith_node::Node::read`], which runs the read's barrier first.

pub mod access;
pub mod backup;
pub mod cluster;
pub mod dev;
pub mod error;
pub mod files;
pub mod jobs;
pub mod kv;
pub mod metrics;
pub mod params;
pub mod rooms;
pub mod routes;
pub mod sse;
pub mod tokens;
pub mod watch;
pub mod web;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use kith_node::tls::Peer;
use kith_node::Node;
use tokio::net::TcpListener;

/// The complete router: public API and peer routes.
pub fn router(node: Arc<Node>) -> Router {
    router_and_rules(node).0
}

/// The complete router, and every public route's access rule (what `access::authorize`
/// enforces, and what a test walks to see that no route was left undecided).
pub fn router_and_rules(node: Arc<Node>) -> (Router, access::RuleTable) {
    let public = routes::router(node.clone());
    let files = files::router(node.clone());
    let rules = access::RuleTable::new(routes::rules());
    // CORS wraps everything, fallbacks included, so a browser's preflight for any route
    // gets its answer; `nosniff` outermost, so no answer at all goes without it.
    let router = public
        .merge(files)
        .merge(kith_node::peer::server::router(node.clone()))
        .merge(dev::supervisor_router(node.clone()))
        // After the merges: axum gives this fallback only to routes already registered, and
        // every route's wrong method must get the JSON error, the files routes' included.
        .method_not_allowed_fallback(routes::wrong_method)
        // Every public route's token check (on when the node has TLS).
        .layer(axum::middleware::from_fn_with_state(
            (node.clone(), rules.clone()),
            access::authorize,
        ))
        // Every `/internal` path, known or not, answers only members when TLS is on.
        .layer(axum::middleware::from_fn_with_state(
            node.clone(),
            kith_node::peer::server::members_only,
        ))
        .layer(axum::middleware::from_fn_with_state(
            node.clone(),
            known_host,
        ))
        .layer(routes::cors(node))
        .layer(axum::middleware::map_response(nosniff));
    (router, rules)
}

/// A public request must name this node in `Host` (see `Node::accepts_host`): a page whose
/// DNS name an attacker pointed at the node (DNS rebinding) gets 421 and nothing else. Peer
/// routes are exempt (peers name each other by address, and only members get through).
async fn known_host(
    axum::extract::State(node): axum::extract::State<Arc<Node>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if request.uri().path().starts_with("/internal") {
        return next.run(request).await;
    }
    // HTTP/2 carries the name as the URI's authority.
    let host = request
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    match host {
        Some(host) if !node.accepts_host(&host) => error::ApiError::new(
            axum::http::StatusCode::MISDIRECTED_REQUEST,
            "unknown_host",
            format!(
                "this node is not known as '{host}'; start it with --host {host} if that is \
                 one of its names"
            ),
        )
        .into_response(),
        _ => next.run(request).await,
    }
}

/// Every answer says `X-Content-Type-Options: nosniff`: a browser takes the declared
/// Content-Type at its word and never guesses an uploaded file (or a JSON error that
/// echoes input) into HTML or script.
async fn nosniff(mut response: axum::response::Response) -> axum::response::Response {
    response.headers_mut().insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    response
}

/// Serves `node` on `listener` until `shutdown` resolves, then finishes in-flight requests.
/// With the node's TLS configuration the port speaks only TLS (see [`kith_node::listen`]).
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(node.clone()).into_make_service_with_connect_info::<Peer>();
    match &node.config.tls {
        Some(tls) => {
            let listener = kith_node::listen::TlsListener::new(listener, tls.server_config())?;
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        None => {
            axum::serve(kith_node::listen::PlainListener(listener), app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}
