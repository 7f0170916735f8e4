//! `kith init`: a new cluster identity — its CA, a random cluster id, one certificate per
//! node, and the first administrator's token — and `kith init add-node`, a certificate for a
//! node that joins later.
//!
//! Layout (`--out DIR`):
//! ```text
//! DIR/ca.crt  DIR/ca.key  DIR/admin.token  DIR/profile.json
//! DIR/node-N/ca.crt  DIR/node-N/node.crt  DIR/node-N/node.key  DIR/node-N/admin.hash
//! ```
//! `admin.token` is `admin.SECRET` (256 random bits); each node gets only BLAKE3(SECRET), in
//! `admin.hash`. `profile.json` names every node as an endpoint, `ca.crt` and `admin.token`
//! (`kith_client::profile`); `kith init` also writes it as the user's profile unless one
//! exists or `--no-profile` is given, so that the CLI on this machine needs no flags. Keys and the token are written with mode 0600, and `DIR` and each `node-N`
//! with 0700;
//! nothing existing is ever overwritten. Certificates are ECDSA P-256 (rcgen, ring). A node
//! certificate names its node and cluster in a URI subject alternative name
//! (`kith_node::tls::node_uri`) and its HOST as a DNS or IP name; it serves and it
//! authenticates as a client (both extended key usages), since a node is both.
//!
//! Refuses: anything but generating and writing; how nodes use these files is
//! `kith_node::tls`.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use kith_client::profile::Profile;
use kith_core::NodeId;

/// The profile `kith init` writes beside the identity (`kith_client::profile`).
pub const PROFILE_FILE: &str = "profile.json";
/// The first administrator's token, `admin.SECRET`.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// How long the CA's certificate is valid.
const CA_VALID_DAYS: i64 = 10 * 365;
/// How long a node certificate is valid (docs/SECURITY.md says how to renew one).
const NODE_VALID_DAYS: i64 = 5 * 365;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct InitArgs {
    #[command(subcommand)]
    command: Option<InitCommand>,
    /// The directory to create the cluster identity in (created; must not hold one).
    #[arg(long, required = true, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The nodes to issue certificates for: `1=HOST:PORT,2=HOST:PORT,…` (HOST is an IP
    /// address or a DNS name, written into the certificate).
    #[arg(long, required = true)]
    nodes: Option<String>,
    /// Write `DIR/profile.json` only, not the user's profile (which a client on this
    /// machine uses when given no connection flags).
    #[arg(long)]
    no_profile: bool,
}

#[derive(Subcommand)]
enum InitCommand {
    /// Issue a certificate for a node that will join the cluster later.
    AddNode(AddNodeArgs),
}

#[derive(Args)]
struct AddNodeArgs {
    /// The directory `kith init` created (holding ca.crt and ca.key).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The new node: `N=HOST:PORT`.
    #[arg(long)]
    node: String,
}

pub fn run(args: InitArgs) -> anyhow::Result<()> {
    match args.command {
        Some(InitCommand::AddNode(add)) => add_node(&add.out, &add.node),
        None => {
            let (Some(out), Some(nodes)) = (args.out, args.nodes) else {
                bail!("kith init needs --out DIR and --nodes 1=HOST:PORT,…");
            };
            init(&out, &nodes, !args.no_profile)
        }
    }
}

