//! Exit codes scripts rely on, and the error that carries one.
//!
//! [`TABLE`] is the one list of them: `carbon --help` prints it, and a test
//! checks that the README's table says exactly the same.

use std::fmt;

/// Success.
pub(crate) const OK: u8 = 0;
/// A key that does not exist (no key under the prefix of `kv delete
/// --prefix`, or a compare-and-set that did not match).
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
/// `carbon agent` only: the member's stored raft state is corrupt; it did
/// not start. Recover with `carbon agent --reset-raft-state` (docs/recovery.md).
pub(crate) const CORRUPT: u8 = 6;

/// Every exit code with what it means, in words for people: the help text
/// and the README's table are this list.
pub(crate) const TABLE: &[(u8, &str)] = &[
    (OK, "success"),
    (
        NOT_FOUND,
        "a key not found (for kv delete --prefix: no key under the prefix), or a compare-and-set that did \
         not match",
    ),
    (
        USAGE,
        "bad usage or configuration: a bad flag or --service address, a port that is not a service port \
         (raft, HTTP), another cluster's id, missing or wrong TLS credentials",
    ),
    (UNREACHABLE, "the cluster unreachable within --timeout (default 15s)"),
    (
        OTHER,
        "anything else, a watch from a compacted revision among them (list again and watch from the \
         list's revision + 1)",
    ),
    (
        QUOTA,
        "a write refused by a quota (key, value or store bytes): shrink it or delete keys; reads and \
         deletes still work",
    ),
    (CORRUPT, "(carbon agent only) the raft state on disk is corrupt: see docs/recovery.md"),
];

/// [`TABLE`] as the help text shows it.
pub(crate) fn help() -> String {
    let mut text = String::from("Exit codes:\n");
    for (code, meaning) in TABLE {
        text.push_str(&format!("  {code}  {meaning}\n"));
    }
    text
}

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

    /// Exit code 6.
    pub(crate) fn corrupt(message: impl Into<String>) -> Self {
        Failure { code: CORRUPT, message: message.into() }
    }

    /// Exit code 5.
    pub(crate) fn quota(message: impl Into<String>) -> Self {
        Failure { code: QUOTA, message: message.into() }
    }

    /// Exit code 4, with a message of its own.
    pub(crate) fn other_message(message: impl Into<String>) -> Self {
        Failure { code: OTHER, message: message.into() }
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
    fn the_table_lists_every_code_once_in_order() {
        let codes: Vec<u8> = TABLE.iter().map(|(c, _)| *c).collect();
        assert_eq!(codes, [OK, NOT_FOUND, USAGE, UNREACHABLE, OTHER, QUOTA, CORRUPT]);
        assert_eq!(codes, (0..7).collect::<Vec<u8>>());
    }

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
