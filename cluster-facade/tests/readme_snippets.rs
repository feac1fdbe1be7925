//! The README says what the program does: its exit-code table is the one
//! `carbon --help` prints (issue 25, papercut 15).

mod agent;

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
