//! The public request parsers, through the real router of one real single-node kith: key
//! and file paths, query strings, `Range`, `Last-Event-ID`, JSON bodies.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kith_fuzz::http::run(data));
