//! The whole state machine: one proposal in, its [`Response`] out, dispatched to the domain
//! its command belongs to (kv, rooms, jobs, files, tokens).
//!
//! Owns the order in which one proposal touches the domains: first the proposal's clock
//! (and so TTL expiry, [`kv::apply`]), then every job timer that clock makes due
//! ([`jobs::fire_timers`]), then the command itself. Refuses storage: it reads and writes
//! only through [`Tables`], which kith-storage implements on one redb write transaction and
//! [`MemState`] in memory.

use crate::auth::{self, TokenTable};
use crate::files::{self, FilesTable, MemFiles};
use crate::jobs::{self, JobTable, MemJobs};
use crate::kv::{self, KvMeta, KvTable, MemTable};
use crate::rooms::{self, MemRooms, RoomTable};
use crate::{Command, Proposal, Response};

/// The domains' tables, as [`apply`] reaches them. A store may open a domain's tables only
/// when first asked for them (most proposals touch only the kv tables).
pub trait Tables {
    type Error;
    type Kv: KvTable<Error = Self::Error>;
    type Rooms: RoomTable<Error = Self::Error>;
    type Jobs: JobTable<Error = Self::Error>;
    type Files: FilesTable<Error = Self::Error>;
    type Tokens: TokenTable<Error = Self::Error>;
    fn kv(&mut self) -> &mut Self::Kv;
    fn rooms(&mut self) -> Result<&mut Self::Rooms, Self::Error>;
    fn jobs(&mut self) -> Result<&mut Self::Jobs, Self::Error>;
    fn files(&mut self) -> Result<&mut Self::Files, Self::Error>;
    fn tokens(&mut self) -> Result<&mut Self::Tokens, Self::Error>;
    /// When the earliest job timer is set for (`None`: no timers). Must be exact: [`apply`]
    /// fires no timer unless this one is due.
    fn job_timer_first_ms(&mut self) -> Result<Option<u64>, Self::Error>;
}

/// Applies one proposal to `tables`, with `meta` the kv store's counters.
///
/// Deterministic: the result depends only on the proposal, the tables and `meta`, so every
/// replica that applies the same proposals in the same order holds the same state.
pub fn apply<T: Tables>(
    tables: &mut T,
    meta: &mut KvMeta,
    proposal: &Proposal,
) -> Result<Response, T::Error> {
    // The clock (and so TTL expiry) applies to every proposal first; a kv command is done
    // with it.
    let response = kv::apply(tables.kv(), meta, proposal)?;
    let now_ms = meta.now_ms;
    // Due job timers fire before every proposal, so a job command sees them fired.
    let timer_due = tables.job_timer_first_ms()?.is_some_and(|at| at <= now_ms);
    if timer_due || matches!(proposal.command, Command::Job(_)) {
        jobs::fire_timers(tables.jobs()?, now_ms)?;
    }
    match &proposal.command {
        Command::Post(post) => rooms::apply(tables.rooms()?, now_ms, post),
        Command::DeleteRoom { room } => rooms::delete(tables.rooms()?, room),
        Command::Job(job) => jobs::apply(tables.jobs()?, now_ms, job),
        Command::File(file) => files::apply(tables.files()?, now_ms, file),
        Command::Token(token) => auth::apply(tables.tokens()?, now_ms, token).map(Response::Token),
        Command::Put { .. }
        | Command::Delete { .. }
        | Command::Txn(_)
        | Command::Lease(_)
        | Command::Expire => Ok(response),
    }
}

/// Every domain in memory: for tests, and for checking a store against.
#[derive(Debug, Default)]
pub struct MemState {
    pub kv: MemTable,
    pub rooms: MemRooms,
    pub jobs: MemJobs,
    pub files: MemFiles,
    pub tokens: MemTokens,
}

/// Tokens in memory, by id.
#[derive(Debug, Default)]
pub struct MemTokens(pub std::collections::BTreeMap<String, crate::auth::TokenRecord>);

