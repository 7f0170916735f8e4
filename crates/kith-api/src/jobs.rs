//! The job queue over HTTP: enqueue, claim (long poll), heartbeat, complete, fail, inspect,
//! retry and cancel.
//!
//! Every state change is a replicated command, so two workers never hold the same job, and
//! each report names the attempt it belongs to: one from an attempt whose lease ran out is
//! refused with 409 (fencing). A claim with `wait` polls this node's local state and only
//! proposes a claim when a job looks ready, waking on every apply, until the wait runs out.
//! At most `kith_node::node::CLAIM_WAITS_MAX` such waits are open on a node at once; one
//! more is answered 503 `too_many_claims` with `retry-after`.
//!
//! Routes check parameters in the client's units (seconds) with clear messages, then the
//! command with `Command::validate` — the check the leader repeats before proposing.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::OwnedSemaphorePermit;

use crate::error::ApiError;
use crate::params::{parse_consistency, Q};
use kith_core::jobs::{
    Claimed, Enqueue, Job, JobCommand, JobOutcome, JobState, QueueStats, ATTEMPTS_MAX, DELAY_S_MAX,
    ERROR_BYTES_MAX, LEASE_S_MAX, PRIORITY_DEFAULT, PRIORITY_MAX, RESULT_BYTES_MAX, TIMEOUT_S_MAX,
    WORKER_CHARS_MAX,
};
use kith_core::{Command, Response as Applied};
use kith_node::node::CLAIM_WAITS_MAX;
use kith_node::Node;

const LEASE_S_DEFAULT: u64 = 30;
const WAIT_S_MAX: u64 = 60;
const ATTEMPTS_DEFAULT: u32 = 5;
const TIMEOUT_S_DEFAULT: u64 = 300;
const LIST_MAX: usize = 500;

type Shared = State<Arc<Node>>;

fn queue_name(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(queue) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    kith_core::limits::validate_room(&queue).map_err(|_| {
        ApiError::bad_request(
            "queue name must be 1 to 64 characters of letters, digits, '-', '_' or '.'",
        )
    })?;
    Ok(queue)
}

fn job_id(path: Result<Path<String>, PathRejection>) -> Result<u64, ApiError> {
    let Path(id) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    id.parse().map_err(|_| {
        ApiError::bad_request(format!("job id must be a positive integer, got '{id}'"))
    })
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message)
}

fn state_name(s: JobState) -> &'static str {
    match s {
        JobState::Ready => "ready",
        JobState::Delayed => "delayed",
        JobState::Leased => "leased",
        JobState::Completed => "completed",
        JobState::Dead => "dead",
        JobState::Cancelled => "cancelled",
    }
}

/// A job as the API shows it; payload and result are JSON again.
pub fn job_json(job: &Job) -> Value {
    let as_json = |text: &str| serde_json::from_str::<Value>(text).unwrap_or_else(|_| json!(text));
    json!({
        "id": job.id,
        "queue": job.queue,
        "state": state_name(job.state),
        "payload": as_json(&job.payload),
        "priority": job.priority,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "timeout_s": job.timeout_ms / 1000,
        "run_at_ms": job.run_at_ms,
        "created_ms": job.created_ms,
        "updated_ms": job.updated_ms,
        "lease": job.lease.as_ref().map(|l| json!({"attempt": l.attempt, "until_ms": l.until_ms, "worker": l.worker})),
        "last_error": job.last_error,
        "result": job.result.as_deref().map(as_json),
        "idempotency_key": job.idempotency_key,
    })
}

fn stats_json(queue: &str, s: &QueueStats) -> Value {
    json!({
        "name": queue,
        "ready": s.ready,
        "delayed": s.delayed,
        "leased": s.leased,
        "dead": s.dead,
        "enqueued_total": s.enqueued_total,
        "completed_total": s.completed_total,
        "failed_total": s.failed_total,
    })
}

async fn run(node: &Node, command: JobCommand) -> Result<JobOutcome, ApiError> {
    let command = Command::Job(command);
    command.validate(&node.limits())?;
    match node.write(command).await? {
        Applied::Job(outcome) => Ok(outcome),
        Applied::Rejected { reason } => Err(ApiError::rejected(reason)),
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("unexpected result {other:?}"),
        )),
    }
}

