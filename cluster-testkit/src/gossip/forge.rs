//! Hand-made chitchat datagrams (protocol V0), as an outsider would write
//! them: a Syn, a SynAck and an Ack that each introduce a made-up member.

use std::net::SocketAddr;

use chitchat::{ChitchatId, Serializable};

const MAGIC: u16 = 45_139;

fn header(kind: u8) -> Vec<u8> {
    let mut v = MAGIC.to_le_bytes().to_vec();
    v.extend([0, kind]);
    v
}

/// A made-up member: its chitchat id.
pub fn fake_member(addr: SocketAddr) -> ChitchatId {
    ChitchatId::new(cluster_core::MemberId::generate().to_string(), 1, addr)
}

fn digest(buf: &mut Vec<u8>, fake: &ChitchatId, heartbeat: u64, max_version: u64) {
    1u16.serialize(buf);
    fake.serialize(buf);
    heartbeat.serialize(buf);
    0u64.serialize(buf); // last GC version
    max_version.serialize(buf);
}

fn delta(buf: &mut Vec<u8>, fake: &ChitchatId, tags: &[(&str, &str)]) {
    let mut ops = Vec::new();
    ops.push(0u8); // node
    fake.serialize(&mut ops);
    0u64.serialize(&mut ops); // last GC version
    0u64.serialize(&mut ops); // from version (excluded)
    for (i, (k, v)) in tags.iter().enumerate() {
        ops.push(1u8); // key-value
        k.serialize(&mut ops);
        v.serialize(&mut ops);
        (i as u64 + 1).serialize(&mut ops);
        ops.push(0u8); // set
    }
    buf.push(2); // an uncompressed block
    (ops.len() as u16).serialize(buf);
    buf.extend(ops);
    buf.push(0); // no more blocks
}

/// The tags a real member of this project publishes, for a fake one.
pub const FAKE_TAGS: &[(&str, &str)] =
    &[("host", "127.0.0.1"), ("raft_port", "7001"), ("raft_service_port", "7002"), ("raft_role", "voter")];

/// A Syn of `cluster_id` whose digest holds the fake member.
pub fn syn(cluster_id: &str, fake: &ChitchatId, heartbeat: u64) -> Vec<u8> {
    let mut v = header(0);
    digest(&mut v, fake, heartbeat, FAKE_TAGS.len() as u64);
    cluster_id.serialize(&mut v);
    v
}

/// An unsolicited SynAck (no cluster id at all) introducing the fake member with tags.
pub fn syn_ack(fake: &ChitchatId, heartbeat: u64) -> Vec<u8> {
    let mut v = header(1);
    digest(&mut v, fake, heartbeat, FAKE_TAGS.len() as u64);
    delta(&mut v, fake, FAKE_TAGS);
    v
}

/// An unsolicited Ack carrying the fake member's tags.
pub fn ack(fake: &ChitchatId) -> Vec<u8> {
    let mut v = header(2);
    delta(&mut v, fake, FAKE_TAGS);
    v
}

/// BadCluster: "you are of another cluster".
pub fn bad_cluster() -> Vec<u8> {
    header(3)
}
