//! The web UI every node serves: a live cluster dashboard at `/`, a chat page at `/chat`,
//! the job queues at `/jobs` and the files at `/files`; and on nodes started by `kith dev`,
//! the lessons at `/learn` (experiments that break the cluster on purpose, so everywhere
//! else it answers 404 with a page saying so).
//!
//! Plain HTML, CSS and JavaScript modules, embedded in the binary at compile time (no
//! front-end build step). The pages talk to the same public `/v1` API as any client; after a
//! node dies they carry on against another member (the API allows cross-origin requests).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use kith_node::Node;

const DASHBOARD_HTML: &str = include_str!("../web/index.html");
const CHAT_HTML: &str = include_str!("../web/chat.html");
const JOBS_HTML: &str = include_str!("../web/jobs.html");
const FILES_HTML: &str = include_str!("../web/files.html");
const LOGIN_HTML: &str = include_str!("../web/login.html");
const LEARN_HTML: &str = include_str!("../web/learn.html");
const LEARN_REFUSED_HTML: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>kith — lessons need kith dev</title><link rel=\"stylesheet\" href=\"/assets/style.css\">\
</head><body><main><h1>The lessons need <code>kith dev</code></h1><p>The lessons kill, pause \
and cut off nodes, so only a cluster started by <code>kith dev</code> offers them. Run \
<code>kith dev</code> and open <code>/learn</code> on one of its nodes.</p>\
<p><a href=\"/\">Back to the dashboard</a></p></main></body></html>";
const ASSETS: [(&str, &str, &str); 7] = [
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../web/style.css"),
    ),
    (
        "common.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/common.js"),
    ),
    (
        "dashboard.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/dashboard.js"),
    ),
    (
        "chat.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/chat.js"),
    ),
    (
        "jobs.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/jobs.js"),
    ),
    (
        "files.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/files.js"),
    ),
    (
        "learn.js",
        "text/javascript; charset=utf-8",
        include_str!("../web/learn.js"),
    ),
];

fn page(html: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        html,
    )
        .into_response()
}

pub async fn dashboard() -> Response {
    page(DASHBOARD_HTML, "text/html; charset=utf-8")
}

pub async fn chat() -> Response {
    page(CHAT_HTML, "text/html; charset=utf-8")
}

pub async fn jobs() -> Response {
    page(JOBS_HTML, "text/html; charset=utf-8")
}

pub async fn files() -> Response {
    page(FILES_HTML, "text/html; charset=utf-8")
}

pub async fn login() -> Response {
    page(LOGIN_HTML, "text/html; charset=utf-8")
}

/// `GET /learn`: the lessons, only where the playground they drive exists.
pub async fn learn(State(node): State<Arc<Node>>) -> Response {
    if node.config.dev_control.is_none() {
        let mut refused = page(LEARN_REFUSED_HTML, "text/html; charset=utf-8");
        *refused.status_mut() = StatusCode::NOT_FOUND;
        return refused;
    }
    page(LEARN_HTML, "text/html; charset=utf-8")
}

pub async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, content_type, body)| page(body, content_type))
        .ok_or_else(|| ApiError::not_found(format!("no asset '{name}'")))
}
