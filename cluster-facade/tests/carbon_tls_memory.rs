//! Issue 22's partial giant frames over mutual TLS, measured on the member
//! alone: a `carbon agent` process with `carbon tls init` certificates, and
//! 30 connections from this process with the cluster's *client* certificate,
//! each announcing a frame of almost 16 MiB and sending 8 MiB of it. The
//! agent's resident memory (`VmRSS` of its own process, so the attacker's
//! TLS buffers are not counted) must grow by less than 128 MiB, a client
//! must be served meanwhile, and the frame timeout must close them all.
//! Measured: +18 MiB (+41 to +78 MiB while the frame reader grew a large
//! frame's buffer by doubling; +386 MiB without the partial-frame budget).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cluster_core::testsuite::net::resident_memory_of;
use cluster_core::testsuite::{DEADLINE, wait_until};
use common::{agent, carbon, carbon_tls_client, tls_flags};

/// The resident memory of process `pid`, in bytes.
fn resident(pid: u32) -> u64 {
    resident_memory_of(pid).expect("VmRSS in /proc")
}
use cluster_facade::rpc::{Tls, TlsFiles};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIB: u64 = 1024 * 1024;
/// What no attack may grow a member by, with the default limits.
const BOUND: u64 = 128 * MIB;
const CONNECTIONS: usize = 30;
/// The frame timeout the agent runs with: short, so that the test is too.
const FRAME_TIMEOUT: Duration = Duration::from_secs(8);

/// `carbon ARGS` against `service` with the client certificate.
fn client(args: &[&str], service: &str, tls: &[String]) -> std::process::Output {
    carbon_tls_client(args, service, "tls-memory", tls, "20s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_giant_frames_over_tls_with_a_client_certificate_stay_within_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    assert!(carbon().args(["tls", "init", "--members", "1"]).arg(&certs).status().unwrap().success());
    let config = dir.path().join("carbon.toml");
    std::fs::write(&config, format!("[limits]\nframe_timeout = \"{}s\"\n", FRAME_TIMEOUT.as_secs())).unwrap();
    let mut args: Vec<String> = ["--host", "127.0.0.1", "--cluster-id", "tls-memory", "--config"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(config.display().to_string());
    args.extend(tls_flags(&certs, "member-1"));
    let agent = agent(&args);
    agent.wait_ready();
    let pid = agent.pid().expect("running");
    let client_flags = tls_flags(&certs, "client");
    let set = client(&["kv", "set", "color", "blue"], &agent.service(), &client_flags);
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    let before = resident(pid);
    let attacker_before = resident(std::process::id());

    let tls = Tls::from_files(TlsFiles {
        ca_cert: certs.join("ca.pem"),
        cert: certs.join("client.pem"),
        key: certs.join("client-key.pem"),
        crl: None,
    })
    .unwrap();
    let connector = tls.connector();
    let service: std::net::SocketAddr = agent.service().parse().unwrap();
    let connected = Arc::new(AtomicUsize::new(0));
    // The agent's peak, sampled until every connection is closed.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = std::thread::spawn({
        let sampling = sampling.clone();
        move || {
            let mut peak = (resident(pid), resident(std::process::id()));
            while sampling.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(25));
                peak = (peak.0.max(resident(pid)), peak.1.max(resident(std::process::id())));
            }
            peak
        }
    });
    let part: Arc<[u8]> = vec![7u8; 8 << 20].into();
    let mut senders = Vec::new();
    for _ in 0..CONNECTIONS {
        let (connector, connected, part) = (connector.clone(), connected.clone(), part.clone());
        // Each sends what the member takes, and holds the connection.
        senders.push(tokio::spawn(async move {
            let tcp = tokio::net::TcpStream::connect(service).await.expect("connect");
            let mut s = connector.connect(Tls::server_name(), tcp).await.expect("TLS handshake");
            connected.fetch_add(1, Ordering::SeqCst);
            let _ = s.write_all(&(16u32 * 1024 * 1024 - 4096).to_be_bytes()).await;
            let _ = s.write_all(&part).await;
            let _ = s.flush().await;
            s
        }));
    }
    let started = Instant::now();
    wait_until(DEADLINE, "every handshake", || {
        std::future::ready(connected.load(Ordering::SeqCst) >= CONNECTIONS)
    })
    .await;
    tokio::time::sleep(FRAME_TIMEOUT / 2).await;
    // A client is served meanwhile.
    let get = tokio::task::spawn_blocking({
        let (service, flags) = (agent.service().clone(), client_flags.clone());
        move || client(&["kv", "get", "color"], &service, &flags)
    })
    .await
    .unwrap();
    assert!(get.status.success(), "{}", String::from_utf8_lossy(&get.stderr));
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "blue");
    eprintln!("a client served {:?} after the attack started", started.elapsed());

    // The frame timeout (or a refusal for want of room) closes them all.
    for sender in senders {
        let mut s =
            tokio::time::timeout(DEADLINE, sender).await.expect("the member read or closed").expect("sender");
        let mut sink = [0u8; 4096];
        let closed = tokio::time::timeout(DEADLINE, async {
            loop {
                match s.read(&mut sink).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a partial frame was kept open");
    }
    eprintln!("every connection closed {:?} after the attack started", started.elapsed());
    sampling.store(false, Ordering::SeqCst);
    let (peak, attacker_peak) = sampler.join().unwrap();
    let growth = peak.saturating_sub(before);
    eprintln!(
        "partial frames over TLS: agent resident {} MiB before, peak {} MiB, growth {} MiB \
         (this attacking process: {} MiB before, peak {} MiB)",
        before / MIB,
        peak / MIB,
        growth / MIB,
        attacker_before / MIB,
        attacker_peak / MIB,
    );
    assert!(growth < BOUND, "the agent's resident memory grew by {} MiB", growth / MIB);
    drop(agent);
}
