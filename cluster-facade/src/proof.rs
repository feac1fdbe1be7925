//! Proofs of membership: before the leader makes a gossip member a raft
//! member, a record or a short-id holder, the member's raft endpoint must
//! prove that it holds a member certificate of this cluster's CA that names
//! the member id the gossip member claims (with TLS).
//!
//! Gossip tags are only what a member claims; a gossip key only shows that
//! its holder was once given one. A certificate is what the cluster's CA
//! signed, and the raft port serves nobody else. Proofs run in the
//! background, so a stranger whose port never answers costs the leader's
//! housekeeping nothing; a failed proof is tried again after a pause and
//! logged at most once per pause.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cluster_core::MemberId;
use cluster_rpc::{Net, Security};
use tokio::task::JoinSet;
use tracing::{info, warn};

/// Where one member's proof stands, for the raft address it was asked of.
#[derive(Debug, Clone)]
enum Proof {
    Proven { raft_addr: String },
    Pending { raft_addr: String },
    Failed { raft_addr: String, at: Instant },
}

impl Proof {
    fn raft_addr(&self) -> &str {
        match self {
            Proof::Proven { raft_addr } | Proof::Pending { raft_addr } | Proof::Failed { raft_addr, .. } => {
                raft_addr
            }
        }
    }
}

/// The proofs the leader asked for, by member. Dropping it cancels the
/// proofs under way.
pub(crate) struct MemberProofs {
    security: Security,
    /// The network the proofs connect through (the member's).
    network: Net,
    /// How long a proof may take (connect and handshake).
    timeout: Duration,
    /// How long a failed proof stands before it is asked again.
    retry_after: Duration,
    state: Arc<Mutex<HashMap<MemberId, Proof>>>,
    tasks: Mutex<JoinSet<()>>,
}

impl std::fmt::Debug for MemberProofs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberProofs").field("tls", &self.security.is_tls()).finish_non_exhaustive()
    }
}

impl MemberProofs {
    /// Proofs with `security` (the member's own: its CA decides) over
    /// `network`, each bounded by `timeout`, a failure asked again after
    /// `retry_after`.
    pub(crate) fn new(security: Security, network: Net, timeout: Duration, retry_after: Duration) -> Self {
        MemberProofs {
            security,
            network,
            timeout,
            retry_after,
            state: Arc::default(),
            tasks: Mutex::new(JoinSet::new()),
        }
    }

