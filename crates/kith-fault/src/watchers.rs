//! Watchers: clients that follow every change through faults, and the checks on what they saw.
//!
//! Owns: [`Watchers`] — one watch per node, each on kith's own failover client
//! (`kith_client::Client::watch`, which resumes on the next endpoint with `Last-Event-ID`
//! when its connection breaks), started at revision 1 on the empty prefix, so each must see
//! *every* revision — and [`Watchers::finish`], which checks that:
//!
//! - each watcher's revisions are 1, 2, 3, … with no gap and no duplicate, up to the
//!   cluster's final revision, across however many reconnects the faults caused;
//! - all watchers agree on the event at every revision;
//! - every acknowledged register write appears at the revision its acknowledgement named,
//!   with its key and value.
//!
//! Refuses: waiting without a bound; a watcher that stalls or ends is itself a finding.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kith_client::{Client, WatchControl, WatchEvent};

use crate::cluster::wait_for;
use crate::register::{RegInput, RegOutput};
use crate::workload::{register_key, value_name, RegisterEvent};

/// One watcher's stream, written by its task and read by the checks.
#[derive(Default)]
struct Seen {
    events: Vec<WatchEvent>,
    /// Set when the watch ended with an error.
    ended: Option<String>,
}

pub struct Watchers {
    seen: Vec<Arc<Mutex<Seen>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Watchers {
    /// Starts one watcher per URL, each preferring a different node first.
    pub fn start(
        urls: &[String],
        tls: Option<&kith_client::tls::TlsOptions>,
        token: Option<&str>,
    ) -> anyhow::Result<Watchers> {
        let mut seen = Vec::new();
        let mut tasks = Vec::new();
        for i in 0..urls.len() {
            let mut rotated = urls.to_vec();
            rotated.rotate_left(i);
            let client = Client::with_options(&rotated, tls, token)?;
            let mine = Arc::new(Mutex::new(Seen::default()));
            let sink = mine.clone();
            tasks.push(tokio::spawn(async move {
                let result = client
                    .watch("", Some(1), |event| {
                        sink.lock().expect("watch lock").events.push(event);
                        WatchControl::Continue
                    })
                    .await;
                let why = match result {
                    Ok(()) => "the watch ended".to_owned(),
                    Err(e) => e.to_string(),
                };
                sink.lock().expect("watch lock").ended = Some(why);
            }));
            seen.push(mine);
        }
        Ok(Watchers { seen, tasks })
    }

    /// Waits (bounded) until every watcher has reached `final_revision`, stops them, and
    /// checks their streams against each other and against the register history. Returns
    /// the findings and the number of events checked.
    pub async fn finish(
        &self,
        final_revision: u64,
        registers: &[RegisterEvent],
        within: Duration,
    ) -> (Vec<String>, usize) {
        let mut findings = Vec::new();
        let caught_up = wait_for("every watcher to catch up", within, || async {
            self.seen
                .iter()
                .all(|s| {
                    let s = s.lock().expect("watch lock");
                    s.ended.is_some()
                        || s.events
                            .last()
                            .is_some_and(|e| e.revision >= final_revision)
                })
                .then_some(())
        })
        .await;
        for task in &self.tasks {
            task.abort();
        }
        if caught_up.is_err() {
            for (i, s) in self.seen.iter().enumerate() {
                let s = s.lock().expect("watch lock");
                let last = s.events.last().map_or(0, |e| e.revision);
                if last < final_revision && s.ended.is_none() {
                    findings.push(format!(
                        "watcher {i} stalled at revision {last} of {final_revision} for {within:?}"
                    ));
                }
            }
        }
        let streams: Vec<Vec<WatchEvent>> = self
            .seen
            .iter()
            .map(|s| s.lock().expect("watch lock").events.clone())
            .collect();
        for (i, s) in self.seen.iter().enumerate() {
            if let Some(why) = &s.lock().expect("watch lock").ended {
                findings.push(format!("watcher {i} ended: {why}"));
            }
        }
        let mut checked = 0;
        for (i, events) in streams.iter().enumerate() {
            checked += events.len();
            for (expected, event) in (1u64..).zip(events) {
                if event.revision != expected {
                    findings.push(format!(
                        "watcher {i}: expected revision {expected}, got {} (a gap or a duplicate)",
                        event.revision
                    ));
                    break;
                }
            }
        }
        // Agreement: the same event at the same revision everywhere.
        if let Some(reference) = streams.first() {
            for (i, events) in streams.iter().enumerate().skip(1) {
                if let Some((a, b)) = reference
                    .iter()
                    .zip(events)
                    .find(|(a, b)| a.revision != b.revision || a.data != b.data)
                {
                    findings.push(format!(
                        "watchers 0 and {i} disagree: {} {} vs {} {}",
                        a.revision, a.data, b.revision, b.data
                    ));
                }
            }
            // Every acknowledged write is the event at its revision.
            for e in registers {
                let value = match (&e.op.input, &e.op.output) {
                    (RegInput::Write(v), RegOutput::Ok)
                    | (RegInput::Cas { new: v, .. }, RegOutput::Ok) => *v,
                    _ => continue,
                };
                let Some(revision) = e.revision else { continue };
                let Some(event) = reference.get((revision as usize).wrapping_sub(1)) else {
                    continue;
                };
                let key = register_key(e.key);
                let matches = event.revision == revision
                    && event.kind == "put"
                    && event.key == key
                    && event.data["value"].as_str() == Some(value.to_string().as_str());
                if !matches {
                    findings.push(format!(
                        "acknowledged write of {} to {key} at revision {revision}, but the watch \
                         shows {} {}",
                        value_name(value),
                        event.revision,
                        event.data
                    ));
                }
            }
        }
        (findings, checked)
    }
}

impl Drop for Watchers {
    /// A schedule that ends early (no convergence) still stops its watchers.
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
