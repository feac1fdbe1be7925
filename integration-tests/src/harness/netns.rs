//! Real network partitions: each member in its own network namespace, joined to
//! the others by veth links on a bridge, and cut off by blackhole routes.
//!
//! ```text
//!   root namespace (the test: clients, monitor)
//!     cg<pid><n> 10.A.B.1/24 ──veth──┐
//!   hub namespace  "cgf-<pid>-<n>-hub": bridge br0 ── m0 … m<k>
//!                                      │veth         │veth
//!   member namespaces "cgf-<pid>-<n>-m<i>": eth0 10.A.B.(10+i)/24, lo
//! ```
//!
//! For a cluster behind the [proxy](super::proxy), the root end of the uplink
//! also holds a front IP per member, 10.A.B.(100+i)/32 ([`NetLab::add_front_ips`]).
//!
//! Every address lives in namespaces the lab creates (the root end of the uplink
//! included; its /24 route leads only into the lab), so traffic never leaves them.
//! A partition is a pair of blackhole routes (`ip route add blackhole <peer>/32`)
//! inside the two members' namespaces: the members cannot reach each other, while
//! the test's clients in the root namespace still reach every member, as in
//! Jepsen. Dropping the [`NetLab`] deletes every namespace (and with them every
//! link, the bridge and the routes).
//!
//! This needs root and iproute2: [`NetLab::unavailable`] says why a test must skip.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};

