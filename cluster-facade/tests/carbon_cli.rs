//! The `carbon` program against a real local cluster of `carbon agent`
//! processes: every command, its JSON output, and its exit codes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(60);
const CLUSTER: &str = "cli-test";

fn carbon() -> Command {
    Command::new(env!("CARGO_BIN_EXE_carbon"))
}

/// One `carbon agent` process; stopped with SIGTERM (then SIGKILL) on drop.
struct Agent {
    child: Child,
    service: String,
    gossip: String,
    member_id: String,
}

impl Agent {
    fn start(config: &Path, seeds: &[&str]) -> Agent {
        let mut cmd = carbon();
        cmd.args(["agent", "--config"]).arg(config);
        for s in seeds {
            cmd.args(["--seed", s]);
        }
        let mut child =
            cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("carbon agent starts");
        let stdout = child.stdout.take().unwrap();
        // The first line names the member and its addresses.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(DEADLINE) {
            Ok(line) if !line.is_empty() => line,
            other => {
                let _ = child.kill();
                panic!("carbon agent printed no start line: {other:?}");
            }
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |k: &str| words.iter().position(|w| *w == k).map(|i| words[i + 1].to_owned()).unwrap();
        assert_eq!(words[0], "member", "{line}");
        for k in ["short_id", "gossip", "raft", "service", "grid"] {
            assert!(words.contains(&k), "start line lacks {k}: {line}");
        }
        Agent { member_id: words[1].to_owned(), service: after("service"), gossip: after("gossip"), child }
    }

    fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < DEADLINE, "agent did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn run(args: &[&str]) -> Output {
    carbon().args(args).output().expect("carbon runs")
}

