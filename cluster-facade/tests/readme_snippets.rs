//! The README says what the program does (issue 25): its exit-code table is
//! the one `carbon --help` prints, and every shell snippet of "Securing a
//! cluster" and "Operating a cluster" is checked against the program.
//!
//! The snippets are checked, not run: they show a deployment (a network
//! host, fixed ports, `/var/lib`), which a test cannot reproduce as written.
//! Every ```sh block of those sections, also one added later, must parse
//! (`bash -n`), use only variables it (or an earlier block of its section)
//! sets, besides `$C` (the README's name for the program), and give each
//! `carbon` command only flags that command's `--help` lists.

mod agent;

use std::collections::BTreeSet;
use std::process::Command;

use agent::carbon;

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

/// The ```sh blocks of the README section headed `## {title}`, up to the
/// next `## ` heading (indented blocks in lists included, unindented).
fn sh_blocks(readme: &str, title: &str) -> Vec<String> {
    let start = readme.find(&format!("\n## {title}\n")).unwrap_or_else(|| panic!("no section {title:?}"));
    let body = &readme[start + 1..];
    let end = body[3..].find("\n## ").map_or(body.len(), |i| i + 3);
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for line in body[..end].lines() {
        let trimmed = line.trim_start();
        match &mut current {
            None if trimmed == "```sh" => current = Some((line.len() - trimmed.len(), String::new())),
            Some(_) if trimmed == "```" => blocks.push(current.take().unwrap().1),
            Some((indent, text)) => {
                text.push_str(line.get(*indent..).unwrap_or(trimmed));
                text.push('\n');
            }
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
        if !name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit()) {
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
        for block in blocks {
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
