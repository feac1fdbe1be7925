//! The `process_*` metrics every Prometheus user expects (the names of the
//! official clients' process collectors), read from `/proc/self` at each
//! scrape. Elsewhere than on Linux they stay at zero, except the
//! descriptor limit.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The process's figures.
#[derive(Default)]
pub(super) struct ProcessMetrics {
    cpu_seconds: Counter<f64, AtomicU64>,
    resident_memory_bytes: Gauge,
    virtual_memory_bytes: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
    start_time_seconds: Gauge<f64, AtomicU64>,
}

impl ProcessMetrics {
    /// Registers every figure on `registry`, under its standard name.
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "process_cpu_seconds",
            "User and system CPU time of the process, in seconds",
            self.cpu_seconds.clone(),
        );
        registry.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds",
            self.start_time_seconds.clone(),
        );
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory of the process, in bytes",
                &self.resident_memory_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory of the process, in bytes",
                &self.virtual_memory_bytes,
            ),
            ("process_open_fds", "Open file descriptors of the process", &self.open_fds),
            (
                "process_max_fds",
                "The process's limit of open file descriptors (soft RLIMIT_NOFILE)",
                &self.max_fds,
            ),
        ];
        super::metrics::register_table(registry, &gauges);
    }

    /// Reads the figures now.
    pub(super) fn update(&self) {
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        self.max_fds.set(limit.map_or(i64::MAX, |l| i64::try_from(l).unwrap_or(i64::MAX)));
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // The directory's own descriptor is one of the entries.
            self.open_fds.set(i64::try_from(dir.count()).unwrap_or(i64::MAX).saturating_sub(1));
        }
        let page = i64::try_from(rustix::param::page_size()).unwrap_or(4096);
        if let Some((size, resident)) = std::fs::read_to_string("/proc/self/statm").ok().and_then(|s| {
            let mut fields = s.split_whitespace().map(|f| f.parse::<i64>().ok());
            Some((fields.next()??, fields.next()??))
        }) {
            self.virtual_memory_bytes.set(size.saturating_mul(page));
            self.resident_memory_bytes.set(resident.saturating_mul(page));
        }
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        if let Some(stat) = std::fs::read_to_string("/proc/self/stat").ok().as_deref().and_then(Stat::parse) {
            let cpu = (stat.utime + stat.stime) as f64 / ticks;
            let counted = self.cpu_seconds.get();
            if cpu > counted {
                self.cpu_seconds.inc_by(cpu - counted);
            }
            if let Some(boot) = boot_time() {
                self.start_time_seconds.set(boot as f64 + stat.start_ticks as f64 / ticks);
            }
        }
    }
}

/// The fields of `/proc/self/stat` used here, in clock ticks.
#[derive(Debug, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    start_ticks: u64,
}

impl Stat {
    /// Parses `/proc/<pid>/stat`: the command name (field 2) is in
    /// parentheses and may hold spaces, so fields are counted after its `)`.
    fn parse(text: &str) -> Option<Stat> {
        let after_name = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // `fields[0]` is field 3 (the state).
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Stat { utime: field(14)?, stime: field(15)?, start_ticks: field(22)? })
    }
}

/// When the machine booted, in seconds since the Unix epoch (`btime` of `/proc/stat`).
fn boot_time() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    text.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_with_spaces_and_parentheses_in_the_name_parses() {
        let line = "4242 (carbon (a) b) S 1 2 3 4 5 6 7 8 9 10 111 222 13 14 15 16 17 18 999 20 21";
        assert_eq!(Stat::parse(line), Some(Stat { utime: 111, stime: 222, start_ticks: 999 }));
        assert_eq!(Stat::parse("garbage"), None);
    }
}
