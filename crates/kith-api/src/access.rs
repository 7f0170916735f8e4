//! Who may call which public route: every route is registered together with its [`Rule`],
//! so no route can exist without a decision, and [`authorize`] applies the rules.
//!
//! Owns: the [`Routes`] builder every public router is made with (a route without a rule
//! does not compile), the rule of each route (open, or what its token needs: read or write
//! of a named key, room, queue or file; work on a queue; monitoring; administration), and
//! the check itself: `Authorization: Bearer ID.SECRET` (or the `kith_token` cookie the login
//! page sets) is looked up in the replicated token table ([`kith_node::Node::authenticate`])
//! and its record asked [`kith_core::auth::TokenRecord::allows`]. Missing or unknown → 401,
//! not allowed → 403, both with the JSON error body.
//!
//! Authentication is on when the node has TLS (`kith serve --tls`); without it every route
//! is open (loopback, or `--insecure`), as before. Refuses: the peer routes (`/internal`,
//! which only members' certificates reach: `kith_node::peer::server::members_only`).

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::handler::Handler;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodFilter;
use axum::Router;

use crate::error::ApiError;
use kith_core::auth::{Capability, Need};
use kith_node::Node;

/// Where a rule finds the name it limits (a key, a room, a queue, a file path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Name {
    /// A path parameter, e.g. `key` of `/v1/kv/{*key}`.
    Param(&'static str),
    /// A query parameter (absent = ""), e.g. `prefix` of `/v1/kv?prefix=`.
    Query(&'static str),
    /// Every name of the capability (a listing of all rooms): only an unlimited token.
    All,
    /// The queue of the job named by the path parameter `id`.
    QueueOfJob,
}

/// What a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// No token: load-balancer probes, share links (capabilities by design), the static
    /// web pages and the login (the pages hold no data; what they fetch needs a token).
    Open,
    Monitor,
    Admin,
    /// Membership changes: an admin token, or — without a token — a node certificate of
    /// this cluster, which the handler checks (`Node::may_change_membership`), so a node
    /// started with `--join` adds itself.
    Membership,
    Read(Capability, Name),
    Write(Capability, Name),
    Work(Name),
    /// etcd's v3 API (`kith_etcd`): its handlers check the token themselves, where etcd's
    /// clients send it (gRPC metadata `token`, or `Authorization`), against the key range
    /// each call names — which a path cannot say (a gRPC call's key is in its body).
    Etcd,
}

/// One route's method, path and rule.
pub type RouteRule = (Method, &'static str, Rule);

/// A router under construction, with the rule of every route it holds.
pub struct Routes {
    router: Router<Arc<Node>>,
    rules: Vec<RouteRule>,
}

impl Default for Routes {
    fn default() -> Self {
        Routes::new()
    }
}

impl Routes {
    pub fn new() -> Self {
        Routes {
            router: Router::new(),
            rules: Vec::new(),
        }
    }

    /// Registers `handler` for `method` on `path`, decided by `rule`.
    pub fn on<H, T>(mut self, method: Method, path: &'static str, rule: Rule, handler: H) -> Self
    where
        H: Handler<T, Arc<Node>>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("a standard method");
        self.router = self.router.route(path, axum::routing::on(filter, handler));
        self.rules.push((method, path, rule));
        self
    }

    pub fn get<H: Handler<T, Arc<Node>>, T: 'static>(
        self,
        path: &'static str,
        rule: Rule,
        handler: H,
    ) -> Self {
        self.on(Method::GET, path, rule, handler)
    }

    pub fn post<H: Handler<T, Arc<Node>>, T: 'static>(
        self,
        path: &'static str,
        rule: Rule,
        handler: H,
    ) -> Self {
        self.on(Method::POST, path, rule, handler)
    }

    pub fn put<H: Handler<T, Arc<Node>>, T: 'static>(
        self,
        path: &'static str,
        rule: Rule,
        handler: H,
    ) -> Self {
        self.on(Method::PUT, path, rule, handler)
    }

    pub fn delete<H: Handler<T, Arc<Node>>, T: 'static>(
        self,
        path: &'static str,
        rule: Rule,
        handler: H,
    ) -> Self {
        self.on(Method::DELETE, path, rule, handler)
    }

    /// The finished router and its rules.
    pub fn finish(self) -> (Router<Arc<Node>>, Vec<RouteRule>) {
        (self.router, self.rules)
    }
}

