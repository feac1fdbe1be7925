//! The credentials every test cluster runs with, as a real deployment would
//! (secure by default): mutual TLS between members and for the workload's
//! clients, and encrypted gossip. Made once per test process in a temporary
//! directory: a CA, one member certificate all agents share (the role is what
//! counts), a client certificate, and a gossip key.
//!
//! `CARBON_FAULTS_INSECURE=1` runs the scenarios on plain TCP and plaintext
//! gossip instead (agents get `--insecure`, so namespaced hosts still start).

use std::sync::OnceLock;

use cluster_facade::GossipKey;
use cluster_facade::rpc::tls::generate::write_bundle;
use cluster_facade::rpc::{Security, Tls, TlsFiles};
use cluster_service::ClientOptions;

/// The TLS files and gossip key of this test process.
#[derive(Debug)]
pub struct Credentials {
    _dir: tempfile::TempDir,
    /// The member certificate every agent uses.
    pub member: TlsFiles,
    /// The client certificate of the workload and the checks.
    pub client: TlsFiles,
    /// The gossip key (base64).
    pub gossip_key: String,
}

/// The credentials, or `None` when `CARBON_FAULTS_INSECURE=1`.
pub fn credentials() -> Option<&'static Credentials> {
    static CREDENTIALS: OnceLock<Option<Credentials>> = OnceLock::new();
    CREDENTIALS
        .get_or_init(|| {
            if std::env::var("CARBON_FAULTS_INSECURE").is_ok_and(|v| v == "1") {
                return None;
            }
            let dir = tempfile::tempdir().expect("a temporary directory for certificates");
            let bundle = write_bundle(dir.path(), "faults", 1).expect("test certificates");
            Some(Credentials {
                member: bundle.members[0].clone(),
                client: bundle.client,
                gossip_key: GossipKey::generate().to_base64(),
                _dir: dir,
            })
        })
        .as_ref()
}

/// What an agent's configuration file adds: `(top-level keys, tables)`.
pub fn agent_toml() -> (String, String) {
    match credentials() {
        None => (String::new(), String::new()),
        Some(c) => agent_toml_with(&c.member, &c.gossip_key),
    }
}

/// What the configuration file of an agent with the member certificate
/// `member` and the gossip key `gossip_key` (base64) adds: `(top-level keys,
/// tables)`; for programs that make their own credentials, like the bench.
pub fn agent_toml_with(member: &TlsFiles, gossip_key: &str) -> (String, String) {
    (
        format!("gossip_keys = [{gossip_key:?}]\n"),
        format!(
            "\n[tls]\nca_cert = {:?}\ncert = {:?}\nkey = {:?}\n",
            member.ca_cert.display().to_string(),
            member.cert.display().to_string(),
            member.key.display().to_string()
        ),
    )
}

/// Flags an agent needs beside its configuration file.
pub fn agent_flags() -> &'static [&'static str] {
    if credentials().is_some() { &[] } else { &["--insecure"] }
}

/// Client options for `cluster_id` with the workload's client certificate.
pub fn client_options(cluster_id: &str) -> ClientOptions {
    let mut options = ClientOptions::new(cluster_id);
    if let Some(c) = credentials() {
        let tls = Tls::from_files(c.client.clone()).expect("the client certificate loads");
        options.security = Security::Tls(tls);
    }
    options
}
