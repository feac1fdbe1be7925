//! The keyring: the AES-256 keys gossip datagrams are sealed with, serf style.
//! One **primary** key seals every datagram this member sends; every key in
//! the ring still opens datagrams, so keys rotate without downtime: install
//! the new key on every member, make it primary (`use`) on every member, then
//! remove the old one.
//!
//! [`Keyring`] is the value (what a configuration holds); [`KeyringHandle`] is
//! the live ring of a running member, shared with its socket and persisted to
//! the keyring file (a JSON array of base64 keys, primary first, mode 0600,
//! replaced atomically) on every change.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{KeyInit, OsRng};
use aes_gcm::aes::Aes256;
use aes_gcm::aes::cipher::{BlockEncrypt, generic_array::GenericArray};
use cluster_core::gossip_key::{GOSSIP_KEY_LEN, decode_gossip_key, encode_gossip_key};
use tracing::{info, warn};

use crate::error::{GossipError, Result};

/// Bytes in a gossip key (AES-256).
pub const KEY_LEN: usize = GOSSIP_KEY_LEN;

/// The public id of a key: the first four bytes of the key encrypting a zero
/// block (a key check value). Datagrams carry it so a receiver tries the
/// right key first; showing it reveals nothing usable about the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 4]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// One AES-256-GCM gossip key. Its `Debug` and `Display` show the key id only.
#[derive(Clone)]
pub struct GossipKey {
    bytes: [u8; KEY_LEN],
    id: KeyId,
    cipher: Aes256Gcm,
}

impl PartialEq for GossipKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for GossipKey {}

impl fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GossipKey({})", self.id)
    }
}

impl fmt::Display for GossipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key {}", self.id)
    }
}

impl GossipKey {
    /// A fresh random key from the operating system's generator.
    pub fn generate() -> GossipKey {
        let key = Aes256Gcm::generate_key(&mut OsRng);
        let mut bytes = [0u8; KEY_LEN];
        bytes.copy_from_slice(&key);
        GossipKey::from_bytes(bytes)
    }

    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> GossipKey {
        let mut block = GenericArray::default();
        Aes256::new(GenericArray::from_slice(&bytes)).encrypt_block(&mut block);
        let id = KeyId([block[0], block[1], block[2], block[3]]);
        GossipKey { bytes, id, cipher: Aes256Gcm::new(GenericArray::from_slice(&bytes)) }
    }

    /// A key from standard base64 (what [`to_base64`](GossipKey::to_base64)
    /// and `carbon keys generate` print). Surrounding whitespace is ignored.
    pub fn from_base64(text: &str) -> Result<GossipKey> {
        let bytes = decode_gossip_key(text).map_err(|e| GossipError::InvalidKey { reason: e.to_string() })?;
        Ok(GossipKey::from_bytes(bytes))
    }

    /// The key in standard base64. This is the secret: keep it out of logs.
    pub fn to_base64(&self) -> String {
        encode_gossip_key(&self.bytes)
    }

    /// The raw key. This is the secret: keep it out of logs.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// The key's public id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    pub(crate) fn cipher(&self) -> &Aes256Gcm {
        &self.cipher
    }
}

/// A set of gossip keys, one of them primary. Never empty, no duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyring {
    /// `keys[0]` is the primary key.
    keys: Vec<GossipKey>,
}

impl Keyring {
    /// A keyring holding one key, primary.
    pub fn new(primary: GossipKey) -> Keyring {
        Keyring { keys: vec![primary] }
    }

    /// A keyring of `keys`, the first primary; duplicates are dropped.
    /// Fails on an empty list.
    pub fn from_keys(keys: impl IntoIterator<Item = GossipKey>) -> Result<Keyring> {
        let mut ring: Option<Keyring> = None;
        for key in keys {
            match &mut ring {
                None => ring = Some(Keyring::new(key)),
                Some(r) => {
                    r.install(key);
                }
            }
        }
        ring.ok_or_else(|| GossipError::InvalidKey { reason: "a keyring needs at least one key".to_owned() })
    }

    /// A keyring from base64 keys, the first primary.
    pub fn from_base64<S: AsRef<str>>(keys: impl IntoIterator<Item = S>) -> Result<Keyring> {
        let keys =
            keys.into_iter().map(|k| GossipKey::from_base64(k.as_ref())).collect::<Result<Vec<_>>>()?;
        Keyring::from_keys(keys)
    }

