//! A linearizability checker: Wing & Gong's search with Lowe's memoisation, as in Porcupine.
//!
//! Owns: deciding whether a concurrent history of operations on one object is linearizable
//! against a sequential [`Model`], and shrinking a failing history to a small one that
//! still fails ([`minimize`]). It knows nothing about kith, HTTP or keys: callers partition a
//! history by object (per key for a kv store, P-compositionality) and check each part.
//!
//! The search (Wing & Gong 1993; Lowe, "Testing for linearizability", 2017; Porcupine):
//!
//! ```text
//! events: every op's call and return, sorted by time, in a doubly linked list
//! walk the list from the head:
//!   call of op o ──▶ does model.step(state, o) accept o's recorded output?
//!                     yes, and (linearized ∪ {o}, new state) not seen before:
//!                         push (o, state); lift o's call and return out of the list;
//!                         restart from the head
//!                     otherwise: try the next event
//!   a return   ──▶ the op returning here was never linearized before it returned, so
//!                  this branch is dead: pop the last (o, state), put o back, try the
//!                  event after o's call
//! the list is empty ⇒ linearizable; the stack is empty at a dead end ⇒ not linearizable
//! ```
//!
//! The memo of (linearized set as a bitset, model state) pairs is what keeps the search
//! practical: two branches that linearized the same ops into the same state have the same
//! future. An operation whose outcome is unknown (a timeout: it may have taken effect, or
//! not) has no return event — its return time is "never" — so it may be linearized at any
//! point after its call, or after everything else, which is indistinguishable from never
//! taking effect. Models must therefore accept an unknown-outcome op in any state.
//!
//! Refuses: unbounded work. A search that exceeds its step budget answers
//! [`Verdict::Undecided`], which callers must report rather than treat as a pass.

use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A sequential specification of one object.
pub trait Model {
    type State: Clone + Eq + Hash + Debug;
    type Input: Clone + Debug;
    type Output: Clone + Debug;

    fn init(&self) -> Self::State;

    /// The state after applying `input` in `state`, if that can produce `output`; `None` if
    /// the sequential object could not have answered `output` here.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Self::Output,
    ) -> Option<Self::State>;
}

/// One operation of a history. Times are any monotonic clock's ticks (nanoseconds here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation<I, O> {
    pub call: u64,
    /// `None`: the outcome is unknown, and the op may take effect at any time after `call`,
    /// or never.
    pub ret: Option<u64>,
    pub input: I,
    pub output: O,
}

/// What a check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    NotLinearizable,
    /// The step budget ran out before the search finished.
    Undecided,
}

/// Model steps one check may take before answering [`Verdict::Undecided`].
pub const STEPS_MAX_DEFAULT: u64 = 20_000_000;

const NIL: usize = usize::MAX;

/// One call or return event in the search's linked list.
#[derive(Clone, Debug)]
struct Event {
    op: usize,
    is_call: bool,
    /// For a call: its return event (or `NIL` for an unknown outcome). For a return: its call.
    matching: usize,
    prev: usize,
    next: usize,
}

