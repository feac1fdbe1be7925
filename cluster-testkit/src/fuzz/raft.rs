//! The raft-port fuzz driver, shared by `cluster-consensus`'s
//! `examples/raft_fuzz.rs` (the long run) and `tests/raft_fuzz.rs` (a short run): random frames and mutated
//! valid frames, from a seeded generator, written as raw bytes to a member's
//! raft port, every answer read back and sorted.

use std::collections::BTreeMap;
use std::future::ready;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BufMut;
use cluster_consensus::RaftStore;
use cluster_consensus::testsuite::KvState;
use cluster_consensus::testsuite::{RaftRequest, RaftRpc, RaftRpcReply};
use cluster_consensus::{LogId, TypeConfig, Vote, WriteBatch};
use cluster_core::wire::{Frame, WireCodec, encode_body};
use cluster_core::{ConsensusStore, MemberId, WriteOp, WriteRequest};
use futures::StreamExt;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{Entry, EntryPayload, SnapshotMeta};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio_util::codec::FramedRead;

use cluster_core::testsuite::holds_within;
use cluster_core::testsuite::rng::Rng;

/// What came back.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Random frames sent.
    pub random: u64,
    /// Mutated valid frames sent.
    pub mutated: u64,
    /// Answers read.
    pub answered: u64,
    /// Refused by the codec (not ours, malformed).
    pub refused: u64,
    /// Refused by the raft guard, by reason.
    pub guarded: BTreeMap<String, u64>,
    /// Answered by openraft.
    pub by_raft: u64,
    /// Connections the server closed (then reopened).
    pub reconnects: u64,
    /// Frames sent on a connection the server closed before answering them
    /// (it closes after a frame whose header it cannot read).
    pub unanswered: u64,
}

/// Valid requests that look like what `target`'s cluster sends it now.
pub struct Templates {
    /// The requests.
    pub rpcs: Vec<RaftRpc>,
    /// Their encoded frame bodies.
    pub bodies: Vec<Vec<u8>>,
    /// The members of the cluster.
    pub members: Vec<MemberId>,
    /// The member the requests are meant for.
    pub to: MemberId,
    /// The cluster id.
    pub cluster_id: String,
}

/// Valid requests that look like what `target`'s cluster sends it now.
pub fn templates(target: &RaftStore, cluster_id: &str) -> Templates {
    let m = target.raft().metrics().borrow().clone();
    let me = m.id;
    let leader = m.current_leader.unwrap_or(me);
    let other_voter = m.membership_config.membership().voter_ids().find(|v| *v != me).unwrap_or(leader);
    let term = m.current_term;
    let last = m.last_applied;
    let next = last.map_or(0, |l| l.index + 1);
    let log_id = |i: u64| LogId::new(openraft::CommittedLeaderId::new(term, leader), i);
    let set =
        WriteRequest { op: WriteOp::Set { key: "fuzz".into(), value: b"value".to_vec() }, request_id: None };
    let meta = SnapshotMeta {
        last_log_id: last,
        last_membership: (*m.membership_config).clone(),
        snapshot_id: "fuzz-snapshot".into(),
    };
    let rpcs = vec![
        RaftRpc::AppendEntries(AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(term, leader),
            prev_log_id: last,
            entries: vec![],
            leader_commit: last,
        }),
        RaftRpc::AppendEntries(AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(term, leader),
            prev_log_id: last,
            entries: vec![
                Entry { log_id: log_id(next), payload: EntryPayload::Normal(WriteBatch(vec![set])) },
                Entry {
                    log_id: log_id(next + 1),
                    payload: EntryPayload::Membership(m.membership_config.membership().clone()),
                },
                Entry { log_id: log_id(next + 2), payload: EntryPayload::Blank },
            ],
            leader_commit: last,
        }),
        RaftRpc::Vote(VoteRequest { vote: Vote::new(term + 1, other_voter), last_log_id: last }),
        RaftRpc::InstallSnapshot(InstallSnapshotRequest::<TypeConfig> {
            vote: Vote::new_committed(term, leader),
            meta: meta.clone(),
            offset: 0,
            data: vec![7; 64],
            done: false,
        }),
        RaftRpc::InstallSnapshot(InstallSnapshotRequest::<TypeConfig> {
            vote: Vote::new_committed(term, leader),
            meta,
            offset: 0,
            data: KvState::default().to_bytes().expect("an empty state encodes"),
            done: true,
        }),
        RaftRpc::AppliedIndex,
    ];
    let bodies = rpcs
        .iter()
        .map(|body| {
            let body = RaftRequest { to: me, rpc: body.clone() };
            encode_body(cluster_id, &Frame { request_id: 1, body }, 1 << 20).expect("a template encodes")
        })
        .collect();
    let members = m.membership_config.membership().nodes().map(|(id, _)| *id).collect();
    Templates { rpcs, bodies, members, to: me, cluster_id: cluster_id.to_owned() }
}

