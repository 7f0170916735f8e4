//! Every peer message decoder: arbitrary bytes as each `/internal` request body and each
//! answer a node decodes from a peer. Never panics; what decodes round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;

use kith_fuzz::peer::Kind;

fuzz_target!(|data: &[u8]| {
    if let Some((tag, body)) = data.split_first() {
        Kind::from_tag(*tag).check(body);
    }
});
