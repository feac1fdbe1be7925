//! `carbon agent` raises its soft descriptor limit to the hard one at start
//! and, when the ports' connection caps do not fit under it, lowers them so
//! that one port's callers cannot take the descriptors another needs
//! (issue 22, item 4). Black-box: the limit as `/proc` shows it, the HTTP
//! cap as a caller meets it.

mod common;

use cluster_testkit::http::{closed_by_peer, request};
use common::{Agent, spec};
use tokio::net::TcpStream;

/// "Max open files" of process `pid`: (soft, hard).
fn open_files_limit(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect(&limits);
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_owned(), fields[4].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_raises_its_soft_limit_and_fits_the_http_cap_under_the_hard_one() {
    // Soft 300, hard 600: the defaults (256 HTTP + 2 × 1024 RPC connections
    // + 150 reserved) do not fit in 600, so the caps shrink to fit
    // (HTTP: 256 × 450 / 2304 = 50).
    // The shell gets the binary as $0 and `agent …` as its arguments.
    let limited = ["sh", "-c", r#"ulimit -Sn 300 && ulimit -Hn 600 && exec "$0" "$@""#];
    let agent = Agent::start(spec().wrapper(limited).args(["--http-port", "0"]));
    assert_eq!(open_files_limit(agent.pid().expect("running")), ("600".to_owned(), "600".to_owned()));

    let http: std::net::SocketAddr = agent.http().as_deref().expect("an http address").parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(http).await.unwrap();
        assert_eq!(request(&mut s, "GET", "/health/live", b"").await.unwrap().status, 200);
        held.push(s);
    }
    let mut over = TcpStream::connect(http).await.unwrap();
    assert!(closed_by_peer(&mut over).await, "a 51st HTTP connection was kept under a 600-descriptor limit");
    drop(held);
    let status = agent.stop();
    assert!(status.success(), "{status:?}");
}