/// Every public route's rule, as the routers registered them.
#[derive(Clone, Default)]
pub struct RuleTable(Arc<Vec<RouteRule>>);

impl RuleTable {
    pub fn new(rules: Vec<RouteRule>) -> Self {
        RuleTable(Arc::new(rules))
    }

    /// Every (method, path, rule) registered.
    pub fn all(&self) -> &[RouteRule] {
        &self.0
    }

    fn has_path(&self, path: &str) -> bool {
        self.0.iter().any(|(_, p, _)| *p == path)
    }

    fn rule(&self, method: &Method, path: &str) -> Option<Rule> {
        // HEAD is answered by a GET route.
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        self.0
            .iter()
            .find(|(m, p, _)| m == method && *p == path)
            .map(|(_, _, r)| *r)
    }
}

/// The name of the cookie the login page sets.
pub const TOKEN_COOKIE: &str = "kith_token";

/// Checks a request against its route's rule (see the module docs).
pub async fn authorize(
    State((node, rules)): State<(Arc<Node>, RuleTable)>,
    request: Request,
    next: Next,
) -> Response {
    if !node.auth_required() || request.uri().path().starts_with("/internal") {
        return next.run(request).await;
    }
    // A path no route matched is answered by the fallback (404), which holds nothing.
    let Some(matched) = request.extensions().get::<MatchedPath>().cloned() else {
        return next.run(request).await;
    };
    let Some(rule) = rules.rule(request.method(), matched.as_str()) else {
        // The method is not one the path serves: the wrong-method answer, which holds
        // nothing either.
        if rules.has_path(matched.as_str()) {
            return next.run(request).await;
        }
        // A route registered outside `Routes` has no rule: refused, never open by default.
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "undecided",
            format!("route {} has no access rule", matched.as_str()),
        )
        .into_response();
    };
    if rule == Rule::Open || rule == Rule::Etcd {
        return next.run(request).await;
    }
    let (token, from_cookie) = match presented_token(&request) {
        Some(found) => found,
        // A node certificate of this cluster instead of a token: the handler decides by it.
        None if rule == Rule::Membership && has_cluster_cert(&node, &request) => {
            return next.run(request).await
        }
        None => return unauthorized("this route needs a token: Authorization: Bearer TOKEN"),
    };
    if from_cookie && !same_origin(&request) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_site",
            "a request authenticated by the login cookie must come from this node's own pages",
        )
        .into_response();
    }
    let record = match node.authenticate(&token) {
        Ok(record) => record,
        Err(reason) => return unauthorized(&reason),
    };
    let need = match need_of(&node, rule, &request, &matched) {
        Ok(need) => need,
        Err(e) => return e.into_response(),
    };
    if !record.allows(&need, kith_node::wall_clock_ms()) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "token {} ({}) may not do this: it needs {}",
                record.id,
                record.role.name(),
                describe(&need)
            ),
        )
        .into_response();
    }
    let mut request = request;
    request.extensions_mut().insert(Authenticated(record));
    next.run(request).await
}

/// The token a request was authorized with, for handlers that decide more themselves.
#[derive(Clone, Debug)]
pub struct Authenticated(pub kith_core::auth::TokenRecord);

fn has_cluster_cert(node: &Node, request: &Request) -> bool {
    let cert = request
        .extensions()
        .get::<axum::extract::ConnectInfo<kith_node::tls::Peer>>()
        .and_then(|info| info.0.cert.clone());
    match (cert, &node.config.tls) {
        (Some(cert), Some(tls)) => tls.same_cluster(&cert),
        _ => false,
    }
}

fn unauthorized(message: &str) -> Response {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message.to_owned()).into_response()
}

/// The token in `Authorization: Bearer`, or else in the login cookie (then `true`).
fn presented_token(request: &Request) -> Option<(String, bool)> {
    let headers = request.headers();
    if let Some(value) = headers.get(axum::http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let token = value.strip_prefix("Bearer ")?;
        return Some((token.trim().to_owned(), false));
    }
    let cookies = headers.get(axum::http::header::COOKIE)?.to_str().ok()?;
    cookies.split(';').find_map(|c| {
        let (name, value) = c.trim().split_once('=')?;
        (name == TOKEN_COOKIE).then(|| (value.to_owned(), true))
    })
}

