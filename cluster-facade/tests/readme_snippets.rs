//! The README says what the program does (issue 25): its exit-code table is
//! the one `carbon --help` prints, and every shell snippet of "Securing a
//! cluster" and "Operating a cluster" runs as written.
//!
//! Every ```sh block of those sections, also one added later, is checked:
//! it must parse (`bash -n`), use only variables it (or an earlier block of
//! its section) sets, besides `$C` (the README's name for the program) and
//! `${NAME:-default}` (a port the reader may change), and give each `carbon`
//! command only flags that command's `--help` lists.
//!
//! Then each section's blocks run, in order, as one bash script
//! (`set -euo pipefail`) in a temporary directory, with `C` the `carbon` of
//! this build and every `${NAME:-<digits>}` given a free port: the script
//! must exit 0. A block that cannot run on one machine is marked in the
//! README on the line before it with
//! `<!-- readme-snippets: skip (the reason) -->` and only checked.

mod common;

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cluster_core::testsuite::holds_within_blocking;
use common::carbon;

/// The README, from the crate's directory.
fn readme() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `(code, meaning)` rows of the README's exit-code table.
fn readme_exit_codes(readme: &str) -> Vec<(u8, String)> {
    let start = readme.find("\nExit codes (").expect("an exit-code table in the README");
    readme[start..]
        .lines()
        .skip(1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            Some((cells.first()?.parse().ok()?, cells.get(1)?.to_string()))
        })
        .collect()
}

/// `(code, meaning)` rows of `carbon --help`.
fn help_exit_codes() -> Vec<(u8, String)> {
    let out = carbon().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let start = help.find("Exit codes:\n").expect("exit codes in carbon --help");
    help[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| {
            let (code, meaning) = l.trim().split_once("  ")?;
            Some((code.parse().ok()?, meaning.to_owned()))
        })
        .collect()
}

#[test]
fn the_readme_exit_code_table_is_the_programs() {
    let help = help_exit_codes();
    assert_eq!(help.iter().map(|(c, _)| *c).collect::<Vec<_>>(), (0..=6).collect::<Vec<u8>>(), "{help:?}");
    assert_eq!(readme_exit_codes(&readme()), help);
}

/// One ```sh block of the README.
struct Block {
    /// Its text, unindented.
    text: String,
    /// False when the line before it says `<!-- readme-snippets: skip … -->`.
    runs: bool,
}

/// The ```sh blocks of the README section headed `## {title}`, up to the
/// next `## ` heading (indented blocks in lists included, unindented).
fn sh_blocks(readme: &str, title: &str) -> Vec<Block> {
    let start = readme.find(&format!("\n## {title}\n")).unwrap_or_else(|| panic!("no section {title:?}"));
    let body = &readme[start + 1..];
    let end = body[3..].find("\n## ").map_or(body.len(), |i| i + 3);
    let mut blocks = Vec::new();
    let mut current: Option<(usize, Block)> = None;
    let mut before = "";
    for line in body[..end].lines() {
        let trimmed = line.trim_start();
        match &mut current {
            None if trimmed == "```sh" => {
                let runs = !before.starts_with("<!-- readme-snippets: skip");
                current = Some((line.len() - trimmed.len(), Block { text: String::new(), runs }));
            }
            Some(_) if trimmed == "```" => blocks.push(current.take().unwrap().1),
            Some((indent, block)) => {
                block.text.push_str(line.get(*indent..).unwrap_or(trimmed));
                block.text.push('\n');
            }
            None if !trimmed.is_empty() => before = trimmed,
            None => {}
        }
    }
    assert!(current.is_none(), "an unclosed ```sh block in {title:?}");
    blocks
}

