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

    /// Exit code 4, with the whole error chain.
    pub(crate) fn other(error: anyhow::Error) -> Self {
        Failure { code: OTHER, message: chain(&error) }
    }
}

/// The error and its causes, joined by `: `, each cause said once: many
/// errors repeat their source's text in their own message.
pub(crate) fn chain(error: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if message.contains(&text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(&text);
    }
    message
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("starting service failed: {0}")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_cause_repeated_by_its_error_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use (os error 98)");
        let e = anyhow::Error::new(Outer(io)).context("cannot start the member");
        let m = chain(&e);
        assert_eq!(
            m,
            "cannot start the member: starting service failed: Address already in use (os error 98)"
        );
    }
}
