//! Plain-text tables for the terminal.

use std::collections::BTreeMap;

use cluster_facade::{Liveness, MemberId, MemberInfo, RaftRole};

/// Renders rows as aligned columns under a header.
pub(crate) fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("  {}", padded.join("  ").trim_end())
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

/// The members table: short id, role, gossip liveness, member id and
/// addresses, in the order given.
pub(crate) fn members_table(members: &[MemberInfo], liveness: &BTreeMap<MemberId, Liveness>) -> String {
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            let role = match m.raft_role {
                RaftRole::Leader => "leader ★".to_owned(),
                r => r.to_string(),
            };
            vec![
                m.short_id.map(|s| format!("#{s}")).unwrap_or_else(|| "-".into()),
                role,
                liveness.get(&m.member_id).map(ToString::to_string).unwrap_or_else(|| "?".into()),
                m.member_id.to_string(),
                m.gossip_addr(),
                m.raft_addr(),
                m.service_addr(),
                m.grid_addr(),
            ]
        })
        .collect();
    render(&["ID", "ROLE", "GOSSIP STATE", "MEMBER ID", "GOSSIP", "RAFT", "SERVICE", "GRID"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let t = render(&["A", "BB"], &[vec!["xxx".into(), "y".into()], vec!["z".into(), "w".into()]]);
        assert_eq!(t, "  A    BB\n  xxx  y\n  z    w");
    }
}
