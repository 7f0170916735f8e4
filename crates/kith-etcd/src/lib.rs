//! etcd's v3 API on a kith node: its gRPC services on the node's own port, so etcdctl and
//! etcd's client libraries work against a kith cluster, on the same keys, revisions and
//! watch events as `/v1/kv` and `kith kv`.
//!
//! Owns the mapping of etcd's messages onto kith: [`kv`] (Range, Put, DeleteRange, Txn,
//! Compact), [`watch`], and in [`cluster`] the member list, status, alarms, logging in with
//! a kith token, and `Unimplemented` (naming the call) for what kith does not do; and
//! [`gateway`], the same calls as etcd's JSON gateway (`/v3/kv/range` and the rest). The
//! message types and service traits are generated at build time from etcd's own `.proto`
//! files in `proto/` (see `build.rs`).
//!
//! Refuses: leases (kith's keys have TTLs, not leases, so far), etcd's users and roles
//! (kith's tokens stand in), and keys that are not UTF-8.

pub mod cluster;
pub mod common;
pub mod gateway;
pub mod history;
pub mod kv;
pub mod watch;

use std::sync::Arc;

use kith_node::Node;

pub use common::Etcd;

/// The code prost and tonic generate from etcd's `.proto` files.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
        include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
    }
    pub mod authpb {
        tonic::include_proto!("authpb");
        include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
        include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
    }
}

/// Every etcd service, as routes the node's HTTP server serves beside its own: gRPC
/// requests are HTTP/2 POSTs to `/etcdserverpb.<Service>/<Call>`, and each service takes
/// the paths under its name. (No fallback: a path no service names is the node's 404.)
pub fn routes<S: Clone + Send + Sync + 'static>(node: Arc<Node>) -> axum::Router<S> {
    use pb::etcdserverpb::{
        auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer,
        lease_server::LeaseServer, maintenance_server::MaintenanceServer,
        watch_server::WatchServer,
    };
    use tonic::server::NamedService;
    fn path<T: NamedService>() -> String {
        format!("/{}/{{*call}}", T::NAME)
    }
    let etcd = Etcd { node };
    axum::Router::new()
        .route_service(&path::<KvServer<Etcd>>(), KvServer::new(etcd.clone()))
        .route_service(&path::<WatchServer<Etcd>>(), WatchServer::new(etcd.clone()))
        .route_service(&path::<LeaseServer<Etcd>>(), LeaseServer::new(etcd.clone()))
        .route_service(
            &path::<ClusterServer<Etcd>>(),
            ClusterServer::new(etcd.clone()),
        )
        .route_service(
            &path::<MaintenanceServer<Etcd>>(),
            MaintenanceServer::new(etcd.clone()),
        )
        .route_service(&path::<AuthServer<Etcd>>(), AuthServer::new(etcd.clone()))
        .merge(gateway::routes(etcd.node))
}
