//! Client tokens and what they allow.
//!
//! Owns: the token record the cluster stores (through Raft: only a hash of the secret, never
//! the secret), its roles and capability prefixes, the commands that create and revoke one,
//! and [`TokenRecord::allows`], the one rule that says whether a token may do what a request
//! needs ([`Need`]). Refuses: knowing routes (the HTTP layer maps each route to a [`Need`]) and
//! randomness (tokens are made by the caller, which has an operating system to ask).
//!
//! A token is `ID.SECRET`: `ID` names its record (16 hex digits, shown in listings), `SECRET`
//! is 128 random bits in hex, shown once at creation. The record keeps BLAKE3(SECRET).

use serde::{Deserialize, Serialize};

/// Longest token name.
pub const NAME_BYTES_MAX: usize = 128;
/// Most capability prefixes one token may carry.
pub const GRANTS_MAX: usize = 32;
/// Longest capability prefix.
pub const PREFIX_BYTES_MAX: usize = 1024;
/// Tokens the cluster keeps (live and revoked), so the table has a bound.
pub const TOKENS_MAX: u64 = 10_000;
/// The id of the first administrator's token, which `kith init` writes (`admin.token`).
pub const BOOTSTRAP_ID: &str = "admin";

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything: membership, tokens, the playground, backups.
    Admin,
    /// Read and write, within its grants when it has any.
    Write,
    /// Read, within its grants when it has any.
    Read,
    /// Claim, heartbeat, complete and fail jobs on the queues its grants name.
    Worker,
    /// `/metrics`, the cluster view and the dashboard.
    Monitor,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Write,
        Role::Read,
        Role::Worker,
        Role::Monitor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Write => "write",
            Role::Read => "read",
            Role::Worker => "worker",
            Role::Monitor => "monitor",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }
}

/// The kinds of named things a grant can limit: `kv:`, `rooms:`, `queues:`, `files:`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    Kv,
    Rooms,
    Queues,
    Files,
}

impl Capability {
    pub const ALL: [Capability; 4] = [
        Capability::Kv,
        Capability::Rooms,
        Capability::Queues,
        Capability::Files,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Capability::Kv => "kv",
            Capability::Rooms => "rooms",
            Capability::Queues => "queues",
            Capability::Files => "files",
        }
    }
}

/// `CAP:PREFIX`: the token's reads or writes of `CAP` are limited to names starting with
/// `PREFIX`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub cap: Capability,
    pub prefix: String,
}

impl Grant {
    /// Parses `kv:app/`.
    pub fn parse(s: &str) -> Result<Grant, String> {
        let (cap, prefix) = s
            .split_once(':')
            .ok_or_else(|| format!("'{s}' is not CAP:PREFIX (e.g. kv:app/)"))?;
        let cap = Capability::ALL
            .into_iter()
            .find(|c| c.name() == cap)
            .ok_or_else(|| {
                format!("unknown capability '{cap}': one of kv, rooms, queues, files")
            })?;
        Ok(Grant {
            cap,
            prefix: prefix.to_owned(),
        })
    }
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.cap.name(), self.prefix)
    }
}

/// One token as the cluster stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// Limits on the role's reads and writes; none means no limit.
    pub grants: Vec<Grant>,
    /// BLAKE3 of the secret.
    pub hash: [u8; 32],
    pub created_ms: u64,
    /// The token stops working once the cluster's clock passes this.
    pub expires_ms: Option<u64>,
    /// Set when the token was revoked (the record stays, so its id is never reused).
    pub revoked_ms: Option<u64>,
}

/// What a request needs from its token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// The cluster view, metrics, the dashboard and the other web pages.
    Monitor,
    /// Reading `name` (a key, a key prefix, a room, a queue, a file path or path prefix).
    Read(Capability, String),
    /// Changing `name`.
    Write(Capability, String),
    /// Taking part in the work of queue `name`: claim, heartbeat, complete, fail.
    Work(String),
    /// Membership, tokens, the playground, shares listing: administrators only.
    Admin,
}