fn json(out: &Output) -> Value {
    assert!(out.status.success(), "failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("valid JSON")
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn write_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("node.toml");
    std::fs::write(
        &path,
        format!(
            r#"
cluster_id = "{CLUSTER}"
host = "127.0.0.1"
num_voters = 3
[timeouts]
failure_grace_ms = 1000
leave_ms = 5000
"#
        ),
    )
    .unwrap();
    path
}

#[test]
fn every_command_against_a_cluster_of_agents() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let first = Agent::start(&config, &[]);
    let seed = first.gossip.clone();
    let mut agents = vec![first];
    for _ in 0..3 {
        agents.push(Agent::start(&config, &[&seed]));
    }
    let svc = |a: &Agent| a.service.clone();
    let any = svc(&agents[0]);

    // status and members agree: 3 voters, 1 nonvoter, every member recorded.
    let mut status = Value::Null;
    wait_until("3 voters, 1 nonvoter, 4 members recorded", || {
        status = json(&run(&["status", "--service", &any, "--cluster-id", CLUSTER, "--json"]));
        let members = json(&run(&["members", "--service", &any, "--cluster-id", CLUSTER, "--json"]));
        status["voters"].as_object().map(|v| v.len()) == Some(3)
            && status["nonvoters"].as_object().map(|v| v.len()) == Some(1)
            && members.as_array().is_some_and(|m| m.len() == 4 && m.iter().all(|m| !m["short_id"].is_null()))
    });
    let members = json(&run(&["members", "--service", &any, "--cluster-id", CLUSTER, "--json"]));
    for m in members.as_array().unwrap() {
        let id = m["member_id"].as_str().unwrap();
        let role = m["raft_role"].as_str().unwrap();
        let in_voters = status["voters"].get(id).is_some();
        assert_eq!(in_voters, role == "voter" || role == "leader", "{id} is {role}");
    }
    let nonvoter_id = status["nonvoters"].as_object().unwrap().keys().next().unwrap().clone();
    let nonvoter = agents.iter().find(|a| a.member_id == nonvoter_id).expect("the nonvoter is one of ours");
    let nv = svc(nonvoter);
    let kv = |args: &[&str]| {
        let mut all = vec!["kv"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--service", &nv, "--cluster-id", CLUSTER]);
        run(&all)
    };

    // kv round trips through the nonvoter.
    assert_eq!(json(&kv(&["set", "color", "blue", "--json"]))["created"], true);
    assert_eq!(String::from_utf8(kv(&["get", "color", "--consistent"]).stdout).unwrap().trim(), "blue");
    wait_until("the nonvoter applied the write", || kv(&["get", "color"]).status.success());
    assert_eq!(json(&kv(&["get", "color", "--json"]))["value"], "blue");
    let cas = kv(&["cas", "color", "red", "--expect", "green", "--json"]);
    assert_eq!(cas.status.code(), Some(1), "a failed compare-and-set exits 1");
    assert_eq!(serde_json::from_slice::<Value>(&cas.stdout).unwrap()["current"], "blue");
    assert_eq!(json(&kv(&["cas", "color", "red", "--expect", "blue", "--json"]))["succeeded"], true);
    assert_eq!(json(&kv(&["cas", "shape", "round", "--absent", "--json"]))["succeeded"], true);
    let list = json(&kv(&["list", "", "--json"]));
    let keys: Vec<&str> = list.as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert!(keys.contains(&"color") && keys.contains(&"shape"), "{keys:?}");
    assert!(kv(&["delete", "color"]).status.success());
    let missing = kv(&["get", "color", "--consistent"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found"));
    assert_eq!(kv(&["delete", "color"]).status.code(), Some(1));

    // Agents stop gracefully on SIGTERM.
    for a in agents {
        assert!(a.stop().success());
    }
}

#[test]
fn an_unreachable_cluster_exits_3() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let out = run(&["kv", "get", "k", "--service", &addr]);
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn bad_configuration_exits_2_naming_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "num_voters = 0\nhost = \"nowhere\"\nseeds = [\"x\"]\n").unwrap();
    let out = run(&["agent", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for field in ["num_voters", "host", "seeds[0]"] {
        assert!(err.contains(field), "{field} not named: {err}");
    }
    let out = run(&["agent", "--num-voters", "many"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["agent", "--config", "/no/such/file.toml"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_demo_runs_to_its_end() {
    let out = run(&["demo", "--members", "3"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Done"), "{stdout}");
}

#[test]
fn a_write_past_a_quota_exits_5_and_status_shows_the_alarm() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("quota.toml");
    std::fs::write(
        &path,
        format!(
            r#"
cluster_id = "{CLUSTER}"
host = "127.0.0.1"
num_voters = 1
[quota]
max_key_bytes = 64
max_value_bytes = 1000
max_store_bytes = 6000
"#
        ),
    )
    .unwrap();
    let agent = Agent::start(&path, &[]);
    let svc = agent.service.clone();
    let kv = |args: &[&str]| {
        let mut all = vec!["kv"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--service", &svc, "--cluster-id", CLUSTER]);
        run(&all)
    };
    let status = || json(&run(&["status", "--service", &svc, "--cluster-id", CLUSTER, "--json"]));
    let value = "v".repeat(1000);

    let big = kv(&["set", "big", &"v".repeat(1001)]);
    assert_eq!(big.status.code(), Some(5), "{}", String::from_utf8_lossy(&big.stderr));
    assert!(String::from_utf8_lossy(&big.stderr).contains("quota exceeded"));
    let mut written = 0;
    loop {
        let out = kv(&["set", &format!("k{written}"), &value]);
        if out.status.code() == Some(5) {
            break;
        }
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        written += 1;
        assert!(written < 10, "the store quota never refused a write");
    }
    assert!(written >= 2, "only {written} writes fit");
    assert_eq!(status()["quota_alarm"], true);
    let text =
        String::from_utf8(run(&["status", "--service", &svc, "--cluster-id", CLUSTER]).stdout).unwrap();
    assert!(text.contains("quota alarm") && text.contains("ON"), "{text}");
    // Reads and deletes still work, and make room again.
    assert_eq!(String::from_utf8(kv(&["get", "k0"]).stdout).unwrap().trim(), value);
    assert!(kv(&["delete", "k0"]).status.success());
    assert!(kv(&["delete", "k1"]).status.success());
    assert_eq!(status()["quota_alarm"], false);
    assert!(kv(&["set", "again", &value]).status.success());
    assert!(agent.stop().success());
}
