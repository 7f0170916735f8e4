//! The job-queue state machine: enqueue, claim with a lease, heartbeat, complete, fail,
//! retries with backoff, dead letters, priorities and delayed jobs.
//!
//! Every time decision — a delayed job becoming ready, a lease running out, a retry's
//! backoff, dropping old completed jobs — uses the store's clock (the leader's time carried
//! in each proposal), never the applying machine's. Before a proposal's command applies,
//! every timer due by its clock fires, earliest first, so replicas agree on every outcome.
//!
//! Fencing: a worker's claim is an attempt number. Heartbeat, complete and fail name it, and
//! are refused unless the job is leased to that very attempt; a lease that ran out fired its
//! timer first, so a late report from a dead worker can never complete a job twice.
//!
//! A queue exists from its first job and lives in its counts (`QueueStats`). An empty queue
//! — no ready, delayed, running or dead job — can be deleted: its counts and idempotency
//! keys go; finished jobs it still keeps run out their retention as before.

use serde::{Deserialize, Serialize};

use crate::limits::{
    validate_len, validate_message_id, validate_range, validate_room, InvalidInput, Limits,
};
use crate::Response;

/// Priorities run from 0 to 9; higher runs first, FIFO within a priority (as in Faktory).
pub const PRIORITY_MAX: u8 = 9;
pub const PRIORITY_DEFAULT: u8 = 5;
/// Longest lease a claim or heartbeat may ask for, in seconds.
pub const LEASE_S_MAX: u64 = 3600;
/// Longest delay before a job may run, in seconds (one year).
pub const DELAY_S_MAX: u64 = 365 * 24 * 3600;
/// Most attempts a job may be given.
pub const ATTEMPTS_MAX: u32 = 100;
/// Longest run time a job may declare, in seconds.
pub const TIMEOUT_S_MAX: u64 = 24 * 3600;
/// Longest result a completed job keeps, in bytes of JSON text.
pub const RESULT_BYTES_MAX: usize = 64 * 1024;
/// Longest error a failed attempt reports, in bytes.
pub const ERROR_BYTES_MAX: usize = 8 * 1024;
/// Longest worker name, in characters.
pub const WORKER_CHARS_MAX: usize = 128;
/// Most timers fired by one apply; the rest fire with the next proposal.
pub const TIMERS_PER_APPLY_MAX: usize = 1000;
const BACKOFF_BASE_MS: u64 = 1_000;
const BACKOFF_MAX_MS: u64 = 3_600_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    /// Waiting to be claimed.
    Ready,
    /// Waiting for `run_at_ms` (a delayed job, or a retry's backoff).
    Delayed,
    /// Claimed by a worker until `lease.until_ms`.
    Leased,
    Completed,
    /// Failed `max_attempts` times; waits in the queue's dead letters for a retry.
    Dead,
    Cancelled,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub attempt: u32,
    pub until_ms: u64,
    pub worker: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: u64,
    pub queue: String,
    /// The payload as JSON text.
    pub payload: String,
    pub priority: u8,
    pub state: JobState,
    /// Attempts started so far.
    pub attempts: u32,
    pub max_attempts: u32,
    pub timeout_ms: u64,
    pub run_at_ms: u64,
    pub created_ms: u64,
    pub updated_ms: u64,
    pub lease: Option<Lease>,
    pub last_error: Option<String>,
    pub result: Option<String>,
    pub idempotency_key: Option<String>,
    /// When a finished job is dropped (completed or cancelled jobs are kept this long).
    pub expires_ms: Option<u64>,
}

/// Per-queue counts, kept up to date by [`apply`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    pub ready: u64,
    pub delayed: u64,
    pub leased: u64,
    pub dead: u64,
    pub enqueued_total: u64,
    pub completed_total: u64,
    pub failed_total: u64,
}

/// A job as a claim hands it to a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claimed {
    pub id: u64,
    pub attempt: u32,
    pub payload: String,
    pub lease_until_ms: u64,
    pub timeout_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enqueue {
    pub queue: String,
    pub payload: String,
    pub priority: u8,
    /// Run no earlier than this (ms since the epoch); 0 means now.
    pub run_at_ms: u64,
    /// Or, relative to the store's clock.
    pub delay_ms: u64,
    pub max_attempts: u32,
    pub timeout_ms: u64,
    pub idempotency_key: Option<String>,
    /// How long finished jobs (and so their idempotency keys) are kept; the leader's setting.
    pub retention_ms: u64,
}

