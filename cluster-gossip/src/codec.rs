//! Turning chitchat envelopes into bytes and back, through chitchat's own
//! UDP socket on loopback.
//!
//! chitchat 0.13 exports its envelope type but not the envelope's encoder
//! and decoder (`pub(crate)`), and a digest can neither be built nor read
//! outside the crate. The only public code that writes and reads the wire
//! format is its `UdpSocket`. So the sealing socket keeps two private pairs
//! of loopback sockets:
//! - the [`Encoder`] sends an envelope with a chitchat socket to a socket
//!   of ours connected to it (the kernel delivers only that peer's datagrams)
//!   and reads the bytes back;
//! - the [`Decoder`] sends checked bytes from a socket of ours to a chitchat
//!   socket, followed by a marker datagram, and reads envelopes until the
//!   marker comes back; whatever did not come from our socket is dropped.
//!
//! Everything stays on loopback inside the process; nothing sent here ever
//! reaches the network. The cost is one loopback datagram per sent datagram
//! and two per received one. A chitchat release that exports the encoder
//! (chitchat issue #79 asks for encryption) would replace this module.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use chitchat::transport::{RecvOutcome, Socket, UdpSocket as ChitchatUdpSocket};
use chitchat::{ChitchatEnvelope, ChitchatMessage};
use tokio::net::UdpSocket;
use tokio::time::timeout;

/// The cluster id of a marker Syn starts with this, followed by the marker's
/// number; [`crate::datagram::check`] refuses such Syns from the network (a
/// Syn of another cluster id). It cannot be a real cluster id: it starts with a NUL.
pub(crate) const MARKER_PREFIX: &str = "\0cluster-gossip codec marker ";

/// How long a loopback datagram may take before the codec gives up on it.
const LOOPBACK_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest datagram.
const MAX_DATAGRAM: usize = 65_536;

fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

fn marker_bytes(number: u64) -> Vec<u8> {
    let id = format!("{MARKER_PREFIX}{number}");
    let mut v = 45_139u16.to_le_bytes().to_vec();
    v.extend([0, 0]); // protocol V0, Syn
    v.extend(0u16.to_le_bytes()); // an empty digest
    v.extend((id.len() as u16).to_le_bytes());
    v.extend(id.as_bytes());
    v
}

/// The number of a marker envelope.
fn marker_number(envelope: &ChitchatEnvelope) -> Option<u64> {
    match &envelope.message {
        ChitchatMessage::Syn { cluster_id, .. } => cluster_id.strip_prefix(MARKER_PREFIX)?.parse().ok(),
        _ => None,
    }
}

/// Envelope to bytes.
pub(crate) struct Encoder {
    chitchat: ChitchatUdpSocket,
    tap: UdpSocket,
    tap_addr: SocketAddr,
    buf: Vec<u8>,
    /// A datagram may still be on its way from a call that timed out.
    late: bool,
}

impl Encoder {
    /// Opens the pair of loopback sockets.
    pub(crate) async fn open() -> anyhow::Result<Encoder> {
        let chitchat = ChitchatUdpSocket::open(loopback()).await?;
        let tap = UdpSocket::bind(loopback()).await?;
        tap.connect(chitchat.local_addr()?).await?;
        let tap_addr = tap.local_addr()?;
        Ok(Encoder { chitchat, tap, tap_addr, buf: vec![0; MAX_DATAGRAM], late: false })
    }

    /// The bytes chitchat writes for `envelope`.
    pub(crate) async fn encode(&mut self, envelope: ChitchatEnvelope) -> io::Result<&[u8]> {
        // A datagram late from a call that timed out (or was dropped) must
        // not pass for this one. Drained only then: draining costs a system
        // call on every datagram.
        if self.late {
            while self.tap.try_recv(&mut self.buf).is_ok() {}
        }
        self.late = true;
        self.chitchat.send(self.tap_addr, envelope).await.map_err(io::Error::other)?;
        let received = timeout(LOOPBACK_TIMEOUT, self.tap.recv(&mut self.buf))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the loopback encoder lost a datagram"))??;
        self.late = false;
        Ok(&self.buf[..received])
    }
}

/// Bytes to envelope.
pub(crate) struct Decoder {
    feeder: UdpSocket,
    feeder_addr: SocketAddr,
    chitchat: ChitchatUdpSocket,
    /// The number of the last marker sent: what came before an older marker
    /// belongs to a call that timed out.
    markers: u64,
}

impl Decoder {
    /// Opens the pair of loopback sockets.
    pub(crate) async fn open() -> anyhow::Result<Decoder> {
        let chitchat = ChitchatUdpSocket::open(loopback()).await?;
        let feeder = UdpSocket::bind(loopback()).await?;
        feeder.connect(chitchat.local_addr()?).await?;
        let feeder_addr = feeder.local_addr()?;
        Ok(Decoder { feeder, feeder_addr, chitchat, markers: 0 })
    }

    /// The envelope chitchat reads from `bytes`, which [`crate::datagram::check`]
    /// accepted. `Ok(None)` if chitchat did not read one after all.
    pub(crate) async fn decode(&mut self, bytes: &[u8]) -> io::Result<Option<ChitchatEnvelope>> {
        self.markers += 1;
        let expected = self.markers;
        self.feeder.send(bytes).await?;
        self.feeder.send(&marker_bytes(expected)).await?;
        let mut envelope = None;
        let read = async {
            loop {
                let RecvOutcome { from_addr, envelope: got, .. } =
                    self.chitchat.recv().await.map_err(io::Error::other)?;
                if from_addr != self.feeder_addr {
                    continue;
                }
                match marker_number(&got) {
                    Some(n) if n == expected => return Ok::<_, io::Error>(()),
                    Some(_) => envelope = None,
                    None => envelope = Some(got),
                }
            }
        };
        timeout(LOOPBACK_TIMEOUT, read)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the loopback decoder lost a datagram"))??;
        Ok(envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_marker() -> anyhow::Result<()> {
        let mut enc = Encoder::open().await?;
        let mut dec = Decoder::open().await?;
        let bad_cluster =
            ChitchatEnvelope { version: chitchat::ProtocolVersion::V0, message: ChitchatMessage::BadCluster };
        let bytes = enc.encode(bad_cluster).await?.to_vec();
        assert!(crate::datagram::check(&bytes, "c").is_err(), "BadCluster never reaches chitchat");
        let back = dec.decode(&bytes).await?;
        assert!(matches!(back.map(|e| e.message), Some(ChitchatMessage::BadCluster)));
        // A stale marker (of a call that timed out) and what came before it are skipped.
        dec.feeder.send(&bytes).await?;
        dec.feeder.send(&marker_bytes(0)).await?;
        assert!(dec.decode(b"not chitchat").await?.is_none());
        assert!(matches!(dec.decode(&bytes).await?.map(|e| e.message), Some(ChitchatMessage::BadCluster)));
        assert!(crate::datagram::check(&marker_bytes(3), "c").is_err());
        Ok(())
    }
}
