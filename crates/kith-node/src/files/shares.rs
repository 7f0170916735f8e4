//! Share links: create, revoke and resolve a token that downloads one file until it
//! expires. Tokens are random; the deadline is stamped by the leader when the link commits.
//!
//! Refuses: deciding a share's lifetime rules (kith-core's `FileCommand::Share`) and HTTP.

use crate::node::Consistency;
use crate::{Node, NodeError};
use kith_core::files::{self, FileCommand, FileOutcome, Manifest, Share};
use kith_core::{Command, Response};

use super::file_outcome_error;

/// What a share token leads to.
#[derive(Debug)]
pub enum ShareLookup {
    Found(Share, Manifest),
    Unknown,
    Expired,
    /// The share exists but its file was deleted.
    FileGone(Share),
}

impl Node {
    /// Creates a share link for `path` living `ttl_s` seconds. `None` when there is no such
    /// file.
    pub async fn share_file(&self, path: &str, ttl_s: u64) -> Result<Option<Share>, NodeError> {
        files::validate_path(path)?;
        if ttl_s == 0 || ttl_s > files::SHARE_TTL_S_MAX {
            return Err(kith_core::limits::InvalidInput::TtlOutOfRange {
                got: ttl_s,
                max: files::SHARE_TTL_S_MAX,
            }
            .into());
        }
        let mut token = [0u8; 16];
        getrandom::fill(&mut token)
            .map_err(|e| NodeError::Internal(format!("random token: {e}")))?;
        let token: String = token.iter().map(|b| format!("{b:02x}")).collect();
        let command = Command::File(FileCommand::Share {
            token: token.clone(),
            path: path.to_owned(),
            ttl_ms: ttl_s * 1000,
        });
        match self.write(command).await? {
            Response::File(FileOutcome::Shared { expires_at_ms }) => Ok(Some(Share {
                token,
                path: path.to_owned(),
                expires_at_ms,
            })),
            Response::File(FileOutcome::NoSuchFile) => Ok(None),
            other => Err(file_outcome_error(other)),
        }
    }

    /// Revokes a share link; returns whether it existed.
    pub async fn unshare(&self, token: &str) -> Result<bool, NodeError> {
        let command = Command::File(FileCommand::Unshare {
            token: token.to_owned(),
        });
        match self.write(command).await? {
            Response::File(FileOutcome::Unshared { revoked }) => Ok(revoked),
            other => Err(file_outcome_error(other)),
        }
    }

    /// Resolves a share token (linearizably: a revoked link stops working everywhere at
    /// once). Expiry is judged by this node's clock against the leader-stamped deadline.
    pub async fn lookup_share(&self, token: &str) -> Result<ShareLookup, NodeError> {
        if token.len() != 32 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(ShareLookup::Unknown);
        }
        let state = self.read(Consistency::Linearizable).await?;
        let Some(share) = state.share(token)? else {
            return Ok(ShareLookup::Unknown);
        };
        if share.expires_at_ms <= crate::node::wall_clock_ms() {
            return Ok(ShareLookup::Expired);
        }
        match state.file(&share.path)? {
            Some(manifest) => Ok(ShareLookup::Found(share, manifest)),
            None => Ok(ShareLookup::FileGone(share)),
        }
    }
}
