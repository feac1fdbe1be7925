//! File descriptors, shared by every port of a member: a process out of
//! descriptors stops accepting on all of them at once, so the HTTP port's
//! callers could starve raft. [`fit_descriptors`] raises the soft
//! `RLIMIT_NOFILE` to the hard limit and, when the connection caps of the
//! ports would still not fit under it, lowers them so that they do.

use std::io;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

use crate::ClusterConfig;

/// Descriptors kept apart from the accepted connections: the data
/// directory's files, gossip's socket, outgoing connections to the other
/// members (raft, forwarding), the runtime's own.
pub const RESERVED_DESCRIPTORS: u64 = 256;

/// How the descriptors of a member are shared out; see [`fit_descriptors`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorBudget {
    /// The soft limit found at start.
    pub soft_before: u64,
    /// The soft limit in force now (the hard limit, when raising worked).
    pub limit: u64,
    /// Connections the HTTP port accepts (`limits.http_max_connections`).
    pub http: usize,
    /// Connections each of the raft and service ports accepts (`limits.max_connections`).
    pub rpc_per_port: usize,
    /// Descriptors kept for everything else.
    pub reserved: u64,
    /// True when the configured caps did not fit and were lowered.
    pub lowered: bool,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit, then sizes the caps of
/// `config` so that the HTTP port, the raft and service ports and
/// [`RESERVED_DESCRIPTORS`] fit under it together; logs the figures. A
/// program that runs a member calls it once at start, before
/// [`Cluster::start`](crate::ClusterOf::start).
pub fn fit_descriptors(config: &mut ClusterConfig) -> DescriptorBudget {
    let (soft_before, limit) = match raise_nofile_limit() {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!(error = %e, "could not read or raise the descriptor limit (RLIMIT_NOFILE)");
            let soft = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
            (soft, soft)
        }
    };
    let budget = fit(config, soft_before, limit);
    let (ports, http) = (budget.rpc_per_port, budget.http);
    if budget.lowered {
        tracing::warn!(
            limit,
            http_max_connections = http,
            max_connections = ports,
            reserved = budget.reserved,
            "the connection caps did not fit in the descriptor limit (RLIMIT_NOFILE): lowered them; raise the hard limit (systemd: LimitNOFILE) to keep them"
        );
    } else {
        tracing::info!(
            limit,
            soft_before,
            http_max_connections = http,
            max_connections = ports,
            reserved = budget.reserved,
            "descriptors: the ports' connection caps fit in the limit"
        );
    }
    budget
}

/// The soft and hard `RLIMIT_NOFILE` before and after raising the soft one
/// to the hard one: `(soft before, soft now)`.
fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    let soft = current.unwrap_or(u64::MAX);
    let hard = maximum.unwrap_or(u64::MAX);
    if soft >= hard {
        return Ok((soft, soft));
    }
    setrlimit(Resource::Nofile, Rlimit { current: maximum, maximum })?;
    Ok((soft, hard))
}

/// The pure part of [`fit_descriptors`]: lowers the caps of `config`
/// proportionally when `http + 2 × rpc + reserve` exceeds `limit`.
fn fit(config: &mut ClusterConfig, soft_before: u64, limit: u64) -> DescriptorBudget {
    let reserved = RESERVED_DESCRIPTORS.min(limit / 4);
    let http = config.limits.http.http_max_connections as u64;
    let rpc = config.limits.rpc.max_connections as u64;
    let wanted = http + 2 * rpc;
    let available = limit.saturating_sub(reserved);
    let lowered = wanted > available;
    if lowered {
        let scale = |n: u64| usize::try_from((n * available / wanted).max(2)).unwrap_or(usize::MAX);
        let l = &mut config.limits;
        l.http.http_max_connections = scale(http);
        l.http.http_max_connections_per_address =
            l.http.http_max_connections_per_address.min(l.http.http_max_connections);
        l.rpc.max_connections = scale(rpc);
        // Members must keep slots that clients cannot take.
        l.rpc.max_client_connections = l.rpc.max_client_connections.min(l.rpc.max_connections - 1).max(1);
        l.rpc.max_connections_per_ip = l.rpc.max_connections_per_ip.min(l.rpc.max_connections);
    }
    DescriptorBudget {
        soft_before,
        limit,
        http: config.limits.http.http_max_connections,
        rpc_per_port: config.limits.rpc.max_connections,
        reserved,
        lowered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_that_fit_are_kept() {
        let mut config = ClusterConfig::default();
        let before = config.limits.clone();
        let budget = fit(&mut config, 1024, 65_536);
        assert!(!budget.lowered);
        assert_eq!(config.limits, before);
    }

    #[test]
    fn under_a_small_limit_every_port_and_the_reserve_fit_and_the_config_stays_valid() {
        let mut config = ClusterConfig::default();
        let budget = fit(&mut config, 1024, 1024);
        assert!(budget.lowered);
        let used = budget.http as u64 + 2 * budget.rpc_per_port as u64 + budget.reserved;
        assert!(used <= 1024, "{budget:?} uses {used}");
        assert!(budget.http >= 2 && budget.rpc_per_port >= 2, "{budget:?}");
        config.validate().expect("the lowered caps are a valid configuration");
    }

    #[test]
    fn raising_leaves_the_soft_limit_at_the_hard_one() {
        let (_, now) = raise_nofile_limit().expect("getrlimit/setrlimit");
        let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
        assert_eq!(current, maximum);
        assert_eq!(current.unwrap_or(u64::MAX), now);
    }
}
