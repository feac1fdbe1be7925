//! The UDP side of the proxy (gossip): a relay per member, like a NAT.
//!
//! The member's front socket receives every datagram sent to the member. The
//! sender is known by its address's IP; for each sender address the relay keeps
//! an upstream socket (bound to the sender's own front IP, so that the member
//! sees each peer at a distinct address) that forwards to the member's real
//! port, and whose answers go back out of the front socket to the sender. A
//! datagram's fate (cut, lost, delivered once or twice, each copy after its
//! own delay) is drawn when it arrives; delivery is scheduled per socket, so
//! that jitter reorders datagrams as a network would.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::link::{Fate, Links, Party};
use super::{Relay, Tasks};

/// The largest datagram relayed (the IPv4 UDP maximum).
const MAX_DATAGRAM: usize = 65_507;
/// Datagrams waiting for their delivery time on one socket; beyond, new ones
/// are dropped, as a router's full queue would.
const MAX_QUEUED: usize = 4_096;
/// Sender addresses one member's relay keeps an upstream socket for.
const MAX_SENDERS: usize = 1_024;

/// One datagram scheduled on a socket.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Scheduled {
    at: Instant,
    seq: u64,
    to: SocketAddr,
    bytes: Vec<u8>,
}

/// Sends datagrams out of one socket, each at its time.
#[derive(Debug, Clone)]
struct Outlet {
    tx: mpsc::UnboundedSender<(Instant, SocketAddr, Vec<u8>)>,
}

impl Outlet {
    fn new(socket: Arc<UdpSocket>, tasks: &Tasks) -> Outlet {
        let (tx, rx) = mpsc::unbounded_channel();
        tasks.spawn(deliver(socket, rx));
        Outlet { tx }
    }

    /// Schedules `bytes` to `to` after the delays of its fate (none if dropped).
    fn send(&self, fate: Fate, to: SocketAddr, bytes: Vec<u8>) {
        if let Fate::Deliver(delays) = fate {
            let now = Instant::now();
            for delay in delays {
                let _ = self.tx.send((now + delay, to, bytes.clone()));
            }
        }
    }
}

/// Delivers scheduled datagrams in the order of their times until every
/// sender of the channel is gone and nothing is left.
async fn deliver(socket: Arc<UdpSocket>, mut rx: mpsc::UnboundedReceiver<(Instant, SocketAddr, Vec<u8>)>) {
    let mut queue: BinaryHeap<Reverse<Scheduled>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut open = true;
    loop {
        let next = queue.peek().map(|Reverse(s)| s.at);
        tokio::select! {
            item = rx.recv(), if open => match item {
                Some((at, to, bytes)) if queue.len() < MAX_QUEUED => {
                    seq += 1;
                    queue.push(Reverse(Scheduled { at, seq, to, bytes }));
                }
                Some(_) => {}
                None => open = false,
            },
            () = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                let now = Instant::now();
                while queue.peek().is_some_and(|Reverse(s)| s.at <= now) {
                    if let Some(Reverse(s)) = queue.pop() {
                        // A member that is down refuses; the datagram is lost, as on a network.
                        let _ = socket.send_to(&s.bytes, s.to).await;
                    }
                }
            }
            else => return,
        }
    }
}

/// A receive error on UDP is transient (an ICMP error reported late); the
/// pause keeps a lasting one from spinning.
async fn pause_after_error() {
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
}

/// The unspecified address of `ip`'s family.
fn unspecified(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// Relays datagrams sent to the relay's member at `front` to its real
/// address (an upstream socket binds to its sender's front IP).
pub(crate) fn serve(front: UdpSocket, relay: Relay) {
    let Relay { member, backend, fronts, links, tasks } = relay;
    let spawner = tasks.clone();
    tasks.spawn(async move {
        let front = Arc::new(front);
        let back_out = Outlet::new(front.clone(), &spawner);
        let mut upstreams: HashMap<SocketAddr, Outlet> = HashMap::new();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let Ok((n, sender)) = front.recv_from(&mut buf).await else {
                pause_after_error().await;
                continue;
            };
            let from = links.member_of(sender.ip());
            if !upstreams.contains_key(&sender) {
                if upstreams.len() >= MAX_SENDERS {
                    continue;
                }
                let ip = from.map_or_else(|| unspecified(backend.ip()), |j| fronts[j]);
                let Ok(socket) = UdpSocket::bind((ip, 0)).await else { continue };
                let socket = Arc::new(socket);
                spawner.spawn(answers(
                    socket.clone(),
                    (Some(member), backend),
                    (from, sender),
                    back_out.clone(),
                    links.clone(),
                ));
                upstreams.insert(sender, Outlet::new(socket, &spawner));
            }
            if let Some(up) = upstreams.get(&sender) {
                up.send(links.datagram(from, Some(member)), backend, buf[..n].to_vec());
            }
        }
    });
}

/// Relays the member's answers on one upstream socket back to the sender,
/// out of the member's front socket.
async fn answers(
    socket: Arc<UdpSocket>,
    (member, backend): (Party, SocketAddr),
    (to, sender): (Party, SocketAddr),
    out: Outlet,
    links: Arc<Links>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let Ok((n, source)) = socket.recv_from(&mut buf).await else {
            pause_after_error().await;
            continue;
        };
        if source == backend {
            out.send(links.datagram(member, to), sender, buf[..n].to_vec());
        }
    }
}
