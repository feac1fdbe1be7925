//! The gossip socket under chitchat: real UDP, each datagram sealed with the
//! keyring's primary key when encryption is on, and every received datagram
//! checked before chitchat sees it.
//!
//! Receiving runs in a task of its own, which hands chitchat only envelopes
//! that passed, in order:
//! 1. authentication, when encryption is on ([`crate::seal::open`]): nothing
//!    is decompressed or parsed before it;
//! 2. the structure and size bounds of [`crate::datagram::check`];
//! 3. decoding by chitchat's own code ([`crate::codec`]).
//!
//! A dropped datagram is counted ([`DatagramStats`]) and logged at most once
//! per source address every 10 s ([`crate::drop_log`]). The task keeps chitchat's
//! `recv` cancel-safe: chitchat drops that future at every gossip tick.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket};
use chitchat::{ChitchatEnvelope, ChitchatMessage};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{Instrument, Span, debug, warn};

use crate::codec::{Decoder, Encoder};
use crate::datagram;
use crate::drop_log::{DropLog, LOG_INTERVAL};
use crate::keyring::KeyringHandle;
use crate::pace::{PaceState, RoundGate};
use crate::seal;

/// The largest UDP payload over IPv4.
const MAX_UDP_PAYLOAD: usize = datagram::MAX_DATAGRAM;

/// Envelopes received and not yet taken by chitchat; past it, receiving waits
/// (and the kernel drops, as UDP does).
const INBOX: usize = 64;

/// Counts of the datagrams a member received and sent since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DatagramStats {
    /// Datagrams received.
    pub received: u64,
    /// Datagrams handed to chitchat.
    pub accepted: u64,
    /// Dropped: encryption is on and no key of the ring opened them (no key,
    /// wrong key, another cluster, altered).
    pub unauthenticated: u64,
    /// Dropped after authentication: not a well-formed chitchat datagram,
    /// past the size bounds, or of another cluster id.
    pub rejected: u64,
    /// Not sent: too large for one UDP datagram once sealed.
    pub oversized: u64,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    accepted: AtomicU64,
    unauthenticated: AtomicU64,
    rejected: AtomicU64,
    oversized: AtomicU64,
}

/// What the socket shares with its receiving task and the member's handle.
pub(crate) struct Shared {
    keyring: Option<KeyringHandle>,
    cluster_id: String,
    counters: Counters,
    drops: Mutex<DropLog>,
    /// chitchat's gossip interval.
    interval: Duration,
    /// How often this member starts rounds of its own ([`crate::pace`]).
    pub(crate) pace: PaceState,
}

impl Shared {
    pub(crate) fn new(keyring: Option<KeyringHandle>, cluster_id: String, interval: Duration) -> Arc<Shared> {
        Arc::new(Shared {
            keyring,
            cluster_id,
            counters: Counters::default(),
            drops: Mutex::default(),
            interval,
            pace: PaceState::default(),
        })
    }

    /// The counts now.
    pub(crate) fn stats(&self) -> DatagramStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DatagramStats {
            received: get(&c.received),
            accepted: get(&c.accepted),
            unauthenticated: get(&c.unauthenticated),
            rejected: get(&c.rejected),
            oversized: get(&c.oversized),
        }
    }

    /// Counts a dropped datagram and logs it if a line about its source is due.
    fn dropped(&self, counter: &AtomicU64, from: SocketAddr, reason: &str) {
        counter.fetch_add(1, Ordering::Relaxed);
        let line = self.drops.lock().unwrap_or_else(|p| p.into_inner()).record(from.ip(), Instant::now());
        if let Some(line) = line {
            warn!(
                peer = %line.source,
                dropped = line.dropped,
                reason,
                "dropped gossip datagrams (each peer address is reported at most every {}s)",
                LOG_INTERVAL.as_secs()
            );
        }
    }

    /// The plaintext of a received datagram, if it may reach chitchat.
    fn admit(&self, datagram: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        let plaintext = match &self.keyring {
            Some(ring) => match seal::open(&ring.keys(), &self.cluster_id, datagram) {
                Some(p) => p,
                None => {
                    self.dropped(
                        &self.counters.unauthenticated,
                        from,
                        "failed authentication: no key of this member's keyring opens it",
                    );
                    return None;
                }
            },
            None => datagram.to_vec(),
        };
        if let Err(reason) = datagram::check(&plaintext, &self.cluster_id) {
            self.dropped(&self.counters.rejected, from, reason);
            return None;
        }
        Some(plaintext)
    }
}

