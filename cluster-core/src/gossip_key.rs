//! The text form of a gossip encryption key: standard base64 of its 32 bytes.
//!
//! Core owns it because the key travels backend-neutral
//! ([`GossipEncryption`](crate::GossipEncryption) holds raw bytes): the
//! facade's configuration checks keys whether or not the chitchat backend is
//! compiled in, and the gossip backend reads its keyring file, so both decode
//! through these two functions and accept exactly the same text.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Bytes in a gossip key (AES-256).
pub const GOSSIP_KEY_LEN: usize = 32;

/// Why a text is not a gossip key. The message never repeats the text: it
/// may be a secret with a typo.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GossipKeyError {
    /// The text is not standard base64 (with padding).
    #[error("not standard base64")]
    NotBase64,
    /// The text decodes, but not to [`GOSSIP_KEY_LEN`] bytes.
    #[error("{len} bytes after decoding, not {GOSSIP_KEY_LEN}")]
    WrongLength {
        /// How many bytes it decodes to.
        len: usize,
    },
}

/// The key written as `text`; surrounding whitespace (a newline from a file
/// or a shell) is ignored.
///
/// ```
/// use cluster_core::gossip_key::{decode_gossip_key, encode_gossip_key, GossipKeyError};
/// let key = [7u8; 32];
/// assert_eq!(decode_gossip_key(&format!(" {}\n", encode_gossip_key(&key))), Ok(key));
/// assert_eq!(decode_gossip_key("c2hvcnQ="), Err(GossipKeyError::WrongLength { len: 5 }));
/// ```
pub fn decode_gossip_key(text: &str) -> Result<[u8; GOSSIP_KEY_LEN], GossipKeyError> {
    let bytes = STANDARD.decode(text.trim()).map_err(|_| GossipKeyError::NotBase64)?;
    let len = bytes.len();
    bytes.try_into().map_err(|_| GossipKeyError::WrongLength { len })
}

/// The text form of `key`. This is the secret: keep it out of logs.
pub fn encode_gossip_key(key: &[u8; GOSSIP_KEY_LEN]) -> String {
    STANDARD.encode(key)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn text_that_is_not_a_key_is_refused_without_being_repeated() {
        let secret_typo = "!!not-base64-secret!!";
        let err = decode_gossip_key(secret_typo).unwrap_err();
        assert_eq!(err, GossipKeyError::NotBase64);
        assert!(!err.to_string().contains("secret"));
        assert_eq!(decode_gossip_key(""), Err(GossipKeyError::WrongLength { len: 0 }));
        // 33 bytes: one too many.
        assert_eq!(
            decode_gossip_key(&STANDARD.encode([0u8; 33])),
            Err(GossipKeyError::WrongLength { len: 33 })
        );
    }

    proptest! {
        #[test]
        fn every_key_reads_back_from_its_text(key in any::<[u8; GOSSIP_KEY_LEN]>()) {
            prop_assert_eq!(decode_gossip_key(&encode_gossip_key(&key)), Ok(key));
        }
    }
}
