//! Exit codes scripts rely on, and the error that carries one.

use std::fmt;

/// Success.
pub(crate) const OK: u8 = 0;
/// A key that does not exist (or a compare-and-set that did not match).
pub(crate) const NOT_FOUND: u8 = 1;
/// Bad usage: a bad flag or configuration. Nothing was started.
pub(crate) const USAGE: u8 = 2;
/// The cluster could not be reached.
pub(crate) const UNREACHABLE: u8 = 3;
/// Anything else.
pub(crate) const OTHER: u8 = 4;
/// A write refused by a quota (key, value or store bytes): shrink it, or
/// delete keys to make room. Reads and deletes still work.
pub(crate) const QUOTA: u8 = 5;

/// A failure with its exit code and message.
#[derive(Debug)]
pub(crate) struct Failure {
    /// The exit code.
    pub(crate) code: u8,
    /// What to tell the user.
    pub(crate) message: String,
}

impl Failure {
    /// Exit code 1.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Failure { code: NOT_FOUND, message: message.into() }
    }

    /// Exit code 2.
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Failure { code: USAGE, message: message.into() }
    }

    /// Exit code 3.
    pub(crate) fn unreachable(message: impl Into<String>) -> Self {
        Failure { code: UNREACHABLE, message: message.into() }
    }

    /// Exit code 5.
    pub(crate) fn quota(message: impl Into<String>) -> Self {
        Failure { code: QUOTA, message: message.into() }
    }

    /// Exit code 4, with the whole error chain.
    pub(crate) fn other(error: anyhow::Error) -> Self {
        Failure { code: OTHER, message: format!("{error:#}") }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
