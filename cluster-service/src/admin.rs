//! The service's admin surface: the requests a member answers beyond reading
//! and writing its store. Its own answers (gossip's view of the members, its
//! keyring) come from the [`MemberAdmin`] the member hands its server; the
//! cluster-wide ones (export, force leave) run on the store through the one
//! dispatch (`dispatch.rs`).
//! The operations a caller waits on are reported to the server's
//! [`ServiceObserver`] here too.

use std::time::Instant;

use cluster_core::{ConsensusStore, Error, MemberAdmin, Result, ServiceObserver};

use crate::protocol::{Request, Response};

/// The answer to a request that only the member itself can give (liveness,
/// keyring), or the request back when the store answers it.
pub(crate) fn answer(admin: Option<&dyn MemberAdmin>, request: Request) -> Result<Response, Request> {
    let keyring = || {
        admin.and_then(MemberAdmin::keyring).ok_or_else(|| {
            Error::BadRequest(
                "this member's gossip is not encrypted: it has no keyring (start it with --gossip-key)"
                    .to_owned(),
            )
        })
    };
    match request {
        Request::Liveness => Ok(match admin {
            Some(a) => Response::Liveness(a.liveness()),
            None => Response::Err(Error::BadRequest(
                "this service serves a bare store: it knows no gossip".to_owned(),
            )),
        }),
        Request::KeyringList => Ok(keyring().map_or_else(Response::Err, |k| Response::Keyring(k.list()))),
        Request::KeyringChange(change) => {
            Ok(keyring().and_then(|k| k.apply(change)).map_or_else(Response::Err, Response::Keyring))
        }
        other => Err(other),
    }
}

/// Executes `request` on the store, timing writes and linearizable reads
/// for `observer`. A follower's quick "not the leader" is no write: it is
/// not reported.
pub(crate) async fn observed<S: ConsensusStore>(
    observer: Option<&dyn ServiceObserver>,
    store: &S,
    request: Request,
) -> Response {
    enum Timed {
        Write,
        Read,
        No,
    }
    let timed = match &request {
        Request::Write(_) => Timed::Write,
        Request::ConsistentGet { .. } | Request::GetWithMeta { consistent: true, .. } => Timed::Read,
        _ => Timed::No,
    };
    let start = Instant::now();
    let answer = crate::dispatch::execute(store, request).await.unwrap_or_else(Response::Err);
    if let Some(observer) = observer {
        match (timed, &answer) {
            (Timed::Write, Response::Err(Error::NotLeader(_)))
            | (Timed::Read, Response::Err(_))
            | (Timed::No, _) => {}
            (Timed::Write, answer) => observer.write(start.elapsed(), !matches!(answer, Response::Err(_))),
            (Timed::Read, _) => observer.read(start.elapsed()),
        }
    }
    answer
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use cluster_core::testsuite::fakes::FakeCluster;
    use cluster_core::{KeyringControl, Liveness, MemberId, WriteRequest};

    use super::*;

    /// Counts what the service reported.
    #[derive(Debug, Default)]
    struct Counted(Mutex<(Vec<bool>, usize)>);

    impl ServiceObserver for Counted {
        fn write(&self, _took: Duration, ok: bool) {
            self.0.lock().unwrap().0.push(ok);
        }

        fn read(&self, _took: Duration) {
            self.0.lock().unwrap().1 += 1;
        }
    }

    #[tokio::test]
    async fn writes_and_linearizable_reads_are_reported_and_a_follower_refusal_is_not() {
        let cluster = FakeCluster::new(2);
        cluster.set_leader(Some(0));
        let seen = Counted::default();
        let set = || Request::Write(WriteRequest::set("k", b"v".to_vec()));
        let answer = observed(Some(&seen), &*cluster.member(0), set()).await;
        assert!(matches!(answer, Response::Written(_)), "{answer:?}");
        let read = Request::ConsistentGet { key: "k".into() };
        assert!(matches!(observed(Some(&seen), &*cluster.member(0), read).await, Response::Value(_)));
        let local = Request::Get { key: "k".into() };
        assert!(matches!(observed(Some(&seen), &*cluster.member(0), local).await, Response::Value(_)));
        // The follower answers "not the leader" at once: no write to time.
        let refused = observed(Some(&seen), &*cluster.member(1), set()).await;
        assert!(matches!(refused, Response::Err(Error::NotLeader(_))), "{refused:?}");
        assert_eq!(*seen.0.lock().unwrap(), (vec![true], 1));
    }

    /// A member's admin surface with gossip's view and no keyring.
    #[derive(Debug)]
    struct Gossip(MemberId);

    impl MemberAdmin for Gossip {
        fn liveness(&self) -> std::collections::BTreeMap<MemberId, Liveness> {
            [(self.0, Liveness::Alive)].into()
        }

        fn keyring(&self) -> Option<&dyn KeyringControl> {
            None
        }
    }

    #[test]
    fn the_member_answers_liveness_and_a_bare_store_says_it_has_no_gossip() {
        let me = MemberId::generate();
        let answer = answer(Some(&Gossip(me)), Request::Liveness).expect("answered by the member");
        assert!(matches!(&answer, Response::Liveness(l) if l[&me] == Liveness::Alive), "{answer:?}");
        let bare = answer_of(None, Request::Liveness);
        assert!(matches!(&bare, Response::Err(Error::BadRequest(m)) if m.contains("gossip")), "{bare:?}");
        let no_ring = answer_of(Some(&Gossip(me)), Request::KeyringList);
        assert!(matches!(&no_ring, Response::Err(Error::BadRequest(m)) if m.contains("--gossip-key")));
        // What the store answers goes back to the server.
        assert!(super::answer(Some(&Gossip(me)), Request::Status).is_err());
    }

    fn answer_of(admin: Option<&dyn MemberAdmin>, request: Request) -> Response {
        super::answer(admin, request).expect("answered by the admin surface")
    }
}