/// A set of op indices, hashable for the memo.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(n: usize) -> Self {
        Bitset(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// Checks one object's history against `model`, taking at most `steps_max` model steps.
pub fn check<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    steps_max: u64,
) -> Verdict {
    let n = history.len();
    if n == 0 {
        return Verdict::Linearizable;
    }
    // Events sorted by time; on a tie a call sorts before a return, so ops that touch at
    // one instant count as concurrent (the permissive reading: no false alarms from ties).
    let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in history.iter().enumerate() {
        assert!(
            op.ret.is_none_or(|r| r >= op.call),
            "operation {i} returns before it is called"
        );
        order.push((op.call, false, i));
        if let Some(ret) = op.ret {
            order.push((ret, true, i));
        }
    }
    order.sort();
    // Index `head` is a sentinel before the first event.
    let head = order.len();
    let mut events: Vec<Event> = Vec::with_capacity(order.len() + 1);
    let mut call_event = vec![NIL; n];
    let mut return_event = vec![NIL; n];
    for (pos, (_, is_return, op)) in order.iter().enumerate() {
        events.push(Event {
            op: *op,
            is_call: !is_return,
            matching: NIL,
            prev: if pos == 0 { head } else { pos - 1 },
            next: if pos + 1 == order.len() { NIL } else { pos + 1 },
        });
        if *is_return {
            return_event[*op] = pos;
        } else {
            call_event[*op] = pos;
        }
    }
    events.push(Event {
        op: NIL,
        is_call: false,
        matching: NIL,
        prev: NIL,
        next: 0,
    });
    for op in 0..n {
        events[call_event[op]].matching = return_event[op];
        if return_event[op] != NIL {
            events[return_event[op]].matching = call_event[op];
        }
    }

    let mut state = model.init();
    let mut linearized = Bitset::new(n);
    let mut memo: HashSet<(Bitset, M::State)> = HashSet::new();
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut steps: u64 = 0;
    let mut at = events[head].next;
    while events[head].next != NIL {
        if at == NIL {
            // Only unknown-outcome calls remain after the cursor and none could be placed
            // in this branch: backtrack as at a return.
        } else if events[at].is_call {
            let op = events[at].op;
            steps += 1;
            if steps > steps_max {
                return Verdict::Undecided;
            }
            if let Some(next_state) = model.step(&state, &history[op].input, &history[op].output) {
                let mut next_linearized = linearized.clone();
                next_linearized.set(op);
                if memo.insert((next_linearized.clone(), next_state.clone())) {
                    stack.push((at, state));
                    state = next_state;
                    linearized = next_linearized;
                    lift(&mut events, at);
                    at = events[head].next;
                    continue;
                }
            }
            at = events[at].next;
            continue;
        }
        // A return (or the end) was reached with ops still open: undo the last choice.
        let Some((call, previous)) = stack.pop() else {
            return Verdict::NotLinearizable;
        };
        linearized.clear(events[call].op);
        state = previous;
        unlift(&mut events, call);
        at = events[call].next;
    }
    Verdict::Linearizable
}

/// Takes a call event and its return (if any) out of the list.
fn lift(events: &mut [Event], call: usize) {
    unlink(events, call);
    let ret = events[call].matching;
    if ret != NIL {
        unlink(events, ret);
    }
}

/// Puts back what [`lift`] took out; the removed events kept their own links.
fn unlift(events: &mut [Event], call: usize) {
    let ret = events[call].matching;
    if ret != NIL {
        relink(events, ret);
    }
    relink(events, call);
}

fn unlink(events: &mut [Event], e: usize) {
    let (prev, next) = (events[e].prev, events[e].next);
    events[prev].next = next;
    if next != NIL {
        events[next].prev = prev;
    }
}

fn relink(events: &mut [Event], e: usize) {
    let (prev, next) = (events[e].prev, events[e].next);
    events[prev].next = e;
    if next != NIL {
        events[next].prev = e;
    }
}

