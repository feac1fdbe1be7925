//! The credentials every test cluster runs with, as a real deployment would
//! (secure by default): mutual TLS between members and for the workload's
//! clients, and encrypted gossip. Made once per test process in a temporary
//! directory: a CA, a client certificate and a gossip key; each agent gets a
//! member certificate of its own ([`member_flags`]), which names its member
//! id, as `carbon tls issue --member` makes them.
//!
//! `CARBON_FAULTS_INSECURE=1` runs the scenarios on plain TCP and plaintext
//! gossip instead (agents get `--insecure`, so namespaced hosts still start).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use cluster_facade::GossipKey;
use cluster_facade::rpc::tls::generate::{issue_into, write_bundle};
use cluster_facade::rpc::{Role, Security, Tls, TlsFiles};
use cluster_service::RouterOptions;

/// The TLS files and gossip key of this test process.
#[derive(Debug)]
pub struct Credentials {
    dir: tempfile::TempDir,
    /// The member certificate issued for each agent, by its data directory
    /// (a restarted agent keeps its certificate, so its member id).
    members: Mutex<HashMap<PathBuf, TlsFiles>>,
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
            let bundle = write_bundle(dir.path(), "faults", 0).expect("test certificates");
            Some(Credentials {
                members: Mutex::default(),
                client: bundle.client,
                gossip_key: GossipKey::generate().to_base64(),
                dir,
            })
        })
        .as_ref()
}

impl Credentials {
    /// The member certificate of the agent whose data directory is
    /// `data_dir`: issued on first use, the same one afterwards. Without a
    /// data directory (a member in memory) a new one each time.
    pub fn member(&self, data_dir: Option<&Path>) -> TlsFiles {
        let issue = || {
            issue_into(self.dir.path(), self.dir.path(), Role::Member, None)
                .expect("a member certificate")
                .files
        };
        // Under the lock, also without a data dir: two issues at once would
        // pick the same free file name.
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        match data_dir {
            Some(data_dir) => members.entry(data_dir.to_owned()).or_insert_with(issue).clone(),
            None => issue(),
        }
    }
}

/// What an agent's configuration file adds: `(top-level keys, tables)`. The
/// member certificate is not in it (each agent has its own: [`member_flags`]).
pub fn agent_toml() -> (String, String) {
    match credentials() {
        None => (String::new(), String::new()),
        Some(c) => (format!("gossip_keys = [{:?}]\n", c.gossip_key), String::new()),
    }
}

/// The flags of the agent whose data directory is `data_dir`: its own
/// member certificate (`--tls-ca`, `--tls-cert`, `--tls-key`), or
/// `--insecure` when `CARBON_FAULTS_INSECURE=1`.
pub fn member_flags(data_dir: Option<&Path>) -> Vec<String> {
    let Some(c) = credentials() else { return vec!["--insecure".to_owned()] };
    let files = c.member(data_dir);
    [("--tls-ca", &files.ca_cert), ("--tls-cert", &files.cert), ("--tls-key", &files.key)]
        .into_iter()
        .flat_map(|(flag, path)| [flag.to_owned(), path.display().to_string()])
        .collect()
}

/// Client options for `cluster_id` with the workload's client certificate.
pub fn client_options(cluster_id: &str) -> RouterOptions {
    let mut options = RouterOptions::new(cluster_id);
    if let Some(c) = credentials() {
        let tls = Tls::from_files(c.client.clone()).expect("the client certificate loads");
        options.security = Security::Tls(tls);
    }
    options
}