/// A job command as it travels in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobCommand {
    Enqueue(Enqueue),
    Claim {
        queue: String,
        lease_ms: u64,
        worker: String,
    },
    Heartbeat {
        id: u64,
        attempt: u32,
        lease_ms: u64,
    },
    Complete {
        id: u64,
        attempt: u32,
        result: Option<String>,
        retention_ms: u64,
    },
    Fail {
        id: u64,
        attempt: u32,
        error: String,
    },
    /// Bring a dead (or cancelled) job back to ready with fresh attempts.
    Retry {
        id: u64,
    },
    Cancel {
        id: u64,
        retention_ms: u64,
    },
    /// Delete an empty queue's counts and idempotency keys (see the module docs).
    DeleteQueue {
        queue: String,
    },
}

fn validate_queue(queue: &str) -> Result<(), InvalidInput> {
    validate_room(queue).map_err(|_| InvalidInput::BadName {
        what: "queue name",
        max: crate::limits::ROOM_NAME_CHARS_MAX,
    })
}

fn validate_lease_ms(lease_ms: u64) -> Result<(), InvalidInput> {
    validate_range("lease", lease_ms, 1, LEASE_S_MAX * 1000, "ms")
}

/// Checks a worker's name: 1 to [`WORKER_CHARS_MAX`] printable characters.
pub fn validate_worker(worker: &str) -> Result<(), InvalidInput> {
    if worker.is_empty()
        || worker.chars().count() > WORKER_CHARS_MAX
        || worker.chars().any(char::is_control)
    {
        return Err(InvalidInput::OutOfRange {
            what: "worker",
            expected: format!("1 to {WORKER_CHARS_MAX} printable characters"),
        });
    }
    Ok(())
}

impl JobCommand {
    /// Checks everything a client supplied. Retention fields are the leader's to set; job
    /// ids and attempts are checked against the state when the command applies.
    pub fn validate(&self, limits: &Limits) -> Result<(), InvalidInput> {
        match self {
            JobCommand::Enqueue(e) => {
                validate_queue(&e.queue)?;
                validate_len("payload", e.payload.len(), limits.job_payload_bytes_max)?;
                validate_range("priority", e.priority.into(), 0, PRIORITY_MAX.into(), "")?;
                validate_range("delay", e.delay_ms, 0, DELAY_S_MAX * 1000, "ms")?;
                validate_range(
                    "max_attempts",
                    e.max_attempts.into(),
                    1,
                    ATTEMPTS_MAX.into(),
                    "",
                )?;
                validate_range("timeout", e.timeout_ms, 1, TIMEOUT_S_MAX * 1000, "ms")?;
                match &e.idempotency_key {
                    Some(key) => validate_message_id(key).map_err(|_| InvalidInput::BadName {
                        what: "idempotency_key",
                        max: crate::limits::MESSAGE_ID_CHARS_MAX,
                    }),
                    None => Ok(()),
                }
            }
            JobCommand::Claim {
                queue,
                lease_ms,
                worker,
            } => {
                validate_queue(queue)?;
                validate_lease_ms(*lease_ms)?;
                validate_worker(worker)
            }
            JobCommand::Heartbeat { lease_ms, .. } => validate_lease_ms(*lease_ms),
            JobCommand::Complete { result, .. } => match result {
                Some(result) => validate_len("result", result.len(), RESULT_BYTES_MAX),
                None => Ok(()),
            },
            JobCommand::Fail { error, .. } => validate_len("error", error.len(), ERROR_BYTES_MAX),
            JobCommand::Retry { .. } | JobCommand::Cancel { .. } => Ok(()),
            JobCommand::DeleteQueue { queue } => validate_queue(queue),
        }
    }
}

/// What a job command produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobOutcome {
    Enqueued {
        id: u64,
        duplicate: bool,
    },
    Claimed(Option<Claimed>),
    Done,
    /// Refused; nothing changed. `reason` says why (fencing, wrong state).
    Conflict {
        reason: String,
    },
    NotFound,
}

