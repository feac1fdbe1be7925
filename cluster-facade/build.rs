//! Names the git commit of the build for `carbon_build_info{git}`:
//! `CARBON_GIT_HASH` when set (a release build from a tarball, a build
//! that must be reproducible), else `git rev-parse --short=12 HEAD`, else
//! "unknown".

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=CARBON_GIT_HASH");
    let hash = std::env::var("CARBON_GIT_HASH")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    // Run again when HEAD moves: HEAD itself (a checkout) and the branch it
    // names (a commit). Only files that exist: a missing one would rerun
    // this script, and rebuild the crate, on every build.
    let mut watched = vec!["HEAD".to_owned()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name])
            && std::path::Path::new(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rustc-env=CARBON_GIT_HASH={hash}");
}
