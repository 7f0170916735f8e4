//! etcd's KV service: Range, Put, DeleteRange, Txn and Compact on kith's key-value store.
//!
//! Writes become one [`Command::Txn`] each (a lone put or delete-range is a transaction of
//! one operation), proposed through the node like every other write, so they are validated
//! on the leader and forwarded from a follower. Reads take the read index unless
//! `serializable`; a read at an earlier revision is rebuilt from the kept events
//! (`history`). Sorting, revision filters and limits follow etcd's order: filter, sort,
//! then cut to the limit, with `count` the keys in the range before any of it.
//!
//! A key's `lease` in an answer is the lease it is attached to when the answer is made.
//! Bounds every answer by [`RANGE_BYTES_MAX`].

use tonic::{Request, Response, Status};

use crate::common::{self, key, key_range, key_value, read_need, revision, write_need, Etcd};
use crate::history;
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::kv_server::Kv;
use crate::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::pb::etcdserverpb::{
    request_op, response_op, CompactionRequest, CompactionResponse, DeleteRangeRequest,
    DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RangeStreamResponse,
    RequestOp, ResponseOp, TxnRequest, TxnResponse,
};
use kith_core::txn::{self, KeyEntry, OpResult, Txn, TxnOp, TxnOutcome};
use kith_core::{Command, KvEntry, Response as Applied};
use kith_node::Consistency;

/// Bytes of keys and values one Range answers at most (etcd's clients accept up to 2 GiB;
/// a node holds the whole answer in memory).
pub const RANGE_BYTES_MAX: usize = 256 << 20;

