//! etcd's Cluster, Maintenance and Auth services: what maps onto kith (the member
//! list, a node's status, the quota alarm, logging in with a kith token) and an
//! `Unimplemented` status naming every call that does not.
//!
//! A member's peer and client URLs are both its one address (kith serves its peers and its
//! clients on one port). `Authenticate` takes a kith token as the password, whatever the
//! name (`etcdctl --user any:ID.SECRET`), and answers the same token, which etcd's clients
//! then send with every call.

use std::pin::Pin;

use futures::Stream;
use tonic::{Request, Response, Status};

use crate::common::{unimplemented, Etcd};
use crate::pb::etcdserverpb::alarm_request::AlarmAction;
use crate::pb::etcdserverpb::auth_server::Auth;
use crate::pb::etcdserverpb::cluster_server::Cluster;
use crate::pb::etcdserverpb::maintenance_server::Maintenance;
use crate::pb::etcdserverpb::*;
use kith_core::auth::Need;

type Answer<T> = Result<Response<T>, Status>;
type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Methods that answer `Unimplemented`, naming the call and why.
macro_rules! refuse {
    ($($method:ident($request:ty) -> $response:ty: $call:literal, $why:expr;)*) => {
        $(
            // Spelled as `async_trait` expands a method, which it cannot see inside a macro.
            fn $method<'life0, 'async_trait>(
                &'life0 self,
                _request: Request<$request>,
            ) -> Pin<Box<dyn std::future::Future<Output = Answer<$response>> + Send + 'async_trait>>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async move { Err(unimplemented($call, $why)) })
            }
        )*
    };
}

const KITH_TOKENS: &str = "kith's users are its tokens (`kith token create`), not etcd's users \
                           and roles";

impl Etcd {
    fn scheme(&self) -> &'static str {
        if self.node.config.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    async fn members(&self) -> Vec<Member> {
        self.node
            .cluster()
            .await
            .into_iter()
            .map(|m| {
                let url = format!("{}://{}", self.scheme(), m.addr);
                Member {
                    id: m.id,
                    name: format!("kith-{}", m.id),
                    peer_ur_ls: vec![url.clone()],
                    client_ur_ls: vec![url],
                    is_learner: !m.voter,
                }
            })
            .collect()
    }
}

#[tonic::async_trait]
impl Cluster for Etcd {
    async fn member_list(&self, request: Request<MemberListRequest>) -> Answer<MemberListResponse> {
        self.authorize(&request, Need::Monitor)?;
        Ok(Response::new(MemberListResponse {
            header: self.header(0),
            members: self.members().await,
        }))
    }

    refuse! {
        member_add(MemberAddRequest) -> MemberAddResponse:
            "Cluster.MemberAdd", "start the new node with `kith serve --join URL`, or use `kith cluster add`";
        member_remove(MemberRemoveRequest) -> MemberRemoveResponse:
            "Cluster.MemberRemove", "use `kith cluster remove ID`";
        member_update(MemberUpdateRequest) -> MemberUpdateResponse:
            "Cluster.MemberUpdate", "a kith member's address is fixed when it joins";
        member_promote(MemberPromoteRequest) -> MemberPromoteResponse:
            "Cluster.MemberPromote", "kith promotes a joining learner itself once it has caught up";
    }
}

#[tonic::async_trait]
impl Maintenance for Etcd {
    type SnapshotStream = Boxed<SnapshotResponse>;

    async fn status(&self, request: Request<StatusRequest>) -> Answer<StatusResponse> {
        self.authorize(&request, Need::Monitor)?;
        let h = self.node.health();
        let mut errors = Vec::new();
        if h.quota.exceeded {
            errors.push("memberID:".to_owned() + &h.node_id.to_string() + " alarm:NOSPACE");
        }
        let learner = !self.node.is_voter();
        Ok(Response::new(StatusResponse {
            header: self.header(h.revision),
            version: format!("3.5.0 (kith {})", env!("CARGO_PKG_VERSION")),
            db_size: h.disk_bytes as i64,
            leader: h.leader_id.unwrap_or(0),
            raft_index: h.commit_index,
            raft_term: h.term,
            raft_applied_index: h.applied_index,
            errors,
            db_size_in_use: h.quota.used_bytes as i64,
            is_learner: learner,
            storage_version: String::new(),
            db_size_quota: h.quota.quota_bytes as i64,
            downgrade_info: None,
        }))
    }

