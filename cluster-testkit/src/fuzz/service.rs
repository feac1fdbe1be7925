//! Random and mutated service frames against a service server, for
//! `cluster-service`'s short test (`tests/service_fuzz.rs`) and long run
//! (`examples/service_fuzz.rs`). Frames go over real TCP connections; a
//! connection the server closes (garbage it cannot resynchronize) is opened
//! again. Panics anywhere in the process are counted by a hook.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use cluster_core::wire::{Frame, encode_body};
use cluster_core::{MemberId, WriteOp, WriteRequest, keys};
use cluster_service::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use cluster_core::testsuite::rng::Rng;

/// Valid frame bodies of every request kind, the cluster's reserved ones included.
pub fn templates(cluster_id: &str) -> Vec<Vec<u8>> {
    let member = MemberId::generate();
    let write = |op| Request::Write(WriteRequest::new(op));
    let requests = [
        Request::Get { key: "k".into() },
        Request::ConsistentGet { key: "k".into() },
        Request::GetPrefix { prefix: String::new() },
        write(WriteOp::Set { key: "user/a".into(), value: vec![1, 2, 3] }),
        write(WriteOp::Delete { key: "user/a".into() }),
        write(WriteOp::CompareAndSet { key: "user/b".into(), expected: None, new: Some(vec![9]) }),
        write(WriteOp::Set { key: keys::member_key(member), value: vec![0; 8] }),
        write(WriteOp::AllocateShortId { member }),
        write(WriteOp::ReleaseShortId { member }),
        Request::Members,
        Request::Status,
        Request::Export,
        Request::Liveness,
        Request::ForceLeave { member },
    ];
    requests
        .iter()
        .enumerate()
        .map(|(i, r)| {
            encode_body(cluster_id, &Frame { request_id: i as u64 + 1, body: r.clone() }, 1 << 20).unwrap()
        })
        .collect()
}

fn mutate(rng: &mut Rng, template: &[u8]) -> Vec<u8> {
    let mut body = template.to_vec();
    match rng.below(4) {
        // Flip a few bytes anywhere.
        0 => {
            for _ in 0..=rng.below(4) {
                let i = rng.below(body.len());
                body[i] ^= (rng.next_u64() as u8) | 1;
            }
        }
        // Cut it short.
        1 => body.truncate(rng.below(body.len())),
        // Grow it with garbage (trailing bytes, lying lengths inside).
        2 => body.extend((0..=rng.below(16)).map(|_| rng.next_u64() as u8)),
        // Overwrite the payload's bytes after the header (the header stays valid).
        _ => {
            let start = 15.min(body.len());
            for b in &mut body[start..] {
                if rng.below(3) == 0 {
                    *b = rng.next_u64() as u8;
                }
            }
        }
    }
    body
}

/// What was sent and what became of it.
#[derive(Debug, Default)]
pub struct Report {
    /// Frames of random bytes sent.
    pub random: u64,
    /// Mutated valid frames sent.
    pub mutated: u64,
    /// Frames answered.
    pub answered: u64,
    /// Connections the server closed, or that waited for more bytes (we
    /// opened a new one).
    pub reconnects: u64,
}

/// Sends `random` random and `mutated` mutated frames to the service at
/// `addr`, one at a time, reading the answer to each (or seeing the
/// connection closed, after which a new one is opened).
pub async fn feed(addr: SocketAddr, cluster_id: &str, seed: u64, random: u64, mutated: u64) -> Report {
    let templates = templates(cluster_id);
    let mut rng = Rng::new(seed);
    let mut report = Report::default();
    let mut conn = TcpStream::connect(addr).await.expect("the service accepts");
    while report.random < random || report.mutated < mutated {
        let body: Vec<u8> = if report.mutated >= mutated || (report.random < random && rng.below(2) == 0) {
            report.random += 1;
            let len = rng.below(64);
            (0..len).map(|_| rng.next_u64() as u8).collect()
        } else {
            report.mutated += 1;
            let template = &templates[rng.below(templates.len())];
            mutate(&mut rng, template)
        };
        let mut out = BytesMut::with_capacity(body.len() + 4);
        out.put_u32(body.len() as u32);
        out.extend_from_slice(&body);
        let answered = conn.write_all(&out).await.is_ok() && read_answer(&mut conn).await;
        if answered {
            report.answered += 1;
        } else {
            report.reconnects += 1;
            conn = TcpStream::connect(addr).await.expect("the service still accepts");
        }
    }
    report
}

/// Reads one answer frame; false when the connection closed instead (or a
/// frame never came: the server waits for the rest of a frame that a cut
/// length announced, and the frame timeout would end it).
async fn read_answer(conn: &mut TcpStream) -> bool {
    let read = async {
        let len = conn.read_u32().await.ok()? as usize;
        let mut body = vec![0u8; len.min(1 << 20)];
        conn.read_exact(&mut body).await.ok()?;
        Some(())
    };
    matches!(tokio::time::timeout(Duration::from_millis(200), read).await, Ok(Some(())))
}
