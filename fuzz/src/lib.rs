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

pub mod http;
pub mod model;
pub mod peer;
