//! The applied state on redb (`state.redb`), split by what each part owns:
//!
//! - `tables`: the layout (table definitions and `meta` keys), the leaf the others read;
//! - `machine`: [`StateMachineStore`], openraft's `RaftStateMachine`: the apply transaction
//!   and when it is durable;
//! - `apply_tables`: the tables of one apply, as `kith_core::machine::Tables`;
//! - `kv`, `ledger`, `rooms`, `jobs`, `files`, `tokens`: each domain's redb adapter and its queries on
//!   [`StateReader`] (`reader`);
//! - `history`: how far kept history is trimmed.
//!
//! Snapshots of this state are built and installed by `crate::snapshot`.

mod apply_tables;
pub(crate) mod files;
pub(crate) mod history;
pub(crate) mod jobs;
pub(crate) mod kv;
pub(crate) mod ledger;
pub(crate) mod machine;
pub(crate) mod reader;
pub(crate) mod rooms;
pub(crate) mod tables;
pub(crate) mod tokens;
