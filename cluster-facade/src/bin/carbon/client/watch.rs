//! `carbon kv watch`: every change under a prefix, one line each.

use cluster_facade::core::keys;
use serde_json::json;

use super::{Target, client, failed, json_entry, print_json, text};
use crate::exit::Failure;

/// `carbon kv watch`: one line per change until Ctrl-C (exit 0) or an error.
pub(crate) async fn run(
    prefix: &str,
    from_revision: Option<u64>,
    all: bool,
    t: &Target,
) -> Result<(), Failure> {
    use futures::StreamExt;

    let c = client(t)?;
    let mut events = std::pin::pin!(c.watch(prefix, from_revision));
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let event = tokio::select! {
            _ = &mut interrupted => return Ok(()),
            event = events.next() => event,
        };
        let event = match event {
            Some(Ok(event)) => event,
            Some(Err(e)) => return Err(failed(t, e).await),
            None => return Ok(()),
        };
        if !all && keys::is_reserved(&event.key) {
            continue;
        }
        if t.json {
            let mut line = json_entry(&event.key, event.value.as_deref());
            if let serde_json::Value::Object(o) = &mut line {
                o.insert("revision".into(), json!(event.revision));
                o.insert("deleted".into(), json!(event.value.is_none()));
            }
            print_json(line);
        } else {
            match &event.value {
                Some(v) => println!("{}\tset\t{}\t{}", event.revision, event.key, text(v)),
                None => println!("{}\tdelete\t{}", event.revision, event.key),
            }
        }
    }
}
