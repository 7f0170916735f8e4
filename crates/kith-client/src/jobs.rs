//! The job queue: enqueue, claim, report, inspect.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::{Client, ClientError, Retry, JSON};

/// A job handed to a worker by [`Client::claim`].
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimedJob {
    pub id: u64,
    pub attempt: u32,
    pub payload: Value,
    pub timeout_s: u64,
}

impl Client {
    async fn post_json(
        &self,
        path: &str,
        body: &Value,
        retry: Retry,
    ) -> Result<reqwest::Response, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Decode(e.to_string()))?;
        self.send(Method::POST, path, Some((bytes, JSON)), retry)
            .await
    }

    /// Enqueues a job (the body of `POST /v1/queues/{q}/jobs`); returns its id. With an
    /// `idempotency_key` in `job`, retries are safe and the client makes them.
    pub async fn enqueue(&self, queue: &str, job: &Value) -> Result<u64, ClientError> {
        let retry = if job.get("idempotency_key").is_some() {
            Retry::Idempotent
        } else {
            Retry::OnlyIfNotApplied
        };
        let v = Self::json(
            self.post_json(&format!("/v1/queues/{queue}/jobs"), job, retry)
                .await?,
        )
        .await?;
        v["id"]
            .as_u64()
            .ok_or_else(|| ClientError::Decode(v.to_string()))
    }

    /// Claims the next ready job of `queue`, waiting up to `wait_s`; `None` if none came.
    /// Not retried after an ambiguous failure: a claim that did happen unseen simply lets its
    /// lease run out, and the job is retried.
    pub async fn claim(
        &self,
        queue: &str,
        lease_s: u64,
        wait_s: u64,
        worker: &str,
    ) -> Result<Option<ClaimedJob>, ClientError> {
        let path = format!(
            "/v1/queues/{queue}/claim?lease={lease_s}&wait={wait_s}&worker={}",
            crate::encode_query(worker)
        );
        let response = self
            .send(Method::POST, &path, None, Retry::OnlyIfNotApplied)
            .await?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let v = Self::json(response).await?;
        Ok(Some(ClaimedJob {
            id: v["id"]
                .as_u64()
                .ok_or_else(|| ClientError::Decode(v.to_string()))?,
            attempt: v["attempt"].as_u64().unwrap_or(0) as u32,
            payload: v["payload"].clone(),
            timeout_s: v["timeout_s"].as_u64().unwrap_or(300),
        }))
    }

    /// Heartbeat, complete or fail attempt `attempt` of job `id`. Reports are fenced by the
    /// attempt, so repeating one is safe.
    pub async fn report(
        &self,
        id: u64,
        action: &str,
        attempt: u32,
        extra: Value,
    ) -> Result<(), ClientError> {
        let mut body = json!({ "attempt": attempt });
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
            body.extend(extra);
        }
        let path = format!("/v1/jobs/{id}/{action}");
        Self::json(self.post_json(&path, &body, Retry::Idempotent).await?)
            .await
            .map(drop)
    }

    /// `GET /v1/jobs/{id}`.
    pub async fn job(&self, id: u64) -> Result<Value, ClientError> {
        Self::json(
            self.send(
                Method::GET,
                &format!("/v1/jobs/{id}"),
                None,
                Retry::Idempotent,
            )
            .await?,
        )
        .await
    }

    /// `GET /v1/queues`.
    pub async fn queues(&self) -> Result<Value, ClientError> {
        Self::json(
            self.send(Method::GET, "/v1/queues", None, Retry::Idempotent)
                .await?,
        )
        .await
    }

    /// `GET /v1/queues/{q}/dead`.
    pub async fn dead_letters(&self, queue: &str) -> Result<Value, ClientError> {
        let path = format!("/v1/queues/{queue}/dead");
        Self::json(
            self.send(Method::GET, &path, None, Retry::Idempotent)
                .await?,
        )
        .await
    }

    /// Brings a dead job back to ready.
    pub async fn retry_job(&self, id: u64) -> Result<(), ClientError> {
        let path = format!("/v1/jobs/{id}/retry");
        Self::json(
            self.send(Method::POST, &path, None, Retry::Idempotent)
                .await?,
        )
        .await
        .map(drop)
    }

    /// Deletes an empty queue (its counts and idempotency keys); the server answers 409 while
    /// it holds jobs that are not finished.
    pub async fn delete_queue(&self, queue: &str) -> Result<(), ClientError> {
        let path = format!("/v1/queues/{queue}");
        Self::json(
            self.send(Method::DELETE, &path, None, Retry::Idempotent)
                .await?,
        )
        .await
        .map(drop)
    }

    /// Cancels a job.
    pub async fn cancel_job(&self, id: u64) -> Result<(), ClientError> {
        let path = format!("/v1/jobs/{id}");
        Self::json(
            self.send(Method::DELETE, &path, None, Retry::Idempotent)
                .await?,
        )
        .await
        .map(drop)
    }
}