type Answer<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl Kv for Etcd {
    type RangeStreamStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<RangeStreamResponse, Status>> + Send>>;

    async fn range_stream(
        &self,
        _request: Request<RangeRequest>,
    ) -> Answer<Self::RangeStreamStream> {
        Err(common::unimplemented(
            "KV.RangeStream",
            "read a large range in pieces with Range and a limit",
        ))
    }

    async fn range(&self, request: Request<RangeRequest>) -> Answer<RangeResponse> {
        let range = key_range(&request.get_ref().key, &request.get_ref().range_end)?;
        self.authorize(&request, read_need(&range))?;
        let r = request.into_inner();
        let consistency = if r.serializable {
            Consistency::Stale
        } else {
            Consistency::Linearizable
        };
        let fresh = self.node.read(consistency).await.map_err(common::status)?;
        let state = (*fresh).clone();
        let at = revision(r.revision, "revision")?;
        let limit = usize::try_from(revision(r.limit, "limit")?).unwrap_or(usize::MAX);
        let shaped = !plain(&r);
        let answer = tokio::task::spawn_blocking(move || {
            let current = state
                .kv_meta()
                .map_err(|e| Status::internal(e.to_string()))?
                .revision;
            let (kvs, count, revision) = if at == 0 || at == current {
                // Fetch one more than the limit to know whether there is more.
                let fetch = if shaped || limit == 0 {
                    usize::MAX
                } else {
                    limit.saturating_add(1)
                };
                let (kvs, count, revision) = state
                    .range(&range, fetch, u64::MAX)
                    .map_err(|e| Status::internal(e.to_string()))?;
                (kvs, count, revision)
            } else {
                let kvs = history::range_at(&state, &range, at, current, RANGE_BYTES_MAX)?;
                let count = kvs.len() as u64;
                (kvs, count, current)
            };
            Ok::<_, Status>((kvs, count, revision))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        let (kvs, count, revision) = answer;
        let (mut kvs, more) = shape(kvs, &r)?;
        if !r.keys_only {
            fill_leases(&self.node.read_stale(), &mut kvs);
        }
        Ok(Response::new(RangeResponse {
            header: self.header(revision),
            kvs,
            more,
            count: count as i64,
        }))
    }

    async fn put(&self, request: Request<PutRequest>) -> Answer<PutResponse> {
        let k = key(&request.get_ref().key)?;
        self.authorize(&request, write_need(&txn::KeyRange::one(k.clone())))?;
        let r = request.into_inner();
        let op = put_op(k, r)?;
        let (revision, mut outcome) = self.propose(Txn::single(op)).await?;
        let prev_kv = match outcome.results.pop() {
            Some(OpResult::Put { prev }) => prev.map(|(k, e)| key_value(&k, &e)),
            _ => None,
        };
        Ok(Response::new(PutResponse {
            header: self.header(revision),
            prev_kv,
        }))
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Answer<DeleteRangeResponse> {
        let range = key_range(&request.get_ref().key, &request.get_ref().range_end)?;
        self.authorize(&request, write_need(&range))?;
        let prev_kv = request.get_ref().prev_kv;
        let (revision, mut outcome) = self
            .propose(Txn::single(TxnOp::Delete { range, prev_kv }))
            .await?;
        let (deleted, prev) = match outcome.results.pop() {
            Some(OpResult::Delete { deleted, prev }) => (deleted, prev),
            _ => (0, Vec::new()),
        };
        Ok(Response::new(DeleteRangeResponse {
            header: self.header(revision),
            deleted: deleted as i64,
            prev_kvs: prev.iter().map(|(k, e)| key_value(k, e)).collect(),
        }))
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Answer<TxnResponse> {
        let (txn, shapes) = to_txn(request.get_ref())?;
        for need in needs(&txn) {
            self.authorize(&request, need)?;
        }
        let (revision, outcome) = self.propose(txn).await?;
        Ok(Response::new(
            self.txn_response(revision, outcome, &shapes)?,
        ))
    }

    async fn compact(&self, request: Request<CompactionRequest>) -> Answer<CompactionResponse> {
        self.authorize(&request, kith_core::auth::Need::Admin)?;
        let at = revision(request.get_ref().revision, "revision")?;
        let (fresh, current) = self.fresh().await?;
        let kept_from = fresh
            .events_compacted()
            .map_err(|e| Status::internal(e.to_string()))?;
        if at > current {
            return Err(history::future());
        }
        if at < kept_from {
            return Err(history::compacted());
        }
        // kith trims its history itself (--events-kept, --events-bytes-kept): a compaction
        // to a revision it still keeps changes nothing, and is answered as done.
        Ok(Response::new(CompactionResponse {
            header: self.header(current),
        }))
    }
}

impl Etcd {
    /// Proposes `txn` and returns the store's revision after it and what it did.
    async fn propose(&self, txn: Txn) -> Result<(u64, TxnOutcome), Status> {
        match self
            .node
            .write(Command::Txn(txn))
            .await
            .map_err(common::status)?
        {
            Applied::Txn { revision, outcome } => Ok((revision, outcome)),
            Applied::Rejected { reason } if reason.starts_with("requested lease not found") => {
                Err(Status::not_found("etcdserver: requested lease not found"))
            }
            Applied::Rejected { reason } => {
                Err(Status::invalid_argument(format!("etcdserver: {reason}")))
            }
            other => Err(Status::internal(format!(
                "etcdserver: a transaction answered {other:?}"
            ))),
        }
    }

    fn txn_response(
        &self,
        revision: u64,
        outcome: TxnOutcome,
        shapes: &Shapes,
    ) -> Result<TxnResponse, Status> {
        let branch = if outcome.succeeded {
            &shapes.success
        } else {
            &shapes.failure
        };
        let mut responses = Vec::with_capacity(outcome.results.len());
        for (result, how) in outcome.results.into_iter().zip(branch) {
            let response = match (result, how) {
                (OpResult::Put { prev }, _) => response_op::Response::ResponsePut(PutResponse {
                    header: self.header(revision),
                    prev_kv: prev.map(|(k, e)| key_value(&k, &e)),
                }),
                (OpResult::Delete { deleted, prev }, _) => {
                    response_op::Response::ResponseDeleteRange(DeleteRangeResponse {
                        header: self.header(revision),
                        deleted: deleted as i64,
                        prev_kvs: prev.iter().map(|(k, e)| key_value(k, e)).collect(),
                    })
                }
                (OpResult::Range { kvs, count, more }, Shape::Range(r)) => {
                    let (mut kvs, cut) = shape(kvs, r)?;
                    fill_leases(&self.node.read_stale(), &mut kvs);
                    response_op::Response::ResponseRange(RangeResponse {
                        header: self.header(revision),
                        kvs,
                        more: more || cut,
                        count: count as i64,
                    })
                }
                (OpResult::Txn(inner), Shape::Txn(inner_shapes)) => {
                    response_op::Response::ResponseTxn(self.txn_response(
                        revision,
                        inner,
                        inner_shapes,
                    )?)
                }
                _ => return Err(Status::internal("etcdserver: a result of the wrong kind")),
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        Ok(TxnResponse {
            header: self.header(revision),
            succeeded: outcome.succeeded,
            responses,
        })
    }
}

/// Whether a range needs no filter or sort beyond key order.
fn plain(r: &RangeRequest) -> bool {
    let sorted = r.sort_order != SortOrder::None as i32 || r.sort_target != SortTarget::Key as i32;
    !sorted
        && r.min_mod_revision == 0
        && r.max_mod_revision == 0
        && r.min_create_revision == 0
        && r.max_create_revision == 0
}

/// etcd's order on a fetched range: revision filters, then the sort, then the limit;
/// `keys_only` and `count_only` last. Returns the keys and whether the limit cut any.
fn shape(
    mut kvs: Vec<KeyEntry>,
    r: &RangeRequest,
) -> Result<(Vec<crate::pb::mvccpb::KeyValue>, bool), Status> {
    let bound = |v: i64| u64::try_from(v).unwrap_or(0);
    let (min_mod, max_mod) = (bound(r.min_mod_revision), bound(r.max_mod_revision));
    let (min_create, max_create) = (bound(r.min_create_revision), bound(r.max_create_revision));
    kvs.retain(|(_, e)| {
        (min_mod == 0 || e.mod_revision >= min_mod)
            && (max_mod == 0 || e.mod_revision <= max_mod)
            && (min_create == 0 || e.create_revision >= min_create)
            && (max_create == 0 || e.create_revision <= max_create)
    });
    let order = SortOrder::try_from(r.sort_order).unwrap_or(SortOrder::None);
    let target = SortTarget::try_from(r.sort_target).unwrap_or(SortTarget::Key);
    // etcd: a target other than the key with no order sorts ascending.
    let order = match (order, target) {
        (SortOrder::None, SortTarget::Key) => SortOrder::None,
        (SortOrder::None, _) => SortOrder::Ascend,
        (o, _) => o,
    };
    if order != SortOrder::None {
        let field = |e: &(String, KvEntry)| -> (Vec<u8>, u64) {
            match target {
                SortTarget::Key => (e.0.as_bytes().to_vec(), 0),
                SortTarget::Version => (Vec::new(), e.1.version),
                SortTarget::Create => (Vec::new(), e.1.create_revision),
                SortTarget::Mod => (Vec::new(), e.1.mod_revision),
                SortTarget::Value => (e.1.value.clone(), 0),
            }
        };
        // Stable, so equal targets stay in key order, as etcd's are.
        kvs.sort_by_key(field);
        if order == SortOrder::Descend {
            kvs.reverse();
        }
    }
    let limit = usize::try_from(r.limit).unwrap_or(0);
    let cut = limit > 0 && kvs.len() > limit;
    if cut {
        kvs.truncate(limit);
    }
    if r.count_only {
        return Ok((Vec::new(), cut));
    }
    let mut bytes = 0usize;
    let mut out = Vec::with_capacity(kvs.len());
    for (k, mut e) in kvs {
        if r.keys_only {
            e.value.clear();
        }
        bytes += k.len() + e.value.len();
        if bytes > RANGE_BYTES_MAX {
            return Err(history::too_large(RANGE_BYTES_MAX));
        }
        out.push(key_value(&k, &e));
    }
    Ok((out, cut))
}

fn put_op(key: String, r: PutRequest) -> Result<TxnOp, Status> {
    if r.lease < 0 {
        return Err(Status::invalid_argument(
            "etcdserver: a lease id is a positive integer",
        ));
    }
    Ok(TxnOp::Put {
        key,
        value: r.value,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        lease: r.lease,
        ignore_lease: r.ignore_lease,
    })
}

/// Fills in each key's lease, as the node's state has it now.
fn fill_leases(state: &kith_storage::StateReader, kvs: &mut [crate::pb::mvccpb::KeyValue]) {
    let keys: Vec<&str> = kvs
        .iter()
        .filter_map(|kv| std::str::from_utf8(&kv.key).ok())
        .collect();
    if keys.len() != kvs.len() {
        return;
    }
    if let Ok(leases) = state.key_leases(&keys) {
        for (kv, lease) in kvs.iter_mut().zip(leases) {
            kv.lease = lease;
        }
    }
}

/// How each range read of a transaction is shaped once it comes back.
struct Shapes {
    success: Vec<Shape>,
    failure: Vec<Shape>,
}

enum Shape {
    Write,
    Range(RangeRequest),
    Txn(Shapes),
}

fn to_txn(r: &TxnRequest) -> Result<(Txn, Shapes), Status> {
    let mut compares = Vec::with_capacity(r.compare.len());
    for c in &r.compare {
        let range = key_range(&c.key, &c.range_end)?;
        let target = CompareTarget::try_from(c.target)
            .map_err(|_| Status::invalid_argument("etcdserver: unknown compare target"))?;
        let op = match CompareResult::try_from(c.result)
            .map_err(|_| Status::invalid_argument("etcdserver: unknown compare result"))?
        {
            CompareResult::Equal => txn::CompareOp::Equal,
            CompareResult::Greater => txn::CompareOp::Greater,
            CompareResult::Less => txn::CompareOp::Less,
            CompareResult::NotEqual => txn::CompareOp::NotEqual,
        };
        let number = |v: Option<i64>| -> Result<u64, Status> {
            revision(v.unwrap_or(0), "a compared revision or version")
        };
        let union = c.target_union.clone();
        let target = match target {
            CompareTarget::Version => txn::CompareTarget::Version(number(match union {
                Some(TargetUnion::Version(v)) => Some(v),
                _ => None,
            })?),
            CompareTarget::Create => txn::CompareTarget::CreateRevision(number(match union {
                Some(TargetUnion::CreateRevision(v)) => Some(v),
                _ => None,
            })?),
            CompareTarget::Mod => txn::CompareTarget::ModRevision(number(match union {
                Some(TargetUnion::ModRevision(v)) => Some(v),
                _ => None,
            })?),
            CompareTarget::Value => txn::CompareTarget::Value(match union {
                Some(TargetUnion::Value(v)) => v,
                _ => Vec::new(),
            }),
            CompareTarget::Lease => txn::CompareTarget::Lease(match union {
                Some(TargetUnion::Lease(v)) => v,
                _ => 0,
            }),
        };
        compares.push(txn::Compare { range, op, target });
    }
    let (success, success_shapes) = to_ops(&r.success)?;
    let (failure, failure_shapes) = to_ops(&r.failure)?;
    Ok((
        Txn {
            compares,
            success,
            failure,
        },
        Shapes {
            success: success_shapes,
            failure: failure_shapes,
        },
    ))
}

fn to_ops(ops: &[RequestOp]) -> Result<(Vec<TxnOp>, Vec<Shape>), Status> {
    let mut out = Vec::with_capacity(ops.len());
    let mut shapes = Vec::with_capacity(ops.len());
    for op in ops {
        let Some(request) = &op.request else {
            return Err(Status::invalid_argument("etcdserver: an empty operation"));
        };
        match request {
            request_op::Request::RequestRange(r) => {
                if r.revision != 0 {
                    return Err(common::unimplemented(
                        "Txn with a range at a revision",
                        "a transaction reads the current state",
                    ));
                }
                out.push(TxnOp::Range {
                    range: key_range(&r.key, &r.range_end)?,
                    // Filters and sorts are applied to the whole range afterwards.
                    limit: if plain(r) {
                        revision(r.limit, "limit")?
                    } else {
                        0
                    },
                    keys_only: false,
                    count_only: false,
                });
                shapes.push(Shape::Range(r.clone()));
            }
            request_op::Request::RequestPut(p) => {
                out.push(put_op(key(&p.key)?, p.clone())?);
                shapes.push(Shape::Write);
            }
            request_op::Request::RequestDeleteRange(d) => {
                out.push(TxnOp::Delete {
                    range: key_range(&d.key, &d.range_end)?,
                    prev_kv: d.prev_kv,
                });
                shapes.push(Shape::Write);
            }
            request_op::Request::RequestTxn(t) => {
                let (inner, inner_shapes) = to_txn(t)?;
                out.push(TxnOp::Txn(inner));
                shapes.push(Shape::Txn(inner_shapes));
            }
        }
    }
    Ok((out, shapes))
}

/// What a token needs for every compare and operation of `txn`.
fn needs(txn: &Txn) -> Vec<kith_core::auth::Need> {
    let mut out: Vec<_> = txn.compares.iter().map(|c| read_need(&c.range)).collect();
    for op in txn.success.iter().chain(&txn.failure) {
        match op {
            TxnOp::Put { key, .. } => out.push(write_need(&txn::KeyRange::one(key.clone()))),
            TxnOp::Delete { range, .. } => out.push(write_need(range)),
            TxnOp::Range { range, .. } => out.push(read_need(range)),
            TxnOp::Txn(inner) => out.extend(needs(inner)),
        }
    }
    out
}
