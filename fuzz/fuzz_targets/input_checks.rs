//! kith-core's public input validators (keys, file paths, rooms, messages, hashes, TTLs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kith_fuzz::checks::run(data));
