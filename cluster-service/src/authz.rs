//! Who may ask what of the service: the server decides, whatever the
//! client library does.
//!
//! - Users' keys: anyone who reached the service (a client or a member
//!   certificate with TLS; anyone over plain TCP).
//! - The cluster's own state — keys under
//!   [`RESERVED_PREFIX`], short-id
//!   operations: members only, proven by a member certificate. Over plain
//!   TCP nobody can prove it, so nobody gets them over the wire: a member's
//!   own process changes its cluster's records through its local store,
//!   never through a service port.
//! - Operator commands (a forced leave): a member certificate with TLS;
//!   without TLS, anyone who reaches the port — a cluster without TLS has
//!   chosen to trust its network (loopback, or `--insecure`).
//! - Gossip keyring requests: members only (a member certificate). A gossip
//!   key lets its holder into the membership, so it never crosses plain TCP.
//! - Reads are open to every caller: the records are what `carbon members`
//!   shows, and they carry no secret.
//! - An empty key is nobody's.
//!
//! What a write needs is the operation's own definition
//! ([`WriteOp::needs`](cluster_core::WriteOp::needs), its rules in
//! [`WriteOp::check`](cluster_core::WriteOp::check)); this module maps the
//! caller's certificate role to a [`Writer`].

use cluster_core::keys::RESERVED_PREFIX;
use cluster_core::store::check_key;
use cluster_core::{Error, Result, Writer};
use cluster_rpc::Role;

use crate::protocol::Request;

/// What a request needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Any caller that reached the service.
    Anyone,
    /// An operator: a member certificate with TLS, anyone without TLS.
    Operator,
    /// A caller with a member certificate (never over plain TCP).
    Member,
}

/// The access `request` needs; an error for a request nobody may make.
pub fn required_access(request: &Request) -> Result<Access> {
    match request {
        Request::Get { key } | Request::ConsistentGet { key } | Request::GetWithMeta { key, .. } => {
            check_key(key)?;
            Ok(Access::Anyone)
        }
        // An export reads what `GetPrefix` reads, after a leader check; a
        // watch streams what `GetPrefix` reads, as it changes.
        Request::GetPrefix { .. }
        | Request::GetPrefixWithRevision { .. }
        | Request::Watch { .. }
        | Request::Members
        | Request::Status
        | Request::MemberStatus
        | Request::Liveness
        | Request::Export => Ok(Access::Anyone),
        Request::ForceLeave { .. } => Ok(Access::Operator),
        // A read at a revision needs what the read needs; only reads of the
        // local kind can be asked so.
        Request::ReadAt { read, .. }
            if read.reads_local_state() && !matches!(**read, Request::ReadAt { .. }) =>
        {
            required_access(read)
        }
        Request::ReadAt { .. } => {
            Err(Error::BadRequest("only a read of a member's local state can be asked at a revision".into()))
        }
        // Gossip keys let their holder into the membership: members only,
        // and never over plain TCP, where they would cross the wire in the clear.
        Request::KeyringList | Request::KeyringChange(_) => Ok(Access::Member),
        Request::Write(write) => {
            // The rules that hold for every writer (a key that is not
            // empty) first: they are nobody's to break.
            write.op.check(Writer::Cluster)?;
            Ok(match write.op.needs() {
                Writer::User => Access::Anyone,
                Writer::Cluster => Access::Member,
            })
        }
        // Requests added later (operator commands) are members-only unless listed above.
        #[allow(unreachable_patterns)]
        _ => Ok(Access::Member),
    }
}

/// Refuses `request` unless the caller's role allows it. `role` is the role
/// of the caller's verified certificate; `None` over plain TCP.
pub fn authorize(role: Option<Role>, request: &Request) -> Result<()> {
    match (required_access(request)?, role) {
        (Access::Anyone, _)
        | (Access::Operator, None | Some(Role::Member))
        | (Access::Member, Some(Role::Member)) => Ok(()),
        (Access::Member | Access::Operator, Some(Role::Client)) => Err(Error::Forbidden(format!(
            "{} {} needs a member certificate; this caller holds a client certificate",
            request.kind(),
            what(request)
        ))),
        (Access::Member, None) => Err(Error::Forbidden(format!(
            "{} {} is refused over a connection without TLS: only members, proven by a member certificate, may ask it",
            request.kind(),
            what(request)
        ))),
    }
}

fn what(request: &Request) -> String {
    match request {
        Request::Write(w) => match w.op.key() {
            Some(key) => format!("of {key:?} (under {RESERVED_PREFIX:?}, reserved for the cluster)"),
            None => format!("({}, the cluster's own operation)", w.op.name()),
        },
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use cluster_core::{MemberId, WriteOp, WriteRequest, keys};

    use super::*;

    fn write(op: WriteOp) -> Request {
        Request::Write(WriteRequest::new(op))
    }

    #[test]
    fn users_keys_are_open_to_every_caller() {
        let set = write(WriteOp::Set { key: "user/a".into(), value: vec![1] });
        for role in [None, Some(Role::Client), Some(Role::Member)] {
            assert_eq!(authorize(role, &set), Ok(()));
            assert_eq!(authorize(role, &Request::Get { key: "carbon-grid/members/x".into() }), Ok(()));
            assert_eq!(authorize(role, &Request::GetPrefix { prefix: String::new() }), Ok(()));
            assert_eq!(authorize(role, &Request::Status), Ok(()));
        }
    }

    #[test]
    fn the_clusters_own_state_is_for_members_only() {
        let member = MemberId::generate();
        let reserved = [
            write(WriteOp::Set { key: keys::member_key(member), value: vec![] }),
            write(WriteOp::Set { key: keys::LEADER_KEY.into(), value: vec![] }),
            write(WriteOp::Delete { key: keys::voter_key(member) }),
            write(WriteOp::CompareAndSet { key: "carbon-grid/x".into(), expected: None, new: Some(vec![]) }),
            write(WriteOp::AllocateShortId { member }),
            write(WriteOp::ReleaseShortId { member }),
        ];
        for request in &reserved {
            assert!(matches!(authorize(None, request), Err(Error::Forbidden(_))), "{request:?}");
            assert!(
                matches!(authorize(Some(Role::Client), request), Err(Error::Forbidden(_))),
                "{request:?}"
            );
            assert_eq!(authorize(Some(Role::Member), request), Ok(()), "{request:?}");
        }
    }

    #[test]
    fn operator_commands_need_a_member_certificate_once_tls_is_on() {
        let leave = Request::ForceLeave { member: MemberId::generate() };
        assert_eq!(authorize(None, &leave), Ok(()));
        assert_eq!(authorize(Some(Role::Member), &leave), Ok(()));
        assert!(matches!(authorize(Some(Role::Client), &leave), Err(Error::Forbidden(_))));
        for read in [Request::Export, Request::Liveness, Request::Members] {
            assert_eq!(authorize(Some(Role::Client), &read), Ok(()));
        }
    }

    #[test]
    fn the_empty_key_is_refused_to_everyone() {
        for role in [None, Some(Role::Client), Some(Role::Member)] {
            let set = write(WriteOp::Set { key: String::new(), value: vec![] });
            assert!(matches!(authorize(role, &set), Err(Error::BadRequest(_))));
            let get = Request::ConsistentGet { key: String::new() };
            assert!(matches!(authorize(role, &get), Err(Error::BadRequest(_))));
        }
    }
}
