//! The operators' HTTP API of a member on mutual TLS takes the certificates
//! of the raft and service ports: a caller with a certificate of the
//! cluster's CA is served, one without (plain HTTP) or of another CA is not.

mod common;

use std::time::Duration;

use cluster_facade::rpc::tls::generate::CertificateAuthority;
use cluster_facade::rpc::{Role, Security, Tls};
use cluster_facade::{Cluster, ClusterConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const REQUEST: &[u8] = b"GET /health/live HTTP/1.1\r\nHost: member\r\nConnection: close\r\n\r\n";
const LONG: Duration = Duration::from_secs(30);

fn tls(ca: &CertificateAuthority, role: Role) -> Tls {
    let c = ca.issue(role, "t").unwrap();
    Tls::from_pem(ca.cert_pem(), &c.cert_pem, &c.key_pem).unwrap()
}

/// The HTTP answer over TLS with `client`'s certificate, or the error.
async fn get_over_tls(addr: std::net::SocketAddr, client: &Tls) -> Result<String, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let mut stream = tokio::time::timeout(LONG, client.connector().connect(Tls::server_name(), tcp))
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    stream.write_all(REQUEST).await.map_err(|e| e.to_string())?;
    let mut answer = String::new();
    tokio::time::timeout(LONG, stream.read_to_string(&mut answer))
        .await
        .map_err(|_| "answer timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok(answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_on_tls_serves_certificates_of_the_clusters_ca_only() {
    common::init_tracing();
    let ca = CertificateAuthority::generate("http-tls").unwrap();
    let member = Cluster::start(ClusterConfig {
        http_port: Some(0),
        security: Security::Tls(tls(&ca, Role::Member)),
        ..common::config(vec![], 1)
    })
    .await
    .unwrap();
    let http = member.addresses().http.expect("an http address");

    let answer = get_over_tls(http, &tls(&ca, Role::Client)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Another CA's certificate: no answer.
    let other = CertificateAuthority::generate("http-tls").unwrap();
    assert!(get_over_tls(http, &tls(&other, Role::Client)).await.is_err());

    // Plain HTTP: no answer either (the handshake never completes).
    let mut plain = TcpStream::connect(http).await.unwrap();
    plain.write_all(REQUEST).await.unwrap();
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(LONG, plain.read_to_end(&mut bytes)).await;
    assert!(!String::from_utf8_lossy(&bytes).contains("200"), "plain HTTP was served");

    member.shutdown().await.unwrap();
}
