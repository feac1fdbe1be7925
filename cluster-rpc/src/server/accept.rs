//! The accept loop, and a connection's way in: the check for a plain caller
//! on a TLS port, the security handshake, and its place in the admission.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cluster_core::Error;
use cluster_core::wire::FrameKind;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::admission::{Entry, Handshake, Slot};
use super::connection::run;
use super::sniff::{Rewind, sniff};
use super::{Access, Caller, DRAIN, Handler, Shared};
use crate::Role;
use crate::frame::{self, Answer};
use crate::net::{ByteStream, Listener};

pub(super) async fn accept_loop<H: Handler>(
    mut listener: Listener,
    shared: Arc<Shared<H>>,
    cancel: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Usually out of file descriptors: pause instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            }
        };
        let handshake = match Handshake::admit(&shared, peer.ip()) {
            Ok(handshake) => handshake,
            Err(why) => {
                // Closed at once: an over-limit connection holds no descriptor.
                shared.log.note(peer.ip(), why, &"closed as soon as accepted");
                continue;
            }
        };
        let span = tracing::debug_span!("rpc_connection", %peer);
        connections.spawn(connection(stream, peer, handshake, shared.clone()).instrument(span));
    }
    drop(listener);
    // Aborts every connection task; each aborts its writer.
    connections.shutdown().await;
}

async fn connection<H: Handler>(
    mut stream: ByteStream,
    peer: SocketAddr,
    handshake: Handshake<H>,
    shared: Arc<Shared<H>>,
) {
    let limits = &shared.config.limits;
    let deadline = Instant::now() + limits.handshake_timeout;
    let evicted = handshake.evicted.clone();
    if shared.config.security.is_tls() {
        // A plain-TCP caller of a TLS port is told so in its own terms, so it
        // gets a clear error instead of a failed handshake.
        let sniffed = tokio::select! {
            _ = evicted.cancelled() => return,
            sniffed = tokio::time::timeout_at(deadline, sniff(&mut stream)) => sniffed,
        };
        let Ok((plain, opening)) = sniffed else {
            shared.log.note(
                peer.ip(),
                "handshake timed out",
                &format!("after {:?}", limits.handshake_timeout),
            );
            return;
        };
        if let Some(found) = plain {
            shared.log.note(peer.ip(), "plain TCP on a TLS port", &"refused");
            let error =
                Error::Forbidden("this port requires TLS: connect with the cluster's certificates".into());
            let refusal =
                frame::encode(FrameKind::Message, &found, 0, H::Answer::refused(error), limits.max_frame_len);
            if let Ok(bytes) = refusal {
                let _ = tokio::time::timeout(DRAIN, async {
                    stream.write_all(&bytes).await?;
                    stream.shutdown().await
                })
                .await;
            }
            return;
        }
        // The handshake reads again what was read to tell.
        stream = Box::new(Rewind { opening, read: 0, stream });
    }
    let secured = tokio::select! {
        _ = evicted.cancelled() => {
            shared.log.note(peer.ip(), "handshake closed", &"a newer connection took its place");
            return;
        }
        secured = tokio::time::timeout_at(deadline, shared.config.security.accept(stream)) => secured,
    };
    let (io, role, member) = match secured {
        Ok(Ok(secured)) => secured,
        Ok(Err(e)) => {
            shared.log.note(peer.ip(), "handshake refused", &e);
            return;
        }
        Err(_) => {
            shared.log.note(
                peer.ip(),
                "handshake timed out",
                &format!("after {:?}", limits.handshake_timeout),
            );
            return;
        }
    };
    let caller = Caller { addr: peer, role, member };
    if !shared.config.security.is_tls() {
        run(io, caller, &shared, None, Entry::FirstFrame(handshake, deadline)).await;
        return;
    }
    // Authenticated: the handshake's place is free, a regular one is taken.
    drop(handshake);
    if role == Some(Role::Client) && shared.config.access == Access::MembersOnly {
        let refusal =
            Error::Forbidden("this port accepts members only; a client certificate was presented".to_owned());
        run(io, caller, &shared, Some(refusal), Entry::Refused).await;
        return;
    }
    match Slot::admit(&shared, peer.ip(), role) {
        Ok(slot) => run(io, caller, &shared, None, Entry::Admitted(slot)).await,
        Err(why) => {
            let refusal = Error::Unreachable(format!("{why}; retry later"));
            run(io, caller, &shared, Some(refusal), Entry::Refused).await;
        }
    }
}
