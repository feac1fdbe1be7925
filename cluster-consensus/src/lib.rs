//! The raft key-value store on openraft (being built).

pub mod encoding;
pub mod error;
pub mod log_store;
pub mod network;
pub mod state_machine;
pub mod store;
pub mod typecfg;

pub use store::RaftStore;
