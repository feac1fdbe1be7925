//! `carbon members | status | kv | force-leave …`: talk to any member's
//! service port. One file per command family, each parsing its arguments,
//! running the command and rendering its answer (as mini-redis keeps one
//! file per command): [`kv`] (get, set, delete, list, cas), [`watch`],
//! [`members`], [`status`], [`force_leave`]. This file holds what they
//! share: where the cluster is ([`Target`]), the client, and how errors
//! and values are shown.

pub(crate) mod force_leave;
pub(crate) mod kv;
pub(crate) mod members;
pub(crate) mod status;
pub(crate) mod watch;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use cluster_facade::ServiceClient;
use cluster_facade::core::{Error, ErrorKind};
use cluster_facade::service::RouterOptions;
use cluster_facade::service::protocol::{Request, Response};
use serde_json::json;

use crate::exit::Failure;

pub(crate) use members::members_with_liveness;

/// Where and how to reach the cluster.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Target {
    /// A member's service address (`host:port`); repeat (or separate with
    /// commas in `CARBON_SERVICE`) to name several.
    #[arg(long = "service", value_name = "ADDR", env = "CARBON_SERVICE", value_delimiter = ',', required = true, value_parser = service_addr)]
    pub services: Vec<String>,
    /// The cluster id the members were started with.
    #[arg(long, env = "CARBON_CLUSTER_ID", default_value = "carbon-grid")]
    pub cluster_id: String,
    /// Give up after this long, retries included (`500ms`, `2s`, `1m`; a bare number is seconds).
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = duration)]
    pub timeout: Duration,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
}

/// `host:port` with a port in 1..=65535; anything else is a usage error at
/// once. Spaces around it are dropped: `CARBON_SERVICE="a:1, b:2"` reads as
/// two addresses, as people write lists.
fn service_addr(s: &str) -> Result<String, String> {
    let s = s.trim();
    let (host, port) = s.rsplit_once(':').ok_or_else(|| format!("{s:?} is not host:port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(format!("{s:?} has no host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(s.to_owned()),
        _ => Err(format!("{s:?} has no port (1-65535)")),
    }
}

/// `500ms`, `2s`, `1m`, or a bare number of seconds.
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration such as 500ms, 2s or 1m");
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(bad()),
    };
    if !(secs.is_finite() && secs > 0.0 && secs < 1e7) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A client of the `--service` addresses of `t`.
pub(crate) fn client(t: &Target) -> Result<ServiceClient, Failure> {
    client_of(t, t.services.iter().cloned())
}

/// A client of `addrs` with `t`'s cluster id, timeout and TLS.
pub(crate) fn client_of(
    t: &Target,
    addrs: impl IntoIterator<Item = String>,
) -> Result<ServiceClient, Failure> {
    let mut options = RouterOptions::new(t.cluster_id.clone());
    options.op_timeout = t.timeout;
    options.attempt_timeout = options.attempt_timeout.min(t.timeout);
    options.connect_timeout = options.connect_timeout.min(t.timeout);
    options.security = t.tls.security()?;
    ServiceClient::new(addrs, options).map_err(|e| Failure::usage(e.to_string()))
}

/// Maps a store error to the exit code scripts rely on, with a message that
/// says what the user can do.
pub(crate) async fn failed(t: &Target, e: Error) -> Failure {
    match e.kind() {
        ErrorKind::Unavailable | ErrorKind::NotLeader => Failure::unreachable(format!(
            "cannot reach the cluster within the timeout of {:?} (--timeout): {e}",
            t.timeout
        )),
        ErrorKind::Protocol if matches!(e, Error::ClusterMismatch { .. }) => Failure::usage(format!(
            "{} belongs to another cluster than --cluster-id {:?} (or CARBON_CLUSTER_ID): use the id the members were started with",
            t.services.join(", "),
            t.cluster_id
        )),
        ErrorKind::Protocol => Failure::usage(not_a_service_port(t).await),
        // A bad argument, or credentials that do not allow it (no TLS to a
        // TLS cluster, a client certificate for the cluster's records): fix
        // the command or the configuration.
        ErrorKind::Invalid | ErrorKind::Forbidden => Failure::usage(e.to_string()),
        ErrorKind::Quota => Failure::quota(e.to_string()),
        // A --from-revision older than the member remembers, or a watch that
        // fell behind: not a usage error (the command was right when it was
        // saved), but one the user recovers from by starting again from now.
        ErrorKind::Resync => Failure::other_message(format!(
            "{e}: read the prefix again (`carbon kv list PREFIX --json` gives its revision) and watch from that revision + 1"
        )),
        _ => Failure::other(anyhow::Error::new(e)),
    }
}

