//! How openraft's errors become [`cluster_core::Error`] variants a caller can
//! act on: not the leader (with a hint), timeout, unreachable, shutting down,
//! membership change refused, storage failure.

use cluster_core::{Endpoints, Error, LeaderHint, MemberId};
use openraft::error::{
    ChangeMembershipError, CheckIsLeaderError, ClientWriteError, Fatal, ForwardToLeader, InitializeError,
    RaftError,
};

/// Converts an openraft error into the store's error.
pub(crate) trait IntoStoreError {
    /// The store error.
    fn into_store_error(self) -> Error;
}

fn hint(f: ForwardToLeader<MemberId, Endpoints>) -> Error {
    Error::NotLeader(f.leader_id.map(|member_id| LeaderHint {
        member_id,
        service_addr: f.leader_node.map(|n| n.service_addr).filter(|a| !a.is_empty()),
    }))
}

impl IntoStoreError for Fatal<MemberId> {
    fn into_store_error(self) -> Error {
        match self {
            Fatal::Stopped => Error::ShuttingDown,
            Fatal::StorageError(e) => Error::Storage(e.to_string()),
            Fatal::Panicked => Error::Internal("raft panicked".to_owned()),
        }
    }
}

impl IntoStoreError for ChangeMembershipError<MemberId> {
    fn into_store_error(self) -> Error {
        Error::MembershipChange(self.to_string())
    }
}

impl IntoStoreError for ClientWriteError<MemberId, Endpoints> {
    fn into_store_error(self) -> Error {
        match self {
            ClientWriteError::ForwardToLeader(f) => hint(f),
            ClientWriteError::ChangeMembershipError(e) => e.into_store_error(),
        }
    }
}

impl IntoStoreError for CheckIsLeaderError<MemberId, Endpoints> {
    fn into_store_error(self) -> Error {
        match self {
            CheckIsLeaderError::ForwardToLeader(f) => hint(f),
            CheckIsLeaderError::QuorumNotEnough(q) => Error::Unreachable(q.to_string()),
        }
    }
}

impl IntoStoreError for InitializeError<MemberId, Endpoints> {
    fn into_store_error(self) -> Error {
        match self {
            InitializeError::NotAllowed(e) => Error::MembershipChange(e.to_string()),
            InitializeError::NotInMembers(e) => Error::BadRequest(e.to_string()),
        }
    }
}

impl<E: IntoStoreError> IntoStoreError for RaftError<MemberId, E> {
    fn into_store_error(self) -> Error {
        match self {
            RaftError::APIError(e) => e.into_store_error(),
            RaftError::Fatal(f) => f.into_store_error(),
        }
    }
}