/// The storage [`apply`] reads and writes.
pub trait JobTable {
    type Error;
    fn next_id(&mut self) -> Result<u64, Self::Error>;
    fn get(&mut self, id: u64) -> Result<Option<Job>, Self::Error>;
    fn put(&mut self, job: &Job) -> Result<(), Self::Error>;
    fn remove(&mut self, id: u64) -> Result<(), Self::Error>;
    fn ready_add(&mut self, queue: &str, rank: u8, id: u64) -> Result<(), Self::Error>;
    fn ready_remove(&mut self, queue: &str, rank: u8, id: u64) -> Result<(), Self::Error>;
    /// The first job id in `queue`'s ready order (lowest rank, then lowest id).
    fn ready_first(&mut self, queue: &str) -> Result<Option<u64>, Self::Error>;
    fn timer_add(&mut self, at_ms: u64, id: u64) -> Result<(), Self::Error>;
    fn timer_remove(&mut self, at_ms: u64, id: u64) -> Result<(), Self::Error>;
    fn timers_due(&mut self, now_ms: u64, limit: usize) -> Result<Vec<(u64, u64)>, Self::Error>;
    fn idempotent(&mut self, queue: &str, key: &str) -> Result<Option<u64>, Self::Error>;
    fn idempotent_put(
        &mut self,
        queue: &str,
        key: &str,
        id: Option<u64>,
    ) -> Result<(), Self::Error>;
    fn stats(&mut self, queue: &str) -> Result<QueueStats, Self::Error>;
    fn stats_put(&mut self, queue: &str, stats: &QueueStats) -> Result<(), Self::Error>;
    /// Removes `queue`'s counts; false when it had none.
    fn stats_remove(&mut self, queue: &str) -> Result<bool, Self::Error>;
    /// Removes every idempotency key of `queue`.
    fn idempotent_clear(&mut self, queue: &str) -> Result<(), Self::Error>;
}

fn rank(priority: u8) -> u8 {
    PRIORITY_MAX - priority.min(PRIORITY_MAX)
}

/// The delay before retry number `attempts + 1`: exponential from 1 s, capped at an hour,
/// plus up to 25 % jitter derived from the job id and attempt (deterministic, so every
/// replica picks the same).
pub fn backoff_ms(id: u64, attempts: u32) -> u64 {
    let exp = BACKOFF_BASE_MS.saturating_mul(1u64 << attempts.saturating_sub(1).min(20));
    let base = exp.min(BACKOFF_MAX_MS);
    // splitmix64 of (id, attempts)
    let mut z = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(attempts);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    base + z % (base / 4 + 1)
}

/// The single timer a job has in its state, if any.
fn timer_of(job: &Job) -> Option<u64> {
    match job.state {
        JobState::Delayed => Some(job.run_at_ms),
        JobState::Leased => job.lease.as_ref().map(|l| l.until_ms),
        JobState::Completed | JobState::Cancelled => job.expires_ms,
        JobState::Ready | JobState::Dead => None,
    }
}

/// Moves `job` into `state`, keeping indexes, timers and counts consistent.
fn transition<T: JobTable>(
    t: &mut T,
    job: &mut Job,
    state: JobState,
    now_ms: u64,
) -> Result<(), T::Error> {
    if let Some(at) = timer_of(job) {
        t.timer_remove(at, job.id)?;
    }
    let mut stats = t.stats(&job.queue)?;
    match job.state {
        JobState::Ready => {
            t.ready_remove(&job.queue, rank(job.priority), job.id)?;
            stats.ready = stats.ready.saturating_sub(1);
        }
        JobState::Delayed => stats.delayed = stats.delayed.saturating_sub(1),
        JobState::Leased => stats.leased = stats.leased.saturating_sub(1),
        JobState::Dead => stats.dead = stats.dead.saturating_sub(1),
        JobState::Completed | JobState::Cancelled => {}
    }
    job.state = state;
    job.updated_ms = now_ms;
    if state != JobState::Leased {
        job.lease = None;
    }
    match state {
        JobState::Ready => {
            t.ready_add(&job.queue, rank(job.priority), job.id)?;
            stats.ready += 1;
        }
        JobState::Delayed => stats.delayed += 1,
        JobState::Leased => stats.leased += 1,
        JobState::Dead => stats.dead += 1,
        JobState::Completed => stats.completed_total += 1,
        JobState::Cancelled => {}
    }
    if let Some(at) = timer_of(job) {
        t.timer_add(at, job.id)?;
    }
    t.stats_put(&job.queue, &stats)?;
    t.put(job)
}

