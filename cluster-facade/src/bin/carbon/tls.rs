//! `carbon tls init DIR`: a cluster's certificate authority, member
//! certificates and a client certificate, and the flags that use them.

use std::path::{Path, PathBuf};

use cluster_facade::rpc::tls::TlsFiles;
use cluster_facade::rpc::tls::generate::write_bundle;
use cluster_facade::rpc::{Security, Tls};

use cluster_facade::GossipKey;

use crate::exit::Failure;

/// `carbon tls` operations.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum TlsCommand {
    /// Write a new CA, member certificates, one client certificate and a
    /// gossip key (`gossip.key`) into DIR (secrets mode 0600; existing files
    /// are never overwritten).
    Init {
        /// The directory to write into (created if missing).
        dir: PathBuf,
        /// How many member certificates to make.
        #[arg(long, default_value_t = 3)]
        members: usize,
        /// The cluster id, named in the CA's subject.
        #[arg(long, env = "CARBON_CLUSTER_ID", default_value = "carbon-grid")]
        cluster_id: String,
    },
}

/// Runs a `carbon tls` command.
pub(crate) fn run(command: TlsCommand) -> Result<(), Failure> {
    match command {
        TlsCommand::Init { dir, members, cluster_id } => init(&dir, members, &cluster_id),
    }
}

fn flags(files: &TlsFiles) -> String {
    format!(
        "--tls-ca {} --tls-cert {} --tls-key {}",
        files.ca_cert.display(),
        files.cert.display(),
        files.key.display()
    )
}

fn init(dir: &Path, members: usize, cluster_id: &str) -> Result<(), Failure> {
    if members == 0 {
        return Err(Failure::usage("--members must be at least 1"));
    }
    let gossip_key = dir.join(GOSSIP_KEY_FILE);
    if gossip_key.exists() {
        return Err(Failure::usage(format!("{} exists already: nothing written", gossip_key.display())));
    }
    let bundle = write_bundle(dir, cluster_id, members).map_err(|e| Failure::usage(e.to_string()))?;
    write_secret(&gossip_key, &format!("{}\n", GossipKey::generate().to_base64()))
        .map_err(|e| Failure::usage(format!("cannot write {}: {e}", gossip_key.display())))?;
    println!(
        "wrote a CA, {members} member certificate{}, a client certificate and a gossip key to {} (secrets mode 0600)",
        if members == 1 { "" } else { "s" },
        dir.display()
    );
    println!();
    println!("Each member runs with its own certificate and the cluster's gossip key:");
    for (n, files) in bundle.members.iter().enumerate() {
        println!(
            "  member {}: CARBON_GOSSIP_KEY=$(cat {}) carbon agent {} ...",
            n + 1,
            gossip_key.display(),
            flags(files)
        );
    }
    println!();
    println!("Client commands take the client certificate, as flags or from the environment:");
    println!("  carbon members --service HOST:PORT {}", flags(&bundle.client));
    println!(
        "  export CARBON_TLS_CA={} CARBON_TLS_CERT={} CARBON_TLS_KEY={}",
        bundle.client.ca_cert.display(),
        bundle.client.cert.display(),
        bundle.client.key.display()
    );
    println!();
    println!("Keep {} off the members: whoever holds it can make members.", bundle.ca_key.display());
    Ok(())
}

/// The gossip key `init` writes beside the certificates.
const GOSSIP_KEY_FILE: &str = "gossip.key";

/// Writes a new file only its owner reads; never overwrites one.
fn write_secret(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(text.as_bytes())
}

/// The TLS options every command that talks to members takes: the three
/// files together, as flags or from `CARBON_TLS_*`.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct TlsArgs {
    /// The cluster CA's certificate (PEM). With --tls-cert and --tls-key it
    /// turns mutual TLS on (`carbon tls init` makes all three).
    #[arg(long = "tls-ca", env = "CARBON_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// This member's or client's certificate (PEM).
    #[arg(long = "tls-cert", env = "CARBON_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long = "tls-key", env = "CARBON_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<std::path::PathBuf>,
}

impl TlsArgs {
    /// The files, when all three are given; a usage error naming what is
    /// missing when only some are.
    pub(crate) fn files(&self) -> Result<Option<TlsFiles>, Failure> {
        match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => {
                Ok(Some(TlsFiles { ca_cert: ca.clone(), cert: cert.clone(), key: key.clone() }))
            }
            _ => {
                let missing: Vec<&str> = [
                    ("--tls-ca", &self.tls_ca),
                    ("--tls-cert", &self.tls_cert),
                    ("--tls-key", &self.tls_key),
                ]
                .into_iter()
                .filter(|(_, v)| v.is_none())
                .map(|(name, _)| name)
                .collect();
                Err(Failure::usage(format!(
                    "TLS needs --tls-ca, --tls-cert and --tls-key together; missing {}",
                    missing.join(", ")
                )))
            }
        }
    }

    /// Plain TCP without files, mutual TLS with them (loaded now: a bad file
    /// is a usage error naming it).
    pub(crate) fn security(&self) -> Result<Security, Failure> {
        Ok(match self.files()? {
            None => Security::Plain,
            Some(files) => Security::Tls(Tls::from_files(files).map_err(|e| Failure::usage(e.to_string()))?),
        })
    }
}
