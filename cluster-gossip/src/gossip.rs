//! [`Gossip`]: the handle of a running member. It starts chitchat and the
//! events task, changes the member's own tags, and ends both on
//! [`leave`](Gossip::leave), [`stop`](Gossip::stop) or drop.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex as StdMutex, MutexGuard};
use std::time::{Duration, Instant};

use chitchat::{
    Chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, ProtocolVersion,
};
use cluster_core::membership::membership_hub;
use cluster_core::{
    EventHub, Member, MemberId, MemberTable, Membership, MembershipConfig, MembershipEvent, MembershipEvents,
};
use tokio::sync::{Mutex, oneshot};
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, info_span};

use crate::config::{GossipConfig, GossipTransport};
use crate::error::{GossipError, Result};
use crate::events::diff::Tracker;
use crate::events::task::EventsTask;
use crate::keyring::KeyringHandle;
use crate::keys::{RESERVED_PREFIX, is_reserved};
use crate::leave::announce_and_wait;
use crate::pace::Pace;
use crate::socket::{DatagramStats, Shared};
use crate::transport;

/// Heartbeat intervals the failure detector keeps per member for its mean.
const HEARTBEAT_SAMPLES: usize = 100;

/// The background parts of a running member.
struct Running {
    chitchat: ChitchatHandle,
    events: JoinHandle<()>,
    stop_events: oneshot::Sender<()>,
}

/// A running gossip member.
///
/// Dropping it stops the member abruptly, like [`stop`](Gossip::stop) (peers
/// will report it failed); call [`leave`](Gossip::leave) to depart gracefully.
pub struct Gossip {
    member_id: MemberId,
    generation: u64,
    gossip_addr: SocketAddr,
    /// The seeds it was started with, to name them when it heard no one.
    seeds: Vec<String>,
    leave_timeout: Duration,
    keyring: Option<KeyringHandle>,
    socket: Arc<Shared>,
    chitchat: Arc<Mutex<Chitchat>>,
    /// `None` once stopped; taken out before any `.await`.
    running: StdMutex<Option<Running>>,
    /// `None` once stopped, which ends every subscription.
    hub: StdMutex<Option<EventHub<MemberTable, MembershipEvent>>>,
}

