//! Client tokens: making one (its id and secret from the operating system's generator, only
//! the secret's hash written through Raft) and revoking one. What a token allows is
//! `kith_core::auth`; checking a presented token is [`Node::authenticate`].

use kith_core::auth::{Grant, Role, TokenCommand, TokenOutcome, TokenRecord};
use kith_core::{Command, Response};

use crate::{Node, NodeError};

/// Bytes of randomness in a token's id and in its secret.
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 16;

impl Node {
    /// Creates a token; returns its record and the token itself (`ID.SECRET`), which is
    /// never stored and so can be shown only now.
    pub async fn create_token(
        &self,
        role: Role,
        grants: Vec<Grant>,
        ttl_s: Option<u64>,
        name: String,
    ) -> Result<(TokenRecord, String), NodeError> {
        let now = crate::node::wall_clock_ms();
        let expires_ms = match ttl_s {
            Some(0) => {
                return Err(NodeError::InvalidInput(
                    kith_core::limits::InvalidInput::OutOfRange {
                        what: "ttl",
                        expected: "at least 1 second".into(),
                    },
                ))
            }
            Some(s) => Some(now.saturating_add(s.saturating_mul(1000))),
            None => None,
        };
        let id = hex(&random::<ID_BYTES>()?);
        let secret = hex(&random::<SECRET_BYTES>()?);
        let record = TokenRecord {
            id: id.clone(),
            name,
            role,
            grants,
            hash: *blake3::hash(secret.as_bytes()).as_bytes(),
            created_ms: now,
            expires_ms,
            revoked_ms: None,
        };
        let command = Command::Token(TokenCommand::Create(record.clone()));
        command.validate(&kith_core::limits::Limits::CEILING)?;
        match self.write(command).await? {
            Response::Token(TokenOutcome::Created) => Ok((record, format!("{id}.{secret}"))),
            Response::Token(TokenOutcome::Refused { reason }) => Err(NodeError::InvalidInput(
                kith_core::limits::InvalidInput::Refused {
                    message: reason,
                    too_large: false,
                },
            )),
            Response::Rejected { reason } => Err(NodeError::Internal(reason)),
            other => Err(NodeError::Internal(format!("unexpected answer {other:?}"))),
        }
    }

    /// Revokes token `id` (its record stays, so the id is never reused); returns whether a
    /// live token was revoked.
    pub async fn revoke_token(&self, id: &str) -> Result<bool, NodeError> {
        let command = Command::Token(TokenCommand::Revoke { id: id.to_owned() });
        command.validate(&kith_core::limits::Limits::CEILING)?;
        match self.write(command).await? {
            Response::Token(TokenOutcome::Revoked { revoked }) => Ok(revoked),
            other => Err(NodeError::Internal(format!("unexpected answer {other:?}"))),
        }
    }
}

fn random<const N: usize>() -> Result<[u8; N], NodeError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| NodeError::Internal(format!("randomness: {e}")))?;
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
