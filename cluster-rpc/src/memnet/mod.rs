//! An in-memory network for tests and simulation (feature `memnet`): every
//! member gets a [`Net`] of its own host address from one [`MemNetwork`],
//! and the test sets, per directed link between two hosts, a delay, a loss
//! rate, or cuts it.
//!
//! Hosts are just IP addresses (`10.0.0.1`, …); a host binds any port of its
//! own address (`0.0.0.0`, `127.0.0.1` and port 0 mean its own address and
//! a free port) and connects to `ip:port` strings; `127.0.0.1` is the host
//! itself.
//!
//! # The model
//!
//! A connection carries a byte stream, so nothing is ever lost or reordered
//! inside one; what the network does to packets shows as time:
//!
//! - **Delay**: each chunk written arrives after [`Link::delay`] plus a
//!   uniform jitter in `[0, Link::jitter]`, and never before the chunk
//!   written before it (per-connection byte order holds).
//! - **Loss** ([`Link::loss`], a probability): a connect whose first packet
//!   is lost fails at once with `ConnectionReset`; a chunk that is lost is
//!   retransmitted: it arrives [`Link::retransmit`] later, once more for each
//!   further loss (at most [`MAX_RETRANSMITS`] times).
//! - **Cut** ([`MemNetwork::cut`], one way; [`MemNetwork::partition`], both
//!   ways): bytes in a cut direction stall, those already on their way
//!   included, and flow again on [`heal`](MemNetwork::heal); connections
//!   are not reset (a caller's deadline ends its wait, as over a real
//!   partition). A new connect between hosts cut in either direction waits
//!   until the link heals, so the caller's connect deadline ends it.
//! - A connect takes one delay of the link there and one back; to an address
//!   where nobody listens it is refused (`ConnectionRefused`), like a port
//!   that sends a reset.
//!
//! Every random choice (jitter, loss) comes from one seeded generator of the
//! [`MemNetwork`], so the same seed and the same order of calls give the same
//! run. Time is tokio's (`sleep_until`): under paused time
//! (`#[tokio::test(start_paused = true)]`) a delay of a minute passes at once.
//!
//! ```
//! use std::time::Duration;
//! use cluster_rpc::memnet::{Link, MemNetwork};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> std::io::Result<()> {
//! let network = MemNetwork::new(7);
//! let (a, b) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
//! network.set_link(a, b, Link { delay: Duration::from_millis(50), ..Link::default() });
//!
//! let mut listener = network.host(b).bind("10.0.0.2:7000".parse().unwrap()).await?;
//! let started = tokio::time::Instant::now();
//! let mut out = network.host(a).connect("10.0.0.2:7000").await?;
//! out.write_all(b"hello").await?;
//! let (mut inn, peer) = listener.accept().await?;
//! assert_eq!(peer.ip(), a);
//! let mut got = [0u8; 5];
//! inn.read_exact(&mut got).await?;
//! assert_eq!(&got, b"hello");
//! assert!(started.elapsed() >= Duration::from_millis(100), "a connect, then the bytes");
//! # Ok(())
//! # }
//! ```

mod pipe;
mod rng;

use std::collections::{BTreeSet, HashMap};
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::net::{Accept, ByteStream, Listener, Net, Network};
use pipe::{MemStream, Pipe};
use rng::Rng;

/// The most times one chunk is retransmitted (so a loss of 1.0 delays each
/// chunk by `MAX_RETRANSMITS` × [`Link::retransmit`] instead of forever).
pub const MAX_RETRANSMITS: u32 = 8;
/// Connections waiting to be accepted by one listener; past it connects are
/// refused.
const BACKLOG: usize = 1024;
/// The first port given for port 0.
const FIRST_EPHEMERAL: u16 = 49152;

/// What one direction of a link between two hosts does to packets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// The one-way delay of every chunk.
    pub delay: Duration,
    /// Up to this much more, uniformly drawn per chunk.
    pub jitter: Duration,
    /// The probability that a packet is lost, in `[0, 1]`.
    pub loss: f64,
    /// How much later a lost chunk arrives (its retransmission).
    pub retransmit: Duration,
}

impl Default for Link {
    /// No delay, no loss; a lost chunk would come 200 ms later (TCP's
    /// smallest retransmission timeout).
    fn default() -> Self {
        Link {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: 0.0,
            retransmit: Duration::from_millis(200),
        }
    }
}

/// An in-memory network shared by the hosts of a test. Cheap to clone:
/// clones are the same network.
#[derive(Clone)]
pub struct MemNetwork {
    world: Arc<Mutex<World>>,
}

impl std::fmt::Debug for MemNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let world = lock(&self.world);
        f.debug_struct("MemNetwork")
            .field("hosts", &world.hosts)
            .field("cut", &world.cut)
            .field("listeners", &world.listeners.len())
            .finish_non_exhaustive()
    }
}