/// Names the addresses that do not speak the service protocol, and what
/// they seem to be instead.
async fn not_a_service_port(t: &Target) -> String {
    let Ok(c) = client(t) else { return "not a service port".into() };
    let mut wrong = Vec::new();
    for addr in &t.services {
        match c.status_of(addr).await {
            // The RPC client recognizes an HTTP answer and says so.
            Err(Error::Malformed(why)) if why.contains("HTTP") => {
                wrong.push(format!("{addr} answers in HTTP (the HTTP port?)"));
            }
            Err(Error::Malformed(_) | Error::BadMagic | Error::VersionMismatch { .. }) => {
                wrong.push(format!("{addr} does not answer in the service protocol (the raft port?)"));
            }
            Err(Error::FrameTooLarge { .. }) => {
                wrong.push(format!("{addr} answers in another protocol"));
            }
            _ => {}
        }
    }
    let which = if wrong.is_empty() {
        format!("{} does not answer in the service protocol", t.services.join(", "))
    } else {
        wrong.join("; ")
    };
    format!("{which}: this is not a service port: use the address after `service` in the agent's start line")
}

/// A value for people: the text when it is UTF-8, else base64 with a marker.
pub(crate) fn text(v: &[u8]) -> String {
    match std::str::from_utf8(v) {
        Ok(s) => s.to_owned(),
        Err(_) => format!("(base64) {}", BASE64.encode(v)),
    }
}

/// A value in JSON: `"value"` when it is UTF-8, else `"value_base64"`.
pub(crate) fn json_entry(key: &str, v: Option<&[u8]>) -> serde_json::Value {
    match v {
        None => json!({ "key": key, "value": null }),
        Some(v) => match std::str::from_utf8(v) {
            Ok(s) => json!({ "key": key, "value": s }),
            Err(_) => json!({ "key": key, "value_base64": BASE64.encode(v) }),
        },
    }
}

/// Prints one JSON value on a line of its own.
pub(crate) fn print_json(v: serde_json::Value) {
    println!("{v}");
}

/// Sends one request through the client, mapping its errors.
pub(crate) async fn ask(t: &Target, c: &ServiceClient, r: Request) -> Result<Response, Failure> {
    match c.request(r).await {
        Ok(Response::Err(e)) | Err(e) => Err(failed(t, e).await),
        Ok(answer) => Ok(answer),
    }
}

/// The failure for an answer of the wrong kind.
pub(crate) fn unexpected(what: &str, r: &Response) -> Failure {
    Failure::other(anyhow::anyhow!("{what} was answered with {}", r.kind()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_compacted_watch_start_is_the_users_to_fix() {
        let t = Target {
            services: vec!["127.0.0.1:1".into()],
            cluster_id: "c".into(),
            timeout: Duration::from_secs(1),
            json: false,
            tls: crate::tls::TlsArgs::default(),
        };
        let f = failed(&t, Error::Compacted { requested: 3, oldest: 900 }).await;
        assert_eq!(f.code, crate::exit::OTHER);
        assert!(f.message.contains("900") && f.message.contains("kv list"), "{}", f.message);
    }

    #[test]
    fn durations_and_addresses_parse_or_are_refused() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(duration("1m"), Ok(Duration::from_secs(60)));
        for bad in ["", "x", "-1s", "0", "2h"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
        assert!(service_addr("127.0.0.1:7000").is_ok());
        assert!(service_addr("[::1]:7000").is_ok());
        assert_eq!(service_addr(" 127.0.0.1:7000 "), Ok("127.0.0.1:7000".to_owned()));
        for bad in ["notanaddress", "host:0", ":7000", "host:x", "host:70000"] {
            assert!(service_addr(bad).is_err(), "{bad}");
        }
    }
}
