//! Network partitions and packet loss between loopback addresses, with nftables.
//!
//! Owns: [`Firewall`], one nftables table per suite run, named after the process and a
//! counter (`kith_fault_<pid>_<n>`), with one `output` chain whose rules drop packets from one
//! node's address to another's. Loopback traffic passes the output hook once per packet, so
//! a rule `ip saddr A ip daddr B drop` stops every packet A sends to B — on connections
//! either side opened — and a pair of such rules is a full partition. Loss uses
//! `numgen random mod 100 < P`.
//!
//! Cleanup: the table is deleted when the [`Firewall`] drops (also while unwinding from a
//! panic), by the signal handler in [`crate::cleanup`] on Ctrl-C/SIGTERM, and — should the
//! process have been SIGKILLed — by the next run, which deletes tables whose owning process
//! is gone.
//!
//! Refuses: any address outside 127.0.0.0/8 (asserted), and silently running without
//! nftables: every failure to install or use `nft` is an error that stops the suite.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context};

const TABLE_PREFIX: &str = "kith_fault_";
static TABLE_COUNTER: AtomicU32 = AtomicU32::new(0);

/// An nftables table owned by this run; deleted on drop.
pub struct Firewall {
    table: String,
}

fn nft(script: &str) -> anyhow::Result<String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run nft")?;
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(script.as_bytes())
        .context("writing to nft")?;
    let out = child.wait_with_output().context("waiting for nft")?;
    if !out.status.success() {
        bail!(
            "nft failed ({}): {}\nscript:\n{script}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn nft_works() -> bool {
    Command::new("nft")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes sure `nft` exists, installing Debian's `nftables` with apt-get when it does not
/// (`apt-get update` only if the first install attempt fails).
pub fn ensure_nft_installed() -> anyhow::Result<()> {
    if nft_works() {
        return Ok(());
    }
    eprintln!("kith-fault: nft not found; installing nftables with apt-get");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "nftables"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let updated = Command::new("apt-get")
            .args(["update", "-q"])
            .status()
            .is_ok_and(|s| s.success());
        if !updated || !install() {
            bail!(
                "nftables is not installed and apt-get could not install it; the fault suite \
                 needs `nft` (Debian package nftables) and root to partition nodes"
            );
        }
    }
    if !nft_works() {
        bail!("nftables was installed but `nft --version` still fails");
    }
    Ok(())
}

/// Deletes tables left behind by runs whose process no longer exists (e.g. SIGKILLed).
fn sweep_orphans() -> anyhow::Result<()> {
    let listing = nft("list tables\n")?;
    for line in listing.lines() {
        let Some(name) = line.trim().strip_prefix("table ip ") else {
            continue;
        };
        let Some(rest) = name.strip_prefix(TABLE_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('_').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("kith-fault: deleting orphaned nftables table {name}");
            nft(&format!("delete table ip {name}\n"))?;
        }
    }
    Ok(())
}

/// Deletes table `name`; used by drop and by the signal handler.
pub(crate) fn delete_table(name: &str) {
    if let Err(e) = nft(&format!("delete table ip {name}\n")) {
        eprintln!("kith-fault: could not delete nftables table {name}: {e:#}");
    }
}

fn assert_loopback(addr: Ipv4Addr) {
    assert!(
        addr.is_loopback(),
        "the fault suite only ever touches 127.0.0.0/8, not {addr}"
    );
}

impl Firewall {
    /// Installs nftables if needed, removes orphaned tables, and creates this run's table.
    pub fn open() -> anyhow::Result<Firewall> {
        ensure_nft_installed()?;
        sweep_orphans()?;
        let table = format!(
            "{TABLE_PREFIX}{}_{}",
            std::process::id(),
            TABLE_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        nft(&format!(
            "add table ip {table}\n\
             add chain ip {table} out {{ type filter hook output priority 0; policy accept; }}\n"
        ))
        .context("cannot create an nftables table (the fault suite must run as root)")?;
        crate::cleanup::register_table(&table, delete_table);
        Ok(Firewall { table })
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Drops every packet from `from` to `to` (one direction).
    pub fn block(&self, from: Ipv4Addr, to: Ipv4Addr) -> anyhow::Result<()> {
        assert_loopback(from);
        assert_loopback(to);
        nft(&format!(
            "add rule ip {} out ip saddr {from} ip daddr {to} drop\n",
            self.table
        ))
        .map(drop)
    }

    /// Drops about `percent`% of the packets from `from` to `to`, independently at random.
    pub fn lossy(&self, from: Ipv4Addr, to: Ipv4Addr, percent: u8) -> anyhow::Result<()> {
        assert_loopback(from);
        assert_loopback(to);
        assert!(percent <= 100, "loss is a percentage");
        nft(&format!(
            "add rule ip {} out ip saddr {from} ip daddr {to} numgen random mod 100 < {percent} drop\n",
            self.table
        ))
        .map(drop)
    }

    /// Removes every rule: all partitions and loss heal at once.
    pub fn heal(&self) -> anyhow::Result<()> {
        nft(&format!("flush chain ip {} out\n", self.table)).map(drop)
    }

    /// The rules now in force, for reports.
    pub fn rules(&self) -> anyhow::Result<String> {
        nft(&format!("list chain ip {} out\n", self.table))
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        delete_table(&self.table);
        crate::cleanup::unregister_table(&self.table);
    }
}
