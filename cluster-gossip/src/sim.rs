//! A simulated datagram network for deterministic simulation tests.
//!
//! [`SimNetwork`] carries chitchat envelopes between members in one process,
//! and a [`LinkPolicy`] decides the fate of each per link — dropped, delivered
//! after a delay, or delivered more than once. An envelope travels as it is
//! (chitchat's envelope is neither `Clone` nor publicly encodable); a
//! duplicate is made by this crate's loopback codec, so only a duplicated
//! datagram touches a real (loopback) socket — on a thread of its own, with
//! a runtime of its own on real time, while the sender waits for the copies
//! without yielding: the copy takes no simulated time and lets no other task
//! run, so a duplicate is as deterministic as any other fate. Delays are
//! tokio timers, so on a single-threaded runtime with paused time the whole
//! exchange is deterministic for a deterministic policy; reordering comes
//! from the policy's delays (a datagram's jitter lets it overtake another).
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
use std::sync::{Arc, Mutex, OnceLock, mpsc as std_mpsc};
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
        Ok(Box::new(SimSocket { addr, network: self.clone(), inbox: rx }))
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
        if delays.len() > 1 {
            // A copy that cannot be made is a datagram lost.
            for (copy, delay) in copies(envelope, delays.len())?.into_iter().zip(delays) {
                deliver(inbox.clone(), self.addr, copy, delay);
            }
        } else if let Some(&delay) = delays.first() {
            deliver(inbox, self.addr, envelope, delay);
        }
        sent
    }
}

/// A request to the copier thread: `count` copies of an envelope.
struct CopyJob {
    envelope: ChitchatEnvelope,
    count: usize,
    reply: std_mpsc::SyncSender<anyhow::Result<Vec<ChitchatEnvelope>>>,
}

/// `count` envelopes equal to `envelope`, decoded from its bytes by the
/// copier thread. The calling thread blocks until they are made: on a simulation's
/// runtime no other task runs and no simulated time passes meanwhile.
fn copies(envelope: ChitchatEnvelope, count: usize) -> anyhow::Result<Vec<ChitchatEnvelope>> {
    static COPIER: OnceLock<std_mpsc::Sender<CopyJob>> = OnceLock::new();
    let copier = COPIER.get_or_init(|| {
        let (jobs, received) = std_mpsc::channel();
        // If the thread cannot start, every request fails below.
        let _ =
            std::thread::Builder::new().name("gossip-sim-copier".into()).spawn(move || copy_loop(received));
        jobs
    });
    let (reply, answer) = std_mpsc::sync_channel(1);
    copier
        .send(CopyJob { envelope, count, reply })
        .map_err(|_| anyhow::anyhow!("the simulated network's copier thread is gone"))?;
    answer.recv().context("the simulated network's copier thread is gone")?
}

/// The copier thread: the loopback codec on a runtime of its own.
fn copy_loop(jobs: std_mpsc::Receiver<CopyJob>) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            let why = e.to_string();
            for job in jobs {
                let _ = job.reply.send(Err(anyhow::anyhow!("no runtime for the copier: {why}")));
            }
            return;
        }
    };
    runtime.block_on(async move {
        let mut codec: Option<(Encoder, Decoder)> = None;
        // Blocking here is fine: nothing else runs on this runtime.
        while let Ok(CopyJob { envelope, count, reply }) = jobs.recv() {
            let _ = reply.send(copy_with(&mut codec, envelope, count).await);
        }
    });
}

async fn copy_with(
    codec: &mut Option<(Encoder, Decoder)>,
    envelope: ChitchatEnvelope,
    count: usize,
) -> anyhow::Result<Vec<ChitchatEnvelope>> {
    if codec.is_none() {
        *codec = Some((Encoder::open().await?, Decoder::open().await?));
    }
    let Some((encoder, decoder)) = codec else { anyhow::bail!("no codec") };
    let bytes = encoder.encode(envelope).await?.to_vec();
    let mut copies = Vec::with_capacity(count);
    for _ in 0..count {
        copies.push(decoder.decode(&bytes).await?.context("the codec did not read its own datagram")?);
    }
    Ok(copies)
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
