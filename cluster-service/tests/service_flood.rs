//! A row of the table on the service port: 1,100 idle connections
//! from another host to the leader's service port, while writes and
//! consistent reads through every member keep working (the followers forward
//! to that same port from 127.0.0.1, whose place the flood cannot take).

mod raft_common;

use std::time::Duration;

use raft_common::{RaftCluster, init_tracing};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

async fn connect_from(source: [u8; 4], to: std::net::SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(std::net::SocketAddr::from((source, 0)))?;
    socket.connect(to).await
}

async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_to_the_leaders_service_port_do_not_stop_forwarding() {
    init_tracing();
    let cluster = RaftCluster::start(3, 0).await;
    let leader = &cluster.members[cluster.leader().await];
    let addr: std::net::SocketAddr = leader.service_addr.parse().expect("an address");
    let mut flood = Vec::new();
    for _ in 0..1100 {
        flood.push(connect_from([127, 0, 0, 2], addr).await.expect("connect"));
    }
    let closed =
        futures::future::join_all(flood.iter_mut().map(|s| closed_within(s, Duration::from_secs(3)))).await;
    let held = closed.iter().filter(|c| !**c).count();
    assert!(held <= 256, "{held} connections held from one address");
    for (i, m) in cluster.members.iter().enumerate() {
        let key = format!("k{i}");
        assert!(m.proxy.set(&key, "v").await.expect("a write through every member"));
        assert_eq!(m.proxy.consistent_get(&key).await.expect("a consistent read"), Some(b"v".to_vec()));
        assert!(m.client().set(&format!("c{i}"), "v").await.expect("a client write through every member"));
    }
    drop(flood);
    cluster.shutdown().await;
}
