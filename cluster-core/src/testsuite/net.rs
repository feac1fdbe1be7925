//! Hostile connections on loopback: connections opened from "another host"
//! (another 127.0.0.0/8 address) and never written to, and the check of which
//! of them a server closed.
//!
//! On Linux every address of 127.0.0.0/8 is local, so a test binds its
//! attacker's sockets to 127.0.0.2 and up while the members talk from
//! 127.0.0.1: per-address limits then tell the two apart.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

/// A connection to `to` from the loopback address `source` (port from the OS).
pub async fn connect_from(source: [u8; 4], to: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(to).await
}

/// `count` idle connections to `to` from `source`, opened one after another
/// and never written to.
pub async fn idle_connections(source: [u8; 4], to: SocketAddr, count: usize) -> io::Result<Vec<TcpStream>> {
    let mut idle = Vec::with_capacity(count);
    for _ in 0..count {
        idle.push(connect_from(source, to).await?);
    }
    Ok(idle)
}

/// Reads until the peer closes; true if it closed within `within` (anything
/// it sends meanwhile is read and dropped, an error counts as closed).
pub async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// How many of `streams` the server still holds open after `within`: each is
/// read until it closes or the one shared deadline passes.
pub async fn held_open(streams: &mut [TcpStream], within: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + within;
    let mut held = 0;
    for stream in streams {
        // A stream the server already closed reads its end at once, even
        // after the deadline: the read is polled before the timer.
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !closed_within(stream, left).await {
            held += 1;
        }
    }
    held
}

/// The most resident memory of this process seen while sampling it every
/// 25 ms for `within` (tokio's time), from the first sample on: what an
/// attack grew it to. `None` without procfs.
pub async fn peak_resident_memory(within: Duration) -> Option<u64> {
    let end = tokio::time::Instant::now() + within;
    let mut peak = resident_memory()?;
    while tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(25)).await;
        peak = peak.max(resident_memory()?);
    }
    Some(peak)
}

/// Resident memory of this process in bytes, from `/proc/self/status`
/// (Linux); `None` where it cannot be read.
pub fn resident_memory() -> Option<u64> {
    resident_memory_of("self")
}

/// Resident memory of process `pid` (a number, or `self`) in bytes, from
/// `/proc/<pid>/status` (Linux); `None` where it cannot be read.
pub fn resident_memory_of(pid: impl std::fmt::Display) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    #[tokio::test]
    async fn counts_the_connections_a_server_keeps_open() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().expect("an address");
        let mut idle = idle_connections([127, 0, 0, 2], addr, 4).await.expect("connect");
        // The server closes two of the four (dropping them) and keeps the rest.
        let mut kept = Vec::new();
        for i in 0..4 {
            let (stream, from) = listener.accept().await.expect("accept");
            assert_eq!(from.ip(), std::net::IpAddr::from([127, 0, 0, 2]));
            if i % 2 == 0 {
                kept.push(stream);
            }
        }
        assert_eq!(held_open(&mut idle, Duration::from_millis(300)).await, 2);
        drop(kept);
    }

    #[test]
    fn this_process_has_resident_memory() {
        assert!(resident_memory().is_some_and(|bytes| bytes > 0));
    }
}