    /// The key that seals.
    pub fn primary(&self) -> &GossipKey {
        &self.keys[0]
    }

    /// Every key, the primary first.
    pub fn keys(&self) -> &[GossipKey] {
        &self.keys
    }

    /// Adds a key that opens datagrams (not primary). Returns whether it was new.
    pub fn install(&mut self, key: GossipKey) -> bool {
        if self.keys.contains(&key) {
            return false;
        }
        self.keys.push(key);
        true
    }

    /// Makes an installed key primary. Returns whether the primary changed.
    pub fn use_key(&mut self, key: &GossipKey) -> Result<bool> {
        let at = self.position(key)?;
        self.keys.swap(0, at);
        Ok(at != 0)
    }

    /// Removes a key that is not primary. Returns whether it was there.
    pub fn remove(&mut self, key: &GossipKey) -> Result<bool> {
        if self.keys[0] == *key {
            return Err(GossipError::RemovePrimary { key_id: key.id().to_string() });
        }
        let before = self.keys.len();
        self.keys.retain(|k| k != key);
        Ok(self.keys.len() != before)
    }

    fn position(&self, key: &GossipKey) -> Result<usize> {
        self.keys
            .iter()
            .position(|k| k == key)
            .ok_or_else(|| GossipError::KeyNotInstalled { key_id: key.id().to_string() })
    }

    /// Reads a keyring file; `Ok(None)` when there is no file.
    pub fn load(path: &Path) -> Result<Option<Keyring>> {
        let file_err = |reason: String| GossipError::KeyringFile { path: path.to_owned(), reason };
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(file_err(e.to_string())),
        };
        let keys: Vec<String> = serde_json::from_str(&text)
            .map_err(|e| file_err(format!("not a JSON array of base64 keys ({e})")))?;
        Keyring::from_base64(&keys).map(Some).map_err(|e| file_err(e.to_string()))
    }

    /// Writes the keyring file atomically (a temporary file, synced, then
    /// renamed over the old one), readable by its owner only.
    pub fn save(&self, path: &Path) -> Result<()> {
        let file_err =
            |e: std::io::Error| GossipError::KeyringFile { path: path.to_owned(), reason: e.to_string() };
        let keys: Vec<String> = self.keys.iter().map(GossipKey::to_base64).collect();
        let text = serde_json::to_string_pretty(&keys).unwrap_or_default();
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(file_err)?;
        // The mode above applies only to a new file; a stale temporary file keeps its own.
        #[cfg(unix)]
        fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600)).map_err(file_err)?;
        file.write_all(text.as_bytes()).map_err(file_err)?;
        file.sync_all().map_err(file_err)?;
        drop(file);
        fs::rename(&tmp, path).map_err(file_err)?;
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// The live keyring of a running member: the socket seals and opens with it,
/// and every change is persisted to the keyring file (when there is one)
/// before it takes effect. Cheap to clone.
#[derive(Clone)]
pub struct KeyringHandle {
    shared: Arc<Shared>,
}

struct Shared {
    ring: RwLock<Arc<Keyring>>,
    file: Option<PathBuf>,
    /// Serializes changes, so the file and the ring in memory agree.
    changes: Mutex<()>,
}

impl fmt::Debug for KeyringHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyringHandle").field("keys", &self.keys()).field("file", &self.shared.file).finish()
    }
}

impl KeyringHandle {
    /// The live keyring of a member starting with `configured` keys and an
    /// optional keyring file. The file, when it exists, wins: it holds the
    /// ring as the last rotation left it. Otherwise the configured keys are
    /// used and written to the file. `Ok(None)` means no encryption.
    pub fn open(configured: Option<Keyring>, file: Option<PathBuf>) -> Result<Option<KeyringHandle>> {
        let from_file = match &file {
            Some(path) => Keyring::load(path)?,
            None => None,
        };
        let ring = match (from_file, configured) {
            (Some(ring), configured) => {
                // One line a user sees: a `--gossip-key` that is not the one
                // in use is otherwise a silent surprise.
                if let Some(c) = configured.filter(|c| c.primary() != ring.primary()) {
                    let held = if ring.keys().contains(c.primary()) { "holds" } else { "does not hold" };
                    warn!(
                        file = %file.as_deref().map(Path::display).map(|d| d.to_string()).unwrap_or_default(),
                        configured = %c.primary().id(),
                        primary = %ring.primary().id(),
                        "the keyring file overrides the configured gossip key (--gossip-key): its primary \
                         key seals gossip; it {held} the configured key"
                    );
                }
                ring
            }
            (None, Some(ring)) => {
                if let Some(path) = &file {
                    ring.save(path)?;
                }
                ring
            }
            (None, None) => return Ok(None),
        };
        Ok(Some(KeyringHandle {
            shared: Arc::new(Shared { ring: RwLock::new(Arc::new(ring)), file, changes: Mutex::new(()) }),
        }))
    }

