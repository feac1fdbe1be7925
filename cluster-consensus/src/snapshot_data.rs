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
//! Seeking past [`MAX_SEEK`] fails instead of growing the buffer (the raft
//! guard refuses such chunks before; this is the second line).

use std::io::{self, Cursor, SeekFrom};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

use crate::state_machine::KvState;

/// No snapshot buffer seeks past this (4 GiB above the default snapshot bound).
pub const MAX_SEEK: u64 = 8 << 30;

/// A snapshot's bytes; the openraft `SnapshotData` of this crate.
#[derive(Debug, Default)]
pub struct SnapshotData {
    cursor: Cursor<Vec<u8>>,
    /// Received from a leader: checked on `shutdown`.
    received: bool,
}

impl SnapshotData {
    /// Bytes built by this member.
    pub fn new(bytes: Vec<u8>) -> Self {
        SnapshotData { cursor: Cursor::new(bytes), received: false }
    }

    /// An empty buffer for a snapshot received from a leader.
    pub fn receiving() -> Self {
        SnapshotData { cursor: Cursor::new(Vec::new()), received: true }
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
        if self.received {
            // Decoding twice (here and in install) costs CPU, not memory: the
            // state decoded here is dropped at once.
            if let Err(e) = KvState::from_bytes(self.cursor.get_ref()) {
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

    #[tokio::test]
    async fn a_received_snapshot_that_does_not_decode_fails_on_shutdown() {
        let mut bad = SnapshotData::receiving();
        bad.write_all(b"not a snapshot").await.unwrap();
        assert_eq!(bad.shutdown().await.unwrap_err().kind(), io::ErrorKind::InvalidData);

        let mut good = SnapshotData::receiving();
        good.write_all(&KvState::default().to_bytes().unwrap()).await.unwrap();
        good.shutdown().await.unwrap();

        let mut far = SnapshotData::receiving();
        assert!(far.seek(SeekFrom::Start(1 << 40)).await.is_err());
        assert!(far.into_inner().is_empty());
    }
}
