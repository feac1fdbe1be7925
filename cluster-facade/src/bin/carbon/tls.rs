//! `carbon tls init DIR`: a cluster's certificate authority, member
//! certificates and a client certificate, and the flags that use them.

use std::path::{Path, PathBuf};

use cluster_facade::rpc::tls::TlsFiles;
use cluster_facade::rpc::tls::generate::write_bundle;

use crate::exit::Failure;

/// `carbon tls` operations.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum TlsCommand {
    /// Write a new CA, member certificates and one client certificate into DIR
    /// (private keys mode 0600; existing files are never overwritten).
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
    let bundle = write_bundle(dir, cluster_id, members).map_err(|e| Failure::usage(e.to_string()))?;
    println!(
        "wrote a CA, {members} member certificate{} and a client certificate to {} (private keys mode 0600)",
        if members == 1 { "" } else { "s" },
        dir.display()
    );
    println!();
    println!("Each member runs with its own certificate:");
    for (n, files) in bundle.members.iter().enumerate() {
        println!("  member {}: carbon agent {} ...", n + 1, flags(files));
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
