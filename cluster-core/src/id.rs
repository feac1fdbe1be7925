//! Identities: the wide [`MemberId`], the short [`ShortId`] and the
//! [`ClientRequestId`] that makes retried writes idempotent.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ulid::Ulid;

/// Text or a number that is not an identity of the kind asked for. Parsing
/// is the only thing that fails here; the crate's `Error` takes it in (`?`
/// converts, same message), so this module stays below the error module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// A member id that is not a ULID.
    #[error("invalid member id {input:?}: {reason}")]
    MemberId {
        /// The text that was parsed.
        input: String,
        /// Why it is not a ULID.
        reason: String,
    },
    /// A short id that is not a positive integer.
    #[error("invalid short id {input:?}: must be a positive integer")]
    ShortId {
        /// The text or number that was given.
        input: String,
    },
    /// A client request id that is not a ULID.
    #[error("invalid client request id {input:?}: {reason}")]
    RequestId {
        /// The text that was parsed.
        input: String,
        /// Why it is not a ULID.
        reason: String,
    },
}

/// Serializes a ULID as its 26-character text in human-readable formats
/// (TOML, JSON) and as a `u128` in binary ones (bincode: 16 bytes, not 27).
macro_rules! ulid_serde {
    ($ty:ident) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() { s.collect_str(&self.0) } else { s.serialize_u128(self.0.0) }
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = String::deserialize(d)?;
                    s.parse().map_err(serde::de::Error::custom)
                } else {
                    Ok(Self(Ulid(u128::deserialize(d)?)))
                }
            }
        }
    };
}

/// The wide, permanent identity of a member: a ULID, generated once and kept
/// in the member's data directory, so a restarted member is the same member.
///
/// It is also the member's raft node id and its gossip node id. Ordering is
/// by creation time (ULIDs sort by their timestamp first), so "oldest first"
/// is plain `Ord`.
///
/// ```
/// use cluster_core::MemberId;
/// let id = MemberId::generate();
/// let text = id.to_string();
/// assert_eq!(text.parse::<MemberId>().unwrap(), id);
/// assert!("not-a-ulid".parse::<MemberId>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MemberId(Ulid);

thread_local! {
    /// The seed and count of [`MemberId::generate`] on this thread, when seeded.
    static SEEDED_IDS: std::cell::Cell<Option<(u64, u64)>> = const { std::cell::Cell::new(None) };
}

thread_local! {
    /// Request ids and generations made so far on this thread, when seeded.
    static SEEDED_COUNTS: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// Makes [`MemberId::generate`] on this thread draw from `seed` (`None`: back
/// to random ids): the n-th id is a fixed function of the seed and n, and ids
/// grow with n. [`ClientRequestId::generate`] and [`seeded_generation`]
/// follow it too. For deterministic simulation only.
pub fn seed_thread_member_ids(seed: Option<u64>) {
    SEEDED_IDS.with(|s| s.set(seed.map(|seed| (seed, 0))));
    SEEDED_COUNTS.with(|c| c.set((0, 0)));
}

/// With ids seeded on this thread ([`seed_thread_member_ids`]), the next
/// gossip generation: a fixed time in 2023, in nanoseconds, plus a count
/// that grows with every call. `None` when not seeded: use the clock.
pub fn seeded_generation() -> Option<u64> {
    SEEDED_IDS.with(|s| s.get())?;
    let (requests, generations) = SEEDED_COUNTS.with(|c| c.get());
    SEEDED_COUNTS.with(|c| c.set((requests, generations + 1)));
    Some(1_700_000_000_000_000_000 + generations)
}

impl MemberId {
    /// A new, random member id (see [`seed_thread_member_ids`]).
    pub fn generate() -> Self {
        if let Some((seed, n)) = SEEDED_IDS.with(|s| s.get()) {
            SEEDED_IDS.with(|s| s.set(Some((seed, n + 1))));
            let mut x = seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            // A fixed time in 2023 plus n milliseconds: later ids sort later.
            return MemberId(Ulid::from_parts(1_700_000_000_000 + n, u128::from(x ^ (x >> 31))));
        }
        MemberId(Ulid::generate())
    }

    /// The member id of a ULID.
    pub const fn from_ulid(ulid: Ulid) -> Self {
        MemberId(ulid)
    }

    /// The ULID of this member id.
    pub const fn ulid(self) -> Ulid {
        self.0
    }

    /// The member id as a 128-bit number.
    pub const fn as_u128(self) -> u128 {
        self.0.0
    }
}

/// For tests and openraft's storage test suite, which names nodes by `u64`:
/// the member id whose ULID is that number.
impl From<u64> for MemberId {
    fn from(n: u64) -> Self {
        MemberId(Ulid(u128::from(n)))
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MemberId({})", self.0)
    }
}

impl FromStr for MemberId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        Ulid::from_string(s)
            .map(MemberId)
            .map_err(|e| IdError::MemberId { input: s.to_owned(), reason: e.to_string() })
    }
}

ulid_serde!(MemberId);

/// The short id of a member: a positive integer (1, 2, 3, …), unique among
/// the members, assigned through consensus. Never 0.
///
/// ```
/// use cluster_core::ShortId;
/// assert_eq!(ShortId::new(3).unwrap().get(), 3);
/// assert!(ShortId::new(0).is_err());
/// assert_eq!("7".parse::<ShortId>().unwrap().to_string(), "7");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct ShortId(NonZeroU32);

