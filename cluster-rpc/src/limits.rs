//! [`Limits`]: every bound of the RPC layer in one config, so that no server
//! of the project can be exhausted from outside and none drifts from another.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The largest frame limit [`Limits::validate`] accepts.
pub const MAX_FRAME_LEN_CEILING: usize = 64 * 1024 * 1024;

/// The bounds of one server (and of the clients that talk to it).
///
/// Defaults suit a member: 1,024 connections in total of which at most 768
/// may hold client certificates (the rest stay free for members' forwarding
/// and raft), 256 per peer address (over plain TCP the per-address cap is
/// what keeps members' own traffic served), 64 requests in flight per
/// connection, frames up to 16 MiB; at most 4 MiB of answers queued per
/// connection and 32 MiB per server, at most 32 MiB of frames over 64 KiB
/// being read at once per server. With these, none of the measured attacks
/// (unread pipelines of large answers, unread watches, partial giant frames)
/// grows a member by more than 128 MiB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Connections served at once; a further one is closed as soon as accepted.
    pub max_connections: usize,
    /// Connections of callers with a client certificate (known after the TLS
    /// handshake). Below `max_connections`, so clients can never take the
    /// slots members need.
    pub max_client_connections: usize,
    /// Connections from one peer IP address.
    pub max_connections_per_ip: usize,
    /// Connections not authenticated yet: in their TLS handshake, or over
    /// plain TCP before their first valid frame. They hold no regular place
    /// (the caps above count authenticated connections only, and callers
    /// with a member certificate have `max_connections` of their own); when
    /// all are taken, a new connection takes the place of the oldest, so
    /// connections that never authenticate cannot keep members out.
    pub max_handshakes: usize,
    /// Connections not authenticated yet from one peer IP address; a
    /// further one is closed as soon as accepted.
    pub max_handshakes_per_ip: usize,
    /// Requests (and open streams) of one connection served at once; when
    /// reached the server stops reading that connection until one ends
    /// (backpressure through TCP, no queue or task beyond this bound).
    pub max_in_flight_per_connection: usize,
    /// The largest frame sent or accepted, in bytes (at most 64 MiB).
    pub max_frame_len: usize,
    /// Bytes of encoded answers one connection may have queued and not yet
    /// written to its socket. When reached, the server produces no further
    /// answer for that connection (and, once its requests in flight are
    /// used up, stops reading it) until the peer reads. One answer larger
    /// than this is still queued alone, so every answer can be sent.
    pub max_queued_bytes_per_connection: usize,
    /// Bytes of encoded answers all connections of one server (one port)
    /// may have queued at once. An answer over `large_frame_bytes` that does
    /// not fit is refused with a typed "retry later" error (a stream's item
    /// ends the stream with `Lagged`); smaller answers wait for room.
    /// Callers with a member certificate are not counted.
    pub max_queued_bytes: usize,
    /// Frames longer than this are large: they are read only while the
    /// server's `max_partial_frame_bytes` allows. Smaller frames are never
    /// held back by it.
    pub large_frame_bytes: usize,
    /// Bytes of large frames that one server reads at once. A connection
    /// whose large frame does not fit waits (within `frame_timeout`, then it
    /// is closed); callers with a member certificate are not counted.
    pub max_partial_frame_bytes: usize,
    /// How long a connection may stay unauthenticated: the TLS handshake,
    /// or over plain TCP the wait for its first valid frame.
    pub handshake_timeout: Duration,
    /// A connection with no request in flight and no byte received for this
    /// long is closed.
    pub idle_timeout: Duration,
    /// A connection whose peer takes no byte of its answers for this long is
    /// closed, and the bytes its unsent answers held in `max_queued_bytes`
    /// are free again. A slow reader that makes progress is never cut.
    pub write_stall_timeout: Duration,
    /// A frame that started must be complete within this time: a peer that
    /// trickles bytes is closed.
    pub frame_timeout: Duration,
    /// How long the handler may take for one answer before the caller gets
    /// a timeout error (streams are not bounded).
    pub request_timeout: Duration,
    /// How long a client may take to connect (TCP, and TLS handshake).
    pub connect_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_client_connections: 768,
            max_connections_per_ip: 256,
            max_handshakes: 256,
            max_handshakes_per_ip: 64,
            max_in_flight_per_connection: 64,
            max_frame_len: cluster_core::wire::DEFAULT_MAX_FRAME_LEN,
            max_queued_bytes_per_connection: 4 << 20,
            max_queued_bytes: 32 << 20,
            large_frame_bytes: 64 << 10,
            max_partial_frame_bytes: 32 << 20,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(120),
            write_stall_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
        }
    }
}

