//! Logs of a test run: one set-up for every test.

/// Sends `tracing` output to the test's captured output, filtered by
/// `RUST_LOG` (nothing when it is unset). Call it first in every test; the
/// first call in a process installs the subscriber and later calls do
/// nothing, so tests may call it in any order and from any thread.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_set_up_is_harmless() {
        init_tracing();
        init_tracing();
        assert!(tracing::dispatcher::has_been_set());
    }
}
