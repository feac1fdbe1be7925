//! [`Proxy`]: a user-space network between members, for delay, loss,
//! duplication and one-way cuts (`tc netem` needs the kernel's `sch_netem`,
//! which these machines lack).
//!
//! Every member gets a *front* IP where the proxy listens on its behalf, and
//! advertises it (`carbon agent --advertise-host <front IP>`, the same ports),
//! so the other members' gossip, raft and service traffic reaches it through
//! the proxy, which forwards to the member's real address:
//!
//! ```text
//!   member j (source IP s_j) ──▶ proxy at front IP f_i ──▶ member i (real address)
//!                                  link j → i: delay ± jitter, loss, duplication, cut
//! ```
//!
//! The proxy knows the sender by the source IP of a connection or datagram
//! ([`ProxiedMember::source_ip`]), so every rule is per *directed* link
//! ([`LinkRule`], set with [`Proxy::set`] and its friends, while traffic flows).
//! Traffic from anyone else (the test's clients) and of a member to itself
//! passes unshaped. Forwarded traffic leaves from the sender's front IP, so a
//! member sees each peer at a distinct address.
//!
//! - **UDP** (gossip): each datagram is cut, lost, or delivered once or twice
//!   (duplication), each copy after its own delay; jitter reorders datagrams.
//! - **TCP** (raft, service): bytes keep their order per connection. Loss is
//!   modelled as TCP shows it to the application: the chunk that was "lost"
//!   arrives late by a retransmission timeout ([`link::TCP_RETRANSMIT`],
//!   doubling per repeated loss), and the chunks behind it wait for it
//!   (head-of-line). A cut holds the bytes of that direction (the connection
//!   stalls, the sender's window fills) until the cut heals; then they arrive.
//!   New connections are accepted during a cut, but their handshake bytes
//!   stall the same way, so the member's TLS handshake times out as it would.
//!
//! Every random choice comes from generators seeded by [`ProxySpec::seed`]
//! (one per link and protocol; see [`link`]); [`Proxy::seed`] tells it, so a run
//! can be repeated with `CARBON_PROXY_SEED`.
//!
//! The proxy's tasks run on the tokio runtime that starts it, and end when it
//! is dropped.

pub mod link;
mod tcp;
#[cfg(test)]
mod tests;
mod udp;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use tokio::task::AbortHandle;

use link::Links;
pub use link::{LinkRule, LinkStats};

/// A transport protocol of a proxied port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// TCP: bytes in order per connection.
    Tcp,
    /// UDP: datagrams.
    Udp,
}

/// One proxied port of a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// TCP or UDP.
    pub protocol: Protocol,
    /// The port the proxy listens on at the member's front IP (0: any free one).
    pub front_port: u16,
    /// The member's real address, where the proxy forwards to.
    pub backend: SocketAddr,
}

/// One member behind the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxiedMember {
    /// The IP the member's own traffic comes from: it names the member as the
    /// sender on a link.
    pub source_ip: IpAddr,
    /// The IP the proxy listens at for this member (the member's advertised
    /// host), and sends the member's forwarded traffic from.
    pub front_ip: IpAddr,
    /// The member's proxied ports.
    pub routes: Vec<Route>,
}

/// How to start a [`Proxy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySpec {
    /// The members, by index.
    pub members: Vec<ProxiedMember>,
    /// The seed of every random choice; `None`: `$CARBON_PROXY_SEED` if set,
    /// else a random one.
    pub seed: Option<u64>,
}

/// The seed: the spec's, else `$CARBON_PROXY_SEED`, else a random one.
fn choose_seed(seed: Option<u64>) -> Result<u64> {
    if let Some(seed) = seed {
        return Ok(seed);
    }
    match std::env::var("CARBON_PROXY_SEED") {
        Ok(text) => text.trim().parse().with_context(|| format!("CARBON_PROXY_SEED={text:?} is not a u64")),
        Err(_) => Ok(rand::random()),
    }
}

/// The proxy's tasks: aborted all at once when the proxy is dropped.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tasks(Arc<Mutex<TaskList>>);

#[derive(Debug, Default)]
struct TaskList {
    handles: Vec<AbortHandle>,
    closed: bool,
}

impl Tasks {
    /// Spawns `task` on the current runtime; it is aborted with the others.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task).abort_handle();
        let mut list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if list.closed {
            handle.abort();
            return;
        }
        list.handles.retain(|h| !h.is_finished());
        list.handles.push(handle);
    }

    fn abort_all(&self) {
        let mut list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        list.closed = true;
        for handle in list.handles.drain(..) {
            handle.abort();
        }
    }
}

/// One route of one member as its relay (TCP or UDP) serves it.
#[derive(Debug, Clone)]
pub(crate) struct Relay {
    /// The member the route leads to.
    pub(crate) member: usize,
    /// The member's real address for the route.
    pub(crate) backend: SocketAddr,
    /// Every member's front IP: the relay's connection or socket towards the
    /// member binds to its sender's, so that the member sees each peer at a
    /// distinct address.
    pub(crate) fronts: Arc<Vec<IpAddr>>,
    /// The links' rules, fates and counts.
    pub(crate) links: Arc<Links>,
    /// Where the relay's tasks run.
    pub(crate) tasks: Tasks,
}

