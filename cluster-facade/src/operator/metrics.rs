//! [`Metrics`]: what a member counts for Prometheus, and the text a scrape
//! of `/metrics` returns.
//!
//! Counters and histograms are fed where things happen (the store a member
//! serves, the HTTP API); the gauges of consensus and gossip are set from
//! the member's state at each scrape, so they are never stale. The transport's
//! figures (connections, refusals by reason) come from the RPC layer's
//! counters at each scrape ([`Metrics::set_rpc`]); other TCP servers can use
//! the hooks [`Metrics::connection_opened`] and [`Metrics::frame_rejected`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use super::process::ProcessMetrics;

/// Registers each `(name, help, metric)` of a table of one metric type.
pub(super) fn register_table<M: Metric + Clone>(registry: &mut Registry, table: &[(&str, &str, &M)]) {
    for (name, help, metric) in table {
        registry.register(*name, *help, (*metric).clone());
    }
}

/// Labels of a metric with one label.
type Label = Vec<(&'static str, String)>;

/// The metrics of one member. Cheap to clone: clones share the counters.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

struct Inner {
    // Behind a mutex only because encoding needs `&Registry` while the
    // metrics themselves are atomics: scrapes are rare and short.
    registry: Mutex<Registry>,
    term: Gauge,
    is_leader: Gauge,
    has_leader: Gauge,
    last_log_index: Gauge,
    committed_index: Gauge,
    applied_index: Gauge,
    apply_lag: Gauge,
    snapshot_index: Gauge,
    quorum_ack_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    voters: Gauge,
    nonvoters: Gauge,
    write_seconds: Histogram,
    read_seconds: Histogram,
    write_errors: Counter,
    forwarded: Counter,
    gossip_members: Family<Label, Gauge>,
    connections_open: Gauge,
    connections_total: Counter,
    rejected_frames: Family<Label, Counter>,
    http_requests: Family<Label, Counter>,
    http_connections_open: Gauge,
    http_connections_refused: Family<Label, Counter>,
    process: ProcessMetrics,
    build_info: Family<Label, Gauge>,
}

/// What consensus looks like at a scrape; see [`Metrics::set_consensus`].
#[derive(Debug, Clone, Default)]
pub struct ConsensusGauges {
    /// The current term.
    pub term: u64,
    /// This member leads.
    pub is_leader: bool,
    /// Some leader is known.
    pub has_leader: bool,
    /// Index of the last log entry.
    pub last_log_index: Option<u64>,
    /// Index of the last committed entry.
    pub committed_index: Option<u64>,
    /// Index of the last applied entry.
    pub applied_index: Option<u64>,
    /// Index of the newest snapshot's last entry.
    pub snapshot_index: Option<u64>,
    /// On the leader: the age of the last quorum acknowledgement.
    pub quorum_ack_age: Option<Duration>,
    /// Voters of raft.
    pub voters: usize,
    /// Nonvoters of raft.
    pub nonvoters: usize,
}

fn gauge_u64(g: &Gauge, v: Option<u64>) {
    g.set(v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX)));
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Fresh metrics: the member's under the `carbon_` prefix, the
    /// process's as `process_*`.
    pub fn new() -> Self {
        let latency = || Histogram::new(exponential_buckets(0.000_25, 2.0, 16));
        let inner = Inner {
            registry: Mutex::new(Registry::default()),
            process: ProcessMetrics::default(),
            build_info: Family::default(),
            term: Gauge::default(),
            is_leader: Gauge::default(),
            has_leader: Gauge::default(),
            last_log_index: Gauge::default(),
            committed_index: Gauge::default(),
            applied_index: Gauge::default(),
            apply_lag: Gauge::default(),
            snapshot_index: Gauge::default(),
            quorum_ack_age: Gauge::default(),
            voters: Gauge::default(),
            nonvoters: Gauge::default(),
            write_seconds: latency(),
            read_seconds: latency(),
            write_errors: Counter::default(),
            forwarded: Counter::default(),
            gossip_members: Family::default(),
            connections_open: Gauge::default(),
            connections_total: Counter::default(),
            rejected_frames: Family::default(),
            http_requests: Family::default(),
            http_connections_open: Gauge::default(),
            http_connections_refused: Family::default(),
        };
        {
            let mut root = inner.registry.lock().unwrap_or_else(|p| p.into_inner());
            inner.process.register(&mut root);
            let r = root.sub_registry_with_prefix("carbon");
            // One table per metric type: a metric is one line here and one
            // field in `Inner`.
            let gauges: [(&str, &str, &Gauge); 12] = [
                ("http_connections_open", "Connections held on the HTTP port", &inner.http_connections_open),
                (
                    "connections_open",
                    "Open TCP connections on the service and raft ports",
                    &inner.connections_open,
                ),
                ("raft_term", "The current raft term", &inner.term),
                ("raft_is_leader", "1 if this member leads", &inner.is_leader),
                ("raft_has_leader", "1 if this member knows a leader", &inner.has_leader),
                ("raft_last_log_index", "Index of the last log entry (-1: none)", &inner.last_log_index),
                (
                    "raft_committed_index",
                    "Index of the last committed entry (-1: unknown)",
                    &inner.committed_index,
                ),
                ("raft_applied_index", "Index of the last applied entry (-1: none)", &inner.applied_index),
                ("raft_apply_lag", "Committed entries not applied yet on this member", &inner.apply_lag),
                (
                    "raft_snapshot_index",
                    "Index of the last entry in the newest snapshot (-1: none)",
                    &inner.snapshot_index,
                ),
                ("raft_voters", "Voters of raft", &inner.voters),
                ("raft_nonvoters", "Nonvoters of raft", &inner.nonvoters),
            ];
            register_table(r, &gauges);
            r.register(
                "raft_quorum_ack_age_seconds",
                "On the leader: time since a quorum last acknowledged it (-1 elsewhere)",
                inner.quorum_ack_age.clone(),
            );
            let histograms: [(&str, &str, &Histogram); 2] = [
                (
                    "store_write_seconds",
                    "Time of a write served by this member, from request to answer: through its HTTP API, or its service port (as leader)",
                    &inner.write_seconds,
                ),
                (
                    "store_read_seconds",
                    "Time of a linearizable read served by this member: through its HTTP API, or its service port (as leader)",
                    &inner.read_seconds,
                ),
            ];
            register_table(r, &histograms);
            let counters: [(&str, &str, &Counter); 3] = [
                ("store_write_errors", "Writes this member's store refused or failed", &inner.write_errors),
                (
                    "forwarded_requests",
                    "Writes and consistent reads this member forwarded to the leader",
                    &inner.forwarded,
                ),
                (
                    "connections",
                    "TCP connections accepted on the service and raft ports",
                    &inner.connections_total,
                ),
            ];
            register_table(r, &counters);
            r.register("gossip_members", "Members by gossip liveness", inner.gossip_members.clone());
            let families: [(&str, &str, &Family<Label, Counter>); 3] = [
                ("rejected_frames", "Frames refused, by reason", &inner.rejected_frames),
                ("http_requests", "HTTP API requests, by route", &inner.http_requests),
                (
                    "http_connections_refused",
                    "HTTP connections closed as accepted, by the cap reached (total, per_address)",
                    &inner.http_connections_refused,
                ),
            ];
            register_table(r, &families);
            inner
                .build_info
                .get_or_create(&vec![
                    ("version", env!("CARGO_PKG_VERSION").to_owned()),
                    ("git", env!("CARBON_GIT_HASH").to_owned()),
                ])
                .set(1);
            r.register(
                "build_info",
                "The version and git commit of this member's build (the value is always 1)",
                inner.build_info.clone(),
            );
        }
        Metrics { inner: Arc::new(inner) }
    }

    /// Sets the consensus gauges.
    pub fn set_consensus(&self, c: &ConsensusGauges) {
        let i = &self.inner;
        i.term.set(i64::try_from(c.term).unwrap_or(i64::MAX));
        i.is_leader.set(i64::from(c.is_leader));
        i.has_leader.set(i64::from(c.has_leader));
        gauge_u64(&i.last_log_index, c.last_log_index);
        gauge_u64(&i.committed_index, c.committed_index);
        gauge_u64(&i.applied_index, c.applied_index);
        let lag = match (c.committed_index, c.applied_index) {
            (Some(committed), applied) => committed.saturating_sub(applied.unwrap_or(0)),
            (None, _) => 0,
        };
        gauge_u64(&i.apply_lag, Some(lag));
        gauge_u64(&i.snapshot_index, c.snapshot_index);
        i.quorum_ack_age.set(c.quorum_ack_age.map_or(-1.0, |d| d.as_secs_f64()));
        i.voters.set(i64::try_from(c.voters).unwrap_or(i64::MAX));
        i.nonvoters.set(i64::try_from(c.nonvoters).unwrap_or(i64::MAX));
    }

    /// Sets how many members gossip reports in each state (`alive`, …).
    pub fn set_gossip_members(&self, by_state: &[(&'static str, usize)]) {
        for (state, n) in by_state {
            let g = self.inner.gossip_members.get_or_create(&vec![("state", (*state).to_owned())]);
            g.set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }

    /// A write served by this member (its HTTP API, or its service as
    /// leader), and how long it took; a failed one counts as an error too.
    pub fn observe_write(&self, took: Duration, ok: bool) {
        self.inner.write_seconds.observe(took.as_secs_f64());
        if !ok {
            self.inner.write_errors.inc();
        }
    }

    /// A linearizable read served by this member, and how long it took.
    pub fn observe_read(&self, took: Duration) {
        self.inner.read_seconds.observe(took.as_secs_f64());
    }

    /// Sets the count of requests this member forwarded to the leader.
    pub fn set_forwarded(&self, total: u64) {
        raise_to(&self.inner.forwarded, total);
    }

    /// Brings the transport's figures up to the RPC layer's counters: open
    /// connections, connections accepted, refusals by reason.
    pub fn set_rpc(&self, stats: &cluster_rpc::RpcStats) {
        self.inner.connections_open.set(i64::try_from(stats.open).unwrap_or(i64::MAX));
        raise_to(&self.inner.connections_total, stats.accepted);
        for (reason, &count) in &stats.refused {
            raise_to(
                &self.inner.rejected_frames.get_or_create(&vec![("reason", (*reason).to_owned())]),
                count,
            );
        }
    }

    /// Hook for the transport: a connection was accepted.
    pub fn connection_opened(&self) {
        self.inner.connections_total.inc();
        self.inner.connections_open.inc();
    }

    /// Hook for the transport: a connection ended.
    pub fn connection_closed(&self) {
        self.inner.connections_open.dec();
    }

    /// Hook for the transport: a frame was refused, for `reason` (a short,
    /// fixed word such as `too_large`, `bad_magic`, `cluster_mismatch`).
    pub fn frame_rejected(&self, reason: &'static str) {
        self.inner.rejected_frames.get_or_create(&vec![("reason", reason.to_owned())]).inc();
    }

    /// An HTTP API request on `route`.
    pub(crate) fn http_request(&self, route: &'static str) {
        self.inner.http_requests.get_or_create(&vec![("route", route.to_owned())]).inc();
    }

    /// An HTTP connection took a slot (`+1`) or gave it back (`-1`).
    pub(crate) fn http_connections(&self, delta: i64) {
        self.inner.http_connections_open.inc_by(delta);
    }

    /// An HTTP connection was closed as accepted: the `cap` it met (`total`
    /// or `per_address`).
    pub(crate) fn http_connection_refused(&self, cap: &'static str) {
        self.inner.http_connections_refused.get_or_create(&vec![("cap", cap.to_owned())]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        self.inner.process.update();
        let mut out = String::new();
        let registry = self.inner.registry.lock().unwrap_or_else(|p| p.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

/// Brings a counter up to a total counted elsewhere (counters only grow).
fn raise_to(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transport_figures_follow_the_rpc_counters() {
        let m = Metrics::new();
        let mut stats = cluster_rpc::RpcStats { accepted: 5, open: 3, ..Default::default() };
        stats.refused.insert("frame over the limit", 2);
        m.set_rpc(&stats);
        stats.refused.insert("frame over the limit", 7);
        m.set_rpc(&stats);
        let text = m.encode();
        let line = |prefix: &str| text.lines().find(|l| l.starts_with(prefix)).map(str::to_owned);
        assert!(
            line("carbon_connections_open ").or(line("connections_open ")).is_some_and(|l| l.ends_with(" 3")),
            "{text}"
        );
        let refused =
            text.lines().find(|l| l.contains("frame over the limit")).expect("the reason is a label");
        assert!(refused.ends_with(" 7"), "{refused}");
    }

    #[test]
    fn process_and_build_figures_are_scraped() {
        let text = Metrics::new().encode();
        let value = |name: &str| -> f64 {
            let line = text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name}: {text}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        for name in [
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            assert!(value(name) > 0.0, "{name}: {text}");
        }
        assert!(value("process_cpu_seconds_total") >= 0.0);
        let build = text.lines().find(|l| l.starts_with("carbon_build_info{")).expect(&text);
        assert!(build.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))), "{build}");
        assert!(build.contains("git=\"") && build.ends_with(" 1"), "{build}");
    }

    #[test]
    fn encodes_what_was_set() {
        let m = Metrics::new();
        m.set_consensus(&ConsensusGauges {
            term: 3,
            committed_index: Some(10),
            applied_index: Some(7),
            ..Default::default()
        });
        m.observe_write(Duration::from_millis(2), true);
        m.frame_rejected("too_large");
        let text = m.encode();
        assert!(text.contains("carbon_raft_term 3"), "{text}");
        assert!(text.contains("carbon_raft_apply_lag 3"), "{text}");
        assert!(text.contains("carbon_store_write_seconds_count 1"), "{text}");
        assert!(text.contains("carbon_rejected_frames_total{reason=\"too_large\"} 1"), "{text}");
    }
}