impl MemNetwork {
    /// A network where every link is [`Link::default`], its random choices
    /// drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        let world = World {
            rng: Rng::new(seed),
            default_link: Link::default(),
            links: HashMap::new(),
            cut: BTreeSet::new(),
            hosts: BTreeSet::new(),
            listeners: HashMap::new(),
            next_port: FIRST_EPHEMERAL,
            next_id: 0,
            stalled: HashMap::new(),
        };
        MemNetwork { world: Arc::new(Mutex::new(world)) }
    }

    /// The network as host `ip` sees it: its connects come from `ip`, it
    /// binds ports of `ip`. Hand it to the RPC layer
    /// ([`Settings::network`](crate::Settings::network),
    /// [`ClientConfig::network`](crate::ClientConfig::network)).
    pub fn host(&self, ip: IpAddr) -> Net {
        lock(&self.world).hosts.insert(ip);
        Net::new(MemHost { world: self.world.clone(), ip })
    }

    /// Sets what the link from `from` to `to` does (one direction).
    pub fn set_link(&self, from: IpAddr, to: IpAddr, link: Link) {
        self.change(|w| {
            w.links.insert((from, to), link);
        });
    }

    /// Sets what every link without a setting of its own does.
    pub fn set_default_link(&self, link: Link) {
        self.change(|w| w.default_link = link);
    }

    /// Cuts the link from `from` to `to`, one way: bytes from `from` to `to`
    /// stall, the other way they flow.
    pub fn cut(&self, from: IpAddr, to: IpAddr) {
        self.change(|w| {
            w.cut.insert((from, to));
        });
    }

    /// Cuts both ways between `a` and `b`.
    pub fn partition(&self, a: IpAddr, b: IpAddr) {
        self.change(|w| {
            w.cut.insert((a, b));
            w.cut.insert((b, a));
        });
    }

    /// Cuts both ways between `host` and every other host of this network.
    pub fn isolate(&self, host: IpAddr) {
        self.change(|w| {
            let others: Vec<IpAddr> = w.hosts.iter().copied().filter(|h| *h != host).collect();
            for other in others {
                w.cut.insert((host, other));
                w.cut.insert((other, host));
            }
        });
    }

    /// Heals both ways between `a` and `b`: stalled bytes flow again.
    pub fn heal(&self, a: IpAddr, b: IpAddr) {
        self.change(|w| {
            w.cut.remove(&(a, b));
            w.cut.remove(&(b, a));
        });
    }

    /// Heals every cut.
    pub fn heal_all(&self) {
        self.change(|w| w.cut.clear());
    }

    /// True when bytes from `from` to `to` stall.
    pub fn is_cut(&self, from: IpAddr, to: IpAddr) -> bool {
        lock(&self.world).is_cut(from, to)
    }

    /// Changes the links and wakes whoever waits on one.
    fn change(&self, f: impl FnOnce(&mut World)) {
        let woken: Vec<Waker> = {
            let mut world = lock(&self.world);
            f(&mut world);
            world.stalled.drain().map(|(_, waker)| waker).collect()
        };
        // Each checks its link again.
        for waker in woken {
            waker.wake();
        }
    }
}

fn lock(world: &Mutex<World>) -> MutexGuard<'_, World> {
    world.lock().unwrap_or_else(|e| e.into_inner())
}

/// The state of a network: links, listeners and the generator.
struct World {
    rng: Rng,
    default_link: Link,
    links: HashMap<(IpAddr, IpAddr), Link>,
    cut: BTreeSet<(IpAddr, IpAddr)>,
    hosts: BTreeSet<IpAddr>,
    listeners: HashMap<SocketAddr, (u64, mpsc::Sender<(ByteStream, SocketAddr)>)>,
    next_port: u16,
    next_id: u64,
    /// Who waits for a cut link to heal (a reader, a connect), by id.
    stalled: HashMap<u64, Waker>,
}

impl World {
    fn link(&self, from: IpAddr, to: IpAddr) -> Link {
        self.links.get(&(from, to)).copied().unwrap_or(self.default_link)
    }

    fn is_cut(&self, from: IpAddr, to: IpAddr) -> bool {
        from != to && self.cut.contains(&(from, to))
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// True when `from` to `to` is cut: then `waker` is woken at the next
    /// change of the links.
    fn stall(&mut self, from: IpAddr, to: IpAddr, id: u64, waker: &Waker) -> bool {
        if !self.is_cut(from, to) {
            return false;
        }
        self.stalled.insert(id, waker.clone());
        true
    }

    fn forget(&mut self, id: u64) {
        self.stalled.remove(&id);
    }

    /// When a chunk written now from `from` to `to` arrives, after the one
    /// that arrives at `last`.
    fn arrival(&mut self, from: IpAddr, to: IpAddr, last: Option<Instant>) -> Instant {
        let link = self.link(from, to);
        let mut at = Instant::now() + link.delay + self.rng.up_to(link.jitter);
        let mut retransmits = 0;
        while retransmits < MAX_RETRANSMITS && self.rng.chance(link.loss) {
            at += link.retransmit;
            retransmits += 1;
        }
        last.map_or(at, |last| at.max(last))
    }

    fn free_port(&mut self, ip: IpAddr) -> io::Result<u16> {
        for _ in FIRST_EPHEMERAL..=u16::MAX {
            let port = self.next_port;
            self.next_port = if port == u16::MAX { FIRST_EPHEMERAL } else { port + 1 };
            if !self.listeners.contains_key(&SocketAddr::new(ip, port)) {
                return Ok(port);
            }
        }
        Err(io::Error::new(io::ErrorKind::AddrNotAvailable, "no free port"))
    }
}

/// The network as one host sees it.
struct MemHost {
    world: Arc<Mutex<World>>,
    ip: IpAddr,
}

impl std::fmt::Debug for MemHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemHost({})", self.ip)
    }
}

