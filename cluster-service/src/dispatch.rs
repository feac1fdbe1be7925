//! The one dispatch of the service protocol: [`execute`] runs a
//! [`Request`] against a store. The server runs what it is sent with it, and
//! a [`Proxy`](crate::Proxy) runs what its own member serves with it too, so
//! an operation is answered the same way whether it came over the wire or
//! by a direct call.
//!
//! Writes and consistent reads are executed by the store only when its
//! member leads; otherwise the store answers
//! [`Error::NotLeader`] with the leader it knows.

use cluster_core::{
    ConsensusStore, ConsensusStoreExt, Error, MemberId, MemberInfo, MemberStatus, Result, keys,
};

use std::time::Duration;

use crate::protocol::{ForceLeft, Request, Response};

/// Runs `request` against `store`, this member's own. An error is `Err`;
/// a watch (a stream), gossip's view and the keyring (the member's, not the
/// store's) are refused: the server answers those itself.
pub async fn execute<S: ConsensusStore>(store: &S, request: Request) -> Result<Response> {
    if request.reads_local_state() {
        return match request {
            Request::ReadAt { min_revision, read } => read_at(store, min_revision, *read).await,
            read => local_read(store, read),
        };
    }
    match request {
        Request::ConsistentGet { key } => store.consistent_get(&key).await.map(Response::Value),
        Request::Write(write) => store.write(write).await.map(Response::Written),
        Request::Status => Ok(Response::Status(Box::new(store.status()))),
        Request::MemberStatus => member_status(store).await.map(|s| Response::MemberStatus(Box::new(s))),
        Request::GetWithMeta { key, consistent: true } => {
            store.consistent_get_with_meta(&key).await.map(Response::ValueWithMeta)
        }
        Request::Export => export(store).await,
        Request::ForceLeave { member } => force_leave(store, member).await.map(Response::ForceLeft),
        Request::Get { .. }
        | Request::GetPrefix { .. }
        | Request::GetPrefixWithRevision { .. }
        | Request::GetWithMeta { consistent: false, .. }
        | Request::Members
        | Request::ReadAt { .. } => unreachable!("reads of the local kind are answered above"),
        Request::Watch { .. } => {
            Err(Error::BadRequest("a watch is answered with a stream: ask for one".to_owned()))
        }
        Request::Liveness | Request::KeyringList | Request::KeyringChange(_) => Err(Error::BadRequest(
            "gossip's view and keyring are a member's own: ask that member's service port".to_owned(),
        )),
    }
}

/// A read of the member's own applied state ([`Request::reads_local_state`]),
/// but for `ReadAt`.
fn local_read<S: ConsensusStore>(store: &S, request: Request) -> Result<Response> {
    match request {
        Request::Get { key } => store.get(&key).map(Response::Value),
        Request::GetPrefix { prefix } => store.get_prefix(&prefix).map(Response::Entries),
        Request::Members => members(store).map(Response::Members),
        Request::GetWithMeta { key, consistent: false } => {
            store.get_with_meta(&key).map(Response::ValueWithMeta)
        }
        Request::GetPrefixWithRevision { prefix } => store
            .get_prefix_with_revision(&prefix)
            .map(|(revision, entries)| Response::EntriesAt { revision, entries }),
        other => Err(Error::BadRequest(format!(
            "{} is not a read of a member's local state: it cannot be asked at a revision",
            other.kind()
        ))),
    }
}

/// How long a member waits for its state to reach the revision of a
/// `ReadAt` before it answers [`Error::Timeout`] (the caller asks another).
const READ_AT_WAIT: Duration = Duration::from_secs(1);

/// `read` once this member's state reached `min_revision`, with the revision
/// it was served at: read after the state was, so it is at least the state's.
async fn read_at<S: ConsensusStore>(store: &S, min_revision: u64, read: Request) -> Result<Response> {
    if matches!(read, Request::ReadAt { .. }) || !read.reads_local_state() {
        return Err(Error::BadRequest(format!(
            "{} is not a read of a member's local state: it cannot be asked at a revision",
            read.kind()
        )));
    }
    if let Some(scope) = read.scope()
        && store.remote_reads(scope).is_some()
    {
        return Err(Error::Unreachable(format!(
            "member {} does not hold what the {} reads (a client member holds only the cluster's records): ask a replica",
            store.member_id(),
            read.kind()
        )));
    }
    let deadline = tokio::time::Instant::now() + READ_AT_WAIT;
    let mut changes = store.status_changes();
    loop {
        let held = store.applied_revision()?;
        if held >= min_revision {
            break;
        }
        let changed = async {
            if changes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = changed => {}
            // The status need not change with every applied write: look again now and then.
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            _ = tokio::time::sleep_until(deadline) => {
                return Err(Error::Timeout(format!(
                    "member {} is at revision {held}, behind revision {min_revision}: ask another",
                    store.member_id()
                )));
            }
        }
    }
    let answer = local_read(store, read)?;
    let revision = store.applied_revision()?;
    Ok(Response::ReadAt { revision, answer: Box::new(answer) })
}

/// The member's status with its progress and short id.
async fn member_status<S: ConsensusStore>(store: &S) -> Result<MemberStatus> {
    let status = store.status();
    let short_id = store.short_ids()?.get(&status.member_id).copied();
    let progress = store.progress().await;
    Ok(MemberStatus::new(status, &progress, short_id))
}

/// The whole store, read after the leader confirmed its leadership with a
/// quorum: nothing acknowledged before the request is missing.
async fn export<S: ConsensusStore>(store: &S) -> Result<Response> {
    store.consistent_get(keys::LEADER_KEY).await?;
    let (revision, entries) = store.get_prefix_with_revision("")?;
    Ok(Response::Export { revision, entries })
}

/// Takes `member` out of raft, frees its short id and drops its records, on
/// the leader. A member still alive in gossip is added back by the leader's
/// housekeeping as a new joiner would be: stop it first.
async fn force_leave<S: ConsensusStore>(store: &S, member: MemberId) -> Result<ForceLeft> {
    let status = store.status();
    if !status.is_leader() {
        let hint = status.leader.map(|member_id| cluster_core::LeaderHint {
            member_id,
            service_addr: status.leader_service_addr().map(str::to_owned),
        });
        return Err(Error::NotLeader(hint));
    }
    if member == status.member_id {
        return Err(Error::BadRequest(format!(
            "member {member} is the leader answering this request: stop it, and force the leave through another member"
        )));
    }
    let was_in_raft = status.all_members().contains(&member);
    store.remove(member).await?;
    let held_short_id = store.release_short_id(member).await?;
    let had_record = store.delete(&keys::member_key(member)).await?;
    store.delete(&keys::voter_key(member)).await?;
    store.delete(&keys::nonvoter_key(member)).await?;
    tracing::info!(%member, was_in_raft, held_short_id, "forced leave");
    Ok(ForceLeft { was_in_raft, held_short_id, had_record })
}

/// Every [`MemberInfo`] in the local store, in member-id order, by the one
/// policy of [`keys::MemberRecords`]: entries that are not records are
/// skipped (and logged), so one bad record never hides the others.
pub fn members<S: ConsensusStore>(store: &S) -> Result<Vec<MemberInfo>> {
    let records = keys::MemberRecords::decode(store.get_prefix(keys::MEMBERS_PREFIX)?);
    for (key, error) in &records.rejected {
        tracing::warn!(%key, %error, "skipping an entry that is not a member record");
    }
    Ok(records.members.into_values().collect())
}