fn done(outcome: JobOutcome, id: u64) -> Result<Response, ApiError> {
    match outcome {
        JobOutcome::Done => Ok(Json(json!({"id": id, "ok": true})).into_response()),
        JobOutcome::Conflict { reason } => {
            Err(ApiError::new(StatusCode::CONFLICT, "job_conflict", reason))
        }
        JobOutcome::NotFound => Err(ApiError::not_found(format!("no job {id}"))),
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("unexpected outcome {other:?}"),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnqueueBody {
    payload: Value,
    priority: Option<u8>,
    run_at: Option<u64>,
    delay_s: Option<u64>,
    max_attempts: Option<u32>,
    timeout_s: Option<u64>,
    idempotency_key: Option<String>,
}

pub async fn enqueue(
    State(node): Shared,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<EnqueueBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    let queue = queue_name(path)?;
    let Json(b) = body.map_err(|e| bad(e.body_text()))?;
    let payload = b.payload.to_string();
    if payload.len() > node.config.job_payload_bytes_max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "payload is {} bytes; the limit is {}",
                payload.len(),
                node.config.job_payload_bytes_max
            ),
        ));
    }
    let priority = b.priority.unwrap_or(PRIORITY_DEFAULT);
    if priority > PRIORITY_MAX {
        return Err(bad(format!("priority must be 0 to {PRIORITY_MAX}")));
    }
    if b.run_at.is_some() && b.delay_s.is_some() {
        return Err(bad("give run_at or delay_s, not both"));
    }
    let delay_s = b.delay_s.unwrap_or(0);
    if delay_s > DELAY_S_MAX {
        return Err(bad(format!("delay_s must be at most {DELAY_S_MAX}")));
    }
    let max_attempts = b.max_attempts.unwrap_or(ATTEMPTS_DEFAULT);
    if !(1..=ATTEMPTS_MAX).contains(&max_attempts) {
        return Err(bad(format!("max_attempts must be 1 to {ATTEMPTS_MAX}")));
    }
    let timeout_s = b.timeout_s.unwrap_or(TIMEOUT_S_DEFAULT);
    if !(1..=TIMEOUT_S_MAX).contains(&timeout_s) {
        return Err(bad(format!("timeout_s must be 1 to {TIMEOUT_S_MAX}")));
    }
    if let Some(key) = &b.idempotency_key {
        kith_core::limits::validate_message_id(key).map_err(|_| {
            bad("idempotency_key must be 1 to 64 characters of letters, digits, '-', '_' or '.'")
        })?;
    }
    let command = JobCommand::Enqueue(Enqueue {
        queue,
        payload,
        priority,
        run_at_ms: b.run_at.unwrap_or(0),
        delay_ms: delay_s * 1000,
        max_attempts,
        timeout_ms: timeout_s * 1000,
        idempotency_key: b.idempotency_key,
        retention_ms: 0, // set by the leader
    });
    match run(&node, command).await? {
        JobOutcome::Enqueued { id, duplicate } => {
            let status = if duplicate {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok((status, Json(json!({"id": id, "duplicate": duplicate}))).into_response())
        }
        other => done(other, 0),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimQuery {
    lease: Option<u64>,
    wait: Option<u64>,
    worker: Option<String>,
}

pub async fn claim(
    State(node): Shared,
    path: Result<Path<String>, PathRejection>,
    Q(q): Q<ClaimQuery>,
) -> Result<Response, ApiError> {
    let queue = queue_name(path)?;
    let lease_s = q.lease.unwrap_or(LEASE_S_DEFAULT);
    if !(1..=LEASE_S_MAX).contains(&lease_s) {
        return Err(bad(format!("lease must be 1 to {LEASE_S_MAX} seconds")));
    }
    let wait_s = q.wait.unwrap_or(0);
    if wait_s > WAIT_S_MAX {
        return Err(bad(format!("wait must be at most {WAIT_S_MAX} seconds")));
    }
    let worker = q.worker.unwrap_or_else(|| "anonymous".into());
    if worker.is_empty()
        || worker.chars().count() > WORKER_CHARS_MAX
        || worker.chars().any(char::is_control)
    {
        return Err(bad(format!(
            "worker must be 1 to {WORKER_CHARS_MAX} printable characters"
        )));
    }
    let _permit = claim_permit(&node, wait_s)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait_s);
    let mut wake = node.applied_changes();
    let stop = node.stop_signal();
    tokio::pin!(stop);
    loop {
        wake.borrow_and_update();
        // This node's own view, no barrier: "ready" here is a hint; the replicated claim
        // decides.
        if node.read_stale().has_ready(&queue)? {
            let command = JobCommand::Claim {
                queue: queue.clone(),
                lease_ms: lease_s * 1000,
                worker: worker.clone(),
            };
            if let JobOutcome::Claimed(Some(c)) = run(&node, command).await? {
                return Ok(Json(claimed_json(&c)).into_response());
            }
            // Another worker took it first; look again.
            continue;
        }
        // Nothing ready here yet: wait for the next apply, or the end of the wait, or the
        // node's planned stop (the worker then claims again, from another node).
        tokio::select! {
            woke = tokio::time::timeout_at(deadline, wake.changed()) => {
                if !matches!(woke, Ok(Ok(()))) {
                    return Ok(StatusCode::NO_CONTENT.into_response());
                }
            }
            () = &mut stop => return Ok(StatusCode::NO_CONTENT.into_response()),
        }
    }
}

/// A permit from the node's bound on waiting claims, for a claim that may wait (`wait_s` >
/// 0); it is released when the poll ends. A claim that does not wait needs none.
fn claim_permit(node: &Node, wait_s: u64) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
    if wait_s == 0 {
        return Ok(None);
    }
    let permit = node.claim_waits.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_claims",
            format!(
                "this node already holds {CLAIM_WAITS_MAX} waiting claims; retry later \
                 or ask another node"
            ),
        )
    })?;
    Ok(Some(permit))
}

