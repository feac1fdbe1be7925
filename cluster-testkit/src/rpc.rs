//! A small handler of the RPC layer (`cluster-rpc`) and helpers to serve and
//! call it, for the layer's own server and client tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cluster_rpc::{
    Answer, Caller, Client, ClientConfig, Handler, HandlerFuture, Limits, Reply, Security, Server,
    ServerConfig, serve,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

/// The cluster id of the test server and its clients.
pub const CLUSTER: &str = "test-cluster";
/// How long a test call may take: generous, the machine is shared.
pub const CALL_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// What a test client asks.
pub enum Ask {
    /// Answers the same text.
    Echo(String),
    /// Answers `n` items as a stream, then ends (or never ends with `forever`).
    Count {
        /// How many items.
        n: u32,
        /// Whether the stream then stays open.
        forever: bool,
    },
    /// Never answers.
    Hang,
    /// Who is calling.
    WhoAmI,
    /// Answers with a text of this many bytes.
    Big(u32),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// What the test handler answers.
pub enum Said {
    /// The text asked to echo (or a big one).
    Echo(String),
    /// One item of a counted stream.
    Item(u32),
    /// The caller's role, as the server saw it.
    Caller(Option<cluster_rpc::Role>),
    /// The request was refused.
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
    /// Requests the handler started.
    pub started: AtomicUsize,
    /// Answer streams dropped, cancelled or ended.
    pub streams_dropped: AtomicUsize,
}

/// The handler: answers [`Ask`] with [`Said`] and counts in its [`Counters`].
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
                Ask::Big(len) => Reply::One(Said::Echo("x".repeat(len as usize))),
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

/// Serves the test handler on a free loopback port with `limits` and
/// `security`, open to anyone.
pub async fn start(limits: Limits, security: Security) -> (Server, Arc<Counters>) {
    start_with(limits, security, cluster_rpc::Access::Anyone).await
}

/// Like [`start`], with `access`.
pub async fn start_with(
    limits: Limits,
    security: Security,
    access: cluster_rpc::Access,
) -> (Server, Arc<Counters>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    serve_on(listener.into(), limits, security, access)
}

/// The test handler served on `listener`, of any network.
pub fn serve_on(
    listener: cluster_rpc::Listener,
    limits: Limits,
    security: Security,
    access: cluster_rpc::Access,
) -> (Server, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    let config = ServerConfig { cluster_id: CLUSTER.into(), limits, security, access };
    (serve(listener, TestHandler(counters.clone()), config).expect("serve"), counters)
}

/// A client of the test server's cluster.
pub fn client(security: Security) -> Client<Ask, Said> {
    Client::new(ClientConfig { cluster_id: CLUSTER.into(), security, ..ClientConfig::default() })
}

/// Asks `server` to echo; panics without an answer.
pub async fn echo(c: &Client<Ask, Said>, server: &Server) -> Said {
    c.call(&server.local_addr().to_string(), &Ask::Echo("hi".into()), CALL_DEADLINE).await.expect("an answer")
}
