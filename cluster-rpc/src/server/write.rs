//! A connection's writing task: answers in order, batched, and the close of
//! a peer that takes no byte of them.

use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufWriter, WriteHalf};
use tokio::sync::mpsc;

use super::DRAIN;
use super::connection::Out;
use crate::net::ByteStream;

fn stalled() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "the peer took no byte of its answers")
}

/// Writes all of `buf`, each write taking at least one byte within `stall`.
async fn write_progressing<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    mut buf: &[u8],
    stall: Duration,
) -> std::io::Result<()> {
    while !buf.is_empty() {
        match tokio::time::timeout(stall, w.write(buf)).await {
            Ok(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => buf = &buf[n..],
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(stalled()),
        }
    }
    Ok(())
}

/// Writes the connection's answers until its channel closes. A peer that
/// takes no byte for `stall` is closed, which frees the bytes its unsent
/// answers hold in the port's budget: a few never-reading callers cannot
/// keep everyone else's large answers out for long. A slow reader that
/// makes progress is not cut, however long a large answer takes.
pub(super) async fn write_frames(
    write: WriteHalf<ByteStream>,
    mut frames: mpsc::Receiver<Out>,
    stall: Duration,
) {
    let mut write = BufWriter::with_capacity(64 * 1024, write);
    while let Some(first) = frames.recv().await {
        let mut batch = Some(first);
        let wrote: std::io::Result<()> = async {
            // Write out when no further answer is ready, to batch busy connections.
            while let Some(out) = batch.take() {
                if let Out::Frame(bytes, taken) = out {
                    write_progressing(&mut write, &bytes, stall).await?;
                    // Written (or in the writer's fixed buffer): its room is free.
                    drop((bytes, taken));
                }
                batch = frames.try_recv().ok();
            }
            tokio::time::timeout(stall, write.flush()).await.map_err(|_| stalled())?
        }
        .await;
        match wrote {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                tracing::debug!(?stall, "the peer does not read its answers: closing");
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "connection write failed");
                return;
            }
        }
    }
    let _ = tokio::time::timeout(DRAIN, write.shutdown()).await;
}