/// A claimed job as the worker receives it; the payload is JSON again.
fn claimed_json(c: &Claimed) -> Value {
    let payload = serde_json::from_str::<Value>(&c.payload).unwrap_or(json!(c.payload));
    json!({
        "id": c.id,
        "attempt": c.attempt,
        "payload": payload,
        "lease_until_ms": c.lease_until_ms,
        "timeout_s": c.timeout_ms / 1000,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    attempt: u32,
    lease: Option<u64>,
    result: Option<Value>,
    error: Option<String>,
}

pub async fn report(
    State(node): Shared,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Json<Report>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Path((id, action)) = path.map_err(|e| bad(e.body_text()))?;
    let id: u64 = id
        .parse()
        .map_err(|_| bad(format!("job id must be a positive integer, got '{id}'")))?;
    let Json(r) = body.map_err(|e| bad(e.body_text()))?;
    let command = match action.as_str() {
        "heartbeat" => {
            let lease_s = r.lease.unwrap_or(LEASE_S_DEFAULT);
            if !(1..=LEASE_S_MAX).contains(&lease_s) {
                return Err(bad(format!("lease must be 1 to {LEASE_S_MAX} seconds")));
            }
            JobCommand::Heartbeat {
                id,
                attempt: r.attempt,
                lease_ms: lease_s * 1000,
            }
        }
        "complete" => {
            let result = r.result.map(|v| v.to_string());
            if result.as_ref().is_some_and(|t| t.len() > RESULT_BYTES_MAX) {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("result is limited to {RESULT_BYTES_MAX} bytes"),
                ));
            }
            JobCommand::Complete {
                id,
                attempt: r.attempt,
                result,
                retention_ms: 0,
            }
        }
        "fail" => {
            let error = r.error.ok_or_else(|| bad("fail needs an error message"))?;
            if error.len() > ERROR_BYTES_MAX {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("error is limited to {ERROR_BYTES_MAX} bytes"),
                ));
            }
            JobCommand::Fail {
                id,
                attempt: r.attempt,
                error,
            }
        }
        other => return Err(ApiError::not_found(format!("no job action '{other}'"))),
    };
    done(run(&node, command).await?, id)
}

