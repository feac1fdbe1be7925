//! `carbon keys`: gossip encryption keys. `generate` works offline; the
//! keyring of a running member is reached through `Cluster::gossip_keyring`.

use cluster_facade::GossipKey;

use crate::exit::Failure;

/// Subcommands of `carbon keys`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum KeysCommand {
    /// Print a fresh random gossip key (base64) for `--gossip-key` or
    /// `gossip_keys`. Nothing is sent anywhere.
    Generate,
}

/// Runs a `carbon keys` subcommand.
pub(crate) fn run(cmd: KeysCommand) -> Result<(), Failure> {
    match cmd {
        KeysCommand::Generate => {
            println!("{}", GossipKey::generate().to_base64());
            Ok(())
        }
    }
}
