//! etcd's v3 API on a kith node: its gRPC services on the node's own port, so etcdctl and
//! etcd's client libraries work against a kith cluster, on the same keys, revisions and
//! watch events as `/v1/kv` and `kith kv`.
//!
//! Owns the mapping of etcd's messages onto kith: [`kv`] (Range, Put, DeleteRange, Txn,
//! Compact), [`watch`], [`lease`], and in [`cluster`] the member list, status, alarms, logging in with
//! a kith token, and `Unimplemented` (naming the call) for what kith does not do; and
//! [`gateway`], the same calls as etcd's JSON gateway (`/v3/kv/range` and the rest). The
//! message types and service traits are generated at build time from etcd's own `.proto`
//! files in `proto/` (see `build.rs`).
//!
//! Refuses: etcd's users and roles (kith's tokens stand in), and keys that are not UTF-8.

pub mod cluster;
pub mod common;
pub mod gateway;
pub mod history;
pub mod kv;
pub mod lease;
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
    let etcd = Etcd { node };
    axum::Router::new()
        .route_service(GRPC_PATHS[0], KvServer::new(etcd.clone()))
        .route_service(GRPC_PATHS[1], WatchServer::new(etcd.clone()))
        .route_service(GRPC_PATHS[2], LeaseServer::new(etcd.clone()))
        .route_service(GRPC_PATHS[3], ClusterServer::new(etcd.clone()))
        .route_service(GRPC_PATHS[4], MaintenanceServer::new(etcd.clone()))
        .route_service(GRPC_PATHS[5], AuthServer::new(etcd.clone()))
        .merge(gateway::routes(etcd.node))
}

/// The gRPC services' paths, in the order [`routes`] mounts them.
const GRPC_PATHS: [&str; 6] = [
    "/etcdserverpb.KV/{*call}",
    "/etcdserverpb.Watch/{*call}",
    "/etcdserverpb.Lease/{*call}",
    "/etcdserverpb.Cluster/{*call}",
    "/etcdserverpb.Maintenance/{*call}",
    "/etcdserverpb.Auth/{*call}",
];

/// Every method and path [`routes`] serves, for the node's access table (each checks its
/// token itself: `common::Etcd::authorize`).
pub fn paths() -> Vec<(axum::http::Method, &'static str)> {
    use axum::http::Method;
    let mut paths: Vec<_> = GRPC_PATHS.iter().map(|p| (Method::POST, *p)).collect();
    paths.extend(gateway::POST_PATHS.iter().map(|p| (Method::POST, *p)));
    paths.push((Method::GET, "/version"));
    paths
}

#[cfg(test)]
mod tests {
    use super::pb::etcdserverpb::{
        auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer,
        lease_server::LeaseServer, maintenance_server::MaintenanceServer,
        watch_server::WatchServer,
    };
    use super::*;
    use tonic::server::NamedService;

    #[test]
    fn each_service_is_mounted_at_its_own_name() {
        fn path<T: NamedService>() -> String {
            format!("/{}/{{*call}}", T::NAME)
        }
        assert_eq!(
            GRPC_PATHS.map(str::to_owned),
            [
                path::<KvServer<Etcd>>(),
                path::<WatchServer<Etcd>>(),
                path::<LeaseServer<Etcd>>(),
                path::<ClusterServer<Etcd>>(),
                path::<MaintenanceServer<Etcd>>(),
                path::<AuthServer<Etcd>>(),
            ]
        );
    }
}