/// A term, index or offset that raft's arithmetic and the guard's bounds find interesting.
fn number(rng: &mut Rng, near: u64) -> u64 {
    match rng.below(9) {
        0 => 0,
        1 => near,
        2 => near.saturating_add(1),
        3 => near.saturating_sub(1),
        4 => near.saturating_add(1 << 32),
        5 => u64::MAX,
        6 => u64::MAX / 2 + rng.below(3) as u64,
        7 => 1 << 40,
        _ => rng.next_u64(),
    }
}

fn member(rng: &mut Rng, t: &Templates) -> MemberId {
    if rng.below(4) == 0 { MemberId::from(rng.next_u64()) } else { t.members[rng.below(t.members.len())] }
}

fn log_id_like(rng: &mut Rng, t: &Templates, l: Option<LogId>) -> Option<LogId> {
    if rng.below(6) == 0 {
        return None;
    }
    let base = l.unwrap_or_default();
    let term = number(rng, base.leader_id.term);
    Some(LogId::new(openraft::CommittedLeaderId::new(term, member(rng, t)), number(rng, base.index)))
}

fn vote_like(rng: &mut Rng, t: &Templates, v: &Vote) -> Vote {
    let term = number(rng, v.leader_id().term);
    let who = if rng.below(2) == 0 { v.leader_id().node_id } else { member(rng, t) };
    if rng.below(2) == 0 { Vote::new_committed(term, who) } else { Vote::new(term, who) }
}

/// A valid request with some of its numbers and members changed: it
/// decodes, so it reaches the guard and, if let through, openraft.
fn structured(rng: &mut Rng, t: &Templates) -> Vec<u8> {
    let mut rpc = t.rpcs[rng.below(t.rpcs.len())].clone();
    match &mut rpc {
        RaftRpc::AppendEntries(req) => {
            if rng.below(2) == 0 {
                req.vote = vote_like(rng, t, &req.vote);
            }
            if rng.below(2) == 0 {
                req.prev_log_id = log_id_like(rng, t, req.prev_log_id);
            }
            if rng.below(3) == 0 {
                req.leader_commit = log_id_like(rng, t, req.leader_commit);
            }
            for e in req.entries.iter_mut() {
                if rng.below(3) == 0 {
                    e.log_id = log_id_like(rng, t, Some(e.log_id)).unwrap_or(e.log_id);
                }
            }
            if rng.below(4) == 0 && !req.entries.is_empty() {
                let i = rng.below(req.entries.len());
                req.entries.remove(i);
            }
        }
        RaftRpc::Vote(req) => {
            req.vote = vote_like(rng, t, &req.vote);
            if rng.below(2) == 0 {
                req.last_log_id = log_id_like(rng, t, req.last_log_id);
            }
        }
        RaftRpc::InstallSnapshot(req) => {
            if rng.below(2) == 0 {
                req.vote = vote_like(rng, t, &req.vote);
            }
            req.offset = number(rng, req.offset);
            req.done = rng.below(2) == 0;
            if rng.below(3) == 0 {
                req.meta.last_log_id = log_id_like(rng, t, req.meta.last_log_id);
            }
            if rng.below(3) == 0 {
                req.meta.snapshot_id = format!("s{}", rng.below(3));
            }
        }
        _ => {}
    }
    // Now and then meant for another member (a phantom at this address).
    let to = if rng.below(8) == 0 { member(rng, t) } else { t.to };
    encode_body(&t.cluster_id, &Frame { request_id: 1, body: RaftRequest { to, rpc } }, 1 << 20)
        .expect("a changed template encodes")
}

