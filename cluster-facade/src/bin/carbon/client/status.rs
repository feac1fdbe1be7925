//! `carbon status`: a member's status, in the shape of the HTTP API's `/v1/status`.

use cluster_facade::core::MemberStatus;

use super::{Target, client, failed, print_json};
use crate::exit::Failure;
use crate::table::render;

/// `carbon status`.
pub(crate) async fn run(t: Target) -> Result<(), Failure> {
    // The shape of the HTTP API's /v1/status, so one parser reads both.
    let s: MemberStatus = match client(&t)?.member_status().await {
        Ok(s) => s,
        Err(e) => return Err(failed(&t, e).await),
    };
    if t.json {
        print_json(serde_json::to_value(&s).map_err(|e| Failure::other(e.into()))?);
        return Ok(());
    }
    let opt = |v: Option<u64>| v.map(|i| i.to_string()).unwrap_or_else(|| "-".into());
    let mut rows = vec![
        vec!["member".into(), s.member_id.to_string()],
        vec!["short id".into(), s.short_id.map(|i| i.to_string()).unwrap_or_else(|| "-".into())],
        vec!["role".into(), s.role.map(|r| r.to_string()).unwrap_or_else(|| "not in raft".into())],
        vec!["leader".into(), s.leader.map(|l| l.to_string()).unwrap_or_else(|| "none".into())],
        vec!["term".into(), s.term.to_string()],
        vec!["last log index".into(), opt(s.last_log_index)],
        vec!["committed index".into(), opt(s.committed_index)],
        vec!["applied index".into(), opt(s.applied_index)],
        vec!["snapshot index".into(), opt(s.snapshot_index)],
        vec!["voters".into(), s.voters.keys().map(ToString::to_string).collect::<Vec<_>>().join(" ")],
        vec!["nonvoters".into(), s.nonvoters.keys().map(ToString::to_string).collect::<Vec<_>>().join(" ")],
        vec!["store bytes".into(), s.store_bytes.to_string()],
        vec![
            "quota alarm".into(),
            if s.quota_alarm {
                // What the alarm means (cluster_consensus::quota::alarm): the
                // store is near its quota, not closed; most writes still pass.
                "ON: the store is within one maximum-size write of quota.max_store_bytes \
                 (or a write was refused for it): writes that would pass the quota fail with exit 5; \
                 delete keys to make room"
            } else {
                "off"
            }
            .into(),
        ],
    ];
    if let Some(reset) = &s.reset_pending {
        // Raft state reset; no votes until out of the voters (docs/recovery.md).
        rows.push(vec!["reset pending".into(), reset.clone()]);
    }
    println!("{}", render(&["", ""], &rows).lines().skip(1).collect::<Vec<_>>().join("\n"));
    Ok(())
}
