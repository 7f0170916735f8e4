//! Query and path parameters shared by the routes: the [`Q`] extractor, read consistency,
//! listing limits and resume positions.
//!
//! Owns: turning a client's parameter into a typed value or a JSON 400 that names the
//! parameter. Refuses: anything that reads the node (this is a leaf: it imports no handler).

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use kith_node::Consistency;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// `Query<T>` whose rejection is a JSON 400.
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Q(v))
            .map_err(|e| ApiError::bad_request(format!("malformed query: {}", e.body_text())))
    }
}

/// `?consistency=`: `linearizable` (the default) or `stale`.
pub(crate) fn parse_consistency(value: Option<&str>) -> Result<Consistency, ApiError> {
    match value {
        None | Some("linearizable") => Ok(Consistency::Linearizable),
        Some("stale") => Ok(Consistency::Stale),
        Some(other) => Err(ApiError::bad_request(format!(
            "consistency must be 'linearizable' or 'stale', not '{other}'"
        ))),
    }
}

/// A listing's `limit`: `default` when absent, else 1 to `max`.
pub(crate) fn parse_limit(
    limit: Option<usize>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match limit.unwrap_or(default) {
        limit @ 1.. if limit <= max => Ok(limit),
        _ => Err(ApiError::bad_request(format!(
            "limit must be between 1 and {max}"
        ))),
    }
}

/// The position after `n`, a revision or seq a client resumes after: 400 when `n` is the
/// largest integer, which nothing can follow.
pub(crate) fn next_after(n: u64, what: &str) -> Result<u64, ApiError> {
    n.checked_add(1).ok_or_else(|| {
        ApiError::bad_request(format!(
            "{what} must be below {}; nothing can follow it",
            u64::MAX
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn consistency_defaults_to_linearizable() {
        assert_eq!(parse_consistency(None).unwrap(), Consistency::Linearizable);
        assert_eq!(
            parse_consistency(Some("linearizable")).unwrap(),
            Consistency::Linearizable
        );
        assert_eq!(
            parse_consistency(Some("stale")).unwrap(),
            Consistency::Stale
        );
        let e = parse_consistency(Some("eventual")).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(
            e.message,
            "consistency must be 'linearizable' or 'stale', not 'eventual'"
        );
    }

    #[test]
    fn limit_is_one_to_max() {
        assert_eq!(parse_limit(None, 100, 1000).unwrap(), 100);
        assert_eq!(parse_limit(Some(1), 100, 1000).unwrap(), 1);
        assert_eq!(parse_limit(Some(1000), 100, 1000).unwrap(), 1000);
        for bad in [0, 1001] {
            let e = parse_limit(Some(bad), 100, 1000).unwrap_err();
            assert_eq!(e.message, "limit must be between 1 and 1000");
        }
    }

    #[test]
    fn nothing_follows_the_largest_position() {
        assert_eq!(next_after(0, "after").unwrap(), 1);
        assert_eq!(next_after(u64::MAX - 1, "after").unwrap(), u64::MAX);
        let e = next_after(u64::MAX, "after").unwrap_err();
        assert_eq!(e.code, "bad_request");
        assert!(
            e.message.starts_with("after must be below"),
            "{}",
            e.message
        );
    }
}