/// Whether a request carrying the login cookie comes from this node's own pages: reads
/// always may (they change nothing and a foreign page cannot read the answer without
/// CORS); anything else must say `Sec-Fetch-Site: same-origin`, or carry an `Origin` naming
/// the host it was sent to.
fn same_origin(request: &Request) -> bool {
    if request.method() == Method::GET || request.method() == Method::HEAD {
        return true;
    }
    let headers = request.headers();
    if let Some(site) = headers.get("sec-fetch-site") {
        return site == "same-origin";
    }
    let (Some(origin), Some(host)) = (
        headers
            .get(axum::http::header::ORIGIN)
            .and_then(|o| o.to_str().ok()),
        headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok()),
    ) else {
        return false;
    };
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority == host)
}

/// What `rule` needs for this request.
fn need_of(
    node: &Node,
    rule: Rule,
    request: &Request,
    matched: &MatchedPath,
) -> Result<Need, ApiError> {
    let name = |name: Name| -> Result<String, ApiError> {
        match name {
            Name::Param(param) => Ok(path_param(matched.as_str(), request.uri().path(), param)),
            Name::Query(key) => Ok(query_param(request.uri().query().unwrap_or(""), key)),
            Name::All => Ok(String::new()),
            Name::QueueOfJob => {
                let id = path_param(matched.as_str(), request.uri().path(), "id");
                let id: u64 = id.parse().map_err(|_| {
                    ApiError::bad_request(format!("job id must be an integer, got '{id}'"))
                })?;
                Ok(node
                    .read_stale()
                    .job(id)?
                    .map(|job| job.queue)
                    .unwrap_or_default())
            }
        }
    };
    Ok(match rule {
        Rule::Open | Rule::Monitor | Rule::Etcd => Need::Monitor,
        Rule::Admin | Rule::Membership => Need::Admin,
        Rule::Read(cap, n) => Need::Read(cap, name(n)?),
        Rule::Write(cap, n) => Need::Write(cap, name(n)?),
        Rule::Work(n) => Need::Work(name(n)?),
    })
}

fn describe(need: &Need) -> String {
    match need {
        Need::Monitor => "the monitor role".into(),
        Need::Admin => "the admin role".into(),
        Need::Read(cap, name) => format!("to read {}:{name}", cap.name()),
        Need::Write(cap, name) => format!("to write {}:{name}", cap.name()),
        Need::Work(queue) => format!("to work on queue {queue}"),
    }
}

/// The value of `{param}` (or `{*param}`) of `pattern` in `path`, percent-decoded.
fn path_param(pattern: &str, path: &str, param: &str) -> String {
    let mut pattern_parts = pattern.split('/');
    let mut path_parts = path.split('/');
    loop {
        match (pattern_parts.next(), path_parts.next()) {
            (Some(p), Some(v)) if p == format!("{{*{param}}}") => {
                let rest: Vec<&str> = std::iter::once(v).chain(path_parts).collect();
                return percent_decode(&rest.join("/"));
            }
            (Some(p), Some(v)) if p == format!("{{{param}}}") => return percent_decode(v),
            (Some(_), Some(_)) => {}
            _ => return String::new(),
        }
    }
}

fn query_param(query: &str, key: &str) -> String {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(&v.replace('+', " ")))
        .unwrap_or_default()
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_path_and_the_query() {
        assert_eq!(
            path_param("/v1/kv/{*key}", "/v1/kv/app/a%20b", "key"),
            "app/a b"
        );
        assert_eq!(
            path_param("/v1/queues/{q}/claim", "/v1/queues/thumbs/claim", "q"),
            "thumbs"
        );
        assert_eq!(path_param("/v1/queues/{q}/claim", "/v1/queues", "q"), "");
        assert_eq!(query_param("limit=3&prefix=app%2F", "prefix"), "app/");
        assert_eq!(query_param("prefix", "prefix"), "");
        assert_eq!(query_param("", "prefix"), "");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
        assert_eq!(percent_decode("a%4"), "a%4");
        assert_eq!(percent_decode("%é"), "%é");
    }
}
