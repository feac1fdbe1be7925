//! Membership events: the pure diff of successive views ([`diff`]) and the
//! background task that feeds it from chitchat and publishes to the hub ([`task`]).

pub(crate) mod diff;
pub(crate) mod task;