    /// Whether `member` proved a member certificate on `raft_addr`. When it
    /// has not (yet), a proof is started in the background unless one is
    /// under way or failed less than `retry_after` ago. Without TLS there is
    /// nothing to prove: always true.
    pub(crate) fn proven(&self, member: MemberId, raft_addr: &str) -> bool {
        if !self.security.is_tls() {
            return true;
        }
        let mut state = lock(&self.state);
        match state.get(&member) {
            Some(Proof::Proven { raft_addr: a }) if a == raft_addr => return true,
            Some(Proof::Pending { raft_addr: a }) if a == raft_addr => return false,
            Some(Proof::Failed { raft_addr: a, at }) if a == raft_addr && at.elapsed() < self.retry_after => {
                return false;
            }
            _ => {}
        }
        state.insert(member, Proof::Pending { raft_addr: raft_addr.to_owned() });
        drop(state);
        let (security, timeout, shared) = (self.security.clone(), self.timeout, self.state.clone());
        let network = self.network.clone();
        let addr = raft_addr.to_owned();
        let mut tasks = lock(&self.tasks);
        // Finished proofs leave the set here, so it holds only those under way.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            let outcome = security.prove_member_over(&network, &addr, member, timeout).await;
            let mut state = lock(&shared);
            // Only the proof still asked for counts (not one of an address
            // the member has since moved away from, nor of a member forgotten).
            if state.get(&member).is_none_or(|p| p.raft_addr() != addr) {
                return;
            }
            match outcome {
                Ok(()) => {
                    info!(of = %member, raft = %addr, "gossip member proved a member certificate");
                    state.insert(member, Proof::Proven { raft_addr: addr });
                }
                Err(e) => {
                    warn!(
                        of = %member,
                        raft = %addr,
                        error = %cluster_rpc::chain(&e),
                        "gossip member not admitted: its raft endpoint holds no member certificate of this cluster naming it"
                    );
                    state.insert(member, Proof::Failed { raft_addr: addr, at: Instant::now() });
                }
            }
        });
        false
    }

    /// Forgets the members `keep` says no to (gone from gossip).
    pub(crate) fn retain(&self, keep: impl Fn(&MemberId) -> bool) {
        lock(&self.state).retain(|id, _| keep(id));
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::ready;

    use cluster_core::testsuite::{DEADLINE, wait_until};
    use cluster_rpc::tls::generate::CertificateAuthority;
    use cluster_rpc::{Role, Tls};

    fn tls(ca: &CertificateAuthority, role: Role) -> Security {
        let issued = ca.issue(role, "t").expect("issue");
        Security::Tls(Tls::from_pem(ca.cert_pem(), &issued.cert_pem, &issued.key_pem).expect("load"))
    }

    /// A TLS server that completes handshakes and holds the connections.
    async fn tls_listener(security: Security) -> (String, tokio::task::JoinHandle<()>) {
        let Security::Tls(tls) = security else { panic!("TLS only") };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let acceptor = tls.acceptor().expect("acceptor");
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                if let Ok(stream) = acceptor.accept(tcp).await {
                    held.push(stream);
                }
            }
        });
        (addr, task)
    }

    /// Waits until the proof of `member` at `addr` ended; true if it was proven.
    async fn settle(proofs: &MemberProofs, member: MemberId, addr: &str) -> bool {
        let failed = || matches!(lock(&proofs.state).get(&member), Some(Proof::Failed { .. }));
        wait_until(DEADLINE, "the proof to end", || ready(proofs.proven(member, addr) || failed())).await;
        proofs.proven(member, addr)
    }

    #[tokio::test]
    async fn a_member_certificate_of_this_ca_is_proven_and_others_are_not() {
        let ca = CertificateAuthority::generate("proof").expect("ca");
        let other = CertificateAuthority::generate("proof").expect("another ca");
        let proofs = MemberProofs::new(
            tls(&ca, Role::Member),
            Net::tcp(),
            Duration::from_secs(10),
            Duration::from_secs(3600),
        );
        let (member_addr, m) = tls_listener(tls(&ca, Role::Member)).await;
        let (foreign_addr, f) = tls_listener(tls(&other, Role::Member)).await;
        let (good, bad) = (MemberId::generate(), MemberId::generate());

        assert!(settle(&proofs, good, &member_addr).await, "a member of this CA");
        assert!(!settle(&proofs, bad, &foreign_addr).await, "a member of another CA");
        // A failed proof stands until retry_after: no new connection meanwhile.
        assert!(!proofs.proven(bad, &foreign_addr));
        assert!(matches!(lock(&proofs.state).get(&bad), Some(Proof::Failed { .. })));
        // A proof holds for the address it was made on, not for a new one.
        assert!(!proofs.proven(good, &foreign_addr));
        assert!(!settle(&proofs, good, &foreign_addr).await, "the proven member moved to a stranger's port");
        // Forgotten members are asked again.
        proofs.retain(|id| *id != bad);
        assert!(lock(&proofs.state).get(&bad).is_none());
        m.abort();
        f.abort();
    }

    #[tokio::test]
    async fn without_tls_there_is_nothing_to_prove() {
        let proofs =
            MemberProofs::new(Security::Plain, Net::tcp(), Duration::from_secs(1), Duration::from_secs(1));
        assert!(proofs.proven(MemberId::generate(), "127.0.0.1:1"));
        assert!(lock(&proofs.state).is_empty(), "nothing asked");
    }
}
