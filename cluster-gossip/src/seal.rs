//! Sealing and opening one gossip datagram with AES-256-GCM.
//!
//! A sealed datagram is `version (1) | key id (4) | nonce (12) | ciphertext | tag (16)`.
//! The nonce is random (96 bits) for every datagram. The version, the key id
//! and the cluster id are bound as associated data: a datagram of another
//! cluster (even one sharing the key) or with any byte changed does not open.

use aes_gcm::aead::{Aead, AeadCore, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

use crate::keyring::{GossipKey, KeyId, Keyring};

/// The sealed format's version byte.
const VERSION: u8 = 1;
/// Bytes before the ciphertext.
const HEADER_LEN: usize = 1 + 4 + 12;
/// The GCM authentication tag.
const TAG_LEN: usize = 16;
/// Bytes sealing adds to a datagram.
pub(crate) const OVERHEAD: usize = HEADER_LEN + TAG_LEN;

fn associated_data(key_id: KeyId, cluster_id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(5 + cluster_id.len());
    aad.push(VERSION);
    aad.extend_from_slice(&key_id.0);
    aad.extend_from_slice(cluster_id.as_bytes());
    aad
}

/// Seals `plaintext` with `key` for `cluster_id`.
pub(crate) fn seal(key: &GossipKey, cluster_id: &str, plaintext: &[u8]) -> Option<Vec<u8>> {
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let aad = associated_data(key.id(), cluster_id);
    let sealed = key.cipher().encrypt(&nonce, Payload { msg: plaintext, aad: &aad }).ok()?;
    let mut out = Vec::with_capacity(HEADER_LEN + sealed.len());
    out.push(VERSION);
    out.extend_from_slice(&key.id().0);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Some(out)
}

/// Opens a sealed datagram with whichever key of `ring` sealed it; `None`
/// when none does (wrong key, no key, another cluster, altered, truncated).
pub(crate) fn open(ring: &Keyring, cluster_id: &str, datagram: &[u8]) -> Option<Vec<u8>> {
    if datagram.len() < OVERHEAD || datagram[0] != VERSION {
        return None;
    }
    let key_id = KeyId([datagram[1], datagram[2], datagram[3], datagram[4]]);
    let nonce = Nonce::from_slice(&datagram[5..HEADER_LEN]);
    let aad = associated_data(key_id, cluster_id);
    ring.keys()
        .iter()
        .filter(|k| k.id() == key_id)
        .find_map(|k| k.cipher().decrypt(nonce, Payload { msg: &datagram[HEADER_LEN..], aad: &aad }).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_what_it_sealed_and_nothing_else() {
        let (a, b) = (GossipKey::generate(), GossipKey::generate());
        let sealed = seal(&a, "c1", b"hello").unwrap_or_default();
        assert_eq!(sealed.len(), 5 + OVERHEAD);
        assert_eq!(open(&Keyring::new(a.clone()), "c1", &sealed).as_deref(), Some(&b"hello"[..]));
        // Every key of the ring opens, not only the primary.
        let mut ring = Keyring::new(b.clone());
        ring.install(a.clone());
        assert!(open(&ring, "c1", &sealed).is_some());
        // Another key, another cluster, any changed byte, truncation: nothing.
        assert_eq!(open(&Keyring::new(b), "c1", &sealed), None);
        assert_eq!(open(&ring, "c2", &sealed), None);
        for i in 0..sealed.len() {
            let mut altered = sealed.clone();
            altered[i] ^= 0x01;
            assert_eq!(open(&ring, "c1", &altered), None, "byte {i} altered");
        }
        assert_eq!(open(&ring, "c1", &sealed[..sealed.len() - 1]), None);
        assert_eq!(open(&ring, "c1", b"hello"), None);
    }

    #[test]
    fn nonces_differ() {
        let k = GossipKey::generate();
        let (x, y) = (seal(&k, "c", b"same"), seal(&k, "c", b"same"));
        assert_ne!(x, y);
    }
}