/// After a failed or expired attempt: back off and retry, or give up into dead letters.
fn retry_or_bury<T: JobTable>(
    t: &mut T,
    job: &mut Job,
    error: String,
    now_ms: u64,
) -> Result<(), T::Error> {
    job.last_error = Some(error);
    let mut stats = t.stats(&job.queue)?;
    stats.failed_total += 1;
    t.stats_put(&job.queue, &stats)?;
    if job.attempts >= job.max_attempts {
        transition(t, job, JobState::Dead, now_ms)
    } else {
        job.run_at_ms = now_ms.saturating_add(backoff_ms(job.id, job.attempts));
        transition(t, job, JobState::Delayed, now_ms)
    }
}

/// Fires every timer due at `now_ms`: delayed jobs become ready, expired leases count as
/// failed attempts, finished jobs past their retention are dropped.
pub fn fire_timers<T: JobTable>(t: &mut T, now_ms: u64) -> Result<(), T::Error> {
    // A timer can set another that is already due (a lease that ran out long ago schedules
    // a retry whose backoff has passed too), so fire until none is due, within the bound.
    let mut fired = 0;
    while fired < TIMERS_PER_APPLY_MAX {
        let due = t.timers_due(now_ms, TIMERS_PER_APPLY_MAX - fired)?;
        if due.is_empty() {
            break;
        }
        fired += due.len();
        for (at, id) in due {
            fire(t, at, id)?;
        }
    }
    Ok(())
}

/// Fires job `id`'s timer set for `at`, as of that moment.
fn fire<T: JobTable>(t: &mut T, at: u64, id: u64) -> Result<(), T::Error> {
    let Some(mut job) = t.get(id)? else {
        t.timer_remove(at, id)?;
        return Ok(());
    };
    match job.state {
        JobState::Delayed => transition(t, &mut job, JobState::Ready, at),
        JobState::Leased => {
            let attempt = job.lease.as_ref().map_or(0, |l| l.attempt);
            retry_or_bury(t, &mut job, format!("attempt {attempt}: lease expired"), at)
        }
        JobState::Completed | JobState::Cancelled => {
            t.timer_remove(at, id)?;
            if let Some(key) = &job.idempotency_key {
                if t.idempotent(&job.queue, key)? == Some(id) {
                    t.idempotent_put(&job.queue, key, None)?;
                }
            }
            t.remove(id)
        }
        JobState::Ready | JobState::Dead => t.timer_remove(at, id),
    }
}

fn conflict(reason: impl Into<String>) -> Response {
    Response::Job(JobOutcome::Conflict {
        reason: reason.into(),
    })
}

/// The job leased to `attempt`, or why there is none.
fn leased<T: JobTable>(
    t: &mut T,
    id: u64,
    attempt: u32,
) -> Result<Result<Job, Response>, T::Error> {
    let Some(job) = t.get(id)? else {
        return Ok(Err(Response::Job(JobOutcome::NotFound)));
    };
    match &job.lease {
        Some(lease) if job.state == JobState::Leased && lease.attempt == attempt => Ok(Ok(job)),
        Some(lease) if job.state == JobState::Leased => Ok(Err(conflict(format!(
            "job {id} is leased to attempt {}, not {attempt}",
            lease.attempt
        )))),
        _ => Ok(Err(conflict(format!(
            "job {id} is {:?}: attempt {attempt} no longer holds it",
            job.state
        )))),
    }
}

