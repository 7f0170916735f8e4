//! `Plan`: which operation the i-th request of a phase is, as a pure function of the seed
//! and i. Workers claim indices from a shared counter, so the key sequence is the same for
//! any number of clients, and no random-number state is shared between tasks.

use bytes::Bytes;

use crate::args::{BenchArgs, Workload};

/// One operation to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Put { key: String, value: Bytes },
    Get { key: String },
}

/// The deterministic operation sequence of one phase (warm-up or measurement).
#[derive(Clone, Debug)]
pub struct Plan {
    workload: Workload,
    key_size: usize,
    key_space: u64,
    sequential: bool,
    read_percent: u64,
    seed: u64,
    value: Bytes,
}

/// splitmix64: a bijective 64-bit mixer; good enough to spread keys and cheap enough to
/// call once per request.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Plan {
    /// The plan for one phase; `phase` salts the seed so warm-up and measurement differ.
    pub fn new(args: &BenchArgs, phase: u64) -> Self {
        // One shared value buffer: printable, seeded, so no request allocates a value.
        let mut state = mix64(args.seed ^ 0x5eed);
        let value: Vec<u8> = (0..args.val_size)
            .map(|_| {
                state = mix64(state);
                b'a' + (state % 26) as u8
            })
            .collect();
        Plan {
            workload: args.workload,
            key_size: args.key_size,
            key_space: args.key_space,
            sequential: args.sequential_keys,
            read_percent: u64::from(args.read_percent),
            seed: mix64(args.seed.wrapping_add(phase.wrapping_mul(0x1000_0000_01b3))),
            value: Bytes::from(value),
        }
    }

    /// The key index of operation `i`.
    pub fn key_index(&self, i: u64) -> u64 {
        if self.sequential {
            i % self.key_space
        } else {
            mix64(self.seed ^ i) % self.key_space
        }
    }

    /// Key number `n` as `key_size` zero-padded decimal digits (printable, so it needs no
    /// escaping in a URL and is a valid kith key).
    pub fn key(&self, n: u64) -> String {
        format!("{n:0width$}", width = self.key_size)
    }

    /// Operation `i` of this phase.
    pub fn op(&self, i: u64) -> Op {
        let key = self.key(self.key_index(i));
        let read = match self.workload {
            // `jobs` uses a plan only for its `put` baseline.
            Workload::Put | Workload::Jobs | Workload::Files => false,
            Workload::Get => true,
            Workload::Mixed => mix64(self.seed.rotate_left(17) ^ i) % 100 < self.read_percent,
        };
        if read {
            Op::Get { key }
        } else {
            Op::Put {
                key,
                value: self.value.clone(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn args(extra: &[&str]) -> BenchArgs {
        let mut argv = vec!["bench"];
        argv.extend_from_slice(extra);
        let args = Cli::parse_from(argv).args;
        args.validate().expect("valid");
        args
    }

    #[test]
    fn keys_are_fixed_width_and_inside_the_key_space() {
        let plan = Plan::new(&args(&["put", "--key-size", "8", "--key-space", "1000"]), 0);
        for i in 0..10_000 {
            let Op::Put { key, value } = plan.op(i) else {
                panic!("put workload made a read")
            };
            assert_eq!(key.len(), 8);
            assert!(key.parse::<u64>().expect("decimal") < 1000);
            assert_eq!(value.len(), 256);
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_sequence_and_another_seed_does_not() {
        let a = Plan::new(&args(&["put", "--seed", "7"]), 1);
        let b = Plan::new(&args(&["put", "--seed", "7"]), 1);
        let c = Plan::new(&args(&["put", "--seed", "8"]), 1);
        let seq = |p: &Plan| (0..100).map(|i| p.key_index(i)).collect::<Vec<_>>();
        assert_eq!(seq(&a), seq(&b));
        assert_ne!(seq(&a), seq(&c));
    }

    #[test]
    fn sequential_keys_cover_the_key_space_in_order() {
        let plan = Plan::new(&args(&["put", "--sequential-keys", "--key-space", "5"]), 0);
        let seq: Vec<u64> = (0..7).map(|i| plan.key_index(i)).collect();
        assert_eq!(seq, vec![0, 1, 2, 3, 4, 0, 1]);
    }

    #[test]
    fn mixed_honours_the_read_percent() {
        let plan = Plan::new(&args(&["mixed", "--read-percent", "90"]), 0);
        let reads = (0..10_000)
            .filter(|i| matches!(plan.op(*i), Op::Get { .. }))
            .count();
        assert!((8_500..9_500).contains(&reads), "{reads} reads of 10000");
    }

    #[test]
    fn bounds_are_enforced() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["bench"];
            argv.extend_from_slice(extra);
            Cli::parse_from(argv).args.validate()
        };
        assert!(parse(&["put", "--key-size", "3", "--key-space", "1001"]).is_err());
        assert!(parse(&["put", "--clients", "2", "--conns", "3"]).is_err());
        assert!(parse(&["put", "--total", "0"]).is_err());
        assert!(parse(&["put", "--rate", "0"]).is_err());
        assert!(parse(&["get", "--endpoints", "127.0.0.1:1"]).is_err());
        assert!(parse(&["get", "--clients", "256", "--conns", "16"]).is_ok());
    }
}
