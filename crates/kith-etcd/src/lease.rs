//! etcd's Lease service: grant (with a requested id, or one chosen here), revoke,
//! keep-alive (a stream), time-to-live with the attached keys, and the list of leases.
//!
//! Grant, revoke and every keep-alive are Raft commands (`kith_core::lease`): the lease's
//! deadline is on the leader's clock, replicated, so a new leader expires it at the same
//! moment the old one would have. Time-to-live answers from this node's state and wall
//! clock.
//!
//! A token may grant, revoke and keep leases alive if its role writes keys (write or
//! admin): a lease holds no key by itself, and attaching one is a put the token must be
//! allowed. Bounds: [`kith_core::lease::LEASES_MAX`] leases; a keep-alive stream's
//! requests are answered one at a time, so it queues nothing.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::common::{self, wall_clock_ms, Etcd};
use crate::pb::etcdserverpb::lease_server::Lease;
use crate::pb::etcdserverpb::*;
use kith_core::auth::Role;
use kith_core::lease::{LeaseCommand, LeaseOutcome, LEASES_MAX};
use kith_core::{Command, Response as Applied};
use kith_node::Consistency;

type Answer<T> = Result<Response<T>, Status>;
type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn not_found() -> Status {
    Status::not_found("etcdserver: requested lease not found")
}

impl Etcd {
    /// Checks that the caller's token may write keys (see the module docs).
    fn authorize_leases<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if !self.node.auth_required() {
            return Ok(());
        }
        let record = self.token_record(request)?;
        match record.role {
            Role::Admin | Role::Write => Ok(()),
            _ => Err(Status::permission_denied("etcdserver: permission denied")),
        }
    }

    /// The state after a read barrier, and its revision.
    pub(crate) async fn fresh(&self) -> Result<(kith_storage::StateReader, u64), Status> {
        let fresh = self
            .node
            .read(Consistency::Linearizable)
            .await
            .map_err(common::status)?;
        let state = (*fresh).clone();
        let revision = state.kv_meta().map_or(0, |m| m.revision);
        Ok((state, revision))
    }

    async fn lease_command(&self, command: LeaseCommand) -> Result<(u64, LeaseOutcome), Status> {
        command
            .validate()
            .map_err(|e| Status::invalid_argument(format!("etcdserver: {e}")))?;
        match self
            .node
            .write(Command::Lease(command))
            .await
            .map_err(common::status)?
        {
            Applied::Lease { revision, outcome } => Ok((revision, outcome)),
            Applied::Rejected { reason } => {
                Err(Status::invalid_argument(format!("etcdserver: {reason}")))
            }
            other => Err(Status::internal(format!(
                "etcdserver: a lease command answered {other:?}"
            ))),
        }
    }
}

impl Etcd {
    /// One keep-alive: the lease's TTL again, or 0 when it is gone (etcd's answer).
    pub async fn keep_alive_once(
        &self,
        request: Request<LeaseKeepAliveRequest>,
    ) -> Result<LeaseKeepAliveResponse, Status> {
        self.authorize_leases(&request)?;
        let id = request.into_inner().id;
        self.keep_alive(id).await
    }

    async fn keep_alive(&self, id: i64) -> Result<LeaseKeepAliveResponse, Status> {
        let (revision, outcome) = self.lease_command(LeaseCommand::KeepAlive { id }).await?;
        let ttl = match outcome {
            LeaseOutcome::KeptAlive { ttl_s } => ttl_s,
            _ => 0,
        };
        Ok(LeaseKeepAliveResponse {
            header: self.header(revision),
            id,
            ttl,
        })
    }
}

/// A fresh lease id: positive, random, as etcd's leader picks one.
fn new_id() -> Result<i64, Status> {
    let n = getrandom::u64().map_err(|e| Status::internal(e.to_string()))?;
    Ok(((n >> 1) as i64).max(1))
}

#[tonic::async_trait]
impl Lease for Etcd {
    type LeaseKeepAliveStream = Boxed<LeaseKeepAliveResponse>;

    async fn lease_grant(&self, request: Request<LeaseGrantRequest>) -> Answer<LeaseGrantResponse> {
        self.authorize_leases(&request)?;
        let r = request.into_inner();
        let id = if r.id == 0 { new_id()? } else { r.id };
        let (revision, outcome) = self
            .lease_command(LeaseCommand::Grant { id, ttl_s: r.ttl })
            .await?;
        match outcome {
            LeaseOutcome::Granted { id, ttl_s } => Ok(Response::new(LeaseGrantResponse {
                header: self.header(revision),
                id,
                ttl: ttl_s,
                error: String::new(),
            })),
            LeaseOutcome::Exists => Err(Status::failed_precondition(format!(
                "etcdserver: lease already exists (or the cluster holds its maximum of \
                 {LEASES_MAX} leases)"
            ))),
            other => Err(Status::internal(format!(
                "etcdserver: grant answered {other:?}"
            ))),
        }
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Answer<LeaseRevokeResponse> {
        self.authorize_leases(&request)?;
        let id = request.into_inner().id;
        match self.lease_command(LeaseCommand::Revoke { id }).await? {
            (revision, LeaseOutcome::Revoked { .. }) => Ok(Response::new(LeaseRevokeResponse {
                header: self.header(revision),
            })),
            (_, LeaseOutcome::NotFound) => Err(not_found()),
            (_, other) => Err(Status::internal(format!(
                "etcdserver: revoke answered {other:?}"
            ))),
        }
    }

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Answer<Self::LeaseKeepAliveStream> {
        self.authorize_leases(&request)?;
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(1);
        let etcd = self.clone();
        tokio::spawn(async move {
            let stop = etcd.node.stop_signal();
            tokio::pin!(stop);
            loop {
                let message = tokio::select! {
                    m = inbound.next() => m,
                    () = &mut stop => None,
                };
                let Some(Ok(keep)) = message else { return };
                let answer = etcd.keep_alive(keep.id).await;
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Answer<LeaseTimeToLiveResponse> {
        self.authorize(&request, kith_core::auth::Need::Monitor)?;
        let r = request.into_inner();
        let (fresh, revision) = self.fresh().await?;
        let found = fresh
            .lease(r.id)
            .map_err(|e| Status::internal(e.to_string()))?;
        // etcd answers a lease that is gone with a TTL of -1.
        let Some((lease, keys)) = found else {
            return Ok(Response::new(LeaseTimeToLiveResponse {
                header: self.header(revision),
                id: r.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            }));
        };
        let left_ms = lease.expires_at_ms.saturating_sub(wall_clock_ms());
        Ok(Response::new(LeaseTimeToLiveResponse {
            header: self.header(revision),
            id: lease.id,
            ttl: left_ms.div_ceil(1000) as i64,
            granted_ttl: lease.ttl_s,
            keys: if r.keys {
                keys.into_iter().map(String::into_bytes).collect()
            } else {
                Vec::new()
            },
        }))
    }

    async fn lease_leases(
        &self,
        request: Request<LeaseLeasesRequest>,
    ) -> Answer<LeaseLeasesResponse> {
        self.authorize(&request, kith_core::auth::Need::Monitor)?;
        let (fresh, revision) = self.fresh().await?;
        let ids = fresh
            .lease_ids(LEASES_MAX)
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(LeaseLeasesResponse {
            header: self.header(revision),
            leases: ids.into_iter().map(|id| LeaseStatus { id }).collect(),
        }))
    }
}
