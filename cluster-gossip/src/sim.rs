//! A simulated datagram network for deterministic simulation tests.
//!
//! [`SimNetwork`] carries chitchat envelopes between members in one process,
//! and a [`LinkPolicy`] decides the fate of each per link — dropped, delivered
//! after a delay, or delivered more than once. An envelope travels as it is
//! (chitchat's envelope is neither `Clone` nor publicly encodable); a
//! duplicate is made by this crate's loopback codec, so only a duplicated
//! datagram touches a real (loopback) socket. Delays are tokio timers, so on a
//! single-threaded runtime with paused time the whole exchange is
//! deterministic for a deterministic policy; reordering comes from jitter.
//!
//! A member uses it when started with [`GossipTransport::Sim`](crate::GossipTransport::Sim),
//! or, for code that starts gossip itself (the facade), when a network was
//! [installed](SimNetwork::install) on the current thread: a `Udp` member without a
//! keyring started on that thread then joins the simulated network instead.
//! Nothing changes for a thread with no network installed.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use chitchat::ChitchatEnvelope;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport};
use tokio::sync::mpsc;

use crate::codec::{Decoder, Encoder};

/// What happens to one datagram on its way from `from` to `to`.
pub trait LinkPolicy: Send + Sync + 'static {
    /// The delays after which copies of a datagram arrive: empty drops it,
    /// two entries duplicate it.
    fn fate(&self, from: SocketAddr, to: SocketAddr) -> Vec<Duration>;
}

/// Delivers every datagram once, at once.
struct Perfect;

impl LinkPolicy for Perfect {
    fn fate(&self, _: SocketAddr, _: SocketAddr) -> Vec<Duration> {
        vec![Duration::ZERO]
    }
}

type Inbox = mpsc::UnboundedSender<(SocketAddr, ChitchatEnvelope)>;

struct State {
    inboxes: BTreeMap<SocketAddr, Inbox>,
    next_port: u16,
}

/// A simulated datagram network; clones share it.
#[derive(Clone)]
pub struct SimNetwork {
    state: Arc<Mutex<State>>,
    policy: Arc<dyn LinkPolicy>,
}

impl fmt::Debug for SimNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SimNetwork")
    }
}

impl Default for SimNetwork {
    fn default() -> Self {
        SimNetwork::new(Arc::new(Perfect))
    }
}

thread_local! {
    static INSTALLED: RefCell<Option<SimNetwork>> = const { RefCell::new(None) };
}

impl SimNetwork {
    /// A network whose datagrams meet `policy`.
    pub fn new(policy: Arc<dyn LinkPolicy>) -> Self {
        SimNetwork {
            state: Arc::new(Mutex::new(State { inboxes: BTreeMap::new(), next_port: 20_000 })),
            policy,
        }
    }

    /// Makes gossip members started on this thread with the UDP transport
    /// join this network (see the module's doc); `None` undoes it.
    pub fn install(network: Option<SimNetwork>) {
        INSTALLED.with(|n| *n.borrow_mut() = network);
    }

    /// The network installed on this thread, if any.
    pub fn installed() -> Option<SimNetwork> {
        INSTALLED.with(|n| n.borrow().clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a socket at `addr`; port 0 picks the next free port.
    pub fn open_socket(&self, mut addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let mut state = self.lock();
        if addr.port() == 0 {
            loop {
                let port = state.next_port;
                state.next_port = state.next_port.checked_add(1).unwrap_or(20_000);
                addr.set_port(port);
                if !state.inboxes.contains_key(&addr) {
                    break;
                }
            }
        } else if state.inboxes.get(&addr).is_some_and(|i| !i.is_closed()) {
            anyhow::bail!("address {addr} is in use on the simulated network");
        }
        let (tx, rx) = mpsc::unbounded_channel();
        state.inboxes.insert(addr, tx);
        Ok(Box::new(SimSocket { addr, network: self.clone(), inbox: rx, codec: None }))
    }

    fn inbox(&self, to: SocketAddr) -> Option<Inbox> {
        self.lock().inboxes.get(&to).cloned()
    }
}

/// Hands `envelope` to `inbox` after `delay`.
fn deliver(inbox: Inbox, from: SocketAddr, envelope: ChitchatEnvelope, delay: Duration) {
    if delay.is_zero() {
        let _ = inbox.send((from, envelope));
    } else {
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = inbox.send((from, envelope));
        });
    }
}

#[async_trait::async_trait]
impl Transport for SimNetwork {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        self.open_socket(listen_addr)
    }
}

struct SimSocket {
    addr: SocketAddr,
    network: SimNetwork,
    inbox: mpsc::UnboundedReceiver<(SocketAddr, ChitchatEnvelope)>,
    /// Opened at the first duplicate.
    codec: Option<(Encoder, Decoder)>,
}

impl SimSocket {
    async fn send_envelope(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let sent = Ok(SendOutcome { num_bytes_sent: 0 });
        let Some(inbox) = self.network.inbox(to) else { return sent };
        let delays = self.network.policy.fate(self.addr, to);
        let Some((&first, more)) = delays.split_first() else { return sent };
        if !more.is_empty() {
            if self.codec.is_none() {
                self.codec = Some((Encoder::open().await?, Decoder::open().await?));
            }
            if let Some((encoder, decoder)) = &mut self.codec {
                let bytes = encoder.encode(envelope).await?.to_vec();
                for &delay in more {
                    if let Some(copy) = decoder.decode(&bytes).await? {
                        deliver(inbox.clone(), self.addr, copy, delay);
                    }
                }
                if let Some(copy) = decoder.decode(&bytes).await? {
                    deliver(inbox, self.addr, copy, first);
                }
            }
            return sent;
        }
        deliver(inbox, self.addr, envelope, first);
        sent
    }
}

impl Drop for SimSocket {
    fn drop(&mut self) {
        // A closed inbox is free for the next socket at this address.
        self.inbox.close();
        let mut state = self.network.lock();
        if state.inboxes.get(&self.addr).is_some_and(|i| i.is_closed()) {
            state.inboxes.remove(&self.addr);
        }
    }
}

#[async_trait::async_trait]
impl Socket for SimSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.addr)
    }

    async fn send(&mut self, to: SocketAddr, envelope: ChitchatEnvelope) -> anyhow::Result<SendOutcome> {
        self.send_envelope(to, envelope).await
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        let (from_addr, envelope) = self.inbox.recv().await.context("the simulated network closed")?;
        Ok(RecvOutcome { from_addr, envelope, num_bytes_received: 0 })
    }
}
