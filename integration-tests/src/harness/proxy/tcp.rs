//! The TCP side of the proxy (raft RPC, the forwarding service).
//!
//! Each accepted connection gets its own connection to the member's real port
//! (bound to the sender's front IP, so that the member sees each peer at a
//! distinct address), and two pumps, one per direction. A pump reads chunks as
//! they come, stamps each with its delivery time (now + the link's delay, and a
//! retransmission timeout per modelled loss), never earlier than the chunk
//! before it, so bytes keep their order and a late chunk holds up the ones
//! behind it (head-of-line blocking, as in TCP). It writes each chunk at its
//! time, unless the link is cut in that direction: then the bytes wait until
//! the cut heals, and once [`MAX_CHUNKS_IN_FLIGHT`] chunks wait, the pump stops
//! reading (the sender's window fills). An end of stream is passed on after
//! the bytes before it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Relay;
use super::link::{Links, Party};

/// The most bytes one read takes (one chunk).
const CHUNK: usize = 16 * 1024;
/// Chunks read and not yet written, per direction of a connection.
pub(crate) const MAX_CHUNKS_IN_FLIGHT: usize = 64;
/// How long the connection to the member's real port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts connections for the relay's member at `listener` and proxies each
/// to its real address.
pub(crate) fn serve(listener: TcpListener, relay: Relay) {
    let Relay { member, backend, fronts, links, tasks } = relay;
    let spawner = tasks.clone();
    tasks.spawn(async move {
        loop {
            let (inbound, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                // Out of descriptors, or an aborted handshake: try again shortly.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let from = links.member_of(peer.ip());
            let bind = from.map(|j| fronts[j]);
            spawner.spawn(connection(inbound, bind, backend, (from, Some(member)), links.clone()));
        }
    });
}

/// Opens the connection to the member's real port, from `bind` if given.
async fn connect(bind: Option<IpAddr>, backend: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if backend.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(ip) = bind {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    match tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(backend)).await {
        Ok(result) => result,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// Proxies one connection from `from` to `to` until both directions ended.
async fn connection(
    inbound: TcpStream,
    bind: Option<IpAddr>,
    backend: SocketAddr,
    (from, to): (Party, Party),
    links: Arc<Links>,
) {
    // A member that is down refuses: the sender sees its connection closed.
    let Ok(outbound) = connect(bind, backend).await else { return };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    tokio::join!(
        pump(in_read, out_write, (from, to), links.clone()),
        pump(out_read, in_write, (to, from), links),
    );
}

/// Moves bytes from `read` to `write` on the link `from` → `to`; see the
/// module documentation.
async fn pump(
    mut read: OwnedReadHalf,
    mut write: OwnedWriteHalf,
    (from, to): (Party, Party),
    links: Arc<Links>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(MAX_CHUNKS_IN_FLIGHT);
    let reader = {
        let links = links.clone();
        async move {
            let mut last = Instant::now();
            loop {
                let mut buf = vec![0u8; CHUNK];
                let n = match read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                buf.truncate(n);
                let at = (Instant::now() + links.chunk(from, to, n)).max(last);
                last = at;
                if tx.send((at, buf)).await.is_err() {
                    break;
                }
            }
            // Dropping `tx` tells the writer the stream ended.
        }
    };
    let writer = async move {
        let mut changes = links.subscribe();
        while let Some((at, buf)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            loop {
                changes.borrow_and_update();
                if !links.is_cut(from, to) {
                    break;
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
            if write.write_all(&buf).await.is_err() {
                return;
            }
        }
        let _ = write.shutdown().await;
    };
    tokio::join!(reader, writer);
}
