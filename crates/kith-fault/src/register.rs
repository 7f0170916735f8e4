//! The sequential model of one kith key as the register workload uses it.
//!
//! Owns: [`Register`], the [`Model`] the checker runs per key, and [`well_formed`], which
//! tells the minimizer which sub-histories are meaningful.
//!
//! Every value the workload writes is unique (a client id and a sequence number), so a value
//! names the write that produced it. kith's compare-and-set compares *revisions*
//! (`PUT ?if_revision=N`); the workload only sends a revision it read together with a value,
//! and since revision N names exactly one command, "the key's mod revision is N" holds
//! exactly when "the key holds the value written at N". So the model compares values, and
//! `if_revision=0` ("only if absent") is `expected: None`.

use crate::checker::{Model, Operation};

/// The value a register op reads or writes: `None` is "key absent".
pub type Value = Option<u64>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegInput {
    Read,
    Write(u64),
    /// Set `new` if the key currently holds `expected`.
    Cas {
        expected: Value,
        new: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegOutput {
    Read(Value),
    /// A write or compare-and-set that was acknowledged.
    Ok,
    /// A compare-and-set refused with 409 `revision_mismatch`.
    CasFailed,
    /// No answer we can trust (timeout, 5xx): it may or may not have taken effect.
    Unknown,
}

/// A single-value register with read, write and compare-and-set.
pub struct Register;

impl Model for Register {
    type State = Value;
    type Input = RegInput;
    type Output = RegOutput;

    fn init(&self) -> Value {
        None
    }

    fn step(&self, state: &Value, input: &RegInput, output: &RegOutput) -> Option<Value> {
        match (input, output) {
            (RegInput::Read, RegOutput::Read(v)) => (v == state).then_some(*state),
            // A read that did not answer tells nothing.
            (RegInput::Read, RegOutput::Unknown) => Some(*state),
            (RegInput::Write(v), RegOutput::Ok | RegOutput::Unknown) => Some(Some(*v)),
            (RegInput::Cas { expected, new }, RegOutput::Ok) => {
                (expected == state).then_some(Some(*new))
            }
            (RegInput::Cas { expected, .. }, RegOutput::CasFailed) => {
                (expected != state).then_some(*state)
            }
            // Placed where it matched, it took effect; placed elsewhere (or last), it did
            // not. The checker explores both.
            (RegInput::Cas { expected, new }, RegOutput::Unknown) => Some(if expected == state {
                Some(*new)
            } else {
                *state
            }),
            _ => None,
        }
    }
}

/// True when every value the history observes (a read's result, a compare-and-set's
/// expectation) could have been written by an op in the history. A sub-history without the
/// write of a value it reads fails for a trivial reason, so the minimizer skips it.
pub fn well_formed(history: &[Operation<RegInput, RegOutput>]) -> bool {
    let written: std::collections::HashSet<u64> = history
        .iter()
        .filter_map(|op| match (&op.input, &op.output) {
            (RegInput::Write(v), _) => Some(*v),
            (RegInput::Cas { new, .. }, RegOutput::Ok | RegOutput::Unknown) => Some(*new),
            _ => None,
        })
        .collect();
    history.iter().all(|op| match (&op.input, &op.output) {
        (RegInput::Read, RegOutput::Read(Some(v))) => written.contains(v),
        (
            RegInput::Cas {
                expected: Some(v), ..
            },
            RegOutput::Ok,
        ) => written.contains(v),
        _ => true,
    })
}
