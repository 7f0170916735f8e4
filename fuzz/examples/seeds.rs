//! Writes the checked-in seed corpus, `corpus/<target>/<name>`: real encodings of every
//! peer message, long byte strings that unfold into many-command logs, and requests on
//! every public route. Run from `fuzz/`: `cargo run --example seeds`.

use std::path::Path;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    std::fs::write(dir.join(name), bytes).expect("seed file");
}

/// Deterministic bytes (xorshift64), so the seeds are the same on every run.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn main() {
    for (name, input) in kith_fuzz::peer::seeds() {
        write("peer_decode", &name, &input);
    }
    for (i, len) in [256, 1024, 2048, 4096].into_iter().enumerate() {
        write(
            "state_machine",
            &format!("log_{len}"),
            &bytes(i as u64 + 1, len),
        );
    }
    for (name, input) in kith_fuzz::http::seeds() {
        write("public_http", &name, &input);
    }
    for (name, input) in kith_fuzz::checks::seeds() {
        write("input_checks", &name, &input);
    }
}