/// Shrinks a non-linearizable history to a small sub-history that is still not
/// linearizable, greedily dropping one op at a time (a 1-minimal result, as delta debugging
/// gives). `well_formed` rejects candidates that fail for a trivial reason, such as a read
/// of a value whose write was dropped. Stops at `deadline` with what it has.
pub fn minimize<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    well_formed: impl Fn(&[Operation<M::Input, M::Output>]) -> bool,
    within: Duration,
) -> Vec<Operation<M::Input, M::Output>> {
    let deadline = Instant::now() + within;
    let fails = |h: &[Operation<M::Input, M::Output>]| {
        well_formed(h) && check(model, h, STEPS_MAX_DEFAULT / 10) == Verdict::NotLinearizable
    };
    let mut current: Vec<_> = history.to_vec();
    current.sort_by_key(|op| op.call);
    // First the shortest failing prefix by call time: cheap, and usually most of the win.
    let mut len = 1;
    while len < current.len() {
        if Instant::now() > deadline {
            return current;
        }
        if fails(&current[..len]) {
            current.truncate(len);
            break;
        }
        len = (len * 2).min(current.len());
    }
    // Then drop single ops until none can go (a few passes at most).
    for _pass in 0..4 {
        let mut changed = false;
        let mut i = current.len();
        while i > 0 {
            i -= 1;
            if Instant::now() > deadline {
                return current;
            }
            let mut candidate = current.clone();
            candidate.remove(i);
            if fails(&candidate) {
                current = candidate;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::register::{RegInput, RegOutput, Register};

    fn op<I, O>(call: u64, ret: u64, input: I, output: O) -> Operation<I, O> {
        Operation {
            call,
            ret: Some(ret),
            input,
            output,
        }
    }

    fn unknown<I, O>(call: u64, input: I, output: O) -> Operation<I, O> {
        Operation {
            call,
            ret: None,
            input,
            output,
        }
    }

    fn w(v: u64) -> RegInput {
        RegInput::Write(v)
    }
    fn r() -> RegInput {
        RegInput::Read
    }
    fn got(v: Option<u64>) -> RegOutput {
        RegOutput::Read(v)
    }
    fn cas(expected: Option<u64>, new: u64) -> RegInput {
        RegInput::Cas { expected, new }
    }

    fn verdict(h: &[Operation<RegInput, RegOutput>]) -> Verdict {
        check(&Register, h, STEPS_MAX_DEFAULT)
    }

    #[test]
    fn empty_and_sequential_histories_are_linearizable() {
        assert_eq!(verdict(&[]), Verdict::Linearizable);
        let h = [
            op(0, 1, r(), got(None)),
            op(2, 3, w(1), RegOutput::Ok),
            op(4, 5, r(), got(Some(1))),
            op(6, 7, cas(Some(1), 2), RegOutput::Ok),
            op(8, 9, cas(Some(1), 3), RegOutput::CasFailed),
            op(10, 11, r(), got(Some(2))),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_caught() {
        // write(1) completes, then a read that starts later returns the initial value.
        let h = [op(0, 10, w(1), RegOutput::Ok), op(20, 30, r(), got(None))];
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

    #[test]
    fn concurrent_read_may_see_either_value() {
        let h = [op(0, 10, w(1), RegOutput::Ok), op(5, 15, r(), got(None))];
        assert_eq!(verdict(&h), Verdict::Linearizable);
        let h = [op(0, 10, w(1), RegOutput::Ok), op(5, 15, r(), got(Some(1)))];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    /// Herlihy & Wing (1990), figure 1's register analogue, and the "new-old inversion":
    /// two reads both overlap a write; the one that *finishes first* sees the new value and
    /// the later one sees the old value. Each read alone is fine; together they are not.
    #[test]
    fn new_old_inversion_is_not_linearizable() {
        let h = [
            op(0, 100, w(1), RegOutput::Ok),
            op(10, 20, r(), got(Some(1))),
            op(30, 40, r(), got(None)),
        ];
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
        // Swap the results and it is fine.
        let h = [
            op(0, 100, w(1), RegOutput::Ok),
            op(10, 20, r(), got(None)),
            op(30, 40, r(), got(Some(1))),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    /// Porcupine's own register example (its README): linearizable as recorded, and not
    /// once the second read's result is changed.
    #[test]
    fn porcupine_readme_register_history() {
        // C0: put(100) [0, 100]; C1: get()→100 [25, 75]; C2: get()→0 [30, 60]
        let h = [
            op(0, 100, w(100), RegOutput::Ok),
            op(25, 75, r(), got(Some(100))),
            op(30, 60, r(), got(None)),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
        // C0: put(200) [0, 100]; C1: get()→200 [10, 30]; C2: get()→0 [40, 90]
        let h = [
            op(0, 100, w(200), RegOutput::Ok),
            op(10, 30, r(), got(Some(200))),
            op(40, 90, r(), got(None)),
        ];
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

    #[test]
    fn compare_and_set_outcomes_must_match_the_state() {
        // A CAS that reports failure although the value matched, with nothing concurrent.
        let h = [
            op(0, 1, w(1), RegOutput::Ok),
            op(2, 3, cas(Some(1), 2), RegOutput::CasFailed),
        ];
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
        // Two CASes from the same value cannot both succeed.
        let h = [
            op(0, 1, w(1), RegOutput::Ok),
            op(2, 10, cas(Some(1), 2), RegOutput::Ok),
            op(3, 11, cas(Some(1), 3), RegOutput::Ok),
        ];
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
        // …but one may succeed and the other fail, in either order.
        let h = [
            op(0, 1, w(1), RegOutput::Ok),
            op(2, 10, cas(Some(1), 2), RegOutput::CasFailed),
            op(3, 11, cas(Some(1), 3), RegOutput::Ok),
            op(12, 13, r(), got(Some(3))),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn unknown_outcome_may_take_effect_late_or_never() {
        // A timed-out write is seen long after its call…
        let h = [
            unknown(0, w(1), RegOutput::Unknown),
            op(50, 60, r(), got(None)),
            op(70, 80, r(), got(Some(1))),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
        // …or never.
        let h = [
            unknown(0, w(1), RegOutput::Unknown),
            op(50, 60, r(), got(None)),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
        // But not before it was called, and not undone once seen.
        let h = [
            op(0, 10, r(), got(Some(1))),
            unknown(20, w(1), RegOutput::Unknown),
        ];
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
        let h = [
            op(0, 5, w(2), RegOutput::Ok),
            unknown(10, w(1), RegOutput::Unknown),
            op(20, 30, r(), got(Some(1))),
            op(40, 50, r(), got(Some(2))),
        ];
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

    /// A lost acknowledged write: write(2) was acknowledged after write(1), yet every later
    /// read sees 1 (the shape a leader that acknowledges before a quorum leaves behind).
    #[test]
    fn a_lost_acknowledged_write_is_caught() {
        let h = [
            op(0, 10, w(1), RegOutput::Ok),
            op(20, 30, w(2), RegOutput::Ok),
            op(40, 50, r(), got(Some(1))),
        ];
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
    }

    /// A FIFO queue, to show the checker is not register-specific: Herlihy & Wing's (1990)
    /// figure 1 histories H1 (linearizable) and H2 (not).
    #[derive(Clone, Debug)]
    enum Q {
        Enq(u64),
        Deq,
    }
    struct Queue;
    impl Model for Queue {
        type State = Vec<u64>;
        type Input = Q;
        type Output = Option<u64>;
        fn init(&self) -> Vec<u64> {
            Vec::new()
        }
        fn step(&self, s: &Vec<u64>, i: &Q, o: &Option<u64>) -> Option<Vec<u64>> {
            match i {
                Q::Enq(x) => {
                    let mut s = s.clone();
                    s.push(*x);
                    Some(s)
                }
                Q::Deq => (s.first().copied() == *o).then(|| s.iter().skip(1).copied().collect()),
            }
        }
    }

    #[test]
    fn herlihy_wing_queue_histories() {
        // H1: A enq(x) [0,10]; B enq(y) [5,20]; B deq→x [25,30] … A deq→y [26,40].
        let h1 = [
            op(0, 10, Q::Enq(1), None),
            op(5, 20, Q::Enq(2), None),
            op(25, 30, Q::Deq, Some(1)),
            op(26, 40, Q::Deq, Some(2)),
        ];
        assert_eq!(check(&Queue, &h1, 1000), Verdict::Linearizable);
        // H2: enq(x) completes before enq(y) starts, yet y is dequeued first.
        let h2 = [
            op(0, 10, Q::Enq(1), None),
            op(15, 20, Q::Enq(2), None),
            op(25, 30, Q::Deq, Some(2)),
        ];
        assert_eq!(check(&Queue, &h2, 1000), Verdict::NotLinearizable);
    }

    #[test]
    fn the_budget_bounds_the_search() {
        // Many concurrent writes followed by an impossible read force a wide search.
        let mut h: Vec<_> = (0..40).map(|v| op(0, 100, w(v), RegOutput::Ok)).collect();
        h.push(op(200, 300, r(), got(Some(999))));
        assert_eq!(check(&Register, &h, 100), Verdict::Undecided);
    }

    #[test]
    fn minimize_keeps_only_what_makes_the_history_fail() {
        let mut h = vec![
            op(0, 10, w(1), RegOutput::Ok),
            op(20, 30, w(2), RegOutput::Ok),
            op(40, 50, r(), got(Some(1))),
        ];
        // Unrelated, linearizable noise around the violation.
        for t in 0..20u64 {
            h.push(op(100 + t * 10, 105 + t * 10, w(10 + t), RegOutput::Ok));
            h.push(op(106 + t * 10, 108 + t * 10, r(), got(Some(10 + t))));
        }
        assert_eq!(verdict(&h), Verdict::NotLinearizable);
        let small = minimize(
            &Register,
            &h,
            crate::register::well_formed,
            Duration::from_secs(10),
        );
        assert_eq!(verdict(&small), Verdict::NotLinearizable);
        assert_eq!(small.len(), 3, "minimal history: {small:?}");
    }
}
