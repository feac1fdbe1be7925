//! The bounded replica set as a user of `carbon` meets it (issue 24): agents
//! beyond `--replicas` are client members, listed with role `client`, and
//! serve the store on their service port like any member.

mod agent;

use std::process::Output;

use agent::{Agent, carbon};
use cluster_core::testsuite::{DEADLINE, wait_until_blocking};

fn run(args: &[&str]) -> Output {
    carbon().args(args).output().expect("carbon runs")
}

#[test]
fn agents_beyond_the_replicas_are_client_members_that_serve_like_any_member() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "cluster_id = \"replicas-cluster\"\nhost = \"127.0.0.1\"\nreplicas = 3\n")
        .unwrap();
    let agents = Agent::start_cluster(&config, 5);
    for a in &agents {
        a.wait_ready();
    }
    let members = |svc: &str| -> Vec<serde_json::Value> {
        let out = run(&["members", "--service", svc, "--cluster-id", "replicas-cluster", "--json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    };
    let roles = |svc: &str| -> Vec<String> {
        members(svc).iter().map(|m| m["raft_role"].as_str().unwrap_or("?").to_owned()).collect()
    };
    let first = agents[0].service.clone();
    wait_until_blocking(DEADLINE, "3 replicas and 2 client members, all with short ids", || {
        let r = roles(&first);
        r.len() == 5
            && r.iter().filter(|r| *r == "client").count() == 2
            && members(&first).iter().all(|m| m["short_id"].is_u64())
    });
    // A client member serves like any member: it lists the members, takes
    // writes (forwarded to the leader) and answers reads.
    let ids = members(&first);
    let client_id = ids.iter().find(|m| m["raft_role"] == "client").unwrap()["member_id"].clone();
    let client = agents.iter().find(|a| a.member_id == client_id.as_str().unwrap()).expect("a client agent");
    let svc = client.service.clone();
    wait_until_blocking(DEADLINE, "the client member lists every member", || roles(&svc).len() == 5);
    let status = run(&["status", "--service", &svc, "--cluster-id", "replicas-cluster", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status as JSON");
    assert_eq!(status["role"], "client", "{status}");
    let set = run(&["kv", "set", "color", "blue", "--service", &svc, "--cluster-id", "replicas-cluster"]);
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    let get = run(&["kv", "get", "color", "--service", &svc, "--cluster-id", "replicas-cluster"]);
    assert!(get.status.success(), "{}", String::from_utf8_lossy(&get.stderr));
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "blue");
    wait_until_blocking(DEADLINE, "its own copy has the write", || {
        let out =
            run(&["kv", "get", "color", "--stale", "--service", &svc, "--cluster-id", "replicas-cluster"]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "blue"
    });
}