impl TokenTable for MemTokens {
    type Error = std::convert::Infallible;
    fn get(&mut self, id: &str) -> Result<Option<crate::auth::TokenRecord>, Self::Error> {
        Ok(self.0.get(id).cloned())
    }
    fn put(&mut self, record: &crate::auth::TokenRecord) -> Result<(), Self::Error> {
        self.0.insert(record.id.clone(), record.clone());
        Ok(())
    }
    fn count(&mut self) -> Result<u64, Self::Error> {
        Ok(self.0.len() as u64)
    }
}

impl Tables for MemState {
    type Error = std::convert::Infallible;
    type Kv = MemTable;
    type Rooms = MemRooms;
    type Jobs = MemJobs;
    type Files = MemFiles;
    type Tokens = MemTokens;
    fn kv(&mut self) -> &mut MemTable {
        &mut self.kv
    }
    fn rooms(&mut self) -> Result<&mut MemRooms, Self::Error> {
        Ok(&mut self.rooms)
    }
    fn jobs(&mut self) -> Result<&mut MemJobs, Self::Error> {
        Ok(&mut self.jobs)
    }
    fn files(&mut self) -> Result<&mut MemFiles, Self::Error> {
        Ok(&mut self.files)
    }
    fn tokens(&mut self) -> Result<&mut MemTokens, Self::Error> {
        Ok(&mut self.tokens)
    }
    fn job_timer_first_ms(&mut self) -> Result<Option<u64>, Self::Error> {
        Ok(self.jobs.timers.first().map(|(at, _)| *at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::{FileCommand, FileOutcome};
    use crate::jobs::{Enqueue, JobCommand, JobOutcome, JobState};
    use crate::rooms::Post;

    fn run(state: &mut MemState, meta: &mut KvMeta, now_ms: u64, command: Command) -> Response {
        let Ok(response) = apply(state, meta, &Proposal { now_ms, command });
        response
    }

    fn put(key: &str, value: &str, if_revision: Option<u64>, ttl_ms: Option<u64>) -> Command {
        Command::Put {
            key: key.into(),
            value: value.into(),
            if_revision,
            ttl_ms,
        }
    }

    fn enqueue(queue: &str, delay_ms: u64) -> Command {
        Command::Job(JobCommand::Enqueue(Enqueue {
            queue: queue.into(),
            payload: "p".into(),
            priority: 5,
            run_at_ms: 0,
            delay_ms,
            max_attempts: 2,
            timeout_ms: 60_000,
            idempotency_key: None,
            retention_ms: 0,
        }))
    }

    fn claim(queue: &str, lease_ms: u64) -> Command {
        Command::Job(JobCommand::Claim {
            queue: queue.into(),
            lease_ms,
            worker: "w".into(),
        })
    }

    #[test]
    fn revisions_increase_by_one_per_change() {
        let (mut state, mut meta) = (MemState::default(), KvMeta::default());
        for (i, key) in ["a", "b", "a"].into_iter().enumerate() {
            let response = run(&mut state, &mut meta, 1, put(key, "v", None, None));
            assert_eq!(
                response,
                Response::Put {
                    revision: i as u64 + 1
                }
            );
        }
        let entry = &state.kv.keys["a"];
        assert_eq!((entry.create_revision, entry.mod_revision), (1, 3));
        assert_eq!(entry.version, 2);
        assert_eq!(meta.revision, 3);
    }

    #[test]
    fn a_cas_mismatch_changes_nothing() {
        let (mut state, mut meta) = (MemState::default(), KvMeta::default());
        run(&mut state, &mut meta, 1, put("k", "1", None, None));
        let events = state.kv.events.len();
        let response = run(&mut state, &mut meta, 2, put("k", "2", Some(7), None));
        assert_eq!(response, Response::RevisionMismatch { current: 1 });
        let response = run(&mut state, &mut meta, 2, put("new", "2", Some(1), None));
        assert_eq!(response, Response::RevisionMismatch { current: 0 });
        assert_eq!(state.kv.keys["k"].value, b"1");
        assert!(!state.kv.keys.contains_key("new"));
        assert_eq!((meta.revision, state.kv.events.len()), (1, events));
        let response = run(&mut state, &mut meta, 3, put("k", "3", Some(1), None));
        assert_eq!(response, Response::Put { revision: 2 });
    }

    #[test]
    fn any_proposal_carries_the_clock_that_expires_keys() {
        let (mut state, mut meta) = (MemState::default(), KvMeta::default());
        run(&mut state, &mut meta, 1_000, put("k", "v", None, Some(500)));
        let response = run(&mut state, &mut meta, 1_499, enqueue("q", 0));
        assert!(matches!(
            response,
            Response::Job(JobOutcome::Enqueued { .. })
        ));
        assert!(state.kv.keys.contains_key("k"));
        run(&mut state, &mut meta, 1_500, enqueue("q", 0));
        assert!(!state.kv.keys.contains_key("k"));
        assert_eq!(meta.revision, 2, "the put, then the expiry");
    }

    #[test]
    fn jobs_are_claimed_completed_and_timers_fire_on_any_proposal() {
        let (mut state, mut meta) = (MemState::default(), KvMeta::default());
        let Response::Job(JobOutcome::Enqueued { id, .. }) =
            run(&mut state, &mut meta, 10, enqueue("q", 0))
        else {
            panic!("enqueued")
        };
        let Response::Job(JobOutcome::Claimed(Some(claimed))) =
            run(&mut state, &mut meta, 20, claim("q", 100))
        else {
            panic!("claimed")
        };
        assert_eq!(claimed.id, id);
        assert_eq!(state.jobs.jobs[&id].state, JobState::Leased);
        let complete = Command::Job(JobCommand::Complete {
            id,
            attempt: claimed.attempt,
            result: None,
            retention_ms: 1_000,
        });
        let response = run(&mut state, &mut meta, 30, complete.clone());
        assert_eq!(response, Response::Job(JobOutcome::Done));
        assert_eq!(state.jobs.jobs[&id].state, JobState::Completed);
        assert!(matches!(
            run(&mut state, &mut meta, 31, complete),
            Response::Job(JobOutcome::Conflict { .. })
        ));

        // A delayed job becomes ready when a proposal of any kind carries its time.
        let Response::Job(JobOutcome::Enqueued { id: later, .. }) =
            run(&mut state, &mut meta, 40, enqueue("q", 50))
        else {
            panic!("enqueued")
        };
        assert_eq!(state.jobs.jobs[&later].state, JobState::Delayed);
        run(&mut state, &mut meta, 89, put("k", "v", None, None));
        assert_eq!(state.jobs.jobs[&later].state, JobState::Delayed);
        run(&mut state, &mut meta, 90, put("k", "v", None, None));
        assert_eq!(state.jobs.jobs[&later].state, JobState::Ready);
    }

    #[test]
    fn rooms_and_files_are_dispatched_to_their_domain() {
        let (mut state, mut meta) = (MemState::default(), KvMeta::default());
        let post = Command::Post(Post {
            room: "general".into(),
            author: "ann".into(),
            text: "hi".into(),
            id: "m1".into(),
            keep: 10,
            rooms_max: 10,
        });
        let response = run(&mut state, &mut meta, 1, post.clone());
        assert!(matches!(
            response,
            Response::Posted {
                seq: 1,
                duplicate: false,
                ..
            }
        ));
        let response = run(&mut state, &mut meta, 2, post);
        assert!(matches!(
            response,
            Response::Posted {
                seq: 1,
                duplicate: true,
                ..
            }
        ));
        let response = run(
            &mut state,
            &mut meta,
            3,
            Command::File(FileCommand::Delete { path: "f".into() }),
        );
        assert_eq!(
            response,
            Response::File(FileOutcome::Deleted { deleted: false })
        );
        let response = run(
            &mut state,
            &mut meta,
            4,
            Command::DeleteRoom {
                room: "general".into(),
            },
        );
        assert_eq!(
            response,
            Response::RoomDeleted {
                deleted: true,
                messages: 1
            }
        );
        assert_eq!(meta.revision, 0, "nothing here is a kv change");
    }
}
