//! `EtcdTarget`: etcd's native gRPC KV API through the `etcd-client` crate, so etcd is
//! measured at its best (no JSON gateway).
//!
//! One `etcd_client::Client` per `--conns`, each given a single endpoint, so each is one
//! HTTP/2 connection that its clients multiplex over (as etcd's own benchmark tool does).
//! After a transport failure or an `Unavailable` status the connection is rebuilt against
//! the next endpoint, which is how a run survives a killed member. With `leader_first` a
//! connection asks the member it reached for the leader (`Status`, `MemberList`) and
//! connects to the leader instead, when the leader is one of the endpoints. `https`
//! endpoints are reached over TLS trusting `--ca`, presenting `--cert` and `--key` when
//! given (etcd run with `--client-cert-auth` asks for a client certificate).

use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, GetOptions, Identity, KvClient, TlsOptions,
};
use tokio::sync::Mutex;
use tokio::time::{timeout_at, Instant};

use super::{OpError, Outcome, CONNECT_TIMEOUT};
use crate::args::BenchArgs;
use crate::error::BenchError;
use crate::plan::Op;

/// The TLS options `args` asks for: `None` unless an endpoint is `https` (which
/// `BenchArgs::validate` accepts only with `--ca`). Read once; every connection of the run
/// is built with them.
pub fn tls_options(args: &BenchArgs) -> Result<Option<TlsOptions>, BenchError> {
    let https = args.endpoints.iter().any(|e| e.starts_with("https://"));
    let (Some(ca), true) = (args.ca.as_deref(), https) else {
        return Ok(None);
    };
    let read = |path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| BenchError::InvalidArgs(format!("cannot read {}: {e}", path.display())))
    };
    let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(read(ca)?));
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(Some(tls))
}

struct ConnState {
    /// `None` before the first request and after a failure.
    kv: Option<KvClient>,
    /// Index into `EtcdTarget::endpoints`.
    endpoint: usize,
}

pub struct EtcdTarget {
    endpoints: Vec<String>,
    /// One per `--conns`; the lock is held only to clone or replace the client, since
    /// gRPC multiplexes requests over the connection.
    conns: Vec<Mutex<ConnState>>,
    stale: bool,
    timeout: Duration,
    /// Connect to the leader rather than to the connection's own endpoint.
    leader_first: bool,
    tls: Option<TlsOptions>,
    /// The user and password to authenticate as (etcd with auth enabled).
    user: Option<(String, String)>,
}

impl EtcdTarget {
    pub fn new(
        endpoints: &[String],
        conns: usize,
        stale: bool,
        timeout: Duration,
        leader_first: bool,
        tls: Option<TlsOptions>,
        user: Option<(String, String)>,
    ) -> Self {
        EtcdTarget {
            endpoints: endpoints.to_vec(),
            conns: (0..conns)
                .map(|i| {
                    Mutex::new(ConnState {
                        kv: None,
                        endpoint: i % endpoints.len(),
                    })
                })
                .collect(),
            stale,
            timeout,
            leader_first,
            tls,
            user,
        }
    }

    /// Which of the endpoints the leader is, as the member `client` reached reports it.
    async fn leader_index(&self, client: &mut Client) -> Option<usize> {
        let leader = client.status().await.ok()?.leader();
        let members = client.member_list().await.ok()?;
        let member = members.members().iter().find(|m| m.id() == leader)?;
        member.client_urls().iter().find_map(|url| {
            let url = url.trim_end_matches('/');
            self.endpoints
                .iter()
                .position(|e| e.trim_end_matches('/') == url)
        })
    }

    pub async fn exec(&self, conn: usize, op: &Op) -> Result<Outcome, OpError> {
        let deadline = Instant::now() + self.timeout;
        let slot = &self.conns[conn];
        let mut kv = {
            let mut state = timeout_at(deadline, slot.lock())
                .await
                .map_err(|_| OpError::Timeout)?;
            match &state.kv {
                Some(kv) => kv.clone(),
                None => {
                    let mut options = ConnectOptions::new()
                        .with_connect_timeout(CONNECT_TIMEOUT)
                        .with_timeout(self.timeout);
                    if let Some(tls) = &self.tls {
                        options = options.with_tls(tls.clone());
                    }
                    if let Some((name, password)) = &self.user {
                        options = options.with_user(name, password);
                    }
                    let endpoint = &self.endpoints[state.endpoint];
                    match timeout_at(deadline, Client::connect([endpoint], Some(options.clone())))
                        .await
                    {
                        Ok(Ok(mut client)) => {
                            if self.leader_first {
                                let leader = timeout_at(deadline, self.leader_index(&mut client))
                                    .await
                                    .ok()
                                    .flatten();
                                if let Some(i) = leader.filter(|i| *i != state.endpoint) {
                                    let url = &self.endpoints[i];
                                    if let Ok(Ok(c)) =
                                        timeout_at(deadline, Client::connect([url], Some(options)))
                                            .await
                                    {
                                        client = c;
                                        state.endpoint = i;
                                    }
                                }
                            }
                            let kv = client.kv_client();
                            state.kv = Some(kv.clone());
                            kv
                        }
                        Ok(Err(_)) => {
                            state.endpoint = (state.endpoint + 1) % self.endpoints.len();
                            return Err(OpError::Connect);
                        }
                        Err(_) => return Err(OpError::Timeout),
                    }
                }
            }
        };
        let result = timeout_at(deadline, async {
            match op {
                Op::Put { key, value } => kv
                    .put(key.as_bytes(), value.as_ref(), None)
                    .await
                    .map(|_| Outcome::Done),
                Op::Get { key } => {
                    let options = self.stale.then(|| GetOptions::new().with_serializable());
                    kv.get(key.as_bytes(), options).await.map(|r| {
                        if r.kvs().is_empty() {
                            Outcome::NotFound
                        } else {
                            Outcome::Done
                        }
                    })
                }
            }
        })
        .await;
        let error = match result {
            Ok(Ok(outcome)) => return Ok(outcome),
            Ok(Err(etcd_client::Error::GRpcStatus(status))) => OpError::Grpc {
                code: format!("{:?}", status.code()),
                message: status.message().to_owned(),
            },
            Ok(Err(_)) => OpError::Transport,
            Err(_) => OpError::Timeout,
        };
        let move_on = match &error {
            OpError::Transport => true,
            OpError::Grpc { code, .. } => code == "Unavailable",
            _ => false,
        };
        if move_on {
            let mut state = slot.lock().await;
            state.kv = None;
            state.endpoint = (state.endpoint + 1) % self.endpoints.len();
        }
        Err(error)
    }
}