/// Applies one job command at the store's clock `now_ms` (timers already fired). A command
/// that breaks an input rule is answered [`Response::Rejected`] and changes nothing.
pub fn apply<T: JobTable>(
    t: &mut T,
    now_ms: u64,
    command: &JobCommand,
) -> Result<Response, T::Error> {
    if let Err(e) = command.validate(&Limits::CEILING) {
        return Ok(Response::Rejected {
            reason: e.to_string(),
        });
    }
    match command {
        JobCommand::Enqueue(e) => enqueue(t, now_ms, e),
        JobCommand::Claim {
            queue,
            lease_ms,
            worker,
        } => claim(t, now_ms, queue, *lease_ms, worker),
        JobCommand::Heartbeat {
            id,
            attempt,
            lease_ms,
        } => heartbeat(t, now_ms, *id, *attempt, *lease_ms),
        JobCommand::Complete {
            id,
            attempt,
            result,
            retention_ms,
        } => {
            let mut job = match leased(t, *id, *attempt)? {
                Ok(job) => job,
                Err(refused) => return Ok(refused),
            };
            job.result = result.clone();
            job.expires_ms = Some(now_ms.saturating_add(*retention_ms));
            transition(t, &mut job, JobState::Completed, now_ms)?;
            Ok(Response::Job(JobOutcome::Done))
        }
        JobCommand::Fail { id, attempt, error } => {
            let mut job = match leased(t, *id, *attempt)? {
                Ok(job) => job,
                Err(refused) => return Ok(refused),
            };
            retry_or_bury(t, &mut job, format!("attempt {attempt}: {error}"), now_ms)?;
            Ok(Response::Job(JobOutcome::Done))
        }
        JobCommand::Retry { id } => {
            let Some(mut job) = t.get(*id)? else {
                return Ok(Response::Job(JobOutcome::NotFound));
            };
            if !matches!(job.state, JobState::Dead | JobState::Cancelled) {
                return Ok(conflict(format!(
                    "job {id} is {:?}; only dead or cancelled jobs are retried",
                    job.state
                )));
            }
            job.attempts = 0;
            job.expires_ms = None;
            transition(t, &mut job, JobState::Ready, now_ms)?;
            Ok(Response::Job(JobOutcome::Done))
        }
        JobCommand::Cancel { id, retention_ms } => {
            let Some(mut job) = t.get(*id)? else {
                return Ok(Response::Job(JobOutcome::NotFound));
            };
            if matches!(job.state, JobState::Completed | JobState::Cancelled) {
                return Ok(conflict(format!("job {id} is already {:?}", job.state)));
            }
            job.expires_ms = Some(now_ms.saturating_add(*retention_ms));
            transition(t, &mut job, JobState::Cancelled, now_ms)?;
            Ok(Response::Job(JobOutcome::Done))
        }
        JobCommand::DeleteQueue { queue } => delete_queue(t, queue),
    }
}

/// A new job, Ready or Delayed; a repeated idempotency key answers the first job's id.
fn enqueue<T: JobTable>(t: &mut T, now_ms: u64, e: &Enqueue) -> Result<Response, T::Error> {
    if let Some(key) = &e.idempotency_key {
        if let Some(id) = t.idempotent(&e.queue, key)? {
            return Ok(Response::Job(JobOutcome::Enqueued {
                id,
                duplicate: true,
            }));
        }
    }
    let id = t.next_id()?;
    let run_at_ms = e.run_at_ms.max(now_ms.saturating_add(e.delay_ms));
    let mut job = Job {
        id,
        queue: e.queue.clone(),
        payload: e.payload.clone(),
        priority: e.priority.min(PRIORITY_MAX),
        state: JobState::Cancelled, // replaced by the transition below
        attempts: 0,
        max_attempts: e.max_attempts.max(1),
        timeout_ms: e.timeout_ms,
        run_at_ms,
        created_ms: now_ms,
        updated_ms: now_ms,
        lease: None,
        last_error: None,
        result: None,
        idempotency_key: e.idempotency_key.clone(),
        expires_ms: None,
    };
    let mut stats = t.stats(&e.queue)?;
    stats.enqueued_total += 1;
    t.stats_put(&e.queue, &stats)?;
    let state = if run_at_ms > now_ms {
        JobState::Delayed
    } else {
        JobState::Ready
    };
    transition(t, &mut job, state, now_ms)?;
    if let Some(key) = &e.idempotency_key {
        t.idempotent_put(&e.queue, key, Some(id))?;
    }
    Ok(Response::Job(JobOutcome::Enqueued {
        id,
        duplicate: false,
    }))
}

/// Leases the queue's first ready job to `worker`, if there is one.
fn claim<T: JobTable>(
    t: &mut T,
    now_ms: u64,
    queue: &str,
    lease_ms: u64,
    worker: &str,
) -> Result<Response, T::Error> {
    let Some(id) = t.ready_first(queue)? else {
        return Ok(Response::Job(JobOutcome::Claimed(None)));
    };
    let Some(mut job) = t.get(id)? else {
        return Ok(Response::Job(JobOutcome::Claimed(None)));
    };
    job.attempts = job.attempts.saturating_add(1);
    let until_ms = now_ms.saturating_add(lease_ms);
    job.lease = Some(Lease {
        attempt: job.attempts,
        until_ms,
        worker: worker.to_owned(),
    });
    transition(t, &mut job, JobState::Leased, now_ms)?;
    Ok(Response::Job(JobOutcome::Claimed(Some(Claimed {
        id,
        attempt: job.attempts,
        payload: job.payload.clone(),
        lease_until_ms: until_ms,
        timeout_ms: job.timeout_ms,
    }))))
}

