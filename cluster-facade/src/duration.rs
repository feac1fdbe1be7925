//! Durations in the configuration file, written the way people write them.
//!
//! Every duration accepts `"5s"`, `"250ms"`, `"1m 30s"` (humantime), and keeps
//! the form it had: a plain number of milliseconds for the `*_ms` fields,
//! `{ secs = 5, nanos = 0 }` for the `[limits]` timeouts (serde's own form
//! of a `Duration`, which is all those accepted before).

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// The TOML/serde forms of one duration.
struct AnyDuration;

impl<'de> Visitor<'de> for AnyDuration {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a duration: "5s", "250ms", a number of milliseconds, or { secs = 5, nanos = 0 }"#)
    }

    fn visit_u64<E: de::Error>(self, ms: u64) -> Result<Duration, E> {
        Ok(Duration::from_millis(ms))
    }

    fn visit_i64<E: de::Error>(self, ms: i64) -> Result<Duration, E> {
        u64::try_from(ms)
            .map(Duration::from_millis)
            .map_err(|_| E::custom(format!("a duration cannot be negative: {ms}")))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
        humantime::parse_duration(text.trim()).map_err(|e| {
            E::custom(format!("{text:?} is not a duration ({e}): write e.g. \"5s\" or \"250ms\""))
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Duration, A::Error> {
        Duration::deserialize(de::value::MapAccessDeserializer::new(map))
    }
}

/// A duration in milliseconds (the `*_ms` fields): a number of
/// milliseconds, `"5s"`-style text, or `{ secs, nanos }`.
pub(crate) fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let duration = d.deserialize_any(AnyDuration)?;
    u64::try_from(duration.as_millis()).map_err(|_| de::Error::custom("the duration is too long"))
}

/// `[limits]`: the RPC layer's and the HTTP port's limits, whose durations
/// may also be written as `"5s"`. Every string there is one of its durations
/// (its other fields are counts); it becomes the `{ secs, nanos }` form the
/// limits read.
pub(crate) fn limits<'de, D: Deserializer<'de>>(d: D) -> Result<crate::config::Limits, D::Error> {
    let mut table = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
    // The limits ignore fields they do not know; a misspelt one here would
    // silently keep its default, so it is refused like anywhere else.
    let known = serde_json::to_value(crate::config::Limits::default()).map_err(de::Error::custom)?;
    if let Some(field) = table.keys().find(|f| known.get(f.as_str()).is_none()) {
        return Err(de::Error::custom(format!("unknown field `{field}` in [limits]")));
    }
    for (field, value) in table.iter_mut() {
        if let serde_json::Value::String(text) = value {
            let duration: Duration = AnyDuration
                .visit_str::<de::value::Error>(text)
                .map_err(|e| de::Error::custom(format!("{field}: {e}")))?;
            *value = serde_json::to_value(duration).map_err(de::Error::custom)?;
        }
    }
    serde_json::from_value(serde_json::Value::Object(table)).map_err(de::Error::custom)
}

#[cfg(test)]
mod tests {
    use crate::ClusterConfig;

    fn parse(toml_text: &str) -> ClusterConfig {
        toml::from_str(toml_text).unwrap_or_else(|e| panic!("{toml_text}: {e}"))
    }

    #[test]
    fn timeouts_take_text_and_keep_plain_milliseconds() {
        let c = parse(
            "[timeouts]\nstart_ms = \"45s\"\noperation_ms = 2500\nleave_ms = \"1500ms\"\n\
             [gossip]\ninterval_ms = \"250ms\"\ndead_member_grace_ms = \"1h\"\n\
             [raft]\nheartbeat_ms = \"40ms\"\nelection_timeout_min_ms = 200\nelection_timeout_max_ms = \"400ms\"\n",
        );
        assert_eq!(c.timeouts.start_ms, 45_000);
        assert_eq!(c.timeouts.operation_ms, 2_500);
        assert_eq!(c.timeouts.leave_ms, 1_500);
        assert_eq!(c.gossip.interval_ms, 250);
        assert_eq!(c.gossip.dead_member_grace_ms, 3_600_000);
        assert_eq!(c.raft.heartbeat_ms, 40);
        assert_eq!(c.raft.election_timeout_min_ms, 200);
        assert_eq!(c.raft.election_timeout_max_ms, 400);
        // Untouched fields keep their defaults.
        assert_eq!(c.timeouts.failure_grace_ms, ClusterConfig::default().timeouts.failure_grace_ms);
    }

    #[test]
    fn limits_take_text_and_keep_the_secs_nanos_form() {
        let c = parse(
            "[limits]\nmax_connections = 10\nhandshake_timeout = \"5s\"\nidle_timeout = \"2m\"\n\
             frame_timeout = { secs = 3, nanos = 500000000 }\nconnect_timeout = \"250ms\"\n\
             http_idle_timeout = \"30s\"\nhttp_max_connections = 7\n",
        );
        assert_eq!(c.limits.http.http_idle_timeout, std::time::Duration::from_secs(30));
        assert_eq!(c.limits.http.http_max_connections, 7);
        assert_eq!(c.limits.max_connections, 10);
        assert_eq!(c.limits.handshake_timeout, std::time::Duration::from_secs(5));
        assert_eq!(c.limits.idle_timeout, std::time::Duration::from_secs(120));
        assert_eq!(c.limits.frame_timeout, std::time::Duration::from_millis(3_500));
        assert_eq!(c.limits.connect_timeout, std::time::Duration::from_millis(250));
        let defaults = cluster_rpc::Limits::default();
        assert_eq!(c.limits.request_timeout, defaults.request_timeout);
        assert_eq!(c.limits.max_connections_per_ip, defaults.max_connections_per_ip);
    }

    #[test]
    fn a_bad_duration_names_its_field_and_the_forms() {
        let e = toml::from_str::<ClusterConfig>("[limits]\nidle_timeout = \"soon\"\n").unwrap_err();
        assert!(e.to_string().contains("idle_timeout"), "{e}");
        let e = toml::from_str::<ClusterConfig>("[timeouts]\nleave_ms = \"5 parsecs\"\n").unwrap_err();
        assert!(e.to_string().contains("leave_ms") && e.to_string().contains("\"5s\""), "{e}");
        let e = toml::from_str::<ClusterConfig>("[timeouts]\nleave_ms = -5\n").unwrap_err();
        assert!(e.to_string().contains("negative"), "{e}");
        let e = toml::from_str::<ClusterConfig>("[limits]\nmax_conections = 5\n").unwrap_err();
        assert!(e.to_string().contains("max_conections"), "an unknown field is still refused: {e}");
    }

    #[test]
    fn a_config_written_out_reads_back_the_same() {
        let c = ClusterConfig::default();
        let text = toml::to_string(&c).unwrap();
        assert_eq!(parse(&text), c);
    }
}
