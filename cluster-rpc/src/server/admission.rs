//! The places connections hold on a server: a handshake's place until a
//! connection is authenticated (the oldest giving way when all are taken),
//! then a regular one, counted in total, per peer address, for clients, and
//! in a pool of members' own.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::Role;

/// The connections held now, by kind and by peer address.
#[derive(Default)]
pub(super) struct Admission {
    /// Authenticated connections of outsiders: callers with a client
    /// certificate, and every caller over plain TCP.
    total: usize,
    clients: usize,
    /// Connections of callers with a member certificate: a pool of their
    /// own, so that outsiders can never take the places members need.
    members: usize,
    per_ip: HashMap<IpAddr, usize>,
    /// Connections not authenticated yet, oldest first, and who may close them.
    handshakes: BTreeMap<u64, (IpAddr, CancellationToken)>,
    handshakes_per_ip: HashMap<IpAddr, usize>,
    next_handshake: u64,
}

fn release(per_ip: &mut HashMap<IpAddr, usize>, ip: IpAddr) {
    if let Some(n) = per_ip.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            per_ip.remove(&ip);
        }
    }
}

/// A connection's place while it is not authenticated: the TLS handshake,
/// or over plain TCP until its first valid frame. Given back when dropped.
pub(super) struct Handshake<H> {
    shared: Arc<Shared<H>>,
    id: u64,
    /// Cancelled when a newer connection took this place.
    pub(super) evicted: CancellationToken,
}

impl<H> Handshake<H> {
    /// A place for a connection from `ip`. When all are taken, the oldest
    /// handshake gives its place up: connections that never authenticate
    /// cannot keep a member's new connection out, they only shorten each
    /// other's time.
    pub(super) fn admit(shared: &Arc<Shared<H>>, ip: IpAddr) -> Result<Self, &'static str> {
        let limits = &shared.config.limits;
        let mut a = shared.admission();
        if a.handshakes_per_ip.get(&ip).copied().unwrap_or(0) >= limits.max_handshakes_per_ip {
            return Err("too many handshakes from one address");
        }
        if a.handshakes.len() >= limits.max_handshakes
            && let Some((_, (old_ip, evicted))) = a.handshakes.pop_first()
        {
            evicted.cancel();
            release(&mut a.handshakes_per_ip, old_ip);
        }
        let id = a.next_handshake;
        a.next_handshake += 1;
        let evicted = CancellationToken::new();
        a.handshakes.insert(id, (ip, evicted.clone()));
        *a.handshakes_per_ip.entry(ip).or_default() += 1;
        Ok(Handshake { shared: shared.clone(), id, evicted })
    }
}

impl<H> Drop for Handshake<H> {
    fn drop(&mut self) {
        let mut a = self.shared.admission();
        if let Some((ip, _)) = a.handshakes.remove(&self.id) {
            release(&mut a.handshakes_per_ip, ip);
        }
    }
}

/// Who holds an authenticated connection's place.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Member,
    Client,
    /// No certificate: plain TCP.
    Anyone,
}

/// An authenticated connection's place in [`Admission`]; given back when dropped.
pub(super) struct Slot<H> {
    shared: Arc<Shared<H>>,
    ip: IpAddr,
    kind: Kind,
}

impl<H> Slot<H> {
    pub(super) fn admit(
        shared: &Arc<Shared<H>>,
        ip: IpAddr,
        role: Option<Role>,
    ) -> Result<Self, &'static str> {
        let limits = &shared.config.limits;
        let kind = match role {
            Some(Role::Member) => Kind::Member,
            Some(Role::Client) => Kind::Client,
            None => Kind::Anyone,
        };
        let mut a = shared.admission();
        if kind == Kind::Member {
            if a.members >= limits.max_connections {
                return Err("too many member connections");
            }
            a.members += 1;
        } else {
            if a.total >= limits.max_connections {
                return Err("too many connections");
            }
            if a.per_ip.get(&ip).copied().unwrap_or(0) >= limits.max_connections_per_ip {
                return Err("too many connections from one address");
            }
            if kind == Kind::Client && a.clients >= limits.max_client_connections {
                return Err("too many client connections");
            }
            a.total += 1;
            *a.per_ip.entry(ip).or_default() += 1;
            if kind == Kind::Client {
                a.clients += 1;
            }
        }
        crate::stats::connection_opened();
        Ok(Slot { shared: shared.clone(), ip, kind })
    }
}

impl<H> Drop for Slot<H> {
    fn drop(&mut self) {
        crate::stats::connection_closed();
        let mut a = self.shared.admission();
        match self.kind {
            Kind::Member => a.members -= 1,
            kind => {
                a.total -= 1;
                if kind == Kind::Client {
                    a.clients -= 1;
                }
                release(&mut a.per_ip, self.ip);
            }
        }
    }
}

/// Where a connection stands when its requests start being read.
pub(super) enum Entry<H> {
    /// Authenticated and holding a place.
    Admitted(Slot<H>),
    /// Over plain TCP: it holds a handshake's place until its first valid
    /// frame, which must arrive before the deadline.
    FirstFrame(Handshake<H>, Instant),
    /// Only a refusal is sent.
    Refused,
}

/// Ends when an unauthenticated connection must go: evicted, or past its
/// deadline. Never ends for an authenticated one.
pub(super) async fn unauthenticated_end<H>(pending: Option<&(Handshake<H>, Instant)>) {
    match pending {
        Some((handshake, deadline)) => tokio::select! {
            _ = handshake.evicted.cancelled() => {}
            _ = tokio::time::sleep_until(*deadline) => {}
        },
        None => std::future::pending().await,
    }
}