impl TokenRecord {
    /// Whether this token, at cluster time `now_ms`, may do what `need` asks.
    pub fn allows(&self, need: &Need, now_ms: u64) -> bool {
        if self.revoked_ms.is_some() || self.expires_ms.is_some_and(|at| now_ms >= at) {
            return false;
        }
        match (self.role, need) {
            (Role::Admin, _) => true,
            (_, Need::Admin) => false,
            (_, Need::Monitor) => true,
            (Role::Write, Need::Read(cap, name) | Need::Write(cap, name)) => {
                self.granted(*cap, name)
            }
            // A writer may also run jobs of the queues it may write.
            (Role::Write, Need::Work(queue)) => self.granted(Capability::Queues, queue),
            (Role::Read, Need::Read(cap, name)) => self.granted(*cap, name),
            (Role::Worker, Need::Work(queue)) => self.granted(Capability::Queues, queue),
            (Role::Worker, Need::Read(Capability::Queues, queue)) => {
                self.granted(Capability::Queues, queue)
            }
            _ => false,
        }
    }

    /// Whether `name` of `cap` is within the grants (a token without grants has no limit;
    /// one with grants only for other capabilities has none for `cap`).
    fn granted(&self, cap: Capability, name: &str) -> bool {
        let mut of_cap = self.grants.iter().filter(|g| g.cap == cap).peekable();
        if self.grants.is_empty() {
            return true;
        }
        if of_cap.peek().is_none() {
            return false;
        }
        of_cap.any(|g| name.starts_with(&g.prefix))
    }

    /// Whether `secret` is this token's (constant time in the secret's contents).
    pub fn matches(&self, secret: &str) -> bool {
        let hash = blake3::hash(secret.as_bytes());
        // blake3::Hash's equality is constant-time.
        hash == blake3::Hash::from_bytes(self.hash)
    }
}

/// Splits a presented token into its id and secret.
pub fn split_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.trim().split_once('.')?;
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    let id_ok = id == BOOTSTRAP_ID || (id.len() == 16 && hex(id));
    (id_ok && secret.len() >= 32 && secret.len() <= 128 && hex(secret)).then_some((id, secret))
}

/// A token command, applied through Raft.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenCommand {
    /// Store a new token. Refused when the id exists (live or revoked) or the table is full.
    Create(TokenRecord),
    /// Revoke the token `id`, at the proposal's clock. The bootstrap administrator's token
    /// (id `admin`, not stored until then) is revoked by storing a revoked record for it.
    Revoke { id: String },
}

/// What a token command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenOutcome {
    Created,
    /// The id is taken (never reused) or the table holds [`TOKENS_MAX`] records.
    Refused {
        reason: String,
    },
    Revoked {
        revoked: bool,
    },
}

impl TokenCommand {
    /// The input rules every replica checks again when it applies the command.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            TokenCommand::Create(t) => {
                if t.id == BOOTSTRAP_ID
                    || split_token(&format!("{}.{}", t.id, "0".repeat(32))).is_none()
                {
                    return Err(format!("token id '{}' is not 16 hex digits", t.id));
                }
                if t.name.len() > NAME_BYTES_MAX {
                    return Err(format!("a token name is at most {NAME_BYTES_MAX} bytes"));
                }
                if t.grants.len() > GRANTS_MAX {
                    return Err(format!("a token carries at most {GRANTS_MAX} prefixes"));
                }
                if t.grants.iter().any(|g| g.prefix.len() > PREFIX_BYTES_MAX) {
                    return Err(format!("a prefix is at most {PREFIX_BYTES_MAX} bytes"));
                }
                if t.revoked_ms.is_some() {
                    return Err("a new token cannot be revoked already".into());
                }
                Ok(())
            }
            TokenCommand::Revoke { id } => {
                if id.len() > 64 {
                    return Err("a token id is at most 64 bytes".into());
                }
                Ok(())
            }
        }
    }
}

/// The table of tokens a state machine keeps.
pub trait TokenTable {
    type Error;
    fn get(&mut self, id: &str) -> Result<Option<TokenRecord>, Self::Error>;
    fn put(&mut self, record: &TokenRecord) -> Result<(), Self::Error>;
    fn count(&mut self) -> Result<u64, Self::Error>;
}