/// A set of network namespaces, one per member, on one bridge; deleted on drop.
#[derive(Debug)]
pub struct NetLab {
    hub: String,
    members: Vec<String>,
    subnet: [u8; 3],
    uplink: String,
    cuts: BTreeSet<(usize, usize)>,
    created: Vec<String>,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output().context("cannot run `ip`")?;
    if !out.status.success() {
        bail!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

impl NetLab {
    /// Why the lab cannot run here (not root, no `ip`, no `ip netns`), or `None` if it can.
    pub fn unavailable() -> Option<String> {
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        if uid.as_deref() != Some("0") {
            return Some("needs root (id -u is not 0)".into());
        }
        match Command::new("ip").args(["netns", "list"]).output() {
            Ok(out) if out.status.success() => None,
            Ok(out) => Some(format!("`ip netns` fails: {}", String::from_utf8_lossy(&out.stderr).trim())),
            Err(e) => Some(format!("needs iproute2's `ip` command: {e}")),
        }
    }

    /// Creates the namespaces, links and addresses of `members` members.
    pub fn new(members: usize) -> Result<NetLab> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let prefix = format!("cgf-{pid}-{n}");
        let subnet = free_subnet(pid, n)?;
        let mut lab = NetLab {
            hub: format!("{prefix}-hub"),
            members: (0..members).map(|i| format!("{prefix}-m{i}")).collect(),
            subnet,
            uplink: format!("cg{}x{}", pid % 1_000_000, n % 1000),
            cuts: BTreeSet::new(),
            created: Vec::new(),
        };
        // On an error, drop deletes what was created.
        lab.build()?;
        Ok(lab)
    }

    fn build(&mut self) -> Result<()> {
        let hub = self.hub.clone();
        ip(&["netns", "add", &hub])?;
        self.created.push(hub.clone());
        ip(&["-n", &hub, "link", "set", "lo", "up"])?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        // The uplink from the root namespace, for the test's clients.
        let uplink = self.uplink.clone();
        ip(&["link", "add", &uplink, "type", "veth", "peer", "name", "up0", "netns", &hub])?;
        ip(&["-n", &hub, "link", "set", "up0", "master", "br0", "up"])?;
        ip(&["addr", "add", &format!("{}/24", self.addr(1)), "dev", &uplink])?;
        ip(&["link", "set", &uplink, "up"])?;
        for (i, ns) in self.members.clone().into_iter().enumerate() {
            ip(&["netns", "add", &ns])?;
            self.created.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let port = format!("m{i}");
            ip(&["-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            ip(&["-n", &hub, "link", "set", &port, "master", "br0", "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", self.member_ip(i)), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(())
    }

    fn addr(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(self.subnet[0], self.subnet[1], self.subnet[2], last)
    }

    /// The address of member `i` inside its namespace.
    pub fn member_ip(&self, i: usize) -> IpAddr {
        IpAddr::V4(self.addr(10 + u8::try_from(i).unwrap_or(200)))
    }

    /// The front IP of member `i` (see [`NetLab::add_front_ips`]): in the root
    /// namespace, where the [proxy](super::proxy) listens on its behalf.
    pub fn front_ip(&self, i: usize) -> IpAddr {
        IpAddr::V4(self.addr(100 + u8::try_from(i).unwrap_or(100)))
    }

    /// Gives the root end of the uplink one more address per member (its front
    /// IP, a /32), so that a proxy in the test's namespace can listen for each
    /// member at an address of its own, which the members reach over the bridge.
    /// They go with the uplink when the lab is dropped.
    pub fn add_front_ips(&mut self) -> Result<()> {
        for i in 0..self.members.len() {
            ip(&["addr", "add", &format!("{}/32", self.front_ip(i)), "dev", &self.uplink])?;
        }
        Ok(())
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True if the lab has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The command prefix that runs a program inside member `i`'s namespace
    /// (`ip netns exec` execs the program, so its pid is the child's).
    pub fn wrapper(&self, i: usize) -> Vec<String> {
        vec!["ip".into(), "netns".into(), "exec".into(), self.members[i].clone()]
    }

    /// Cuts the link between members `a` and `b`, both ways.
    pub fn cut(&mut self, a: usize, b: usize) -> Result<()> {
        let pair = (a.min(b), a.max(b));
        if a == b || self.cuts.contains(&pair) {
            return Ok(());
        }
        ip(&["-n", &self.members[a], "route", "add", "blackhole", &format!("{}/32", self.member_ip(b))])?;
        ip(&["-n", &self.members[b], "route", "add", "blackhole", &format!("{}/32", self.member_ip(a))])?;
        self.cuts.insert(pair);
        Ok(())
    }

    /// Cuts every link between members of different groups. Members in no group
    /// keep their links.
    pub fn partition(&mut self, groups: &[&[usize]]) -> Result<()> {
        for (g, group) in groups.iter().enumerate() {
            for other in &groups[g + 1..] {
                for &a in group.iter() {
                    for &b in other.iter() {
                        self.cut(a, b)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes every cut.
    pub fn heal(&mut self) -> Result<()> {
        for (a, b) in std::mem::take(&mut self.cuts) {
            ip(&["-n", &self.members[a], "route", "del", "blackhole", &format!("{}/32", self.member_ip(b))])?;
            ip(&["-n", &self.members[b], "route", "del", "blackhole", &format!("{}/32", self.member_ip(a))])?;
        }
        Ok(())
    }

    /// The cuts in place, as pairs of member indexes.
    pub fn cuts(&self) -> &BTreeSet<(usize, usize)> {
        &self.cuts
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        // Members first, then the hub (which holds the uplink's other end).
        for ns in self.created.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("warning: cannot delete network namespace {ns}: {e:#}");
            }
        }
    }
}

/// A 10.A.B.0/24 subnet that no interface of the root namespace uses.
fn free_subnet(pid: u32, n: u32) -> Result<[u8; 3]> {
    let out = Command::new("ip").args(["-o", "-4", "addr", "show"]).output().context("cannot run `ip`")?;
    let used = String::from_utf8_lossy(&out.stdout).into_owned();
    let routes = Command::new("ip").args(["-4", "route", "show"]).output().context("cannot run `ip`")?;
    let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
    for attempt in 0..200u32 {
        let a = 100 + u8::try_from((pid + attempt) % 100).unwrap_or(0);
        let b = u8::try_from((n * 7 + attempt) % 250).unwrap_or(0) + 1;
        let prefix = format!("10.{a}.{b}.");
        if !used.contains(&prefix) && !routes.contains(&prefix) {
            return Ok([10, a, b]);
        }
    }
    bail!("no free 10.x.y.0/24 subnet found")
}