impl Limits {
    /// Every problem of this config, each with its field's name; empty when valid.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut at_least_one = |name: &str, value: usize| {
            if value == 0 {
                problems.push(format!("{name}: must be at least 1"));
            }
        };
        at_least_one("max_connections", self.max_connections);
        at_least_one("max_client_connections", self.max_client_connections);
        at_least_one("max_connections_per_ip", self.max_connections_per_ip);
        at_least_one("max_in_flight_per_connection", self.max_in_flight_per_connection);
        at_least_one("max_handshakes", self.max_handshakes);
        at_least_one("max_handshakes_per_ip", self.max_handshakes_per_ip);
        at_least_one("max_queued_bytes_per_connection", self.max_queued_bytes_per_connection);
        at_least_one("max_queued_bytes", self.max_queued_bytes);
        at_least_one("large_frame_bytes", self.large_frame_bytes);
        at_least_one("max_partial_frame_bytes", self.max_partial_frame_bytes);
        for (name, value) in [
            ("max_queued_bytes_per_connection", self.max_queued_bytes_per_connection),
            ("max_queued_bytes", self.max_queued_bytes),
            ("max_partial_frame_bytes", self.max_partial_frame_bytes),
        ] {
            // Counted by a semaphore of u32 permits.
            if value > u32::MAX as usize >> 1 {
                problems.push(format!("{name}: {value} bytes is over 2 GiB"));
            }
        }
        if self.max_partial_frame_bytes < self.large_frame_bytes {
            problems.push(format!(
                "max_partial_frame_bytes: {} must be at least large_frame_bytes ({})",
                self.max_partial_frame_bytes, self.large_frame_bytes
            ));
        }
        if self.max_client_connections >= self.max_connections && self.max_connections > 1 {
            problems.push(format!(
                "max_client_connections: {} must be below max_connections ({}) so members always find a slot",
                self.max_client_connections, self.max_connections
            ));
        }
        if self.max_frame_len < 1024 || self.max_frame_len > MAX_FRAME_LEN_CEILING {
            problems.push(format!(
                "max_frame_len: {} bytes is outside 1 KiB..={} MiB",
                self.max_frame_len,
                MAX_FRAME_LEN_CEILING >> 20
            ));
        }
        for (name, value) in [
            ("handshake_timeout", self.handshake_timeout),
            ("idle_timeout", self.idle_timeout),
            ("write_stall_timeout", self.write_stall_timeout),
            ("frame_timeout", self.frame_timeout),
            ("request_timeout", self.request_timeout),
            ("connect_timeout", self.connect_timeout),
        ] {
            if value.is_zero() {
                problems.push(format!("{name}: must be longer than zero"));
            }
        }
        problems
    }

    /// `Ok` when valid, else every problem (see [`problems`](Self::problems)).
    pub fn validate(&self) -> Result<(), crate::RpcError> {
        let problems = self.problems();
        if problems.is_empty() { Ok(()) } else { Err(crate::RpcError::Config(problems.join("; "))) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Limits::default().problems(), Vec::<String>::new());
    }

    #[test]
    fn every_problem_is_named() {
        let limits = Limits {
            max_connections: 10,
            max_client_connections: 10,
            max_in_flight_per_connection: 0,
            max_frame_len: 65 << 20,
            frame_timeout: Duration::ZERO,
            max_handshakes: 0,
            max_queued_bytes: 3 << 30,
            large_frame_bytes: 1 << 20,
            max_partial_frame_bytes: 1 << 10,
            ..Limits::default()
        };
        let problems = limits.problems().join("\n");
        for field in [
            "max_client_connections",
            "max_in_flight_per_connection",
            "max_frame_len",
            "frame_timeout",
            "max_handshakes",
            "max_queued_bytes",
            "max_partial_frame_bytes",
        ] {
            assert!(problems.contains(field), "{field} missing in {problems}");
        }
        assert!(limits.validate().is_err());
    }

    #[test]
    fn loads_from_partial_toml_like_json() {
        let limits: Limits = serde_json::from_str(r#"{"max_connections": 10, "max_client_connections": 5}"#)
            .expect("partial config");
        assert_eq!((limits.max_connections, limits.max_frame_len), (10, Limits::default().max_frame_len));
    }
}
