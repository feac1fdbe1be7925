//! bincode for what this crate stores (log entries, votes, snapshots).

use serde::Serialize;
use serde::de::DeserializeOwned;

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `value` with bincode.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, std::io::Error> {
    bincode::serde::encode_to_vec(value, config()).map_err(std::io::Error::other)
}

/// Decodes a value that must use every byte of `bytes`.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, std::io::Error> {
    let (value, read) = bincode::serde::decode_from_slice(bytes, config())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    if read != bytes.len() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} trailing bytes", bytes.len() - read),
        ));
    }
    Ok(value)
}