/// The snippet's lines with `\` continuations joined and comments dropped.
fn commands(block: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut line = String::new();
    for l in block.lines() {
        let l = match l.find(" #") {
            Some(i) => &l[..i],
            None if l.trim_start().starts_with('#') => "",
            None => l,
        };
        match l.trim_end().strip_suffix('\\') {
            Some(head) => line.push_str(head),
            None => {
                line.push_str(l);
                if !line.trim().is_empty() {
                    out.push(std::mem::take(&mut line));
                }
                line.clear();
            }
        }
    }
    out
}

/// Variables a command line reads (`$NAME`, `${NAME}`), and those it sets
/// (`NAME=…`, `export A=… B=…`).
fn variables(line: &str) -> (Vec<String>, Vec<String>) {
    let word = |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    let mut read = Vec::new();
    for (i, _) in line.match_indices('$') {
        let rest = &line[i + 1..];
        let name = word(rest.strip_prefix('{').unwrap_or(rest));
        // `${NAME:-default}` needs no NAME: the default stands in.
        let defaulted = rest.starts_with('{') && rest[1 + name.len()..].starts_with(":-");
        if !name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit()) && !defaulted {
            read.push(name);
        }
    }
    // Inside $(( … )) bare names are variables too.
    for (i, _) in line.match_indices("$((") {
        let inner = &line[i + 3..line[i..].find("))").map_or(line.len(), |j| i + j)];
        read.extend(
            inner
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| !w.is_empty() && w.starts_with(|c: char| c.is_ascii_alphabetic()))
                .map(str::to_owned),
        );
    }
    let mut set = Vec::new();
    for token in line.split_whitespace() {
        if let Some((name, _)) = token.split_once('=')
            && !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            set.push(name.to_owned());
        }
    }
    (read, set)
}

/// Each `$C …` invocation in a command line: its words, up to the end of
/// the command (a pipe, `;`, `&`, `)`).
fn invocations(line: &str) -> Vec<Vec<String>> {
    line.match_indices("$C ")
        .map(|(i, _)| {
            let rest = &line[i + 3..];
            let end = rest.find(['|', ';', '&', ')']).unwrap_or(rest.len());
            rest[..end].split_whitespace().map(|w| w.trim_matches(['"', '\'']).to_owned()).collect()
        })
        .collect()
}

