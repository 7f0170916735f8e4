//! `Procs`: CPU time and resident memory of the target's processes, read from `/proc`.
//!
//! CPU time is `utime + stime` from `/proc/PID/stat` (in USER_HZ ticks, which the kernel
//! ABI fixes at 100 per second for `/proc`). Peak RSS is `VmHWM` from `/proc/PID/status`;
//! at the start of the measured phase the bench writes `5` to `/proc/PID/clear_refs`,
//! which resets `VmHWM`, so the peak belongs to this run (when permitted; the report says
//! whether it was). Linux only; elsewhere the list is simply empty.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

/// `/proc` reports CPU time in USER_HZ ticks; Linux fixes USER_HZ at 100.
const TICKS_PER_S: f64 = 100.0;
/// Most processes followed (a cluster is a handful of nodes).
pub const PROCS_MAX: usize = 64;

/// One reading of one process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub cpu_ticks: u64,
    pub rss_kb: u64,
    pub rss_peak_kb: u64,
}

/// What one process used during the measured phase.
#[derive(Clone, Debug, Serialize)]
pub struct ProcUsage {
    pub pid: u32,
    pub name: String,
    pub cpu_s: f64,
    /// Resident memory at the end of the run.
    pub rss_kb: u64,
    /// Peak resident memory (since the reset at the start of the run if `peak_reset`,
    /// else since the process started).
    pub rss_peak_kb: u64,
    pub peak_reset: bool,
}

/// The followed processes and their readings at the start of the measured phase.
#[derive(Debug, Default)]
pub struct Procs {
    start: BTreeMap<u32, (String, Sample, bool)>,
}

/// Reads one process; `None` if it is gone or `/proc` is not there.
pub fn sample(pid: u32) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: split after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are at 11 and 12 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |field: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    Some(Sample {
        cpu_ticks: utime + stime,
        rss_kb: kb("VmRSS:"),
        rss_peak_kb: kb("VmHWM:"),
    })
}

fn name_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Processes called `name` (other than this one) whose command line mentions one of the
/// endpoints' `HOST:PORT`, so that unrelated processes of the same name are left out.
pub fn discover(name: &str, endpoints: &[String]) -> Vec<u32> {
    let me = std::process::id();
    let authorities: Vec<&str> = endpoints
        .iter()
        .map(|e| {
            let rest = e.split("://").nth(1).unwrap_or(e);
            rest.trim_end_matches('/')
        })
        .collect();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me && name_of(*pid) == name)
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            authorities.iter().any(|a| cmdline.contains(a))
        })
        .collect();
    pids.sort_unstable();
    pids.truncate(PROCS_MAX);
    pids
}

impl Procs {
    /// Starts following `pids`: resets their peak RSS and takes the first reading.
    pub fn start(pids: &[u32]) -> Self {
        let mut start = BTreeMap::new();
        for pid in pids.iter().take(PROCS_MAX) {
            let reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
            if let Some(s) = sample(*pid) {
                start.insert(*pid, (name_of(*pid), s, reset));
            }
        }
        Procs { start }
    }

    /// What each process used since `start`; processes that died are left out.
    pub fn finish(&self) -> Vec<ProcUsage> {
        self.start
            .iter()
            .filter_map(|(pid, (name, first, reset))| {
                let last = sample(*pid)?;
                Some(ProcUsage {
                    pid: *pid,
                    name: name.clone(),
                    cpu_s: last.cpu_ticks.saturating_sub(first.cpu_ticks) as f64 / TICKS_PER_S,
                    rss_kb: last.rss_kb,
                    rss_peak_kb: last.rss_peak_kb,
                    peak_reset: *reset,
                })
            })
            .collect()
    }
}

/// CPU seconds this process (the load generator) has used so far.
pub fn own_cpu_s() -> f64 {
    sample(std::process::id())
        .map(|s| s.cpu_ticks as f64 / TICKS_PER_S)
        .unwrap_or(0.0)
}

/// Whether `/proc` is there to read.
pub fn available() -> bool {
    Path::new("/proc/self/stat").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_can_be_sampled_and_is_never_discovered() {
        if !available() {
            return;
        }
        let me = std::process::id();
        let s = sample(me).expect("own /proc entry");
        assert!(s.rss_kb > 0 && s.rss_peak_kb >= s.rss_kb);
        let name = name_of(me);
        assert!(discover(&name, &["http://127.0.0.1:1".into()]).is_empty());
        let usage = Procs::start(&[me]).finish();
        assert_eq!(usage.len(), 1);
        assert!(usage[0].cpu_s >= 0.0);
    }
}
