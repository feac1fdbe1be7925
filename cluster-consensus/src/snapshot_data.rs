//! [`SnapshotData`]: a snapshot's bytes in memory, as openraft moves them.
//!
//! A snapshot received from a leader is checked when openraft finishes
//! receiving it (it calls `shutdown` on the buffer after the last chunk):
//! bytes that do not decode as a `KvState` fail there, and openraft answers
//! that chunk with an error to its sender. Without the check they would
//! reach the state machine's `install_snapshot`, whose error openraft treats
//! as a storage failure that stops the raft core for good — one forged
//! chunk marked `done` would be enough.
//!
//! What "decodes" means is the state machine's business: it hands
//! [`SnapshotData::receiving`] its check, so this module does not know the
//! state's type.
//!
//! Seeking past [`MAX_SEEK`] fails instead of growing the buffer (the raft
//! guard refuses such chunks before; this is the second line).

use std::io::{self, Cursor, SeekFrom};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

/// No snapshot buffer seeks past this (4 GiB above the default snapshot bound).
pub const MAX_SEEK: u64 = 8 << 30;

/// Checks a received snapshot's bytes: an error if the state machine could
/// not install them.
pub type CheckReceived = fn(&[u8]) -> io::Result<()>;

/// A snapshot's bytes; the openraft `SnapshotData` of this crate.
#[derive(Debug, Default)]
pub struct SnapshotData {
    cursor: Cursor<Vec<u8>>,
    /// Received from a leader: checked on `shutdown` with this.
    check: Option<CheckReceived>,
}

impl SnapshotData {
    /// Bytes built by this member.
    pub fn new(bytes: Vec<u8>) -> Self {
        SnapshotData { cursor: Cursor::new(bytes), check: None }
    }

    /// An empty buffer for a snapshot received from a leader, which `check`
    /// accepts or refuses once the last chunk is in.
    pub fn receiving(check: CheckReceived) -> Self {
        SnapshotData { cursor: Cursor::new(Vec::new()), check: Some(check) }
    }

    /// The bytes.
    pub fn into_inner(self) -> Vec<u8> {
        self.cursor.into_inner()
    }
}

impl AsyncRead for SnapshotData {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.cursor).poll_read(cx, buf)
    }
}

impl AsyncWrite for SnapshotData {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.cursor.position().saturating_add(buf.len() as u64) > MAX_SEEK {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidInput, "snapshot too large")));
        }
        Pin::new(&mut self.cursor).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.cursor).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(check) = self.check {
            // Decoding twice (here and in install) costs CPU, not memory: the
            // state decoded here is dropped at once.
            if let Err(e) = check(self.cursor.get_ref()) {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the snapshot received does not decode: {e}"),
                )));
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncSeek for SnapshotData {
    fn start_seek(mut self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        if let SeekFrom::Start(p) = position
            && p > MAX_SEEK
        {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("seek to {p} in a snapshot")));
        }
        Pin::new(&mut self.cursor).start_seek(position)
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Pin::new(&mut self.cursor).poll_complete(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncSeekExt, AsyncWriteExt};

    use super::*;

    /// Accepts what starts with `ok`, as a state machine accepts what decodes.
    fn starts_ok(bytes: &[u8]) -> io::Result<()> {
        if bytes.starts_with(b"ok") { Ok(()) } else { Err(io::Error::other("does not decode")) }
    }

    #[tokio::test]
    async fn a_received_snapshot_that_does_not_decode_fails_on_shutdown() {
        let mut bad = SnapshotData::receiving(starts_ok);
        bad.write_all(b"not a snapshot").await.unwrap();
        assert_eq!(bad.shutdown().await.unwrap_err().kind(), io::ErrorKind::InvalidData);

        let mut good = SnapshotData::receiving(starts_ok);
        good.write_all(b"ok, a snapshot").await.unwrap();
        good.shutdown().await.unwrap();

        // Built here: never checked.
        SnapshotData::new(b"anything".to_vec()).shutdown().await.unwrap();

        let mut far = SnapshotData::receiving(starts_ok);
        assert!(far.seek(SeekFrom::Start(1 << 40)).await.is_err());
        assert!(far.into_inner().is_empty());
    }
}
