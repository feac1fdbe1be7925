//! A record of the write-ahead log on disk: its framing (length, CRC-32,
//! payload), parsing a segment's bytes into records, and the scan that tells
//! a torn tail from corruption after a bad record (see the parent module).

use super::{Record, WalError};
use crate::encoding::{decode, encode};

/// Bytes of a record header: length and CRC.
const HEADER: usize = 8;
/// The largest record payload accepted when reading; a larger length is corruption.
pub(crate) const MAX_RECORD: usize = 1 << 30;
/// The CRC-32 (IEEE, as zlib computes it) of a record: its length bytes,
/// then its payload.
fn record_crc(len_bytes: &[u8; 4], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len_bytes);
    h.update(payload);
    h.finalize()
}

/// Frames `record` (header + payload), ready to be written.
pub(crate) fn frame(record: &Record) -> Result<Vec<u8>, WalError> {
    let payload = encode(record).map_err(WalError::Encode)?;
    if payload.len() > MAX_RECORD {
        return Err(WalError::TooLarge(payload.len()));
    }
    let len = (payload.len() as u32).to_le_bytes();
    let crc = record_crc(&len, &payload);
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// The records of a segment with their offsets, and where and why the
/// first bad record is, if any.
pub(super) type Parsed = (Vec<(u64, Record)>, Option<(u64, String)>);

/// Parses the records of one segment's bytes. Returns the records with their
/// offsets, and the offset and reason of the first bad record, if any.
pub(super) fn parse(bytes: &[u8]) -> Parsed {
    let mut records = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let bad = |reason: String| Some((at as u64, reason));
        let Some(header) = bytes.get(at..at + HEADER) else {
            return (records, bad(format!("a header cut short ({} bytes)", bytes.len() - at)));
        };
        let len_bytes = [header[0], header[1], header[2], header[3]];
        let len = u32::from_le_bytes(len_bytes) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len == 0 || len > MAX_RECORD {
            return (records, bad(format!("a record length of {len}")));
        }
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else {
            return (records, bad(format!("a record of {len} bytes cut short")));
        };
        if record_crc(&len_bytes, payload) != crc {
            return (records, bad("a CRC mismatch".to_owned()));
        }
        match decode::<Record>(payload) {
            Ok(record) => records.push((at as u64, record)),
            Err(e) => return (records, bad(format!("a record that does not decode: {e}"))),
        }
        at += HEADER + len;
    }
    (records, None)
}

/// The most payload bytes [`scan_for_record`] checksums before it gives up.
const SCAN_BUDGET: usize = 256 * 1024 * 1024;

/// What [`scan_for_record`] found after a bad record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scan {
    /// Nothing valid: a torn tail.
    Nothing,
    /// A valid record starts at this offset: corruption.
    Found(usize),
    /// The work budget ran out before the end: treated as corruption.
    GaveUp(usize),
}

/// The record framed at `at` in `bytes`, if one is whole and valid there.
fn record_at(bytes: &[u8], at: usize) -> Option<(usize, Record)> {
    let header = bytes.get(at..at.checked_add(HEADER)?)?;
    let len_bytes = [header[0], header[1], header[2], header[3]];
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len == 0 || len > MAX_RECORD {
        return None;
    }
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let payload = bytes.get(at + HEADER..at + HEADER + len)?;
    if record_crc(&len_bytes, payload) != crc {
        return None;
    }
    decode::<Record>(payload).ok().map(|r| (HEADER + len, r))
}

/// Looks for a valid record at any offset after the bad one at `bad`.
pub(super) fn scan_for_record(bytes: &[u8], bad: usize) -> Scan {
    let mut spent = 0usize;
    for at in bad + 1..bytes.len().saturating_sub(HEADER - 1) {
        let len = u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as usize;
        // Cheap filters first: most offsets fail on the length alone.
        if len == 0 || len > MAX_RECORD || at + HEADER + len > bytes.len() {
            continue;
        }
        spent += len;
        if spent > SCAN_BUDGET {
            return Scan::GaveUp(at);
        }
        if record_at(bytes, at).is_some() {
            return Scan::Found(at);
        }
    }
    Scan::Nothing
}

#[cfg(test)]
mod tests {
    use super::record_crc;

    #[test]
    fn record_crcs_are_the_ieee_crc32_the_files_on_disk_carry() {
        // Known answers from zlib (`zlib.crc32`), the CRC every record on
        // disk was written with: a change of algorithm would fail here
        // before it failed to open a data directory.
        assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
        assert_eq!(record_crc(&5u32.to_le_bytes(), b"hello"), 0x5CAC_007A);
        assert_eq!(record_crc(&[0; 4], b""), crc32fast::hash(&[0; 4]));
    }
}
