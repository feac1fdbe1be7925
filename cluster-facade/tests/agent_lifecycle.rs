//! The life of a `carbon agent` process as a user meets it (issue 25): its
//! data directory (whose cluster it is, who may read it), its signals, and
//! how it leaves.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use cluster_core::testsuite::{DEADLINE, holds_within_blocking, wait_until_blocking};
use common::{agent, agent_logged, carbon};

fn s(v: &str) -> String {
    v.to_owned()
}

/// Runs `cmd` to its end, or kills it and fails once [`DEADLINE`] passed: a
/// command that should exit must not hang the test.
fn run_bounded(cmd: &mut Command) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("carbon runs");
    if !holds_within_blocking(DEADLINE, || child.try_wait().unwrap().is_some()) {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!("still running after {DEADLINE:?}; its log:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The arguments of a lone agent of cluster `cluster_id` on `data_dir`.
fn lone_agent(cluster_id: &str, data_dir: &Path) -> Vec<String> {
    vec![
        s("--host"),
        s("127.0.0.1"),
        s("--cluster-id"),
        s(cluster_id),
        s("--data-dir"),
        data_dir.display().to_string(),
    ]
}

/// Bug 1: restarted on its data directory with another cluster id, a member
/// used to start, never become ready, and run forever. It must exit 2 and
/// name the cluster the directory belongs to.
#[test]
fn a_data_dir_of_another_cluster_exits_2_naming_its_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("m1");
    let a = agent(&lone_agent("blue-cluster", &data));
    a.wait_ready();
    let member_id = a.member_id().clone();
    assert!(a.stop().success());

    let out = run_bounded(carbon().arg("agent").args(lone_agent("green-cluster", &data)));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("\"blue-cluster\""), "the data dir's cluster is not named: {err}");
    assert!(err.contains(&data.display().to_string()), "the data dir is not named: {err}");

    // Its own cluster id still starts it.
    let again = agent(&lone_agent("blue-cluster", &data));
    assert_eq!(again.member_id(), member_id, "the same member");
    assert!(again.stop().success());
}

/// Bug 3: SIGHUP ended an agent without TLS (exit 129, no leave). A reload
/// signal must never end a member: it says there is nothing to reload, keeps
/// serving, and still leaves gracefully on SIGTERM.
#[test]
fn sighup_never_ends_a_member_without_tls() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = agent_logged(&lone_agent("hup-cluster", &dir.path().join("m1")));
    a.wait_ready();
    for _ in 0..2 {
        a.signal("HUP").expect("a signal");
        a.wait_log("nothing to reload");
    }
    assert!(a.try_wait().is_none(), "SIGHUP ended the agent");
    let status =
        run_bounded(carbon().args(["status", "--service", &a.service(), "--cluster-id", "hup-cluster"]));
    assert!(status.status.success(), "the member stopped serving: {}", stderr(&status));
    a.signal("TERM").expect("a signal");
    a.wait_log("left the cluster");
    let code = a.wait_exit(DEADLINE).expect("no exit after SIGTERM");
    assert!(code.success(), "{code:?}");
}

/// Every directory and file under `dir` with its mode.
fn modes(dir: &Path) -> Vec<(String, bool, u32)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(p) = pending.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        out.push((p.display().to_string(), meta.is_dir(), meta.permissions().mode() & 0o777));
        if meta.is_dir() {
            pending.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    out
}

/// Bug 2: the raft log holds user values in clear, and was 0644 in 0755
/// directories. After an agent ran, its data directory (here made 0755
/// beforehand, as an older version left it) and everything under it are
/// 0700 / 0600, and so is a backup written by `snapshot save`.
#[test]
fn the_data_dir_and_a_backup_are_the_users_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("m1");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(data.join("notes.txt"), "left by an operator").unwrap();
    std::fs::set_permissions(data.join("notes.txt"), std::fs::Permissions::from_mode(0o644)).unwrap();

    let a = agent_logged(&lone_agent("private-cluster", &data));
    a.wait_log("tightened the data directory's permissions");
    a.wait_ready();
    let service = a.service();
    let svc = ["--service", service.as_str(), "--cluster-id", "private-cluster"];
    let set = run_bounded(carbon().args(["kv", "set", "secret", "in-clear"]).args(svc));
    assert!(set.status.success(), "{}", stderr(&set));
    let backup = dir.path().join("backup.snap");
    let saved = run_bounded(carbon().args(["snapshot", "save", backup.to_str().unwrap()]).args(svc));
    assert!(saved.status.success(), "{}", stderr(&saved));
    assert!(a.stop().success());

    let all = modes(&data);
    assert!(all.iter().any(|(p, _, _)| p.contains("raft")), "no raft state written: {all:?}");
    let open: Vec<_> =
        all.iter().filter(|(_, is_dir, mode)| *mode != if *is_dir { 0o700 } else { 0o600 }).collect();
    assert!(open.is_empty(), "not private: {open:?}");
    let mode = std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the backup holds every value");
}