    async fn alarm(&self, request: Request<AlarmRequest>) -> Answer<AlarmResponse> {
        self.authorize(&request, Need::Monitor)?;
        if request.get_ref().action != AlarmAction::Get as i32 {
            return Err(unimplemented(
                "Maintenance.Alarm (activate or deactivate)",
                "kith raises and clears its quota alarm itself, as the stored bytes cross the quota",
            ));
        }
        let h = self.node.health();
        let alarms = if h.quota.exceeded {
            vec![AlarmMember {
                member_id: h.node_id,
                alarm: AlarmType::Nospace as i32,
            }]
        } else {
            Vec::new()
        };
        Ok(Response::new(AlarmResponse {
            header: self.header(0),
            alarms,
        }))
    }

    async fn snapshot(&self, _request: Request<SnapshotRequest>) -> Answer<Self::SnapshotStream> {
        Err(unimplemented(
            "Maintenance.Snapshot",
            "take a backup with `kith backup FILE` (GET /v1/backup)",
        ))
    }

    refuse! {
        defragment(DefragmentRequest) -> DefragmentResponse:
            "Maintenance.Defragment", "kith's store reuses freed pages itself";
        hash(HashRequest) -> HashResponse:
            "Maintenance.Hash", "compare the replicas with `kith ledger verify`";
        hash_kv(HashKvRequest) -> HashKvResponse:
            "Maintenance.HashKV", "compare the replicas with `kith ledger verify`";
        move_leader(MoveLeaderRequest) -> MoveLeaderResponse:
            "Maintenance.MoveLeader", "a leader stopped with SIGTERM hands over to a caught-up follower";
        downgrade(DowngradeRequest) -> DowngradeResponse:
            "Maintenance.Downgrade", "kith's peers refuse another protocol version instead";
    }
}

#[tonic::async_trait]
impl Auth for Etcd {
    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Answer<AuthenticateResponse> {
        let token = request.into_inner().password;
        self.node.authenticate(token.trim()).map_err(|_| {
            Status::invalid_argument(
                "etcdserver: authentication failed, invalid user ID or password",
            )
        })?;
        Ok(Response::new(AuthenticateResponse {
            header: self.header(0),
            token,
        }))
    }

    async fn auth_status(
        &self,
        _request: Request<AuthStatusRequest>,
    ) -> Answer<AuthStatusResponse> {
        Ok(Response::new(AuthStatusResponse {
            header: self.header(0),
            enabled: self.node.auth_required(),
            auth_revision: 0,
        }))
    }

    refuse! {
        auth_enable(AuthEnableRequest) -> AuthEnableResponse: "Auth.AuthEnable", "a kith cluster started with --tls asks every client for a token";
        auth_disable(AuthDisableRequest) -> AuthDisableResponse: "Auth.AuthDisable", "a kith cluster started with --tls asks every client for a token";
        user_add(AuthUserAddRequest) -> AuthUserAddResponse: "Auth.UserAdd", KITH_TOKENS;
        user_get(AuthUserGetRequest) -> AuthUserGetResponse: "Auth.UserGet", KITH_TOKENS;
        user_list(AuthUserListRequest) -> AuthUserListResponse: "Auth.UserList", KITH_TOKENS;
        user_delete(AuthUserDeleteRequest) -> AuthUserDeleteResponse: "Auth.UserDelete", KITH_TOKENS;
        user_change_password(AuthUserChangePasswordRequest) -> AuthUserChangePasswordResponse: "Auth.UserChangePassword", KITH_TOKENS;
        user_grant_role(AuthUserGrantRoleRequest) -> AuthUserGrantRoleResponse: "Auth.UserGrantRole", KITH_TOKENS;
        user_revoke_role(AuthUserRevokeRoleRequest) -> AuthUserRevokeRoleResponse: "Auth.UserRevokeRole", KITH_TOKENS;
        role_add(AuthRoleAddRequest) -> AuthRoleAddResponse: "Auth.RoleAdd", KITH_TOKENS;
        role_get(AuthRoleGetRequest) -> AuthRoleGetResponse: "Auth.RoleGet", KITH_TOKENS;
        role_list(AuthRoleListRequest) -> AuthRoleListResponse: "Auth.RoleList", KITH_TOKENS;
        role_delete(AuthRoleDeleteRequest) -> AuthRoleDeleteResponse: "Auth.RoleDelete", KITH_TOKENS;
        role_grant_permission(AuthRoleGrantPermissionRequest) -> AuthRoleGrantPermissionResponse: "Auth.RoleGrantPermission", KITH_TOKENS;
        role_revoke_permission(AuthRoleRevokePermissionRequest) -> AuthRoleRevokePermissionResponse: "Auth.RoleRevokePermission", KITH_TOKENS;
    }
}
