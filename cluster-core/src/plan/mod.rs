//! Pure decision logic: no I/O, no clock. Facts go in, decisions come out;
//! the facade's housekeeping only carries them out. Tested by simulation.

pub mod admission;
pub mod departures;
pub mod endpoints;
pub mod records;
pub mod replicas;
pub mod short_id;
pub mod voters;

pub use admission::{AddressFacts, Refusal, admit, refuse_duplicate_addresses};
pub use departures::{Departure, DepartureTimeouts, Departures};
pub use endpoints::plan_endpoint_updates;
pub use records::{RecordChange, RecordFacts, plan_records};
pub use replicas::{ReplicaBound, ReplicaCandidate, ReplicaPlan, ZONE_TAG, plan_replicas};
pub use short_id::lowest_free_short_id;
pub use voters::{Health, PlanMember, RaftMembership, VoterChange, plan_voters, plan_voters_preferring};
