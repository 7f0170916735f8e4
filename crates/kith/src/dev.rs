//! `kith dev`: a local cluster of `kith serve` child processes on 127.0.0.1.
//!
//! The supervisor starts N nodes, waits until they have elected a leader, prints their
//! URLs, and on Ctrl-C or SIGTERM stops every child (SIGTERM, then SIGKILL after a grace
//! period). Children run with `--exit-with-parent`, so even if the supervisor is killed
//! outright none of them is left behind.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;

const NODES_MAX: u16 = 9;

/// Prints a line, ignoring a closed stdout: the supervisor must keep stopping its children
/// cleanly even when whoever read its output has gone away.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Args)]
pub struct DevArgs {
    /// Number of nodes (1–9).
    #[arg(long, default_value_t = 3)]
    nodes: u16,
    /// Port of node 1; node N listens on base-port + N - 1.
    #[arg(long, default_value_t = 7001)]
    base_port: u16,
    /// Where the nodes keep their data (default: kith-dev-BASEPORT in the temp directory).
    /// Reused across runs, so the cluster's data survives a restart of `kith dev`.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Delete the data directory first and start an empty cluster.
    #[arg(long)]
    fresh: bool,
}

struct DevNode {
    id: u16,
    url: String,
    log: PathBuf,
    child: Child,
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    if args.nodes == 0 || args.nodes > NODES_MAX {
        bail!("--nodes must be between 1 and {NODES_MAX}");
    }
    if args.base_port.checked_add(args.nodes - 1).is_none() || args.base_port < 1024 {
        bail!(
            "--base-port must leave room for {} ports at or above 1024",
            args.nodes
        );
    }
    let data = args
        .data
        .unwrap_or_else(|| std::env::temp_dir().join(format!("kith-dev-{}", args.base_port)));
    if args.fresh && data.exists() {
        std::fs::remove_dir_all(&data)
            .with_context(|| format!("cannot delete {}", data.display()))?;
    }
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    let exe = std::env::current_exe().context("cannot find the kith binary")?;
    let addr = |i: u16| format!("127.0.0.1:{}", args.base_port + i - 1);
    let peers: Vec<String> = (1..=args.nodes)
        .map(|i| format!("{i}={}", addr(i)))
        .collect();
    let peers = peers.join(",");

    let mut nodes = Vec::new();
    for i in 1..=args.nodes {
        let dir = data.join(format!("node-{i}"));
        std::fs::create_dir_all(&dir)?;
        let log = dir.join("kith.log");
        let out = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new(&exe)
            .args(["serve", "--id", &i.to_string(), "--listen", &addr(i)])
            .arg("--data")
            .arg(&dir)
            .args(["--peers", &peers, "--exit-with-parent"])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start node {i}"))?;
        nodes.push(DevNode {
            id: i,
            url: format!("http://{}", addr(i)),
            log,
            child,
        });
    }

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let ready = tokio::select! {
        r = wait_for_leader(&mut nodes) => r,
        _ = term.recv() => Err(anyhow::anyhow!("interrupted")),
        _ = int.recv() => Err(anyhow::anyhow!("interrupted")),
    };
    let leader = match ready {
        Ok(leader) => leader,
        Err(e) => {
            stop_all(&mut nodes).await;
            return Err(e);
        }
    };

    say!("kith dev: {} nodes, data in {}", args.nodes, data.display());
    for n in &nodes {
        let role = if n.id as u64 == leader {
            " (leader)"
        } else {
            ""
        };
        say!(
            "  node {}: {}{role}   log: {}",
            n.id,
            n.url,
            n.log.display()
        );
    }
    say!("  health:   curl {}/v1/health", nodes[0].url);
    say!("  try:      kith kv put hello world && kith kv get hello");
    say!("Ctrl-C stops the cluster.");

    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = watch_children(&mut nodes) => {}
    }
    say!("kith dev: stopping");
    stop_all(&mut nodes).await;
    Ok(())
}

/// Polls the nodes until one reports itself ready with a leader; returns the leader's id.
async fn wait_for_leader(nodes: &mut [DevNode]) -> anyhow::Result<u64> {
    let client = kith_client::Client::new(&[nodes[0].url.as_str()])?;
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    while Instant::now() < deadline {
        for n in nodes.iter_mut() {
            if let Some(status) = n.child.try_wait()? {
                bail!(
                    "node {} exited during startup ({status}); see {}",
                    n.id,
                    n.log.display()
                );
            }
            if let Ok(h) = client.health_of(&n.url).await {
                if h["ready"].as_bool() == Some(true) {
                    if let Some(leader) = h["leader_id"].as_u64() {
                        return Ok(leader);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!(
        "no leader was elected within {} s",
        STARTUP_TIMEOUT.as_secs()
    )
}

/// Reports children that exit on their own; resolves only when all have exited.
async fn watch_children(nodes: &mut [DevNode]) {
    let mut reported = vec![false; nodes.len()];
    loop {
        for (i, n) in nodes.iter_mut().enumerate() {
            if !reported[i] {
                if let Ok(Some(status)) = n.child.try_wait() {
                    say!(
                        "kith dev: node {} exited ({status}); see {}",
                        n.id,
                        n.log.display()
                    );
                    reported[i] = true;
                }
            }
        }
        if reported.iter().all(|r| *r) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// SIGTERM every child, wait for them, SIGKILL any that outlive the grace period.
async fn stop_all(nodes: &mut [DevNode]) {
    for n in nodes.iter() {
        if let Some(pid) = n.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + STOP_GRACE;
    for n in nodes.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, n.child.wait()).await.is_err() {
            say!("kith dev: node {} did not stop in time; killing it", n.id);
            let _ = n.child.kill().await;
        }
    }
}