/// The user-space network between members; see the module documentation.
/// Dropping it ends every task and closes every socket it opened.
#[derive(Debug)]
pub struct Proxy {
    links: Arc<Links>,
    fronts: Vec<Vec<SocketAddr>>,
    tasks: Tasks,
}

impl Proxy {
    /// Binds every front port and starts forwarding, with every link clean.
    /// Must be called within a tokio runtime (its tasks run there).
    pub fn start(spec: ProxySpec) -> Result<Proxy> {
        let seed = choose_seed(spec.seed)?;
        let sources = spec.members.iter().map(|m| m.source_ip).collect();
        let links = Arc::new(Links::new(seed, sources));
        let front_ips: Arc<Vec<IpAddr>> = Arc::new(spec.members.iter().map(|m| m.front_ip).collect());
        let tasks = Tasks::default();
        // On an error, dropping `proxy` ends what was started.
        let mut proxy = Proxy { links: links.clone(), fronts: Vec::new(), tasks: tasks.clone() };
        for (i, member) in spec.members.iter().enumerate() {
            let mut addrs = Vec::new();
            for route in &member.routes {
                let at = SocketAddr::new(member.front_ip, route.front_port);
                let relay = Relay {
                    member: i,
                    backend: route.backend,
                    fronts: front_ips.clone(),
                    links: links.clone(),
                    tasks: tasks.clone(),
                };
                let bound = match route.protocol {
                    Protocol::Tcp => {
                        let listener = bind_tcp(at)?;
                        let bound = listener.local_addr()?;
                        tcp::serve(listener, relay);
                        bound
                    }
                    Protocol::Udp => {
                        let socket = bind_udp(at)?;
                        let bound = socket.local_addr()?;
                        udp::serve(socket, relay);
                        bound
                    }
                };
                addrs.push(bound);
            }
            proxy.fronts.push(addrs);
        }
        tracing::info!(seed, members = spec.members.len(), "network proxy started");
        Ok(proxy)
    }

    /// The seed of every random choice (`CARBON_PROXY_SEED` repeats them).
    pub fn seed(&self) -> u64 {
        self.links.seed()
    }

    /// The number of members.
    pub fn members(&self) -> usize {
        self.links.members()
    }

    /// Where the proxy listens for member `member`'s route number `route` (in
    /// the order of [`ProxiedMember::routes`]).
    pub fn front(&self, member: usize, route: usize) -> SocketAddr {
        self.fronts[member][route]
    }

    /// Sets the rule of the link `from` → `to` (a member's link to itself
    /// stays clean). Traffic already on its way keeps the fate it was given,
    /// except that a cut also holds TCP bytes already read.
    ///
    /// # Panics
    ///
    /// If either member is not one of the proxy's (a bug in the scenario).
    pub fn set(&self, from: usize, to: usize, rule: LinkRule) {
        self.check(from);
        self.check(to);
        self.links.set(from, to, rule);
    }

    /// Sets the rule of every link between two different members.
    pub fn set_every(&self, rule: LinkRule) {
        for from in 0..self.members() {
            for to in 0..self.members() {
                self.links.set(from, to, rule);
            }
        }
    }

    /// Sets the rule of every link into member `to` (what it receives);
    /// panics as [`Proxy::set`] does.
    pub fn set_into(&self, to: usize, rule: LinkRule) {
        self.check(to);
        for from in 0..self.members() {
            self.links.set(from, to, rule);
        }
    }

    /// Sets the rule of every link out of member `from` (what it sends);
    /// panics as [`Proxy::set`] does.
    pub fn set_out_of(&self, from: usize, rule: LinkRule) {
        self.check(from);
        for to in 0..self.members() {
            self.links.set(from, to, rule);
        }
    }

    /// Makes every link clean again: held TCP bytes flow, nothing is delayed
    /// or dropped from now on.
    pub fn heal(&self) {
        self.set_every(LinkRule::clean());
    }

    /// The rule of the link `from` → `to`.
    pub fn rule(&self, from: usize, to: usize) -> LinkRule {
        self.links.rule(Some(from), Some(to))
    }

    /// What the link `from` → `to` did so far.
    pub fn stats(&self, from: usize, to: usize) -> LinkStats {
        self.links.stats(from, to)
    }

    fn check(&self, member: usize) {
        assert!(member < self.members(), "the proxy has no member {member} (it has {})", self.members());
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

fn bind_tcp(at: SocketAddr) -> Result<tokio::net::TcpListener> {
    let listener =
        std::net::TcpListener::bind(at).with_context(|| format!("proxy: cannot listen on {at}"))?;
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener).context("proxy: needs a tokio runtime")
}

fn bind_udp(at: SocketAddr) -> Result<tokio::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(at).with_context(|| format!("proxy: cannot bind UDP {at}"))?;
    socket.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(socket).context("proxy: needs a tokio runtime")
}