pub async fn retry(
    State(node): Shared,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = job_id(path)?;
    done(run(&node, JobCommand::Retry { id }).await?, id)
}

pub async fn cancel(
    State(node): Shared,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = job_id(path)?;
    done(
        run(
            &node,
            JobCommand::Cancel {
                id,
                retention_ms: 0,
            },
        )
        .await?,
        id,
    )
}

/// `DELETE /v1/queues/{q}`: deletes an empty queue's counts and idempotency keys. 409
/// `queue_not_empty` while it holds ready, delayed, running or dead jobs; 404 if there is no
/// such queue.
pub async fn delete_queue(
    State(node): Shared,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let queue = queue_name(path)?;
    let command = JobCommand::DeleteQueue {
        queue: queue.clone(),
    };
    match run(&node, command).await? {
        JobOutcome::Done => Ok(Json(json!({"queue": queue, "deleted": true})).into_response()),
        JobOutcome::Conflict { reason } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "queue_not_empty",
            reason,
        )),
        JobOutcome::NotFound => Err(ApiError::not_found(format!("no queue '{queue}'"))),
        other => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("unexpected outcome {other:?}"),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadQuery {
    consistency: Option<String>,
}

pub async fn get_job(
    State(node): Shared,
    path: Result<Path<String>, PathRejection>,
    Q(q): Q<ReadQuery>,
) -> Result<Response, ApiError> {
    let id = job_id(path)?;
    let state = node
        .read(parse_consistency(q.consistency.as_deref())?)
        .await?;
    match state.job(id)? {
        Some(job) => Ok(Json(job_json(&job)).into_response()),
        None => Err(ApiError::not_found(format!(
            "no job {id} (it may have been dropped after its retention)"
        ))),
    }
}

pub async fn queues(State(node): Shared, Q(q): Q<ReadQuery>) -> Result<Response, ApiError> {
    let state = node
        .read(parse_consistency(q.consistency.as_deref())?)
        .await?;
    let queues = state.queues(LIST_MAX)?;
    let queues: Vec<Value> = queues.iter().map(|(name, s)| stats_json(name, s)).collect();
    Ok(Json(json!({ "queues": queues })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<usize>,
    state: Option<String>,
    queue: Option<String>,
}

fn list_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(100);
    if limit == 0 || limit > LIST_MAX {
        return Err(bad(format!("limit must be 1 to {LIST_MAX}")));
    }
    Ok(limit)
}

pub async fn dead(
    State(node): Shared,
    path: Result<Path<String>, PathRejection>,
    Q(q): Q<ListQuery>,
) -> Result<Response, ApiError> {
    let queue = queue_name(path)?;
    if q.state.is_some() || q.queue.is_some() {
        return Err(bad("this list takes only limit"));
    }
    let limit = list_limit(q.limit)?;
    let jobs = node
        .read_stale()
        .jobs_where(limit, |j| j.queue == queue && j.state == JobState::Dead)?;
    let jobs: Vec<Value> = jobs.iter().map(job_json).collect();
    Ok(Json(json!({ "queue": queue, "jobs": jobs })).into_response())
}

/// `GET /v1/jobs?state=leased&queue=Q&limit=N`: recent jobs, newest first (for the web page).
pub async fn list(State(node): Shared, Q(q): Q<ListQuery>) -> Result<Response, ApiError> {
    let limit = list_limit(q.limit)?;
    let wanted = match q.state.as_deref() {
        None => None,
        Some(s) => Some(
            [
                JobState::Ready,
                JobState::Delayed,
                JobState::Leased,
                JobState::Completed,
                JobState::Dead,
                JobState::Cancelled,
            ]
            .into_iter()
            .find(|st| state_name(*st) == s)
            .ok_or_else(|| bad(format!("unknown state '{s}'")))?,
        ),
    };
    let queue = q.queue;
    let jobs = node.read_stale().jobs_where(limit, |j| {
        wanted.is_none_or(|w| j.state == w) && queue.as_ref().is_none_or(|q| &j.queue == q)
    })?;
    let jobs: Vec<Value> = jobs.iter().map(job_json).collect();
    Ok(Json(json!({ "jobs": jobs })).into_response())
}