/// Applies one token command at cluster time `now_ms`.
pub fn apply<T: TokenTable>(
    table: &mut T,
    now_ms: u64,
    command: &TokenCommand,
) -> Result<TokenOutcome, T::Error> {
    match command {
        TokenCommand::Create(record) => {
            if table.get(&record.id)?.is_some() {
                return Ok(TokenOutcome::Refused {
                    reason: format!("token id {} exists", record.id),
                });
            }
            if table.count()? >= TOKENS_MAX {
                return Ok(TokenOutcome::Refused {
                    reason: format!("the cluster holds {TOKENS_MAX} tokens; revoke some first"),
                });
            }
            table.put(record)?;
            Ok(TokenOutcome::Created)
        }
        TokenCommand::Revoke { id } => match table.get(id)? {
            Some(mut record) if record.revoked_ms.is_none() => {
                record.revoked_ms = Some(now_ms);
                table.put(&record)?;
                Ok(TokenOutcome::Revoked { revoked: true })
            }
            Some(_) => Ok(TokenOutcome::Revoked { revoked: false }),
            None if id == BOOTSTRAP_ID => {
                table.put(&TokenRecord {
                    id: BOOTSTRAP_ID.into(),
                    name: "the first administrator (kith init)".into(),
                    role: Role::Admin,
                    grants: Vec::new(),
                    hash: [0; 32],
                    created_ms: now_ms,
                    expires_ms: None,
                    revoked_ms: Some(now_ms),
                })?;
                Ok(TokenOutcome::Revoked { revoked: true })
            }
            None => Ok(TokenOutcome::Revoked { revoked: false }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(role: Role, grants: &[&str]) -> TokenRecord {
        TokenRecord {
            id: "0123456789abcdef".into(),
            name: String::new(),
            role,
            grants: grants
                .iter()
                .map(|g| Grant::parse(g).expect("grant"))
                .collect(),
            hash: *blake3::hash(b"secret").as_bytes(),
            created_ms: 0,
            expires_ms: None,
            revoked_ms: None,
        }
    }

    fn kv(name: &str) -> String {
        name.into()
    }

    #[test]
    fn roles_allow_what_they_name_and_nothing_else() {
        let read = token(Role::Read, &[]);
        assert!(read.allows(&Need::Read(Capability::Kv, kv("x")), 0));
        assert!(!read.allows(&Need::Write(Capability::Kv, kv("x")), 0));
        assert!(read.allows(&Need::Monitor, 0));
        assert!(!read.allows(&Need::Admin, 0));

        let app = token(Role::Write, &["kv:app/"]);
        assert!(app.allows(&Need::Write(Capability::Kv, kv("app/x")), 0));
        assert!(!app.allows(&Need::Write(Capability::Kv, kv("other/x")), 0));
        assert!(!app.allows(&Need::Write(Capability::Rooms, "team".into()), 0));

        let worker = token(Role::Worker, &["queues:thumbs"]);
        assert!(worker.allows(&Need::Work("thumbs".into()), 0));
        assert!(!worker.allows(&Need::Work("emails".into()), 0));
        assert!(!worker.allows(&Need::Write(Capability::Queues, "thumbs".into()), 0));
        assert!(!worker.allows(&Need::Read(Capability::Kv, kv("x")), 0));

        let monitor = token(Role::Monitor, &[]);
        assert!(monitor.allows(&Need::Monitor, 0));
        assert!(!monitor.allows(&Need::Read(Capability::Kv, kv("x")), 0));

        let admin = token(Role::Admin, &["kv:app/"]);
        assert!(admin.allows(&Need::Admin, 0));
    }

    #[test]
    fn expired_and_revoked_tokens_allow_nothing() {
        let mut t = token(Role::Admin, &[]);
        t.expires_ms = Some(100);
        assert!(t.allows(&Need::Monitor, 99));
        assert!(!t.allows(&Need::Monitor, 100));
        t.expires_ms = None;
        t.revoked_ms = Some(5);
        assert!(!t.allows(&Need::Monitor, 0));
    }

    #[test]
    fn tokens_split_and_match_only_their_secret() {
        let secret = "00112233445566778899aabbccddeeff";
        assert_eq!(
            split_token(&format!("0123456789abcdef.{secret}")),
            Some(("0123456789abcdef", secret))
        );
        assert!(split_token(&format!("admin.{secret}")).is_some());
        for bad in [
            "",
            "x.y",
            "0123456789abcdef",
            "0123456789abcdef.short",
            "nothex!!nothex!!.00112233445566778899aabbccddeeff",
        ] {
            assert_eq!(split_token(bad), None, "{bad}");
        }
        let mut t = token(Role::Read, &[]);
        t.hash = *blake3::hash(secret.as_bytes()).as_bytes();
        assert!(t.matches(secret));
        assert!(!t.matches("00112233445566778899aabbccddeefe"));
    }
}
