//! The state machine applying an arbitrary sequence of commands: two real stores end
//! identical, and their key-value part agrees with a plain in-memory model.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kith_fuzz::machine::run(data));