impl std::fmt::Debug for Gossip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gossip")
            .field("member_id", &self.member_id)
            .field("generation", &self.generation)
            .field("gossip_addr", &self.gossip_addr)
            .field("running", &self.is_running())
            .field("encrypted", &self.keyring.is_some())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &StdMutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Gossip {
    /// Starts a member: binds the listen address, starts gossiping with the
    /// seeds, and publishes the initial tags.
    pub async fn start(mut config: GossipConfig) -> Result<Gossip> {
        if let (GossipTransport::Udp, false, Some(network)) =
            (&config.transport, config.is_encrypted(), crate::sim::SimNetwork::installed())
        {
            config.transport = GossipTransport::Sim(network);
        }
        config.validate()?;
        let keyring =
            KeyringHandle::open(config.keyring(), config.membership.encryption.keyring_file.clone())?;
        let m = &config.membership;
        let span = info_span!("gossip", member = %m.member_id);
        let shared = Shared::new(keyring.clone(), m.cluster_id.clone(), m.gossip_interval);
        let (socket, bound) =
            transport::open(&config.transport, m.listen_addr, shared.clone(), span.clone()).await?;
        let mut advertise = m.advertise_addr.unwrap_or(bound);
        if advertise.port() == 0 {
            advertise.set_port(bound.port());
        }
        let chitchat_id = ChitchatId::new(m.member_id.to_string(), m.generation, advertise);
        let fd = &m.failure_detection;
        let chitchat_config = ChitchatConfig {
            chitchat_id,
            cluster_id: m.cluster_id.clone(),
            gossip_interval: m.gossip_interval,
            listen_addr: bound,
            seed_nodes: m.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: fd.phi_threshold,
                initial_interval: fd.initial_interval,
                dead_node_grace_period: fd.dead_member_grace,
                // chitchat keeps this many heartbeat intervals per member,
                // 8 bytes each, from the start: 1,000 by default, 800 KB at
                // 100 members. A few seconds of heartbeats give the mean.
                sampling_window_size: HEARTBEAT_SAMPLES,
                ..FailureDetectorConfig::default()
            },
            marked_for_deletion_grace_period: config.tombstone_grace,
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: ProtocolVersion::V0,
        };
        let tags: Vec<(String, String)> = m.tags.clone().into_iter().collect();
        let handle = chitchat::spawn_chitchat(chitchat_config, tags, &socket)
            .await
            .map_err(|e| GossipError::Internal(format!("starting chitchat: {e:#}")))?;
        let chitchat = handle.chitchat();
        let live = chitchat.lock().await.live_nodes_watcher();
        let hub = membership_hub(config.event_buffer);
        let (stop_events, stop_rx) = oneshot::channel();
        let task = EventsTask {
            self_id: m.member_id,
            chitchat: chitchat.clone(),
            live,
            hub: hub.clone(),
            socket: shared.clone(),
            tracker: Tracker::new(m.failure_detection.dead_member_grace),
        };
        let events = tokio::spawn(task.run(stop_rx).instrument(span.clone()));
        let primary = keyring.as_ref().map(|k| k.keys().primary().id().to_string());
        span.in_scope(|| {
            info!(
                addr = %advertise,
                cluster = %m.cluster_id,
                encryption = primary.as_deref().map_or("off", |_| "on"),
                primary_key = primary.as_deref().unwrap_or("-"),
                "gossip member started"
            )
        });
        Ok(Gossip {
            member_id: m.member_id,
            generation: m.generation,
            gossip_addr: advertise,
            seeds: m.seeds.clone(),
            leave_timeout: config.leave_timeout,
            keyring,
            socket: shared,
            chitchat,
            running: StdMutex::new(Some(Running { chitchat: handle, events, stop_events })),
            hub: StdMutex::new(Some(hub)),
        })
    }

    /// This member's id.
    pub fn member_id(&self) -> MemberId {
        self.member_id
    }

    /// This incarnation's generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The address peers gossip with this member at (the real port when 0 was asked).
    pub fn gossip_addr(&self) -> SocketAddr {
        self.gossip_addr
    }

    /// The live keyring (list, install, use, remove keys), or `None` when
    /// gossip is not encrypted. Encryption cannot be turned on or off on a
    /// running member: that would cut it off from the others.
    pub fn keyring(&self) -> Option<&KeyringHandle> {
        self.keyring.as_ref()
    }

    /// Counts of datagrams received, handed to chitchat, dropped (and why)
    /// and not sent, since the member started. Zero on the channel transport.
    pub fn datagram_stats(&self) -> DatagramStats {
        self.socket.stats()
    }

    /// Whether the member still gossips (neither stopped nor left).
    pub fn is_running(&self) -> bool {
        lock(&self.running).is_some()
    }

    fn ensure_running(&self) -> Result<()> {
        if self.is_running() { Ok(()) } else { Err(GossipError::Stopped) }
    }

    /// Sets (adds or overwrites) some of this member's tags; they reach every
    /// live member. Names starting with [`RESERVED_PREFIX`] are refused.
    pub async fn set_tags(&self, tags: BTreeMap<String, String>) -> Result<()> {
        if let Some(name) = tags.keys().find(|n| is_reserved(n)) {
            return Err(GossipError::ReservedTag { name: name.clone(), prefix: RESERVED_PREFIX });
        }
        self.ensure_running()?;
        let mut c = self.chitchat.lock().await;
        let me = c.self_node_state();
        for (k, v) in tags {
            me.set(k, v);
        }
        Ok(())
    }

    /// Sets how often this member starts gossip rounds of its own (see
    /// [`Pace`]); it answers every round others start whatever its pace.
    /// Only the UDP transport paces; the others always run at full pace.
    pub fn set_pace(&self, pace: Pace) {
        self.socket.pace.set(pace);
    }

    /// Sets one tag.
    pub async fn set_tag(&self, name: impl Into<String>, value: impl Into<String>) -> Result<()> {
        self.set_tags(BTreeMap::from([(name.into(), value.into())])).await
    }

    /// Removes some of this member's tags; names it does not have are ignored.
    pub async fn remove_tags<S: AsRef<str>>(&self, names: impl IntoIterator<Item = S>) -> Result<()> {
        let names: Vec<S> = names.into_iter().collect();
        if let Some(name) = names.iter().find(|n| is_reserved(n.as_ref())) {
            return Err(GossipError::ReservedTag { name: name.as_ref().to_owned(), prefix: RESERVED_PREFIX });
        }
        self.ensure_running()?;
        let mut c = self.chitchat.lock().await;
        let me = c.self_node_state();
        for name in names {
            if me.get(name.as_ref()).is_some() {
                me.delete(name.as_ref());
            }
        }
        Ok(())
    }

    /// The live members as this member's events last reported them, this
    /// member included (from its first gossip round on). Empty once stopped.
    pub fn members(&self) -> Vec<Member> {
        match &*lock(&self.hub) {
            Some(hub) => hub.read(|t| t.values().cloned().collect()),
            None => Vec::new(),
        }
    }

    /// A new subscription: first a `Joined` event for every live member, then
    /// every change. It ends (`recv` returns `None`) when the member stops.
    pub fn subscribe(&self) -> MembershipEvents {
        match &*lock(&self.hub) {
            Some(hub) => hub.subscribe(),
            // A hub dropped at once: the subscription is already over.
            None => membership_hub(1).subscribe(),
        }
    }

    /// Leaves gracefully: announces the departure, waits until every live peer
    /// acknowledged it or the configured `leave_timeout` passed, then stops.
    /// Peers report this member `Left`. Returns [`GossipError::Stopped`] if
    /// the member was already stopped.
    pub async fn leave(&self) -> Result<()> {
        self.ensure_running()?;
        // The leave and its acknowledgements travel in this member's rounds.
        self.set_pace(Pace::Full);
        let started = Instant::now();
        let outcome = announce_and_wait(&self.chitchat, self.member_id, self.leave_timeout).await;
        info!(
            member = %self.member_id,
            peers = outcome.peers,
            unacknowledged = outcome.unacknowledged,
            waited_ms = started.elapsed().as_millis() as u64,
            "announced the leave; stopping"
        );
        self.stop().await
    }

    /// Stops at once without announcing it: peers will report a failure.
    /// Ends chitchat and the events task, and every subscription. Stopping a
    /// stopped member does nothing.
    pub async fn stop(&self) -> Result<()> {
        let running = lock(&self.running).take();
        let Some(running) = running else { return Ok(()) };
        let _ = running.stop_events.send(());
        let chitchat_result = running.chitchat.shutdown().await;
        let events_result = running.events.await;
        lock(&self.hub).take();
        debug!(member = %self.member_id, "gossip member stopped");
        chitchat_result.map_err(|e| GossipError::Internal(format!("chitchat ended with: {e:#}")))?;
        events_result.map_err(|e| GossipError::Internal(format!("events task: {e}")))
    }
}