    /// The keyring now.
    pub fn keys(&self) -> Arc<Keyring> {
        self.shared.ring.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The keyring file, if the ring is persisted.
    pub fn file(&self) -> Option<&Path> {
        self.shared.file.as_deref()
    }

    /// Installs a key: datagrams sealed with it open from now on. Returns
    /// whether it was new.
    pub fn install(&self, key: GossipKey) -> Result<bool> {
        let id = key.id();
        let changed = self.change(|ring| Ok(ring.install(key)))?;
        info!(key = %id, changed, "gossip key installed");
        Ok(changed)
    }

    /// Makes an installed key primary: every datagram is sealed with it from
    /// now on. Install it on every member first. Returns whether the primary changed.
    pub fn use_key(&self, key: &GossipKey) -> Result<bool> {
        let changed = self.change(|ring| ring.use_key(key))?;
        info!(key = %key.id(), changed, "gossip key is primary: it seals every datagram");
        Ok(changed)
    }

    /// Removes a key that is not primary. Returns whether it was there.
    pub fn remove(&self, key: &GossipKey) -> Result<bool> {
        let changed = self.change(|ring| ring.remove(key))?;
        info!(key = %key.id(), changed, "gossip key removed");
        Ok(changed)
    }

    fn change(&self, f: impl FnOnce(&mut Keyring) -> Result<bool>) -> Result<bool> {
        let _one_at_a_time = self.shared.changes.lock().unwrap_or_else(|p| p.into_inner());
        let mut ring = Keyring::clone(&self.keys());
        let changed = f(&mut ring)?;
        if changed {
            if let Some(path) = &self.shared.file {
                ring.save(path)?;
            }
            *self.shared.ring.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ring);
        }
        Ok(changed)
    }
}

/// The service's keyring requests act on the live ring through this.
impl cluster_core::KeyringControl for KeyringHandle {
    fn list(&self) -> cluster_core::KeyringState {
        let ring = self.keys();
        cluster_core::KeyringState { keys: ring.keys().iter().map(|k| k.bytes).collect(), changed: false }
    }

