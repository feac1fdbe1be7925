//! A small handler and helpers shared by the server tests.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cluster_rpc::{
    Answer, Caller, Client, ClientConfig, Handler, HandlerFuture, Limits, Reply, Security, Server,
    ServerConfig, serve,
};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

pub const CLUSTER: &str = "test-cluster";
/// Generous: the machine is shared.
pub const DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Ask {
    Echo(String),
    /// Answers `n` items as a stream, then ends (or never ends with `forever`).
    Count {
        n: u32,
        forever: bool,
    },
    /// Never answers.
    Hang,
    /// Who is calling.
    WhoAmI,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Said {
    Echo(String),
    Item(u32),
    Caller(Option<cluster_rpc::Role>),
    Refused(cluster_core::Error),
}

impl Answer for Said {
    fn refused(error: cluster_core::Error) -> Self {
        Said::Refused(error)
    }
    fn into_refusal(self) -> Result<cluster_core::Error, Self> {
        match self {
            Said::Refused(e) => Ok(e),
            other => Err(other),
        }
    }
}

/// Counts requests started, and streams dropped (cancelled or ended).
#[derive(Default)]
pub struct Counters {
    pub started: AtomicUsize,
    pub streams_dropped: AtomicUsize,
}

pub struct TestHandler(pub Arc<Counters>);

struct DropCount(Arc<Counters>);
impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.streams_dropped.fetch_add(1, Ordering::SeqCst);
    }
}

impl Handler for TestHandler {
    type Request = Ask;
    type Answer = Said;
    fn handle(&self, caller: Caller, request: Ask) -> HandlerFuture<Said> {
        self.0.started.fetch_add(1, Ordering::SeqCst);
        let counters = self.0.clone();
        Box::pin(async move {
            match request {
                Ask::Echo(s) => Reply::One(Said::Echo(s)),
                Ask::WhoAmI => Reply::One(Said::Caller(caller.role)),
                Ask::Hang => std::future::pending().await,
                Ask::Count { n, forever } => {
                    let guard = DropCount(counters);
                    let items = futures::stream::iter(0..n).map(Said::Item);
                    let tail = futures::stream::pending().take(usize::from(forever));
                    Reply::stream(items.chain(tail).map(move |s| {
                        let _ = &guard;
                        s
                    }))
                }
            }
        })
    }
}

use futures::StreamExt;

pub async fn start(limits: Limits, security: Security) -> (Server, Arc<Counters>) {
    start_with(limits, security, cluster_rpc::Access::Anyone).await
}

pub async fn start_with(
    limits: Limits,
    security: Security,
    access: cluster_rpc::Access,
) -> (Server, Arc<Counters>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let counters = Arc::new(Counters::default());
    let config = ServerConfig { cluster_id: CLUSTER.into(), limits, security, access };
    (serve(listener, TestHandler(counters.clone()), config).expect("serve"), counters)
}

pub fn client(security: Security) -> Client<Ask, Said> {
    Client::new(ClientConfig { cluster_id: CLUSTER.into(), limits: Limits::default(), security })
}

/// A raw connection from another loopback address, acting as another host.
pub async fn connect_from(source: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(to).await
}

/// Resident memory of this process, in bytes.
pub fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    let kb: u64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("a number");
    kb * 1024
}

/// Waits until `f` is true, polling; panics at the deadline.
pub async fn wait_until<F: Fn() -> bool>(what: &str, f: F) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads until the peer closes; true if it closed within `within`.
pub async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

pub async fn echo(c: &Client<Ask, Said>, server: &Server) -> Said {
    c.call(&server.local_addr().to_string(), &Ask::Echo("hi".into()), DEADLINE).await.expect("an answer")
}