fn init(out: &Path, spec: &str, user_profile: bool) -> anyhow::Result<()> {
    let nodes = parse_nodes(spec)?;
    let cluster_id = create(out, &nodes)?;
    let out = out
        .canonicalize()
        .with_context(|| format!("resolve {}", out.display()))?;
    // The profile: every node as an endpoint, this directory's CA and admin token.
    let profile = Profile {
        endpoints: spec
            .split(',')
            .filter_map(|part| part.split_once('='))
            .map(|(_, addr)| format!("https://{}", addr.trim()))
            .collect(),
        ca: out.join("ca.crt"),
        token_file: Some(out.join(ADMIN_TOKEN_FILE)),
    };
    profile.create(&out.join(PROFILE_FILE))?;
    println!("cluster {cluster_id}: wrote {}", out.display());
    println!("  ca.crt        the cluster CA (clients trust it: --ca or KITH_CA)");
    println!("  ca.key        the CA's key: keep it offline; it issues node certificates");
    println!("  admin.token   the first administrator's token");
    println!("  profile.json  endpoints, CA and token for clients here (KITH_PROFILE)");
    for (id, _) in &nodes {
        println!(
            "  node-{id}/      copy to node {id}; run it with `kith serve --id {id} --tls node-{id} …`"
        );
    }
    if user_profile {
        match kith_client::profile::default_path() {
            Some(path) if profile.create(&path)? => {
                println!(
                    "the kith CLI on this machine now reaches this cluster with no flags ({})",
                    path.display()
                );
            }
            Some(path) => println!(
                "kept the existing profile {}; for this cluster use KITH_PROFILE={}",
                path.display(),
                out.join(PROFILE_FILE).display()
            ),
            None => {}
        }
    }
    Ok(())
}

/// Creates a cluster identity in `out` for `nodes` (id, host); returns the cluster id.
pub fn create(out: &Path, nodes: &[(NodeId, String)]) -> anyhow::Result<String> {
    if out.join("ca.key").exists() {
        bail!(
            "{} already holds a cluster identity (ca.key); choose another --out, or use \
             `kith init add-node` to issue a certificate for one more node",
            out.display()
        );
    }
    create_dir(out)?;
    let cluster_id = hex(&random::<16>()?);
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("kith cluster {cluster_id} CA"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.subject_alt_names = vec![SanType::URI(
        kith_node::tls::ca_uri(&cluster_id).try_into()?,
    )];
    validity(&mut params, CA_VALID_DAYS);
    let ca_cert = params.self_signed(&ca_key)?;
    let ca_pem = ca_cert.pem();
    write_file(&out.join("ca.crt"), ca_pem.as_bytes(), 0o644)?;
    write_file(
        &out.join("ca.key"),
        ca_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    let secret = hex(&random::<32>()?);
    let token = format!("{}.{secret}", kith_core::auth::BOOTSTRAP_ID);
    write_file(
        &out.join(ADMIN_TOKEN_FILE),
        format!("{token}\n").as_bytes(),
        0o600,
    )?;
    let issuer = Issuer::new(params, ca_key);
    for (id, host) in nodes {
        issue_node(out, &issuer, &ca_pem, &cluster_id, *id, host)?;
    }
    Ok(cluster_id)
}

fn add_node(out: &Path, node: &str) -> anyhow::Result<()> {
    let nodes = parse_nodes(node)?;
    let [(id, host)] = nodes.as_slice() else {
        bail!("--node names one node: N=HOST:PORT");
    };
    let cluster_id = issue(out, *id, host)?;
    println!(
        "node {id} of cluster {cluster_id}: wrote {}; run it with \
         `kith serve --id {id} --tls node-{id} --join https://MEMBER …`",
        out.join(format!("node-{id}")).display()
    );
    Ok(())
}

/// Issues node `id`'s certificate (naming `host`) from the CA kept in `out`; returns the
/// cluster id.
pub fn issue(out: &Path, id: NodeId, host: &str) -> anyhow::Result<String> {
    let ca_pem = std::fs::read_to_string(out.join("ca.crt"))
        .with_context(|| format!("cannot read {}", out.join("ca.crt").display()))?;
    let ca_key_pem = std::fs::read_to_string(out.join("ca.key"))
        .with_context(|| format!("cannot read {}", out.join("ca.key").display()))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).context("ca.key holds no usable key")?;
    let ca_der = rustls_pem_cert(&ca_pem)?;
    let cluster_id = kith_node::tls::cluster_of_ca(&ca_der)
        .context("ca.crt is not a kith cluster CA (it names no cluster id)")?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).context("ca.crt")?;
    issue_node(out, &issuer, &ca_pem, &cluster_id, id, host)?;
    Ok(cluster_id)
}