impl ShortId {
    /// The first short id, 1.
    pub const MIN: ShortId = ShortId(NonZeroU32::MIN);

    /// The short id `n`, or an error for 0.
    pub fn new(n: u32) -> Result<Self, IdError> {
        NonZeroU32::new(n).map(ShortId).ok_or(IdError::ShortId { input: n.to_string() })
    }

    /// The number.
    pub const fn get(self) -> u32 {
        self.0.get()
    }

    /// The next short id, or `None` past `u32::MAX`.
    pub fn next(self) -> Option<ShortId> {
        self.0.checked_add(1).map(ShortId)
    }
}

impl TryFrom<u32> for ShortId {
    type Error = IdError;
    fn try_from(n: u32) -> Result<Self, IdError> {
        ShortId::new(n)
    }
}

impl From<ShortId> for u32 {
    fn from(id: ShortId) -> u32 {
        id.get()
    }
}

impl fmt::Display for ShortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for ShortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShortId({})", self.0)
    }
}

impl FromStr for ShortId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        s.trim().parse::<NonZeroU32>().map(ShortId).map_err(|_| IdError::ShortId { input: s.to_owned() })
    }
}

/// The id a client gives a write so that a retry of the same write (after a
/// lost answer or a leader change) is applied at most once, and answered as
/// the first attempt was. Unique per write: generate one per logical write
/// and reuse it for its retries.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ClientRequestId(Ulid);

impl ClientRequestId {
    /// A new, unique request id (a function of the seed and a count on a
    /// thread with seeded ids: [`seed_thread_member_ids`]).
    pub fn generate() -> Self {
        if let Some((seed, _)) = SEEDED_IDS.with(|s| s.get()) {
            let (requests, generations) = SEEDED_COUNTS.with(|c| c.get());
            SEEDED_COUNTS.with(|c| c.set((requests + 1, generations)));
            let mut x = !seed ^ requests.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            return ClientRequestId(Ulid::from_parts(
                1_700_000_000_000 + requests,
                u128::from(x ^ (x >> 31)),
            ));
        }
        ClientRequestId(Ulid::generate())
    }
}

impl fmt::Display for ClientRequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for ClientRequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientRequestId({})", self.0)
    }
}

impl FromStr for ClientRequestId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Ulid::from_string(s)
            .map(ClientRequestId)
            .map_err(|e| IdError::RequestId { input: s.to_owned(), reason: e.to_string() })
    }
}

ulid_serde!(ClientRequestId);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bincode_roundtrip<T: Serialize + serde::de::DeserializeOwned>(v: &T) -> (T, usize) {
        let cfg = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(v, cfg).unwrap();
        let (back, _) = bincode::serde::decode_from_slice(&bytes, cfg).unwrap();
        (back, bytes.len())
    }

    #[test]
    fn member_id_bad_text_names_the_input() {
        let err = "xyz".parse::<MemberId>().unwrap_err();
        assert!(matches!(&err, IdError::MemberId { input, .. } if input == "xyz"), "{err}");
        assert!(err.to_string().contains("xyz"));
    }

    #[test]
    fn member_id_is_compact_in_bincode() {
        let id = MemberId::generate();
        let (back, len) = bincode_roundtrip(&id);
        assert_eq!(back, id);
        assert!(len <= 17, "a member id takes {len} bytes in bincode");
    }

    #[test]
    fn member_id_orders_by_creation() {
        let a = MemberId::from_ulid(Ulid::from_parts(1_000, 99));
        let b = MemberId::from_ulid(Ulid::from_parts(2_000, 1));
        assert!(a < b);
    }

    #[test]
    fn short_id_refuses_zero_everywhere() {
        assert!(ShortId::new(0).is_err());
        assert!("0".parse::<ShortId>().is_err());
        assert!("-1".parse::<ShortId>().is_err());
        assert!("x".parse::<ShortId>().is_err());
        let cfg = bincode::config::standard();
        let zero = bincode::serde::encode_to_vec(0u32, cfg).unwrap();
        assert!(bincode::serde::decode_from_slice::<ShortId, _>(&zero, cfg).is_err());
        assert_eq!(ShortId::MIN.get(), 1);
        assert_eq!(ShortId::new(u32::MAX).unwrap().next(), None);
    }

    proptest! {
        #[test]
        fn member_id_text_roundtrip(n in any::<u128>()) {
            let id = MemberId::from_ulid(Ulid(n));
            prop_assert_eq!(id.to_string().parse::<MemberId>().unwrap(), id);
            prop_assert_eq!(bincode_roundtrip(&id).0, id);
        }

        #[test]
        fn short_id_roundtrip(n in 1u32..) {
            let id = ShortId::new(n).unwrap();
            prop_assert_eq!(id.to_string().parse::<ShortId>().unwrap(), id);
            prop_assert_eq!(bincode_roundtrip(&id).0, id);
        }

        #[test]
        fn request_id_roundtrip(n in any::<u128>()) {
            let id = ClientRequestId(Ulid(n));
            prop_assert_eq!(id.to_string().parse::<ClientRequestId>().unwrap(), id);
            prop_assert_eq!(bincode_roundtrip(&id).0, id);
        }
    }
}
