//! `carbon force-leave`: remove a member that will not come back, now.

use cluster_facade::MemberId;
use cluster_facade::service::protocol::{Request, Response};
use serde_json::json;

use super::{Target, ask, client, members_with_liveness, print_json, unexpected};
use crate::exit::Failure;

/// Flags of `carbon force-leave`.
#[derive(Debug, clap::Args)]
pub(crate) struct ForceLeaveArgs {
    /// The member: its member id, or `#N` for short id N.
    pub member: String,
    #[command(flatten)]
    pub target: Target,
}

/// `carbon force-leave`.
pub(crate) async fn run(args: ForceLeaveArgs) -> Result<(), Failure> {
    let t = &args.target;
    let c = client(t)?;
    let member = match args.member.strip_prefix('#') {
        Some(n) => {
            let n: u32 = n
                .parse()
                .map_err(|_| Failure::usage(format!("{:?} is not #N with a short id N", args.member)))?;
            let (members, _) = members_with_liveness(t, &c).await?;
            members
                .iter()
                .find(|m| m.short_id.is_some_and(|s| s.get() == n))
                .map(|m| m.member_id)
                .ok_or_else(|| Failure::not_found(format!("no member holds short id #{n}")))?
        }
        None => args
            .member
            .parse::<MemberId>()
            .map_err(|e| Failure::usage(format!("{e}: give a member id or #N for a short id")))?,
    };
    let left = match ask(t, &c, Request::ForceLeave { member }).await? {
        Response::ForceLeft(l) => l,
        other => return Err(unexpected("force leave", &other)),
    };
    if t.json {
        print_json(json!({
            "member_id": member.to_string(),
            "was_in_raft": left.was_in_raft,
            "held_short_id": left.held_short_id,
            "had_record": left.had_record,
        }));
    }
    if !(left.was_in_raft || left.held_short_id || left.had_record) {
        return Err(Failure::not_found(format!("the cluster knows no member {member}")));
    }
    if !t.json {
        println!(
            "member {member} removed{}{}",
            if left.was_in_raft { " from raft" } else { "" },
            if left.held_short_id { "; its short id is free" } else { "" }
        );
    }
    Ok(())
}
