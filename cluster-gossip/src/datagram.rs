//! What must hold of a chitchat datagram before chitchat parses it.
//!
//! chitchat decompresses a delta block by block into a 64 KiB buffer each,
//! with no bound on the number of blocks: a 65 KB datagram of tiny zstd
//! frames expands to about 172 MB. [`check`] walks the datagram first and
//! decompresses each block itself into a buffer of chitchat's own block size
//! (16 KiB: chitchat never writes a bigger block, so zstd stops at the first
//! byte past it), with at most [`MAX_BLOCKS`] blocks and [`MAX_EXPANDED`]
//! bytes in all. Then it parses the whole datagram with chitchat's own
//! decoders, so what reaches chitchat parses there without a warning.
//!
//! Only protocol V0 (uncompressed digests) is accepted: every member of this
//! crate speaks it, and chitchat's replies echo the version they answer.

use chitchat::{ChitchatId, ChitchatMessage, Deserializable};

/// chitchat's largest datagram (its receive buffer; the IPv4 UDP maximum).
pub(crate) const MAX_DATAGRAM: usize = 65_507;
/// chitchat's magic number, the first two bytes (little endian).
const MAGIC: u16 = 45_139;
/// chitchat's block size for compressed streams (digests and deltas).
const BLOCK_MAX: usize = 16_384;
/// The most bytes a datagram's delta may expand to.
pub(crate) const MAX_EXPANDED: usize = 1 << 20;
/// The most blocks a datagram's delta may have.
pub(crate) const MAX_BLOCKS: usize = 128;
/// A member digest after its chitchat id: heartbeat, last GC version, max version.
const NODE_DIGEST_LEN: usize = 24;

/// Why a datagram was refused (for the rate-limited log).
pub(crate) type Refused = &'static str;

/// Checks a plaintext chitchat datagram for the member of `cluster_id`; `Ok`
/// means chitchat parses it, at a bounded cost. Two well-formed messages are
/// refused too, because chitchat writes a warning for each one: a Syn of
/// another cluster, and BadCluster (a peer saying we are of another cluster).
pub(crate) fn check(datagram: &[u8], cluster_id: &str) -> Result<(), Refused> {
    if datagram.len() > MAX_DATAGRAM {
        return Err("larger than chitchat's largest datagram");
    }
    let mut buf = datagram;
    let header = take(&mut buf, 4).ok_or("shorter than a chitchat header")?;
    if u16::from_le_bytes([header[0], header[1]]) != MAGIC {
        return Err("not chitchat (bad magic number)");
    }
    if header[2] != 0 {
        return Err("chitchat protocol version other than V0");
    }
    match header[3] {
        0 => {
            digest(&mut buf)?;
            let their_cluster_id = String::deserialize(&mut buf).map_err(|_| "bad cluster id in a Syn")?;
            if their_cluster_id != cluster_id {
                return Err("a Syn of another cluster id");
            }
        }
        1 => {
            digest(&mut buf)?;
            delta(&mut buf)?;
        }
        2 => delta(&mut buf)?,
        3 => return Err("a peer answered that this member is of another cluster id"),
        _ => return Err("unknown chitchat message type"),
    }
    if buf.is_empty() { Ok(()) } else { Err("trailing bytes after the chitchat message") }
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if buf.len() < n {
        return None;
    }
    let (head, tail) = buf.split_at(n);
    *buf = tail;
    Some(head)
}

fn digest(buf: &mut &[u8]) -> Result<(), Refused> {
    let count = u16::deserialize(buf).map_err(|_| "truncated digest")?;
    for _ in 0..count {
        ChitchatId::deserialize(buf).map_err(|_| "bad member id in a digest")?;
        take(buf, NODE_DIGEST_LEN).ok_or("truncated digest")?;
    }
    Ok(())
}

fn delta(buf: &mut &[u8]) -> Result<(), Refused> {
    let mut walk = *buf;
    bounded_stream(&mut walk)?;
    // The bounds hold: let chitchat's own decoder check the content. The
    // closure names the type chitchat does not export.
    parse_as(|delta| ChitchatMessage::Ack { delta }, buf).map_err(|_| "bad delta")?;
    if buf.len() != walk.len() {
        return Err("bad delta length");
    }
    Ok(())
}

