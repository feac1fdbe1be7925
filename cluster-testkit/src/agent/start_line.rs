//! What an agent prints on stdout: its start line (`member <id> short_id <n>
//! gossip <addr> raft <addr> service <addr> grid <addr> [http <addr>]`), again
//! whenever its short id changes, and `ready …` once it can serve a write.

use std::net::SocketAddr;

use anyhow::{Context, Result, anyhow};

/// The ports of an agent; 0 lets the OS choose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ports {
    /// Gossip (UDP).
    pub gossip: u16,
    /// Raft RPC (TCP).
    pub raft: u16,
    /// Forwarding service (TCP).
    pub service: u16,
    /// Data grid.
    pub grid: u16,
}

/// What an agent prints once it holds its short id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartLine {
    /// The member id (a ULID, as text).
    pub member_id: String,
    /// The short id.
    pub short_id: u64,
    /// The gossip address.
    pub gossip: SocketAddr,
    /// The raft address.
    pub raft: SocketAddr,
    /// The service address.
    pub service: SocketAddr,
    /// The grid address.
    pub grid: SocketAddr,
    /// The HTTP API's address, when the agent serves it.
    pub http: Option<SocketAddr>,
}

impl StartLine {
    /// Parses `member <id> short_id <n> gossip <addr> raft <addr> service <addr> grid <addr>`.
    pub fn parse(line: &str) -> Result<StartLine> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |key: &str| -> Result<&str> {
            let at = words.iter().position(|w| *w == key).ok_or_else(|| anyhow!("no {key} in {line:?}"))?;
            words.get(at + 1).copied().ok_or_else(|| anyhow!("nothing after {key} in {line:?}"))
        };
        let addr = |key: &str| -> Result<SocketAddr> {
            after(key)?.parse().with_context(|| format!("bad {key} address in {line:?}"))
        };
        Ok(StartLine {
            member_id: after("member")?.to_owned(),
            short_id: after("short_id")?.parse().with_context(|| format!("bad short id in {line:?}"))?,
            gossip: addr("gossip")?,
            raft: addr("raft")?,
            service: addr("service")?,
            grid: addr("grid")?,
            http: if words.contains(&"http") { Some(addr("http")?) } else { None },
        })
    }

    /// The ports of this start line.
    pub fn ports(&self) -> Ports {
        Ports {
            gossip: self.gossip.port(),
            raft: self.raft.port(),
            service: self.service.port(),
            grid: self.grid.port(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_line_parses() {
        let line = "member 01J0000000000000000000000A short_id 3 gossip 127.0.0.1:1 raft 127.0.0.1:2 \
                    service 127.0.0.1:3 grid 127.0.0.1:4";
        let s = StartLine::parse(line).expect("parses");
        assert_eq!(s.short_id, 3);
        assert_eq!(s.ports(), Ports { gossip: 1, raft: 2, service: 3, grid: 4 });
        assert!(StartLine::parse("member x short_id y").is_err());
    }
}