/// Extends the lease of attempt `attempt` of job `id`.
fn heartbeat<T: JobTable>(
    t: &mut T,
    now_ms: u64,
    id: u64,
    attempt: u32,
    lease_ms: u64,
) -> Result<Response, T::Error> {
    let mut job = match leased(t, id, attempt)? {
        Ok(job) => job,
        Err(refused) => return Ok(refused),
    };
    let worker = job
        .lease
        .as_ref()
        .map(|l| l.worker.clone())
        .unwrap_or_default();
    // Re-entering Leased moves the lease timer.
    job.lease = Some(Lease {
        attempt,
        until_ms: now_ms.saturating_add(lease_ms),
        worker,
    });
    if let Some(old) = t.get(id)?.as_ref().and_then(timer_of) {
        t.timer_remove(old, id)?;
    }
    if let Some(at) = timer_of(&job) {
        t.timer_add(at, id)?;
    }
    job.updated_ms = now_ms;
    t.put(&job)?;
    Ok(Response::Job(JobOutcome::Done))
}

/// Deletes an empty queue; refuses (nothing changed) while it holds a job that is not
/// finished. Dead jobs count: they wait for a retry, and would lose their counts.
fn delete_queue<T: JobTable>(t: &mut T, queue: &str) -> Result<Response, T::Error> {
    let s = t.stats(queue)?;
    let held = s.ready + s.delayed + s.leased + s.dead;
    if held > 0 {
        return Ok(conflict(format!(
            "queue {queue} holds {} ready, {} delayed, {} running and {} dead jobs; \
             only an empty queue can be deleted",
            s.ready, s.delayed, s.leased, s.dead
        )));
    }
    if !t.stats_remove(queue)? {
        return Ok(Response::Job(JobOutcome::NotFound));
    }
    t.idempotent_clear(queue)?;
    Ok(Response::Job(JobOutcome::Done))
}

/// An in-memory [`JobTable`] for tests.
#[derive(Debug, Default)]
pub struct MemJobs {
    pub next: u64,
    pub jobs: std::collections::BTreeMap<u64, Job>,
    pub ready: std::collections::BTreeSet<(String, u8, u64)>,
    pub timers: std::collections::BTreeSet<(u64, u64)>,
    pub keys: std::collections::BTreeMap<(String, String), u64>,
    pub stats: std::collections::BTreeMap<String, QueueStats>,
}

