//! `carbon members`: the members the cluster records, with gossip's liveness.

use std::collections::BTreeMap;

use cluster_facade::core::MemberInfo;
use cluster_facade::service::protocol::{Request, Response};
use cluster_facade::{Liveness, MemberId, ServiceClient};
use serde_json::json;

use super::{Target, ask, client, failed, print_json, unexpected};
use crate::exit::Failure;
use crate::table::members_table;

/// The members, by short id (members without one last), with gossip's liveness.
pub(crate) async fn members_with_liveness(
    t: &Target,
    c: &ServiceClient,
) -> Result<(Vec<MemberInfo>, BTreeMap<MemberId, Liveness>), Failure> {
    let mut members = match c.members().await {
        Ok(m) => m,
        Err(e) => return Err(failed(t, e).await),
    };
    members.sort_by_key(|m| (m.short_id.is_none(), m.short_id, m.member_id));
    let liveness = match ask(t, c, Request::Liveness).await? {
        Response::Liveness(l) => l,
        other => return Err(unexpected("liveness", &other)),
    };
    Ok((members, liveness))
}

/// `carbon members`.
pub(crate) async fn run(t: Target) -> Result<(), Failure> {
    let c = client(&t)?;
    let (members, liveness) = members_with_liveness(&t, &c).await?;
    if t.json {
        let list: Vec<serde_json::Value> = members
            .iter()
            .map(|m| {
                let mut v = serde_json::to_value(m).unwrap_or_default();
                if let serde_json::Value::Object(o) = &mut v {
                    o.insert("liveness".into(), json!(liveness.get(&m.member_id).map(ToString::to_string)));
                }
                v
            })
            .collect();
        print_json(serde_json::Value::Array(list));
    } else {
        println!("{}", members_table(&members, &liveness));
    }
    Ok(())
}
