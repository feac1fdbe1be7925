//! `carbon tls init DIR`: a cluster's certificate authority, member
//! certificates (each naming its own member id) and a client certificate,
//! and the flags that use them; `carbon tls issue` adds one more certificate
//! to that directory.

use std::path::{Path, PathBuf};

use cluster_facade::rpc::tls::TlsFiles;
use cluster_facade::rpc::tls::generate::{issue_into, revoke_in, write_bundle};
use cluster_facade::rpc::{Role, Security, Tls};

use cluster_facade::GossipKey;

use crate::exit::Failure;

/// `carbon tls` operations.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum TlsCommand {
    /// Write a new CA, member certificates (each naming a fresh member id of
    /// its own), one client certificate and a gossip key (`gossip.key`) into
    /// DIR (secrets mode 0600; existing files are never overwritten).
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
    /// Add one certificate to a CA directory made by `tls init`: a member
    /// certificate naming a fresh member id (the first free member-N.pem),
    /// or a client certificate.
    Issue {
        /// A member certificate.
        #[arg(long, conflicts_with = "client", required_unless_present = "client")]
        member: bool,
        /// A client certificate (names no member).
        #[arg(long)]
        client: bool,
        /// The member id the member certificate names (a renewal, or a
        /// member whose certificate named none); a fresh one without it.
        #[arg(long, requires = "member", value_name = "ID")]
        member_id: Option<cluster_facade::MemberId>,
        /// The CA directory: it holds ca.pem and ca-key.pem.
        #[arg(long, default_value = ".", value_name = "DIR")]
        dir: PathBuf,
        /// Where to write the new certificate and key (default: the CA directory).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Revoke a certificate of the CA: add it to the CA directory's
    /// revocation list (crl.pem, made on first use). Members that load the
    /// list (`--tls-crl`, `[tls] crl`) refuse it at the handshake from their
    /// next reload on; copy crl.pem to them.
    Revoke {
        /// The certificate to revoke (PEM).
        cert: PathBuf,
        /// The CA directory: it holds ca.pem and ca-key.pem.
        #[arg(long, default_value = ".", value_name = "DIR")]
        dir: PathBuf,
    },
}

/// Runs a `carbon tls` command.
pub(crate) fn run(command: TlsCommand) -> Result<(), Failure> {
    match command {
        TlsCommand::Init { dir, members, cluster_id } => init(&dir, members, &cluster_id),
        TlsCommand::Issue { member, client: _, member_id, dir, out } => {
            let role = if member { Role::Member } else { Role::Client };
            issue(&dir, out.as_deref().unwrap_or(&dir), role, member_id)
        }
        TlsCommand::Revoke { cert, dir } => {
            let crl = revoke_in(&dir, &cert).map_err(|e| Failure::usage(e.to_string()))?;
            println!("revoked {}: {} lists it", cert.display(), crl.display());
            println!("Members refuse it once they reload with --tls-crl {} (or [tls] crl)", crl.display());
            Ok(())
        }
    }
}

fn issue(
    dir: &Path,
    out: &Path,
    role: Role,
    member_id: Option<cluster_facade::MemberId>,
) -> Result<(), Failure> {
    let issued = issue_into(dir, out, role, member_id).map_err(|e| Failure::usage(e.to_string()))?;
    match issued.member_id {
        Some(id) => {
            println!("wrote a member certificate for member {id} to {}", issued.files.cert.display());
            println!("The member runs with it (a new data dir takes member id {id}):");
            println!("  carbon agent {} ...", flags(&issued.files));
        }
        None => {
            println!("wrote a client certificate to {}", issued.files.cert.display());
            println!("  carbon members --service HOST:PORT {}", flags(&issued.files));
        }
    }
    Ok(())
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
    println!(
        "Each member runs with its own certificate (it names the member's id) and the cluster's gossip key:"
    );
    for (n, (files, id)) in bundle.members.iter().zip(&bundle.member_ids).enumerate() {
        println!(
            "  member {} ({id}): CARBON_GOSSIP_KEY=$(cat {}) carbon agent {} ...",
            n + 1,
            gossip_key.display(),
            flags(files)
        );
    }
    println!("More members or clients later: carbon tls issue --member --dir {}", dir.display());
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
    /// The CA's revocation list (PEM, `carbon tls revoke` writes it):
    /// certificates on it are refused. Reloaded with the certificates.
    #[arg(long = "tls-crl", env = "CARBON_TLS_CRL", value_name = "FILE")]
    pub tls_crl: Option<std::path::PathBuf>,
}

impl TlsArgs {
    /// The files, when all three are given; a usage error naming what is
    /// missing when only some are.
    pub(crate) fn files(&self) -> Result<Option<TlsFiles>, Failure> {
        match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (None, None, None) if self.tls_crl.is_none() => Ok(None),
            (Some(ca), Some(cert), Some(key)) => Ok(Some(TlsFiles {
                ca_cert: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
                crl: self.tls_crl.clone(),
            })),
            (None, None, None) if self.tls_crl.is_some() => {
                Err(Failure::usage("--tls-crl needs --tls-ca, --tls-cert and --tls-key"))
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