/// The help text of `carbon PATH --help`, or `None` if PATH is no command.
fn help_of(path: &[String]) -> Option<String> {
    let out = carbon().args(path).arg("--help").output().unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_securing_and_operating_snippets_use_commands_flags_and_variables_that_exist() {
    let readme = readme();
    let mut checked = 0;
    for title in ["Securing a cluster", "Operating a cluster"] {
        let blocks = sh_blocks(&readme, title);
        assert!(!blocks.is_empty(), "no snippets in {title:?}");
        // Set by an earlier block of the section, or by the reader ($C).
        let mut known: BTreeSet<String> = ["C".to_owned()].into();
        for Block { text: block, .. } in blocks {
            let syntax = Command::new("bash").args(["-n", "-c", &block]).output().expect("bash runs");
            assert!(
                syntax.status.success(),
                "{title}: bash -n refuses:\n{block}\n{}",
                String::from_utf8_lossy(&syntax.stderr)
            );
            for line in commands(&block) {
                let (read, set) = variables(&line);
                // `X=$(…)` reads before it sets; `export A=x B=$A` may read A.
                known.extend(set);
                for name in read {
                    assert!(known.contains(&name), "{title}: ${name} is never set before:\n{line}");
                }
                for words in invocations(&line) {
                    let mut path = Vec::new();
                    let mut help = help_of(&[]).unwrap();
                    for w in words.iter().take_while(|w| !w.starts_with('-')) {
                        let mut longer = path.clone();
                        longer.push(w.clone());
                        match help_of(&longer) {
                            Some(h)
                                if help.contains(&format!("  {w} "))
                                    || help.contains(&format!("  {w}\n")) =>
                            {
                                path = longer;
                                help = h;
                            }
                            _ => break,
                        }
                    }
                    assert!(!path.is_empty(), "{title}: not a carbon command: {line}");
                    for flag in words.iter().filter(|w| w.starts_with("--")) {
                        let flag = flag.split('=').next().unwrap();
                        assert!(
                            help.contains(&format!("{flag} "))
                                || help.contains(&format!("{flag}\n"))
                                || help.contains(&format!("{flag}="))
                                || help.contains(&format!("{flag},")),
                            "{title}: `carbon {}` has no {flag}:\n{line}",
                            path.join(" ")
                        );
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 10, "only {checked} carbon commands found in the snippets");
}

/// The names `NAME` of every `${NAME:-<digits>}` in a script: the ports a
/// reader may change.
fn port_variables(script: &str) -> BTreeSet<String> {
    script
        .match_indices("${")
        .filter_map(|(i, _)| {
            let rest = &script[i + 2..];
            let (name, rest) = rest.split_once(":-")?;
            let (default, _) = rest.split_once('}')?;
            let is_name = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            (is_name && !default.is_empty() && default.chars().all(|c| c.is_ascii_digit()))
                .then(|| name.to_owned())
        })
        .collect()
}

/// `n` distinct ports free for TCP and UDP on 127.0.0.1 (gossip is UDP)
/// at the time of asking; held until all are found, so none repeats.
fn free_ports(n: usize) -> Vec<u16> {
    let mut held = Vec::new();
    while held.len() < n {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if let Ok(udp) = std::net::UdpSocket::bind(("127.0.0.1", port)) {
            held.push((port, tcp, udp));
        }
    }
    held.into_iter().map(|(port, ..)| port).collect()
}

/// A script running in its own process group; the whole group (the
/// agents and curls it started in the background too) is killed on drop.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.0.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
        let _ = self.0.wait();
    }
}

/// Runs the runnable ```sh blocks of section `title`, in order, as one bash
/// script in a temporary directory; panics with its output unless it exits 0
/// within `timeout`.
fn run_section(title: &str, timeout: Duration) {
    let blocks = sh_blocks(&readme(), title);
    let script: Vec<String> = blocks.into_iter().filter(|b| b.runs).map(|b| b.text).collect();
    assert!(!script.is_empty(), "{title}: no snippet runs");
    let script = format!("set -euo pipefail\n{}", script.join("\n"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("snippets.sh"), &script).unwrap();
    let output = dir.path().join("output.log");
    let log = std::fs::File::create(&output).unwrap();
    let mut command = Command::new("bash");
    command
        .arg("snippets.sh")
        .current_dir(dir.path())
        .env("C", env!("CARGO_BIN_EXE_carbon"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .process_group(0);
    // The reader's own settings must not steer the snippets.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CARBON_") {
            command.env_remove(name);
        }
    }
    let names = port_variables(&script);
    for (name, port) in names.iter().zip(free_ports(names.len())) {
        command.env(name, port.to_string());
    }
    let started = Instant::now();
    let mut group = Group(command.spawn().expect("bash runs"));
    let mut status = None;
    holds_within_blocking(timeout, || {
        status = group.0.try_wait().unwrap();
        status.is_some()
    });
    let elapsed = started.elapsed();
    drop(group);
    let shown = std::fs::read_to_string(&output).unwrap_or_default();
    let verdict = match status {
        Some(s) if s.success() => {
            eprintln!("{title}: the snippets ran in {elapsed:.1?}");
            return;
        }
        Some(s) => format!("exited with {s}"),
        None => format!("did not end within {timeout:?}"),
    };
    panic!(
        "{title}: the README's snippets {verdict} after {elapsed:.1?} (make a snippet run on one \
         machine, or mark it `<!-- readme-snippets: skip (why) -->`)\n\
         --- the script ---\n{script}\n--- its output ---\n{shown}"
    );
}

#[test]
fn the_securing_snippets_run() {
    run_section("Securing a cluster", Duration::from_secs(120));
}

#[test]
fn the_operating_snippets_run() {
    run_section("Operating a cluster", Duration::from_secs(120));
}