fn rustls_pem_cert(pem: &str) -> anyhow::Result<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("ca.crt: {e}"))
}

/// Writes `DIR/node-N/{ca.crt,node.crt,node.key}`.
fn issue_node(
    out: &Path,
    issuer: &Issuer<'_, KeyPair>,
    ca_pem: &str,
    cluster_id: &str,
    id: NodeId,
    host: &str,
) -> anyhow::Result<()> {
    let dir = out.join(format!("node-{id}"));
    if dir.exists() {
        bail!(
            "{} already exists; node ids are never reused",
            dir.display()
        );
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("kith node {id}"));
    let host_name = match host.trim_matches(['[', ']']).parse::<IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(host.try_into()?),
    };
    params.subject_alt_names = vec![
        host_name,
        SanType::URI(kith_node::tls::node_uri(cluster_id, id).try_into()?),
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    validity(&mut params, NODE_VALID_DAYS);
    let cert = params.signed_by(&key, issuer)?;
    create_dir(&dir)?;
    write_file(&dir.join("ca.crt"), ca_pem.as_bytes(), 0o644)?;
    write_file(&dir.join("node.crt"), cert.pem().as_bytes(), 0o644)?;
    write_file(&dir.join("node.key"), key.serialize_pem().as_bytes(), 0o600)?;
    // The first administrator's token, as the node recognises it: only its hash.
    if let Ok(token) = std::fs::read_to_string(out.join(ADMIN_TOKEN_FILE)) {
        if let Some((_, secret)) = kith_core::auth::split_token(&token) {
            let hash = blake3::hash(secret.as_bytes()).to_hex().to_string();
            let file = dir.join(kith_node::tls::ADMIN_HASH_FILE);
            write_file(&file, format!("{hash}\n").as_bytes(), 0o644)?;
        }
    }
    Ok(())
}

/// Valid from an hour ago (clocks differ a little between machines) for `days`.
fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

/// Parses `1=HOST:PORT,2=HOST:PORT` into ids and hosts (the port is checked, not kept: a
/// certificate names a host, not a port).
fn parse_nodes(spec: &str) -> anyhow::Result<Vec<(NodeId, String)>> {
    let mut nodes: Vec<(NodeId, String)> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .with_context(|| format!("node '{part}' is not ID=HOST:PORT"))?;
        let id: NodeId = id
            .parse()
            .with_context(|| format!("node id '{id}' is not a positive integer"))?;
        if id == 0 {
            bail!("node ids start at 1");
        }
        let (host, port) = addr
            .rsplit_once(':')
            .with_context(|| format!("node address '{addr}' is not HOST:PORT"))?;
        port.parse::<u16>()
            .with_context(|| format!("node address '{addr}' has no valid port"))?;
        if host.is_empty() {
            bail!("node address '{addr}' has no host");
        }
        if nodes.iter().any(|(n, _)| *n == id) {
            bail!("node id {id} is listed twice");
        }
        nodes.push((id, host.to_owned()));
    }
    if nodes.is_empty() {
        bail!("--nodes lists no nodes");
    }
    Ok(nodes)
}

fn create_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Writes a new file with `mode`; an existing file is an error, never overwritten.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn random<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lists_parse_and_refuse_what_they_must() {
        assert_eq!(
            parse_nodes("1=127.0.0.1:7001, 2=db-2.example:7002,3=[::1]:7003").unwrap(),
            vec![
                (1, "127.0.0.1".into()),
                (2, "db-2.example".into()),
                (3, "[::1]".into())
            ]
        );
        for bad in [
            "",
            "1=127.0.0.1",
            "0=a:1",
            "x=a:1",
            "1=:7001",
            "1=a:1,1=b:2",
            "1=a:x",
        ] {
            assert!(parse_nodes(bad).is_err(), "{bad}");
        }
    }
}