/// Bytes of the header before the bincode body.
fn header_len(cluster_id: &str) -> usize {
    4 + 2 + 8 + 1 + cluster_id.len()
}

/// Values that bincode's varints and raft's arithmetic find interesting.
const INTERESTING: [u8; 10] = [0, 1, 0x7F, 0x80, 0xFA, 0xFB, 0xFC, 0xFD, 0xFE, 0xFF];

fn mutate(rng: &mut Rng, template: &[u8], header: usize) -> Vec<u8> {
    let mut body = template.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = body.len();
        if len <= header {
            body.push(rng.next_u64() as u8);
            continue;
        }
        let at = header + rng.below(len - header);
        match rng.below(7) {
            0 => body[at] ^= 1 << rng.below(8),
            1 => body[at] = INTERESTING[rng.below(INTERESTING.len())],
            2 => body.insert(at, rng.next_u64() as u8),
            3 => {
                body.remove(at);
            }
            4 => body.truncate(at),
            // A varint u64 at its maximum (bincode: 253 then 8 bytes).
            5 => {
                let end = (at + 9).min(len);
                body.splice(at..end, [0xFD, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
            }
            _ => {
                let end = (at + 1 + rng.below(16)).min(len);
                let chunk = body[at..end].to_vec();
                body.splice(at..at, chunk);
            }
        }
    }
    body
}

fn random_frame(rng: &mut Rng, valid_header: &[u8]) -> Vec<u8> {
    match rng.below(4) {
        // Anything at all.
        0 => {
            let n = rng.below(64);
            rng.bytes(n)
        }
        // Our header, then noise.
        1 | 2 => {
            let mut b = valid_header.to_vec();
            let n = rng.below(300);
            b.extend(rng.bytes(n));
            b
        }
        // Our header, a request kind, then noise.
        _ => {
            let mut b = valid_header.to_vec();
            b.push(rng.below(5) as u8);
            let n = rng.below(120);
            b.extend(rng.bytes(n));
            b
        }
    }
}

fn sort(report: &mut Report, reply: RaftRpcReply) {
    match reply {
        RaftRpcReply::Refused(_) => report.refused += 1,
        RaftRpcReply::Guarded(e) => {
            let reason = format!("{e:?}");
            let reason = reason.split([' ', '(', '{']).next().unwrap_or("?").to_owned();
            *report.guarded.entry(reason).or_default() += 1;
        }
        _ => report.by_raft += 1,
    }
}

type Replies = FramedRead<OwnedReadHalf, WireCodec<RaftRequest, RaftRpcReply>>;

async fn connect(addr: SocketAddr, cluster_id: &str) -> (Replies, tokio::net::tcp::OwnedWriteHalf) {
    let stream = TcpStream::connect(addr).await.expect("connect to the raft port");
    let (read, write) = stream.into_split();
    (FramedRead::new(read, WireCodec::new(cluster_id, 1 << 24)), write)
}

/// Sends `random` random frames and `mutated` mutated valid frames (seeded,
/// interleaved) to `addr`, in batches of `window`, and reads every answer.
pub async fn feed(
    addr: SocketAddr,
    cluster_id: &str,
    templates: &Templates,
    seed: u64,
    random: u64,
    mutated: u64,
) -> Report {
    const WINDOW: u64 = 32;
    let mut rng = Rng::new(seed);
    let header = header_len(cluster_id);
    let valid_header = templates.bodies[0][..header].to_vec();
    let mut report = Report::default();
    let (mut replies, mut writer) = connect(addr, cluster_id).await;
    while report.random < random || report.mutated < mutated {
        let mut out = Vec::new();
        let mut sent = 0;
        while sent < WINDOW && (report.random < random || report.mutated < mutated) {
            let pick_random = report.mutated >= mutated || (report.random < random && rng.below(2) == 0);
            let mut body = if pick_random {
                report.random += 1;
                random_frame(&mut rng, &valid_header)
            } else {
                report.mutated += 1;
                // Half byte-level (mostly fails to decode), half structured.
                if rng.below(2) == 0 {
                    let template = &templates.bodies[rng.below(templates.bodies.len())];
                    mutate(&mut rng, template, header)
                } else {
                    structured(&mut rng, templates)
                }
            };
            // A fresh request id for each frame, where the header holds one.
            if body.len() >= 14 {
                let id = report.random + report.mutated;
                body[6..14].copy_from_slice(&id.to_le_bytes());
            }
            out.put_u32(body.len() as u32);
            out.extend_from_slice(&body);
            sent += 1;
        }
        if writer.write_all(&out).await.is_err() {
            report.reconnects += 1;
            report.unanswered += sent;
            (replies, writer) = connect(addr, cluster_id).await;
            continue;
        }
        for k in 0..sent {
            match tokio::time::timeout(Duration::from_secs(30), replies.next()).await {
                Ok(Some(Ok(Ok(frame)))) => {
                    report.answered += 1;
                    sort(&mut report, frame.body);
                }
                Ok(Some(Ok(Err(bad)))) => panic!("the member answered a frame we cannot read: {bad}"),
                Ok(Some(Err(e))) => panic!("the member's answers broke the stream: {e}"),
                Ok(None) => {
                    report.reconnects += 1;
                    report.unanswered += sent - k;
                    (replies, writer) = connect(addr, cluster_id).await;
                    break;
                }
                Err(_) => panic!("no answer in 30 s: the raft port is stuck"),
            }
        }
    }
    report
}

/// Retries a write at whoever leads until one commits (the fuzzing may have
/// caused elections), then waits for every member to apply it. Returns the
/// members that did not apply it in time: a forged frame that claims the
/// leader's identity can make a follower's log diverge (raft cannot tell it
/// from the leader without authentication), but a committed write means a
/// majority applied it.
pub async fn cluster_still_serves(
    members: &[RaftStore],
    key: &str,
    deadline: Duration,
) -> Result<Vec<MemberId>, String> {
    let start = tokio::time::Instant::now();
    let mut committed = None;
    holds_within(deadline, async || {
        for m in members.iter().filter(|m| m.status().is_leader()) {
            let write =
                WriteRequest { op: WriteOp::Set { key: key.into(), value: vec![1] }, request_id: None };
            if m.write(write).await.is_ok() {
                committed = Some(m.applied_index().unwrap_or(0));
                return true;
            }
        }
        false
    })
    .await;
    let Some(index) = committed else {
        let alive: Vec<bool> =
            members.iter().map(|m| m.raft().metrics().borrow().running_state.is_ok()).collect();
        return Err(format!("no write committed in {deadline:?} (raft alive: {alive:?})"));
    };
    let behind = || -> Vec<MemberId> {
        members.iter().filter(|o| o.applied_index().unwrap_or(0) < index).map(|o| o.member_id()).collect()
    };
    holds_within(deadline.saturating_sub(start.elapsed()), || ready(behind().is_empty())).await;
    Ok(behind())
}

/// The members whose raft core stopped.
pub fn stopped(members: &[RaftStore]) -> Vec<MemberId> {
    members
        .iter()
        .filter(|m| m.raft().metrics().borrow().running_state.is_err())
        .map(|m| m.member_id())
        .collect()
}
