//! One `carbon agent` process for the program's tests: started from the
//! binary cargo built for this package, its start line read, stopped with
//! SIGTERM (then SIGKILL on drop).
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cluster_core::testsuite::DEADLINE;

/// The `carbon` program of this build.
pub fn carbon() -> Command {
    Command::new(env!("CARGO_BIN_EXE_carbon"))
}

/// One `carbon agent` process; stopped with SIGTERM (then SIGKILL) on drop.
pub struct Agent {
    pub child: Child,
    pub service: String,
    pub gossip: String,
    pub raft: String,
    pub grid: String,
    pub http: Option<String>,
    pub member_id: String,
    pub lines: mpsc::Receiver<String>,
    /// Its log lines, when started with [`Agent::spawn_logged`].
    pub log: Option<mpsc::Receiver<String>>,
}

/// Every line `from` gives, sent to the receiver as it comes.
fn forward_lines(from: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

impl Agent {
    pub fn start(config: &Path, seeds: &[&str]) -> Agent {
        let mut args = vec!["--config".to_owned(), config.display().to_string()];
        for s in seeds {
            args.extend(["--seed".to_owned(), (*s).to_owned()]);
        }
        Agent::spawn(&args)
    }

    /// `n` agents of `config`, the first forming the cluster and the others
    /// seeded on it, each once it printed its start line.
    pub fn start_cluster(config: &Path, n: usize) -> Vec<Agent> {
        let first = Agent::start(config, &[]);
        let seed = first.gossip.clone();
        let mut agents = vec![first];
        for _ in 1..n {
            agents.push(Agent::start(config, &[&seed]));
        }
        agents
    }

    /// `carbon agent ARGS`, once it printed its start line.
    pub fn spawn(args: &[String]) -> Agent {
        Agent::spawn_with(args, false)
    }

    /// Like [`spawn`](Agent::spawn), with its log lines (stderr, the
    /// program's own info lines included) in [`Agent::log`].
    pub fn spawn_logged(args: &[String]) -> Agent {
        Agent::spawn_with(args, true)
    }

    fn spawn_with(args: &[String], logged: bool) -> Agent {
        let mut cmd = carbon();
        cmd.arg("agent").args(args);
        Agent::spawn_command(cmd, logged)
    }

    /// The agent `cmd` starts (`carbon agent …`, or a shell that sets
    /// limits and execs it), once it printed its start line; with `logged`,
    /// its stderr lines are kept in [`Agent::log`].
    pub fn spawn_command(mut cmd: Command, logged: bool) -> Agent {
        let stderr = if logged { Stdio::piped() } else { Stdio::inherit() };
        let mut child = cmd.stdout(Stdio::piped()).stderr(stderr).spawn().expect("carbon agent starts");
        // Every line, read as it comes (the agent never blocks on its stdout).
        let lines = forward_lines(child.stdout.take().unwrap());
        let log = child.stderr.take().map(forward_lines);
        let line = match lines.recv_timeout(DEADLINE) {
            Ok(line) if !line.is_empty() => line,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("carbon agent printed no start line: {other:?}");
            }
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |k: &str| words.iter().position(|w| *w == k).map(|i| words[i + 1].to_owned());
        assert_eq!(words[0], "member", "{line}");
        for k in ["short_id", "gossip", "raft", "service", "grid"] {
            assert!(words.contains(&k), "start line lacks {k}: {line}");
        }
        Agent {
            member_id: words[1].to_owned(),
            service: after("service").unwrap(),
            gossip: after("gossip").unwrap(),
            raft: after("raft").unwrap(),
            grid: after("grid").unwrap(),
            http: after("http"),
            child,
            lines,
            log,
        }
    }

    /// Waits for the line that says the member can serve a write.
    pub fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with("ready ") => return,
                Ok(_) => continue,
                Err(e) => panic!("no ready line: {e}"),
            }
        }
    }

    /// Waits for a log line containing `text` (the agent must have been
    /// started with [`spawn_logged`](Agent::spawn_logged)); returns it.
    pub fn wait_log(&self, text: &str) -> String {
        let log = self.log.as_ref().expect("started with spawn_logged");
        let start = Instant::now();
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            match log.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => continue,
                Err(e) => panic!("no log line with {text:?}: {e}"),
            }
        }
    }

    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status();
    }

    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal("TERM");
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
            // A paused agent must run again to die of SIGKILL cleanly.
            self.signal("CONT");
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The flags that give a command the certificate `name` (`member-1`,
/// `client`, …) of the `carbon tls init` directory `dir`, and its CA.
pub fn tls_flags(dir: &std::path::Path, name: &str) -> Vec<String> {
    vec![
        "--tls-ca".into(),
        dir.join("ca.pem").display().to_string(),
        "--tls-cert".into(),
        dir.join(format!("{name}.pem")).display().to_string(),
        "--tls-key".into(),
        dir.join(format!("{name}-key.pem")).display().to_string(),
    ]
}