/// Papercut 2: a graceful stop used to take ~5.3 s, silently. A member of a
/// 3-member cluster says it leaves, and its peers see it leave (not fail).
#[test]
fn a_graceful_stop_is_seen_as_a_leave_by_the_peers() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        "cluster_id = \"leave-cluster\"\nhost = \"127.0.0.1\"\n[timeouts]\nfailure_grace_ms = 60000\nleave_ms = 5000\n",
    )
    .unwrap();
    let cfg = config.display().to_string();
    let first = agent(&[s("--config"), cfg.clone()]);
    let second = agent(&[s("--config"), cfg.clone(), s("--seed"), first.gossip().clone()]);
    let mut third = agent_logged(&[s("--config"), cfg, s("--seed"), first.gossip().clone()]);
    for a in [&first, &second, &third] {
        a.wait_ready();
    }
    let svc = first.service().clone();
    let third_id = third.member_id().clone();
    let liveness_of_third = || {
        let out = carbon()
            .args(["members", "--service", &svc, "--cluster-id", "leave-cluster", "--json"])
            .output()
            .unwrap();
        let members: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        members.as_array().and_then(|m| {
            m.iter().find(|m| m["member_id"] == third_id.as_str()).map(|m| m["liveness"].clone())
        })
    };
    wait_until_blocking(DEADLINE, "3 members recorded", || liveness_of_third().is_some_and(|l| l == "alive"));

    let started = Instant::now();
    third.signal("TERM").expect("a signal");
    third.wait_log("leaving");
    let status = third.wait_exit(DEADLINE).expect("no exit after SIGTERM");
    let took = started.elapsed();
    println!("graceful stop of a member of 3 took {took:?}");
    assert!(status.success(), "{status:?}");
    // The leader frees a leaver's record at once; a failed member would stay
    // (as suspect) for the 60 s failure grace. So: gone means left.
    wait_until_blocking(DEADLINE, "the peers saw it leave", || liveness_of_third().is_none());
    let _ = (first, second);
}

/// Papercut 9: `carbon demo --members 2` hung at "waiting for a new leader".
/// Too few members or voters for the failover are refused at once.
#[test]
fn a_demo_without_a_quorum_after_the_failover_is_refused() {
    for args in [["--members", "2"], ["--voters", "2"]] {
        let out = run_bounded(carbon().arg("demo").args(args));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("at least 3"), "{args:?}: {}", stderr(&out));
    }
}

/// Papercut 7: with `--log-format json`, the error that ends the program
/// was plain text among JSON lines. Every line on stderr is JSON.
#[test]
fn with_json_logs_every_error_line_is_json() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let cases: [(&[&str], i32); 3] = [
        // Unreachable: the error that ends a client command.
        (&["--log-format", "json", "kv", "get", "k", "--service", &closed, "--timeout", "1s"], 3),
        // A configuration error of the agent.
        (&["--log-format=json", "agent", "--host", "0.0.0.0"], 2),
        // An argument clap refuses, before logging is set up.
        (&["--log-format", "json", "agent", "--num-voters", "many"], 2),
    ];
    for (args, code) in cases {
        let out = run_bounded(carbon().args(args));
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(!err.trim().is_empty(), "{args:?}: nothing said");
        for line in err.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {line}"));
            assert!(v["fields"]["message"].is_string() && v["level"].is_string(), "{line}");
        }
    }
}

fn new_gossip_key() -> String {
    let out = run_bounded(carbon().args(["keys", "generate"]));
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Papercut 5: a member with the wrong gossip key failed after the start
/// timeout asking about seeds and the cluster id, although gossip knew: it
/// says the key does not match. And a keyring file that overrides
/// `--gossip-key` says so in one line.
#[test]
fn a_wrong_gossip_key_is_named_and_a_keyring_file_override_is_said() {
    let dir = tempfile::tempdir().unwrap();
    let (right, wrong) = (new_gossip_key(), new_gossip_key());
    let data = dir.path().join("m1");
    let mut args = lone_agent("key-cluster", &data);
    args.extend([s("--gossip-key"), right.clone()]);
    let first = agent(&args);
    first.wait_ready();

    let config = dir.path().join("quick.toml");
    std::fs::write(&config, "[timeouts]\nstart_ms = \"3s\"\n").unwrap();
    let out = run_bounded(carbon().args(["agent", "--config", config.to_str().unwrap()]).args([
        "--host",
        "127.0.0.1",
        "--cluster-id",
        "key-cluster",
        "--gossip-key",
        &wrong,
        "--seed",
        &first.gossip(),
    ]));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("the gossip key does not match the cluster's"), "{err}");
    assert!(first.stop().success());

    // The data dir's keyring file holds `right`: it wins over `--gossip-key`.
    let mut args = lone_agent("key-cluster", &data);
    args.extend([s("--gossip-key"), wrong]);
    let again = agent_logged(&args);
    again.wait_log("the keyring file overrides the configured gossip key");
    assert!(again.stop().success());
}

/// Papercut 2: a second Ctrl-C leaves at once. The peer is paused, so the
/// leave cannot complete (no acknowledgement, no quorum to take this voter
/// out of raft) and would wait the whole `leave_ms`: the second SIGINT
/// ends it.
#[test]
fn a_second_sigint_leaves_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        "cluster_id = \"twice-cluster\"\nhost = \"127.0.0.1\"\n[timeouts]\nleave_ms = \"10m\"\n",
    )
    .unwrap();
    let cfg = config.display().to_string();
    let mut first = agent_logged(&[s("--config"), cfg.clone()]);
    let second = agent(&[s("--config"), cfg, s("--seed"), first.gossip().clone()]);
    first.wait_ready();
    second.wait_ready();
    second.signal("STOP").expect("a signal");
    first.signal("INT").expect("a signal");
    first.wait_log("leaving");
    first.signal("INT").expect("a signal");
    first.wait_log("SIGINT again: leaving at once");
    let status = first.wait_exit(DEADLINE).expect("no exit after the second SIGINT");
    assert!(status.success(), "{status:?}");
}
