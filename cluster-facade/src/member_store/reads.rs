//! How a member's reads are kept in step: where a client member reads what
//! it does not hold, and the read floor its reads must reach (see the
//! parent module's doc).

use std::sync::atomic::Ordering;

use cluster_core::{ConsensusStore, Error, KeyScope, Result, keys};
use cluster_service::{Request, Response, ServiceClient};

use super::{MemberStore, REVISION_PROBE};
use crate::client_feed;

impl<S: ConsensusStore> MemberStore<S> {
    /// True if this member's own state holds every key of `scope`: all of
    /// them on a replica, the cluster's records on a client member.
    pub(super) fn holds(&self, scope: KeyScope<'_>) -> bool {
        !self.is_client() || scope.is_within(keys::RESERVED_PREFIX)
    }

    /// The error of a local read of keys a client member does not hold
    /// (its router reads them at a replica; a bare caller must ask one).
    pub(super) fn not_held(&self, scope: KeyScope<'_>) -> Error {
        Error::Unreachable(format!(
            "member {} is a client member: it holds only the cluster's records, not {scope:?}; ask a replica",
            self.me()
        ))
    }

    /// The service addresses of the replicas, in the order this member
    /// reads from them: the records' (non-leaders first, spread over client
    /// members, the leader last), else gossip's tags.
    pub(super) fn replica_addrs(&self) -> Vec<String> {
        let mut known = client_feed::recorded_replicas(&self.view, self.me());
        if known.is_empty()
            && let Some(tagged) = self.tagged_replicas.get()
        {
            known = tagged();
        }
        client_feed::order(known, self.me(), 0)
    }

    /// Reads the cluster's records again at a replica whose state reached
    /// `floor`: a client member's view moves only when the records change,
    /// so it cannot tell by itself that it holds every change up to `floor`.
    pub(super) async fn refresh_view(&self, floor: u64) -> Result<()> {
        let Some(options) = self.options.get() else { return Ok(()) };
        let addrs = self.replica_addrs();
        if addrs.is_empty() {
            return Err(Error::Unreachable("no replica known to read the cluster's records from".to_owned()));
        }
        let mut options = options.clone();
        // The read barrier's caller retries.
        options.op_timeout = options.attempt_timeout;
        let client = ServiceClient::remote(addrs, options)?;
        let read = Request::GetPrefixWithRevision { prefix: keys::RESERVED_PREFIX.to_owned() };
        let answer = client.request(Request::ReadAt { min_revision: floor, read: Box::new(read) }).await?;
        match answer {
            Response::ReadAt { answer, .. } => match *answer {
                Response::EntriesAt { revision, entries } => {
                    self.view.install(revision, entries);
                    Ok(())
                }
                other => {
                    Err(Error::Internal(format!("a read of the records was answered with {}", other.kind())))
                }
            },
            other => Err(Error::Internal(format!("a read at a revision was answered with {}", other.kind()))),
        }
    }

    /// The applied revision of the member whose service is at `addr`:
    /// one local read there (a prefix no key starts with), after a
    /// linearizable read there when `confirm` (a leader other than the one
    /// that answered: it may not have applied all it committed yet).
    pub(super) async fn revision_at(&self, addr: &str, confirm: bool) -> Result<u64> {
        let Some(client) = self.client_of(addr)? else { return Ok(0) };
        if confirm {
            client.consistent_get(REVISION_PROBE).await?;
        }
        Ok(client.get_prefix_with_revision(REVISION_PROBE).await?.0)
    }

    /// The one-try client of the member at `addr`, kept for the last
    /// address asked (the leader, mostly): one connection, not one per
    /// read. `None` before `run` set the options.
    pub(super) fn client_of(&self, addr: &str) -> Result<Option<ServiceClient>> {
        let Some(options) = self.options.get() else { return Ok(None) };
        let mut held = self.asked.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, client)) = held.as_ref()
            && at == addr
        {
            return Ok(Some(client.clone()));
        }
        let mut options = options.clone();
        // One try: the read barrier's caller retries.
        options.op_timeout = options.attempt_timeout;
        let client = ServiceClient::remote([addr.to_owned()], options)?;
        *held = Some((addr.to_owned(), client.clone()));
        Ok(Some(client))
    }

    /// Raises the read floor to the revision of the leader that last
    /// answered this member's router, if one did since the last read; when
    /// that leader cannot be asked, to the revision of the leader known now.
    pub(super) async fn learn_read_floor(&self) -> Result<()> {
        let pending = self.answered_by.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(addr) = pending else { return Ok(()) };
        let asked = match self.revision_at(&addr, false).await {
            Err(e) => {
                match self.current_status().leader_service_addr().filter(|a| !a.is_empty() && *a != addr) {
                    Some(now) => self.revision_at(now, true).await,
                    None => Err(e),
                }
            }
            answer => answer,
        };
        match asked {
            Ok(revision) => {
                self.read_floor.fetch_max(revision, Ordering::AcqRel);
                Ok(())
            }
            Err(e) => {
                // Asked again on the retry, unless a newer answer came since.
                self.answered_by.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(addr);
                Err(e)
            }
        }
    }
}