    fn apply(&self, change: cluster_core::KeyringChange) -> cluster_core::Result<cluster_core::KeyringState> {
        let key = GossipKey::from_bytes(*change.key());
        let changed = match change {
            cluster_core::KeyringChange::Install(_) => self.install(key)?,
            cluster_core::KeyringChange::Use(_) => self.use_key(&key)?,
            cluster_core::KeyringChange::Remove(_) => self.remove(&key)?,
            // A change this member does not know: refuse it, naming it.
            other => {
                return Err(cluster_core::Error::BadRequest(format!(
                    "this member does not know the keyring change {:?}",
                    other.verb()
                )));
            }
        };
        Ok(cluster_core::KeyringState { changed, ..cluster_core::KeyringControl::list(self) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_changes_the_live_ring_and_its_file_through_keyring_control() {
        use cluster_core::{KeyringChange, KeyringControl};
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ring");
        let (old, new) = (GossipKey::generate(), GossipKey::generate());
        let ring = KeyringHandle::open(Some(Keyring::new(old.clone())), Some(file.clone())).unwrap().unwrap();
        let control: &dyn KeyringControl = &ring;
        assert_eq!(control.list().keys, vec![*old.as_bytes()]);
        let installed = control.apply(KeyringChange::Install(*new.as_bytes())).unwrap();
        assert!(installed.changed);
        assert_eq!(installed.keys, vec![*old.as_bytes(), *new.as_bytes()]);
        assert!(!control.apply(KeyringChange::Install(*new.as_bytes())).unwrap().changed, "installed twice");
        assert!(control.apply(KeyringChange::Use(*new.as_bytes())).unwrap().changed);
        let refused = control.apply(KeyringChange::Remove(*new.as_bytes()));
        assert!(matches!(refused, Err(cluster_core::Error::BadRequest(_))), "{refused:?}");
        let unknown = control.apply(KeyringChange::Use([9; 32]));
        assert!(matches!(unknown, Err(cluster_core::Error::BadRequest(_))), "{unknown:?}");
        assert_eq!(
            control.apply(KeyringChange::Remove(*old.as_bytes())).unwrap().keys,
            vec![*new.as_bytes()]
        );
        // What the service changed is what the member reads back after a restart.
        assert_eq!(Keyring::load(&file).unwrap().unwrap().keys(), &[new]);
    }

    #[test]
    fn base64_round_trip_and_bad_keys() {
        let k = GossipKey::generate();
        assert_eq!(GossipKey::from_base64(&format!(" {}\n", k.to_base64())), Ok(k.clone()));
        assert!(matches!(GossipKey::from_base64("not base64!"), Err(GossipError::InvalidKey { .. })));
        let short = "BwcHBwcHBwcHBwcHBwcHBw=="; // 16 bytes of 7
        let Err(e) = GossipKey::from_base64(short) else { panic!("16 bytes accepted") };
        assert!(e.to_string().contains("16 bytes"), "{e}");
        assert!(!format!("{k:?} {k}").contains(&k.to_base64()), "the key leaks through Debug/Display");
    }

    #[test]
    fn key_ids_differ_and_are_stable() {
        let a = GossipKey::from_bytes([1; 32]);
        assert_eq!(a.id(), GossipKey::from_bytes([1; 32]).id());
        assert_ne!(a.id(), GossipKey::from_bytes([2; 32]).id());
    }

    #[test]
    fn install_use_remove() {
        let (a, b) = (GossipKey::generate(), GossipKey::generate());
        let mut ring = Keyring::new(a.clone());
        assert!(ring.install(b.clone()));
        assert!(!ring.install(b.clone()));
        assert_eq!(ring.primary(), &a);
        assert!(matches!(ring.remove(&a), Err(GossipError::RemovePrimary { .. })));
        assert_eq!(ring.use_key(&b), Ok(true));
        assert_eq!(ring.primary(), &b);
        assert_eq!(ring.remove(&a), Ok(true));
        assert_eq!(ring.keys(), std::slice::from_ref(&b));
        assert!(matches!(ring.use_key(&a), Err(GossipError::KeyNotInstalled { .. })));
        assert!(Keyring::from_keys([]).is_err());
        assert_eq!(Keyring::from_keys([b.clone(), b.clone()]).map(|r| r.keys().len()), Ok(1));
    }

    #[test]
    fn the_file_is_private_atomic_and_wins_over_configuration() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| GossipError::Internal(e.to_string()))?;
        let path = dir.path().join("keyring.json");
        let (a, b) = (GossipKey::generate(), GossipKey::generate());
        let handle = KeyringHandle::open(Some(Keyring::new(a.clone())), Some(path.clone()))?
            .ok_or_else(|| GossipError::Internal("no ring".into()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode =
                fs::metadata(&path).map_err(|e| GossipError::Internal(e.to_string()))?.permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        handle.install(b.clone())?;
        handle.use_key(&b)?;
        // A restart with the old configured key gets the rotated ring back.
        let again = KeyringHandle::open(Some(Keyring::new(a.clone())), Some(path.clone()))?
            .ok_or_else(|| GossipError::Internal("no ring".into()))?;
        assert_eq!(again.keys().keys(), [b.clone(), a.clone()]);
        assert_eq!(Keyring::load(&path)?.map(|r| r.primary().clone()), Some(b));
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .map_err(|e| GossipError::Internal(e.to_string()))?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        fs::write(&path, "[\"short\"]").map_err(|e| GossipError::Internal(e.to_string()))?;
        assert!(matches!(Keyring::load(&path), Err(GossipError::KeyringFile { .. })));
        assert!(KeyringHandle::open(None, None)?.is_none());
        Ok(())
    }
}
