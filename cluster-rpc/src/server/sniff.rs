//! How a TLS port tells a caller that speaks plain frames (it is answered,
//! in plain, that the port needs TLS) from a TLS handshake: it reads the
//! opening bytes, and the handshake reads them again.

use std::pin::Pin;
use std::task::{Context, Poll};

use cluster_core::wire;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::net::ByteStream;

/// Reads the start of a connection to a TLS port far enough to tell a plain
/// frame (then the cluster id it names) from a TLS handshake or anything
/// else; with the bytes read, which the handshake must read again.
pub(super) async fn sniff(stream: &mut ByteStream) -> (Option<String>, Vec<u8>) {
    const HEADER: usize = wire::LEN_PREFIX + 15;
    const MOST: usize = HEADER + wire::MAX_CLUSTER_ID_LEN;
    let mut opening = Vec::with_capacity(MOST);
    let mut chunk = [0u8; MOST];
    loop {
        let n = opening.len();
        if n > 0 && opening[0] == 0x16 {
            // A TLS record (handshake).
            return (None, opening);
        }
        if n >= wire::LEN_PREFIX + 4 && opening[wire::LEN_PREFIX..wire::LEN_PREFIX + 4] != wire::MAGIC {
            return (None, opening);
        }
        if n >= HEADER {
            let end = HEADER + usize::from(opening[HEADER - 1]);
            if n >= end {
                let found = String::from_utf8_lossy(&opening[HEADER..end]).into_owned();
                return (Some(found), opening);
            }
        }
        match stream.read(&mut chunk[..MOST - n]).await {
            // Closed or failed: the handshake finds out.
            Ok(0) | Err(_) => return (None, opening),
            Ok(read) => opening.extend_from_slice(&chunk[..read]),
        }
    }
}

/// A stream whose first bytes, already read, are read again.
pub(super) struct Rewind {
    pub(super) opening: Vec<u8>,
    pub(super) read: usize,
    pub(super) stream: ByteStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.read < this.opening.len() {
            let rest = &this.opening[this.read..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.read += n;
            if this.read == this.opening.len() {
                this.opening = Vec::new();
                this.read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
