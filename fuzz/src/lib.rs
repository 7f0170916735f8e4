//! kith's fuzz harness: what the targets in `fuzz_targets/` share.
//!
//! Owns:
//! - [`peer`]: every postcard body on the peer transport, with its round-trip check;
//! - [`http`]: one real single-node kith, built once per fuzz process, driven through the
//!   real router in process, and the invariants every answer must keep;
//! - [`model`]: arbitrary command sequences for the state machine and the plain in-memory
//!   key-value model they are checked against.
//!
//! Refuses: anything a node does not do in production. Targets reach kith only through its
//! public items (the router, `Node`, `StateMachineStore`, `kith_core`), never private ones.

pub mod checks;
pub mod http;
pub mod machine;
pub mod model;
pub mod peer;

/// A fresh directory for one store or node, in memory (`/dev/shm`) where there is one, so
/// that fsyncs cost little; removed on drop.
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    let made = if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("kith-fuzz-")
            .tempdir_in(shm)
    } else {
        tempfile::Builder::new().prefix("kith-fuzz-").tempdir()
    };
    made.expect("a scratch directory")
}
