//! Leaving nothing behind when the suite is interrupted.
//!
//! Owns: a process-wide registry of what a run must undo — nftables tables and the pids of
//! `kith serve` children — and a signal handler (SIGINT, SIGTERM, SIGHUP) that undoes it all
//! and exits with status 130. Normal exits and panics are handled by `Drop` on
//! [`crate::nft::Firewall`] and [`crate::cluster::Cluster`]; this module covers the signals
//! that skip destructors. Children also run with `--exit-with-parent`, so they stop if the
//! suite itself is SIGKILLed, and the next run sweeps orphaned tables.
//!
//! Refuses: anything but cleanup; the handler is installed once, on first use.

use std::sync::{Mutex, Once};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Deletes one table; the firewall module passes its own, so this module needs no nftables.
pub(crate) type DeleteTable = fn(&str);

struct Registry {
    tables: Vec<(String, DeleteTable)>,
    pids: Vec<i32>,
}

/// Written by `register_*`/`unregister_*` (the cluster and firewall), drained by the signal
/// handler.
static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    tables: Vec::new(),
    pids: Vec::new(),
});
static INSTALL: Once = Once::new();

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    // A panic while holding the lock leaves the lists intact, so a poisoned lock is usable.
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn register_table(name: &str, delete: DeleteTable) {
    install_handler();
    registry().tables.push((name.to_owned(), delete));
}

pub(crate) fn unregister_table(name: &str) {
    registry().tables.retain(|(t, _)| t != name);
}

pub(crate) fn register_pid(pid: u32) {
    install_handler();
    registry().pids.push(pid as i32);
}

pub(crate) fn unregister_pid(pid: u32) {
    registry().pids.retain(|p| *p != pid as i32);
}

fn install_handler() {
    INSTALL.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("kith-fault-signals".into())
            .spawn(|| {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        eprintln!("kith-fault: no signal handler: {e}");
                        return;
                    }
                };
                runtime.block_on(async {
                    use tokio::signal::unix::{signal, SignalKind};
                    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
                        signal(SignalKind::interrupt()),
                        signal(SignalKind::terminate()),
                        signal(SignalKind::hangup()),
                    ) else {
                        eprintln!("kith-fault: cannot install signal handlers");
                        return;
                    };
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                        _ = hup.recv() => {}
                    }
                    eprintln!(
                        "kith-fault: interrupted; stopping nodes and removing nftables rules"
                    );
                    undo_everything();
                    std::process::exit(130);
                });
            });
        if let Err(e) = spawned {
            eprintln!("kith-fault: no signal handler thread: {e}");
        }
    });
}

/// Resumes and kills every registered child, then deletes every registered table.
fn undo_everything() {
    let (pids, tables) = {
        let mut r = registry();
        (std::mem::take(&mut r.pids), std::mem::take(&mut r.tables))
    };
    for pid in pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    for (table, delete) in tables {
        delete(&table);
    }
}