impl JobTable for MemJobs {
    type Error = std::convert::Infallible;
    fn next_id(&mut self) -> Result<u64, Self::Error> {
        self.next += 1;
        Ok(self.next)
    }
    fn get(&mut self, id: u64) -> Result<Option<Job>, Self::Error> {
        Ok(self.jobs.get(&id).cloned())
    }
    fn put(&mut self, job: &Job) -> Result<(), Self::Error> {
        self.jobs.insert(job.id, job.clone());
        Ok(())
    }
    fn remove(&mut self, id: u64) -> Result<(), Self::Error> {
        self.jobs.remove(&id);
        Ok(())
    }
    fn ready_add(&mut self, queue: &str, rank: u8, id: u64) -> Result<(), Self::Error> {
        self.ready.insert((queue.to_owned(), rank, id));
        Ok(())
    }
    fn ready_remove(&mut self, queue: &str, rank: u8, id: u64) -> Result<(), Self::Error> {
        self.ready.remove(&(queue.to_owned(), rank, id));
        Ok(())
    }
    fn ready_first(&mut self, queue: &str) -> Result<Option<u64>, Self::Error> {
        Ok(self
            .ready
            .range((queue.to_owned(), 0, 0)..)
            .next()
            .filter(|(q, _, _)| q == queue)
            .map(|(_, _, id)| *id))
    }
    fn timer_add(&mut self, at_ms: u64, id: u64) -> Result<(), Self::Error> {
        self.timers.insert((at_ms, id));
        Ok(())
    }
    fn timer_remove(&mut self, at_ms: u64, id: u64) -> Result<(), Self::Error> {
        self.timers.remove(&(at_ms, id));
        Ok(())
    }
    fn timers_due(&mut self, now_ms: u64, limit: usize) -> Result<Vec<(u64, u64)>, Self::Error> {
        Ok(self
            .timers
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .take(limit)
            .copied()
            .collect())
    }
    fn idempotent(&mut self, queue: &str, key: &str) -> Result<Option<u64>, Self::Error> {
        Ok(self.keys.get(&(queue.to_owned(), key.to_owned())).copied())
    }
    fn idempotent_put(
        &mut self,
        queue: &str,
        key: &str,
        id: Option<u64>,
    ) -> Result<(), Self::Error> {
        let k = (queue.to_owned(), key.to_owned());
        match id {
            Some(id) => self.keys.insert(k, id),
            None => self.keys.remove(&k),
        };
        Ok(())
    }
    fn stats(&mut self, queue: &str) -> Result<QueueStats, Self::Error> {
        Ok(self.stats.get(queue).copied().unwrap_or_default())
    }
    fn stats_put(&mut self, queue: &str, stats: &QueueStats) -> Result<(), Self::Error> {
        self.stats.insert(queue.to_owned(), *stats);
        Ok(())
    }
    fn stats_remove(&mut self, queue: &str) -> Result<bool, Self::Error> {
        Ok(self.stats.remove(queue).is_some())
    }
    fn idempotent_clear(&mut self, queue: &str) -> Result<(), Self::Error> {
        self.keys.retain(|(q, _), _| q != queue);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enqueue(queue: &str, priority: u8, key: Option<&str>) -> JobCommand {
        JobCommand::Enqueue(Enqueue {
            queue: queue.into(),
            payload: "{}".into(),
            priority,
            run_at_ms: 0,
            delay_ms: 0,
            max_attempts: 2,
            timeout_ms: 1000,
            idempotency_key: key.map(str::to_owned),
            retention_ms: 10_000,
        })
    }

    fn run(t: &mut MemJobs, now: u64, c: &JobCommand) -> Response {
        fire_timers(t, now).unwrap();
        apply(t, now, c).unwrap()
    }

    fn claim(t: &mut MemJobs, now: u64) -> Option<Claimed> {
        let c = JobCommand::Claim {
            queue: "q".into(),
            lease_ms: 100,
            worker: "w".into(),
        };
        match run(t, now, &c) {
            Response::Job(JobOutcome::Claimed(c)) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn priority_first_then_fifo_and_idempotent_enqueue() {
        let mut t = MemJobs::default();
        run(&mut t, 0, &enqueue("q", 5, None));
        run(&mut t, 0, &enqueue("q", 9, None));
        run(&mut t, 0, &enqueue("q", 5, Some("k")));
        assert_eq!(
            run(&mut t, 0, &enqueue("q", 5, Some("k"))),
            Response::Job(JobOutcome::Enqueued {
                id: 3,
                duplicate: true
            })
        );
        let order: Vec<u64> = (0..3).map(|_| claim(&mut t, 0).unwrap().id).collect();
        assert_eq!(order, vec![2, 1, 3]);
        assert!(claim(&mut t, 0).is_none());
        assert_eq!(t.stats["q"].leased, 3);
    }

    #[test]
    fn fencing_refuses_a_late_report_after_the_lease_expired() {
        let mut t = MemJobs::default();
        run(&mut t, 0, &enqueue("q", 5, None));
        let first = claim(&mut t, 0).unwrap();
        // The lease runs out at 100; the job backs off and is claimed again.
        let retry_at = 100 + backoff_ms(first.id, 1);
        let second = claim(&mut t, retry_at).unwrap();
        assert_eq!((second.id, second.attempt), (first.id, 2));
        let late = JobCommand::Complete {
            id: first.id,
            attempt: 1,
            result: None,
            retention_ms: 10,
        };
        assert!(matches!(
            run(&mut t, retry_at, &late),
            Response::Job(JobOutcome::Conflict { .. })
        ));
        let ok = JobCommand::Complete {
            id: first.id,
            attempt: 2,
            result: Some("r".into()),
            retention_ms: 10,
        };
        assert_eq!(run(&mut t, retry_at, &ok), Response::Job(JobOutcome::Done));
        assert_eq!(t.jobs[&first.id].state, JobState::Completed);
        // Completed jobs are dropped after their retention.
        run(&mut t, retry_at + 10, &JobCommand::Retry { id: 999 });
        assert!(t.jobs.is_empty());
    }

    #[test]
    fn failures_back_off_then_go_to_dead_letters_and_retry_revives() {
        let mut t = MemJobs::default();
        run(&mut t, 0, &enqueue("q", 5, None));
        let c = claim(&mut t, 0).unwrap();
        run(
            &mut t,
            10,
            &JobCommand::Fail {
                id: c.id,
                attempt: 1,
                error: "boom".into(),
            },
        );
        assert_eq!(t.jobs[&c.id].state, JobState::Delayed);
        assert!(claim(&mut t, 11).is_none(), "not before its backoff");
        let second_at = 10 + backoff_ms(c.id, 1);
        let c2 = claim(&mut t, second_at).unwrap();
        run(
            &mut t,
            second_at + 50,
            &JobCommand::Fail {
                id: c2.id,
                attempt: 2,
                error: "boom".into(),
            },
        );
        let job = &t.jobs[&c.id];
        assert_eq!(job.state, JobState::Dead);
        assert_eq!(job.last_error.as_deref(), Some("attempt 2: boom"));
        assert_eq!(t.stats["q"].dead, 1);
        run(&mut t, 6_000, &JobCommand::Retry { id: c.id });
        assert_eq!(claim(&mut t, 6_000).unwrap().attempt, 1);
    }

    #[test]
    fn delayed_jobs_wait_and_backoff_is_bounded() {
        let mut t = MemJobs::default();
        let mut e = match enqueue("q", 5, None) {
            JobCommand::Enqueue(e) => e,
            _ => unreachable!(),
        };
        e.delay_ms = 500;
        run(&mut t, 1_000, &JobCommand::Enqueue(e));
        assert!(claim(&mut t, 1_499).is_none());
        assert!(claim(&mut t, 1_500).is_some());
        for attempts in 1..40 {
            let b = backoff_ms(7, attempts);
            assert!(
                (1_000..=BACKOFF_MAX_MS * 5 / 4 + 1).contains(&b),
                "{attempts}: {b}"
            );
        }
        assert!(backoff_ms(7, 3) >= 4_000);
    }

    #[test]
    fn only_an_empty_queue_is_deleted_and_its_counts_and_keys_go_with_it() {
        let mut t = MemJobs::default();
        let delete = |q: &str| JobCommand::DeleteQueue { queue: q.into() };
        run(&mut t, 0, &enqueue("q", 5, Some("k")));
        run(&mut t, 0, &enqueue("other", 5, Some("k")));
        let refused = |t: &mut MemJobs| {
            matches!(
                run(t, 0, &JobCommand::DeleteQueue { queue: "q".into() }),
                Response::Job(JobOutcome::Conflict { .. })
            )
        };
        // Ready, then running: refused, nothing changed.
        assert!(refused(&mut t));
        claim(&mut t, 0).unwrap();
        assert!(refused(&mut t));
        assert_eq!(t.stats["q"].leased, 1);
        let done = JobCommand::Complete {
            id: 1,
            attempt: 1,
            result: None,
            retention_ms: 10_000,
        };
        assert_eq!(run(&mut t, 1, &done), Response::Job(JobOutcome::Done));
        assert_eq!(
            run(&mut t, 2, &delete("q")),
            Response::Job(JobOutcome::Done)
        );
        assert!(!t.stats.contains_key("q"));
        assert!(!t.keys.contains_key(&("q".into(), "k".into())));
        // Another queue's key is untouched; the finished job still runs out its retention.
        assert!(t.keys.contains_key(&("other".into(), "k".into())));
        assert_eq!(t.jobs[&1].state, JobState::Completed);
        assert_eq!(
            run(&mut t, 3, &delete("q")),
            Response::Job(JobOutcome::NotFound)
        );
        // The key is free: the same key enqueues a new job.
        assert_eq!(
            run(&mut t, 4, &enqueue("q", 5, Some("k"))),
            Response::Job(JobOutcome::Enqueued {
                id: 3,
                duplicate: false
            })
        );
        run(&mut t, 10_001, &JobCommand::Retry { id: 999 });
        assert!(!t.jobs.contains_key(&1));
        assert_eq!(t.keys[&("q".into(), "k".into())], 3);
    }

    #[test]
    fn a_queue_with_dead_jobs_is_not_deleted() {
        let mut t = MemJobs::default();
        run(&mut t, 0, &enqueue("q", 5, None));
        let c = claim(&mut t, 0).unwrap();
        t.jobs.get_mut(&c.id).unwrap().max_attempts = 1;
        let fail = JobCommand::Fail {
            id: c.id,
            attempt: 1,
            error: "boom".into(),
        };
        run(&mut t, 1, &fail);
        assert_eq!(t.stats["q"].dead, 1);
        assert!(matches!(
            run(&mut t, 2, &JobCommand::DeleteQueue { queue: "q".into() }),
            Response::Job(JobOutcome::Conflict { .. })
        ));
    }
}
