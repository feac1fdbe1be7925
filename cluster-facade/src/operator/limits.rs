//! [`HttpLimits`]: the bounds of the operators' HTTP port, named in the
//! config's `[limits]` table next to the RPC layer's (every field starts
//! with `http_`), so that the HTTP port can be exhausted no more than the
//! raft and service ports.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The bounds of the HTTP port.
///
/// Defaults: 256 connections, 64 from one address, 5 s for a TLS handshake,
/// 10 s for a request head, 60 s for a connection on which nothing moves,
/// 30 s for a request to be answered, bodies up to 2 MiB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpLimits {
    /// Connections served at once; a further one is closed as soon as
    /// accepted (before any TLS handshake), so it costs one descriptor for
    /// an instant.
    pub http_max_connections: usize,
    /// Connections from one IP address at once.
    pub http_max_connections_per_address: usize,
    /// How long a TLS handshake may take. Each runs on its own task with
    /// this deadline, inside a connection slot: a caller that never finishes
    /// holds its own slot, nobody else's.
    pub http_handshake_timeout: Duration,
    /// How long the member waits for a request's head (request line and
    /// headers), counted from the moment it waits for one: on a new
    /// connection, and between the requests of a kept-alive one. A caller
    /// that trickles its headers, or keeps a connection open without asking
    /// anything, is closed after this long.
    pub http_header_timeout: Duration,
    /// A connection on which no byte moves in either direction for this
    /// long is closed, unless it only waits for the next change of an open
    /// watch; a watch whose reader stops reading is closed too.
    pub http_idle_timeout: Duration,
    /// How long a request may take, its body included, until the head of
    /// its answer: past it the caller gets 408. A watch's stream is not
    /// bounded by it, only its start.
    pub http_request_timeout: Duration,
    /// The largest request body, in bytes; a larger one is answered 413.
    pub http_max_body_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            http_max_connections: 256,
            http_max_connections_per_address: 64,
            http_handshake_timeout: Duration::from_secs(5),
            http_header_timeout: Duration::from_secs(10),
            http_idle_timeout: Duration::from_secs(60),
            http_request_timeout: Duration::from_secs(30),
            http_max_body_bytes: 2 * 1024 * 1024,
        }
    }
}

impl HttpLimits {
    /// Every problem, as `(field, problem)`; empty when valid.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        for (name, value) in [
            ("http_max_connections", self.http_max_connections),
            ("http_max_connections_per_address", self.http_max_connections_per_address),
            ("http_max_body_bytes", self.http_max_body_bytes),
        ] {
            if value == 0 {
                problems.push((name, "must be at least 1".to_owned()));
            }
        }
        if self.http_max_connections_per_address > self.http_max_connections {
            problems.push((
                "http_max_connections_per_address",
                format!("must not exceed http_max_connections ({})", self.http_max_connections),
            ));
        }
        for (name, value) in [
            ("http_handshake_timeout", self.http_handshake_timeout),
            ("http_header_timeout", self.http_header_timeout),
            ("http_idle_timeout", self.http_idle_timeout),
            ("http_request_timeout", self.http_request_timeout),
        ] {
            if value.is_zero() {
                problems.push((name, "must be longer than zero".to_owned()));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_zeros_are_named() {
        assert!(HttpLimits::default().problems().is_empty());
        let bad = HttpLimits {
            http_max_connections: 0,
            http_header_timeout: Duration::ZERO,
            ..HttpLimits::default()
        };
        let names: Vec<_> = bad.problems().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["http_max_connections", "http_max_connections_per_address", "http_header_timeout"]
        );
    }
}