/// The socket chitchat gossips through.
pub(crate) struct GossipSocket {
    udp: Arc<UdpSocket>,
    local: SocketAddr,
    shared: Arc<Shared>,
    encoder: Encoder,
    inbox: mpsc::Receiver<RecvOutcome>,
    receiver: JoinHandle<()>,
    gate: RoundGate,
}

impl Drop for GossipSocket {
    fn drop(&mut self) {
        self.receiver.abort();
    }
}

impl GossipSocket {
    /// Binds `listen_addr` and starts receiving (in `span`).
    pub(crate) async fn open(
        listen_addr: SocketAddr,
        shared: Arc<Shared>,
        span: Span,
    ) -> anyhow::Result<GossipSocket> {
        let udp = Arc::new(
            UdpSocket::bind(listen_addr)
                .await
                .with_context(|| format!("binding {listen_addr}/UDP for gossip"))?,
        );
        let local = udp.local_addr()?;
        let encoder = Encoder::open().await.context("opening the loopback encoder")?;
        let decoder = Decoder::open().await.context("opening the loopback decoder")?;
        let (tx, inbox) = mpsc::channel(INBOX);
        let receiver = tokio::spawn(receive(udp.clone(), shared.clone(), decoder, tx).instrument(span));
        let gate = RoundGate::new(shared.interval);
        Ok(GossipSocket { udp, local, shared, encoder, inbox, receiver, gate })
    }

    async fn send_envelope(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        // A Syn starts a round; a round this member's pace skips is not
        // even encoded. Answers always leave.
        if matches!(envelope.message, ChitchatMessage::Syn { .. })
            && !self.gate.admit(Instant::now(), self.shared.pace.period(self.shared.interval, Instant::now()))
        {
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        let plaintext = match self.encoder.encode(envelope).await {
            Ok(bytes) => bytes,
            Err(e) => {
                debug!(error = %e, "could not encode a gossip datagram; skipped");
                return Ok(SendOutcome { num_bytes_sent: 0 });
            }
        };
        let sealed;
        let datagram = match &self.shared.keyring {
            Some(ring) => {
                sealed = seal::seal(ring.keys().primary(), &self.shared.cluster_id, plaintext)
                    .context("sealing a gossip datagram")?;
                &sealed[..]
            }
            None => plaintext,
        };
        if datagram.len() > MAX_UDP_PAYLOAD {
            self.shared.dropped(
                &self.shared.counters.oversized,
                to,
                "too large for one UDP datagram once sealed",
            );
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
        let num_bytes_sent =
            self.udp.send_to(datagram, to).await.context("failed to send a gossip datagram")?;
        Ok(SendOutcome { num_bytes_sent })
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::OutOfMemory | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused
    )
}

/// The receiving task: admits, decodes and queues envelopes for chitchat
/// until chitchat is gone or the socket breaks.
async fn receive(
    udp: Arc<UdpSocket>,
    shared: Arc<Shared>,
    mut decoder: Decoder,
    tx: mpsc::Sender<RecvOutcome>,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = match udp.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) if is_transient(&e) => continue,
            Err(e) => {
                warn!(error = %e, "the gossip socket broke; gossip stops");
                return;
            }
        };
        let Some(plaintext) = shared.admit(&buf[..n], from) else { continue };
        let envelope = match decoder.decode(&plaintext).await {
            Ok(Some(envelope)) => envelope,
            Ok(None) => {
                shared.dropped(&shared.counters.rejected, from, "chitchat could not read it");
                continue;
            }
            Err(e) => {
                debug!(error = %e, "the loopback decoder failed");
                shared.dropped(&shared.counters.rejected, from, "the loopback decoder lost it");
                continue;
            }
        };
        shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
        let outcome = RecvOutcome { from_addr: from, envelope, num_bytes_received: n };
        if tx.send(outcome).await.is_err() {
            return;
        }
    }
}

#[async_trait::async_trait]
impl Socket for GossipSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.local)
    }

    async fn send(&mut self, to: SocketAddr, envelope: ChitchatEnvelope) -> anyhow::Result<SendOutcome> {
        self.send_envelope(to, envelope).await
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        self.inbox.recv().await.context("the gossip socket stopped receiving")
    }
}