fn parse_as<T: Deserializable>(
    _wrap: impl FnOnce(T) -> ChitchatMessage,
    buf: &mut &[u8],
) -> anyhow::Result<T> {
    T::deserialize(buf)
}

/// Walks a chitchat compressed stream, decompressing each block into a
/// bounded buffer; refuses a stream past the bounds.
fn bounded_stream(buf: &mut &[u8]) -> Result<(), Refused> {
    let mut scratch = vec![0u8; BLOCK_MAX];
    let mut expanded = 0usize;
    for _ in 0..=MAX_BLOCKS {
        let kind = take(buf, 1).ok_or("truncated delta")?[0];
        if kind == 0 {
            return Ok(());
        }
        let len = take(buf, 2).ok_or("truncated delta")?;
        let len = usize::from(u16::from_le_bytes([len[0], len[1]]));
        let block = take(buf, len).ok_or("truncated delta block")?;
        let size = match kind {
            1 => zstd::bulk::decompress_to_buffer(block, &mut scratch[..])
                .map_err(|_| "a delta block that does not decompress to at most 16 KiB")?,
            2 => len,
            _ => return Err("unknown delta block type"),
        };
        expanded += size;
        if expanded > MAX_EXPANDED {
            return Err("a delta expanding past the size bound");
        }
    }
    Err("a delta with too many blocks")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u8) -> Vec<u8> {
        let mut v = MAGIC.to_le_bytes().to_vec();
        v.extend([0, kind]);
        v
    }

    #[test]
    fn accepts_an_empty_ack_refuses_bad_cluster() {
        let mut ack = header(2);
        ack.push(0);
        assert_eq!(check(&ack, "c"), Ok(()));
        assert!(check(&header(3), "c").is_err());
    }

    #[test]
    fn refuses_garbage_and_trailing_bytes() {
        assert!(check(b"", "c").is_err());
        assert!(check(b"junk-junk", "c").is_err());
        let mut huge = header(3);
        huge.resize(MAX_DATAGRAM + 1, 0);
        assert_eq!(check(&huge, "c"), Err("larger than chitchat's largest datagram"));
        let mut v1 = header(3);
        v1[2] = 1;
        assert!(check(&v1, "c").is_err());
        let mut trailing = header(3);
        trailing.push(9);
        assert!(check(&trailing, "c").is_err());
    }

    /// The attack of issue 13: a datagram full of tiny zstd frames that each
    /// expand to 64 KiB.
    #[test]
    fn refuses_a_decompression_bomb_quickly() {
        let frame = zstd::bulk::compress(&vec![0u8; 65_535], 19).unwrap_or_default();
        let mut bomb = header(2);
        while bomb.len() + frame.len() + 4 < 65_000 {
            bomb.push(1);
            bomb.extend((frame.len() as u16).to_le_bytes());
            bomb.extend(&frame);
        }
        bomb.push(0);
        let started = std::time::Instant::now();
        assert!(check(&bomb, "c").is_err());
        assert!(started.elapsed() < std::time::Duration::from_millis(50), "took {:?}", started.elapsed());
        // Small blocks, but too many of them.
        let small = zstd::bulk::compress(&[0u8; 10], 1).unwrap_or_default();
        let mut many = header(2);
        for _ in 0..=MAX_BLOCKS {
            many.push(1);
            many.extend((small.len() as u16).to_le_bytes());
            many.extend(&small);
        }
        many.push(0);
        assert_eq!(check(&many, "c"), Err("a delta with too many blocks"));
    }

    #[test]
    fn accepts_a_syn_of_its_own_cluster_only() {
        let mut syn = header(0);
        syn.extend(0u16.to_le_bytes());
        syn.extend((6u16).to_le_bytes());
        syn.extend(b"orders");
        assert_eq!(check(&syn, "orders"), Ok(()));
        assert_eq!(check(&syn, "billing"), Err("a Syn of another cluster id"));
    }
}