impl MemHost {
    /// `addr` as this host means it: loopback and unspecified are itself.
    fn own(&self, addr: SocketAddr) -> SocketAddr {
        if addr.ip().is_loopback() || addr.ip().is_unspecified() {
            SocketAddr::new(self.ip, addr.port())
        } else {
            addr
        }
    }

    /// Waits until neither direction between this host and `to` is cut.
    async fn reachable(&self, to: IpAddr) {
        let id = lock(&self.world).id();
        let mut waiting = Waiting { world: &self.world, id };
        poll_fn(|cx: &mut Context<'_>| {
            let mut world = lock(&self.world);
            if world.stall(self.ip, to, id, cx.waker()) || world.stall(to, self.ip, id, cx.waker()) {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        waiting.done();
    }

    async fn connect(&self, addr: &str) -> io::Result<ByteStream> {
        let to: SocketAddr = addr.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{addr}: not an ip:port of the in-memory network"),
            )
        })?;
        let to = self.own(to);
        self.reachable(to.ip()).await;
        let (there, lost) = {
            let mut world = lock(&self.world);
            let link = world.link(self.ip, to.ip());
            let there = world.arrival(self.ip, to.ip(), None);
            (there, world.rng.chance(link.loss))
        };
        tokio::time::sleep_until(there).await;
        if lost {
            return Err(io::Error::new(io::ErrorKind::ConnectionReset, "connect lost (simulated loss)"));
        }
        let (mine, back) = {
            let mut world = lock(&self.world);
            let Some((_, queue)) = world.listeners.get(&to) else {
                return Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    format!("nobody listens on {to}"),
                ));
            };
            let queue = queue.clone();
            let port = world.free_port(self.ip)?;
            let (ab, ba) = (world.id(), world.id());
            let (mine, theirs) = MemStream::pair(
                &self.world,
                Pipe::new(ab, self.ip, to.ip()),
                Pipe::new(ba, to.ip(), self.ip),
            );
            if queue.try_send((Box::new(theirs), SocketAddr::new(self.ip, port))).is_err() {
                return Err(io::Error::new(io::ErrorKind::ConnectionRefused, format!("{to}: backlog full")));
            }
            (mine, world.arrival(to.ip(), self.ip, None))
        };
        tokio::time::sleep_until(back).await;
        Ok(Box::new(mine))
    }

    fn bind(&self, addr: SocketAddr) -> io::Result<Listener> {
        let addr = self.own(addr);
        if addr.ip() != self.ip {
            return Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("{addr}: host {} binds only its own address", self.ip),
            ));
        }
        let mut world = lock(&self.world);
        let port = if addr.port() == 0 { world.free_port(self.ip)? } else { addr.port() };
        let addr = SocketAddr::new(self.ip, port);
        if world.listeners.contains_key(&addr) {
            return Err(io::Error::new(io::ErrorKind::AddrInUse, format!("{addr} is in use")));
        }
        let id = world.id();
        let (tx, rx) = mpsc::channel(BACKLOG);
        world.listeners.insert(addr, (id, tx));
        Ok(Listener::new(MemListener { world: self.world.clone(), addr, id, rx }))
    }
}

impl Network for MemHost {
    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, io::Result<ByteStream>> {
        Box::pin(MemHost::connect(self, addr))
    }

    fn bind(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Listener>> {
        Box::pin(std::future::ready(MemHost::bind(self, addr)))
    }
}

/// Forgets a connect's wait when the connect ends or is dropped.
struct Waiting<'a> {
    world: &'a Mutex<World>,
    id: u64,
}

impl Waiting<'_> {
    fn done(&mut self) {
        lock(self.world).forget(self.id);
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.done();
    }
}

/// A listener of the in-memory network.
struct MemListener {
    world: Arc<Mutex<World>>,
    addr: SocketAddr,
    id: u64,
    rx: mpsc::Receiver<(ByteStream, SocketAddr)>,
}

impl Accept for MemListener {
    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<(ByteStream, SocketAddr)>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(accepted)) => Poll::Ready(Ok(accepted)),
            // The network holds the sender while this listener lives.
            Poll::Ready(None) => Poll::Ready(Err(io::Error::other("the in-memory listener was closed"))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

impl Drop for MemListener {
    fn drop(&mut self) {
        let mut world = lock(&self.world);
        if world.listeners.get(&self.addr).is_some_and(|(id, _)| *id == self.id) {
            world.listeners.remove(&self.addr);
        }
    }
}
