//! Logging dropped datagrams without letting a sender fill the log: at most
//! one line per source address per [`LOG_INTERVAL`], each with the number of
//! datagrams dropped since the previous line.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// The least time between two lines about the same source address.
pub(crate) const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Source addresses remembered at most; past it, stale ones are forgotten and
/// then the rest share one entry, so a sender of many addresses cannot grow
/// the map (nor the log).
const MAX_SOURCES: usize = 4096;

/// Where the drops of too many sources are counted together.
const OVERFLOW: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// Drops per source address since its last log line.
#[derive(Debug, Default)]
pub(crate) struct DropLog {
    sources: HashMap<IpAddr, Source>,
}

#[derive(Debug)]
struct Source {
    last_line: Instant,
    unlogged: u64,
}

/// A line to write: the source (or `0.0.0.0` for "many sources") and the
/// drops it reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Line {
    pub(crate) source: IpAddr,
    pub(crate) dropped: u64,
}

impl DropLog {
    /// Records one dropped datagram from `from` at `now`; returns the line to
    /// write, if one is due.
    pub(crate) fn record(&mut self, from: IpAddr, now: Instant) -> Option<Line> {
        let mut key = from;
        if !self.sources.contains_key(&from) && self.sources.len() >= MAX_SOURCES {
            self.sources.retain(|_, s| now.duration_since(s.last_line) < LOG_INTERVAL);
            if self.sources.len() >= MAX_SOURCES {
                key = OVERFLOW;
            }
        }
        match self.sources.get_mut(&key) {
            None => {
                self.sources.insert(key, Source { last_line: now, unlogged: 0 });
                Some(Line { source: key, dropped: 1 })
            }
            Some(s) => {
                s.unlogged += 1;
                if now.duration_since(s.last_line) >= LOG_INTERVAL {
                    let dropped = std::mem::take(&mut s.unlogged);
                    s.last_line = now;
                    Some(Line { source: key, dropped })
                } else {
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_source_per_interval_with_the_count() {
        let mut log = DropLog::default();
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let t0 = Instant::now();
        assert_eq!(log.record(a, t0), Some(Line { source: a, dropped: 1 }));
        for i in 0..1000 {
            assert_eq!(log.record(a, t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(log.record(b, t0), Some(Line { source: b, dropped: 1 }));
        assert_eq!(log.record(a, t0 + LOG_INTERVAL), Some(Line { source: a, dropped: 1001 }));
        assert_eq!(log.record(a, t0 + LOG_INTERVAL + Duration::from_secs(1)), None);
    }

    #[test]
    fn many_sources_share_one_entry() {
        let mut log = DropLog::default();
        let t0 = Instant::now();
        let mut lines = 0;
        for i in 0..(MAX_SOURCES as u32 + 5000) {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            lines += usize::from(log.record(ip, t0).is_some());
        }
        assert_eq!(lines, MAX_SOURCES + 1);
        assert!(log.sources.len() <= MAX_SOURCES + 1);
    }
}
