//! Where the `carbon` binary comes from.
//!
//! `env!("CARGO_BIN_EXE_carbon")` exists only in `cluster-facade`'s own tests
//! (they name it in [`AgentSpec::binary`](super::AgentSpec::binary)), and
//! `cargo test -p integration-tests` does not build other packages' binaries.
//! So [`carbon_binary`] (once per test process):
//!
//! 1. uses `$CARBON_BIN` if it is set (a prebuilt binary, e.g. a release build);
//! 2. else runs `cargo build -p cluster-facade --bin carbon` with the cargo that runs
//!    the tests (`$CARGO`), into the target directory and profile of the running test
//!    executable (`<target>/<profile>/deps/<test>` → `<target>/<profile>/carbon`).
//!    Cargo rebuilds only what is stale and is a no-op (about a second) otherwise, so
//!    the binary always matches the sources under test;
//! 3. if cargo cannot be run, falls back to an existing `<target>/<profile>/carbon`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};

/// Variables `cargo test` sets for the crate under test, besides `CARGO_PKG_*`.
const CRATE_VARS: &[&str] = &[
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_MANIFEST_LINKS",
    "CARGO_CRATE_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
];

/// The `carbon` binary of this workspace; see the module documentation.
pub fn carbon_binary() -> Result<PathBuf> {
    static BINARY: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BINARY.get_or_init(|| locate_binary().map_err(|e| format!("{e:#}"))).clone().map_err(|e| anyhow!(e))
}

fn locate_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("CARBON_BIN") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("CARBON_BIN={} is not a file", path.display());
        }
        return Ok(path);
    }
    let exe = std::env::current_exe().context("cannot find the test executable")?;
    // <target>/<profile>/deps/<test executable>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("unexpected test executable path {}", exe.display()))?;
    let target_dir =
        profile_dir.parent().ok_or_else(|| anyhow!("unexpected test executable path {}", exe.display()))?;
    let profile_name = profile_dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
    let profile = if profile_name == "debug" { "dev" } else { profile_name };
    let binary = profile_dir.join("carbon");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(&cargo);
    build
        .args(["build", "--quiet", "-p", "cluster-facade", "--bin", "carbon", "--profile", profile])
        .env("CARGO_TARGET_DIR", target_dir);
    // `cargo test` gives the test process the variables of its own crate
    // (CARGO_PKG_NAME, CARGO_MANIFEST_DIR, …). ring's build script tracks them,
    // so passing them on made this build rebuild ring and everything above it
    // (minutes), and the next plain `cargo test` rebuild them back.
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("CARGO_PKG_") || CRATE_VARS.contains(&k)) {
            build.env_remove(key);
        }
    }
    if let Some(manifest_dir) = option_env!("CARGO_MANIFEST_DIR") {
        build.current_dir(manifest_dir);
    }
    match build.status() {
        Ok(status) if status.success() && binary.is_file() => Ok(binary),
        Ok(status) if binary.is_file() => {
            eprintln!("warning: `cargo build --bin carbon` failed ({status}); using the existing binary");
            Ok(binary)
        }
        Ok(status) => {
            bail!("`cargo build --bin carbon` failed ({status}) and {} is missing", binary.display())
        }
        Err(e) if binary.is_file() => {
            eprintln!("warning: cannot run cargo ({e}); using the existing {}", binary.display());
            Ok(binary)
        }
        Err(e) => bail!("cannot run cargo to build carbon ({e}) and {} is missing", binary.display()),
    }
}