impl Membership for Gossip {
    async fn start(config: MembershipConfig) -> cluster_core::Result<Self> {
        Ok(Gossip::start(config.into()).await?)
    }

    fn member_id(&self) -> MemberId {
        self.member_id
    }

    fn gossip_addr(&self) -> SocketAddr {
        self.gossip_addr
    }

    async fn set_tags(&self, tags: BTreeMap<String, String>) -> cluster_core::Result<()> {
        Ok(Gossip::set_tags(self, tags).await?)
    }

    async fn remove_tags(&self, names: Vec<String>) -> cluster_core::Result<()> {
        Ok(Gossip::remove_tags(self, names).await?)
    }

    fn members(&self) -> Vec<Member> {
        Gossip::members(self)
    }

    fn subscribe(&self) -> MembershipEvents {
        Gossip::subscribe(self)
    }

    async fn leave(&self) -> cluster_core::Result<()> {
        Ok(Gossip::leave(self).await?)
    }

    async fn stop(&self) -> cluster_core::Result<()> {
        Ok(Gossip::stop(self).await?)
    }

    fn keyring_control(&self) -> Option<Arc<dyn cluster_core::KeyringControl>> {
        self.keyring.clone().map(|k| Arc::new(k) as Arc<dyn cluster_core::KeyringControl>)
    }

    fn set_light_pace(&self, light: bool) {
        self.set_pace(if light { Pace::Light } else { Pace::Full });
    }

    fn join_problem(&self) -> Option<String> {
        let stats = self.datagram_stats();
        if stats.accepted > 0 {
            return None;
        }
        if self.keyring.is_some() && stats.unauthenticated > 0 {
            return Some(format!(
                "the gossip key does not match the cluster's: {} gossip datagrams failed authentication \
                 and none opened (give the cluster's key with --gossip-key or CARBON_GOSSIP_KEY; a \
                 keyring file in the data directory wins over it)",
                stats.unauthenticated
            ));
        }
        if stats.received == 0 && !self.seeds.is_empty() {
            // Members drop gossip they cannot open, or of another cluster,
            // without an answer: silence is all a joiner sees of it.
            let why = if self.keyring.is_some() {
                "the gossip key does not match the cluster's, or the cluster id differs"
            } else {
                "the cluster's gossip is encrypted (give its key with --gossip-key), or the cluster id differs"
            };
            return Some(format!(
                "no gossip came back from the seeds {}: if they are up, {why}",
                self.seeds.join(", ")
            ));
        }
        if self.keyring.is_none() && stats.rejected > 0 {
            return Some(format!(
                "{} gossip datagrams were refused and none accepted: the cluster's gossip is \
                 encrypted (give its key with --gossip-key) or its cluster id is another",
                stats.rejected
            ));
        }
        None
    }
}
