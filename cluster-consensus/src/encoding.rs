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
///
/// bincode allocates what a length in the input claims before it reads the
/// bytes (a string or byte string of 2^62 bytes in a corrupt snapshot aborts
/// the process: allocation failure). Its only guard is a limit on the bytes
/// claimed in all, a type-level constant: the decode runs with the smallest
/// limit of a few sizes (×8 apart) above 16 × the input's length (a decoded
/// value claims at most its size in memory: 16 bytes for a 1-byte varint),
/// so a corrupt length fails as `LimitExceeded` and at most that limit is
/// ever allocated (as zeroed pages, not touched).
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, std::io::Error> {
    let need = bytes.len().saturating_mul(16).saturating_add(1 << 20);
    macro_rules! within {
        ($($shift:literal),*) => {
            $(
                if need <= 1usize << $shift {
                    return finish(
                        bincode::serde::decode_from_slice(bytes, config().with_limit::<{ 1usize << $shift }>()),
                        bytes.len(),
                    );
                }
            )*
        };
    }
    within!(21, 24, 27, 30, 33, 36, 39, 42);
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{} bytes: too large to decode", bytes.len()),
    ))
}

fn finish<T>(
    decoded: Result<(T, usize), bincode::error::DecodeError>,
    len: usize,
) -> Result<T, std::io::Error> {
    let (value, read) = decoded.map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    if read != len {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} trailing bytes", len - read),
        ));
    }
    Ok(value)
}
