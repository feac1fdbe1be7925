//! The HTTP API as a user meets it, through raw HTTP: every error is JSON
//! with the status the README's table gives, the whole store lists, reads
//! are linearizable unless `?stale`, and `/v1/watch/` streams changes as
//! newline-delimited JSON with no gap and no repeat across a resume.

mod common;

use std::net::SocketAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use cluster_facade::{Cluster, ClusterConfig};
use cluster_testkit::http::{Answer, ChunkedLines, read_head, request};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A one-member cluster with the HTTP port, small store quotas and a small
/// body limit, so that each error is cheap to reach.
async fn member() -> (Cluster, SocketAddr) {
    common::init_tracing();
    let mut config = ClusterConfig { http_port: Some(0), ..common::config(vec![], 1) };
    config.quota.max_value_bytes = 16 * 1024;
    config.quota.max_store_bytes = 256 * 1024;
    config.limits.http.http_max_body_bytes = 64 * 1024;
    let member = Cluster::start(config).await.expect("the member starts");
    let http = member.addresses().http.expect("an http address");
    (member, http)
}

async fn call(http: SocketAddr, method: &str, path: &str, body: &[u8]) -> Answer {
    let mut s = TcpStream::connect(http).await.unwrap();
    request(&mut s, method, path, body).await.expect("an answer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_json_with_a_fitting_status() {
    let (member, http) = member().await;

    // 404: a missing key, an unknown route.
    let missing = call(http, "GET", "/v1/kv/nothing-here", b"").await;
    missing.assert_json_error(404);
    assert_eq!(missing.json()["key"], "nothing-here");
    call(http, "GET", "/v2/nowhere", b"").await.assert_json_error(404);
    // 405, naming the methods allowed.
    let wrong = call(http, "POST", "/v1/kv/k", b"v").await;
    let message = wrong.assert_json_error(405);
    assert!(message.contains("PUT"), "{message}");
    // 400: no key, a bad revision.
    call(http, "GET", "/v1/kv/", b"").await.assert_json_error(400);
    call(http, "GET", "/v1/watch/k?from_revision=soon", b"").await.assert_json_error(400);
    // 403: the cluster's own keys.
    call(http, "PUT", "/v1/kv/carbon-grid/members/x", b"v").await.assert_json_error(403);
    // A prefix delete: never of the empty prefix (400), never of the cluster's (403).
    call(http, "DELETE", "/v1/kv/?prefix", b"").await.assert_json_error(400);
    call(http, "DELETE", "/v1/kv/carbon-grid/?prefix", b"").await.assert_json_error(403);
    // 413: a value over the quota; a body over the limit, announced and not sent.
    call(http, "PUT", "/v1/kv/big", &vec![b'v'; 16 * 1024 + 1]).await.assert_json_error(413);
    let mut s = TcpStream::connect(http).await.unwrap();
    s.write_all(b"PUT /v1/kv/huge HTTP/1.1\r\nHost: m\r\nContent-Length: 100000000\r\n\r\nsome")
        .await
        .unwrap();
    let answer = cluster_testkit::http::read_answer(&mut s).await.unwrap();
    let message = answer.assert_json_error(413);
    assert!(message.contains("http_max_body_bytes"), "{message}");
    // 507: the store full; deleting makes room again.
    let mut full = None;
    for i in 0..40 {
        let answer = call(http, "PUT", &format!("/v1/kv/fill/{i}"), &vec![b'f'; 15 * 1024]).await;
        if answer.status != 200 {
            full = Some(answer);
            break;
        }
    }
    let full = full.expect("the store quota is reached within 40 writes of 15 KiB");
    let message = full.assert_json_error(507);
    assert!(message.contains("quota"), "{message}");
    assert_eq!(call(http, "DELETE", "/v1/kv/fill/0", b"").await.status, 200);
    assert_eq!(call(http, "PUT", "/v1/kv/fits", b"again").await.status, 200);
    member.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_store_lists_with_and_without_the_clusters_keys() {
    let (member, http) = member().await;
    assert_eq!(call(http, "PUT", "/v1/kv/a/1", b"one").await.status, 200);
    assert_eq!(call(http, "PUT", "/v1/kv/b", b"two").await.status, 200);
    let keys = |answer: Answer| -> Vec<String> {
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.json().as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(keys(call(http, "GET", "/v1/kv/?recurse", b"").await), ["a/1", "b"]);
    let all = keys(call(http, "GET", "/v1/kv/?recurse&all", b"").await);
    assert!(all.iter().any(|k| k.starts_with("carbon-grid/")), "{all:?}");
    assert!(all.contains(&"b".to_owned()), "{all:?}");
    assert_eq!(keys(call(http, "GET", "/v1/kv/a/?recurse", b"").await), ["a/1"]);
    let reserved = keys(call(http, "GET", "/v1/kv/carbon-grid/?recurse&all", b"").await);
    assert!(!reserved.is_empty() && reserved.iter().all(|k| k.starts_with("carbon-grid/")), "{reserved:?}");
    member.shutdown().await.unwrap();
}

/// `carbon_store_read_seconds_count`: linearizable reads this member served.
async fn linearizable_reads(http: SocketAddr) -> u64 {
    let text = String::from_utf8(call(http, "GET", "/metrics", b"").await.body).unwrap();
    let line = text.lines().find(|l| l.starts_with("carbon_store_read_seconds_count")).expect(&text);
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_is_linearizable_unless_stale() {
    let (member, http) = member().await;
    assert_eq!(call(http, "PUT", "/v1/kv/k", b"v").await.status, 200);
    let before = linearizable_reads(http).await;
    let answer = call(http, "GET", "/v1/kv/k", b"").await;
    assert_eq!(answer.json()["value"], BASE64.encode("v"), "{answer:?}");
    assert_eq!(
        linearizable_reads(http).await,
        before + 1,
        "a plain GET went through the leader's read index"
    );
    let stale = call(http, "GET", "/v1/kv/k?stale", b"").await;
    assert_eq!(stale.json()["value"], BASE64.encode("v"), "{stale:?}");
    let raw = call(http, "GET", "/v1/kv/k?raw", b"").await;
    assert_eq!(raw.body, b"v");
    assert_eq!(linearizable_reads(http).await, before + 2, "?stale read locally, ?raw did not");
    member.shutdown().await.unwrap();
}

/// Opens a watch and returns its stream once the head said 200.
async fn open_watch(http: SocketAddr, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(http).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: m\r\n\r\n").as_bytes()).await.unwrap();
    let head = read_head(&mut s).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("application/x-ndjson"), "{head}");
    s
}

fn event(line: &Value) -> (String, Option<String>, u64) {
    let value = line["value"].as_str().map(|v| String::from_utf8(BASE64.decode(v).unwrap()).unwrap());
    assert_eq!(line["deleted"], value.is_none(), "{line}");
    (line["key"].as_str().unwrap().to_owned(), value, line["revision"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_streams_changes_in_order_and_resumes_with_no_gap_and_no_repeat() {
    let (member, http) = member().await;
    let mut stream = open_watch(http, "/v1/watch/w/").await;
    let mut lines = ChunkedLines::new();
    let store = member.store();
    store.set("w/a", b"1".to_vec()).await.unwrap();
    store.set("elsewhere", b"x".to_vec()).await.unwrap();
    store.set("w/b", b"2".to_vec()).await.unwrap();
    store.delete("w/a").await.unwrap();

    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(event(&lines.next(&mut stream).await.unwrap().expect("a change")));
    }
    let changes: Vec<_> = seen.iter().map(|(k, v, _)| (k.as_str(), v.as_deref())).collect();
    assert_eq!(changes, [("w/a", Some("1")), ("w/b", Some("2")), ("w/a", None)]);
    assert!(seen.windows(2).all(|w| w[0].2 < w[1].2), "revisions grow: {seen:?}");
    drop(stream);

    // Resumed after the second change: the third again, then new ones.
    let resume = seen[1].2 + 1;
    let mut stream = open_watch(http, &format!("/v1/watch/w/?from_revision={resume}")).await;
    let mut lines = ChunkedLines::new();
    assert_eq!(event(&lines.next(&mut stream).await.unwrap().unwrap()), seen[2]);
    store.set("w/c", b"3".to_vec()).await.unwrap();
    let next = event(&lines.next(&mut stream).await.unwrap().unwrap());
    assert_eq!((next.0.as_str(), next.1.as_deref()), ("w/c", Some("3")));
    assert!(next.2 > seen[2].2, "{next:?} after {seen:?}");
    drop(stream);
    member.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_forgotten_revision_answers_410() {
    common::init_tracing();
    let member =
        Cluster::start(ClusterConfig { http_port: Some(0), ..common::config(vec![], 1) }).await.unwrap();
    let http = member.addresses().http.unwrap();
    // The member replays a bounded history (bytes and events): push the
    // first revisions out of it with large values.
    let value = vec![b'h'; 1024 * 1024];
    let store = member.store();
    for i in 0..40 {
        store.set(&format!("h/{}", i % 4), value.clone()).await.unwrap();
    }
    let answer = call(http, "GET", "/v1/watch/h/?from_revision=1", b"").await;
    let message = answer.assert_json_error(410);
    assert!(message.contains("compacted"), "{message}");
    member.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_delete_deletes_every_key_under_it_and_says_how_many() {
    let (member, http) = member().await;
    for key in ["p/1", "p/2", "pq"] {
        assert_eq!(call(http, "PUT", &format!("/v1/kv/{key}"), b"v").await.status, 200);
    }
    let answer = call(http, "DELETE", "/v1/kv/p/?prefix", b"").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json(), serde_json::json!({ "prefix": "p/", "deleted": 2 }));
    let left = call(http, "GET", "/v1/kv/p?recurse", b"").await.json();
    let keys: Vec<&str> = left.as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["pq"]);
    // Without `?prefix` it is the key `p/` itself: absent.
    let answer = call(http, "DELETE", "/v1/kv/p/", b"").await;
    assert_eq!(answer.json(), serde_json::json!({ "key": "p/", "deleted": false }));
    member.shutdown().await.unwrap();
}
