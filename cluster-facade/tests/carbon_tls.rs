//! `carbon tls init`: the files it writes, their modes, and its refusals.

use std::process::Command;

fn carbon() -> Command {
    Command::new(env!("CARGO_BIN_EXE_carbon"))
}

#[test]
fn tls_init_writes_a_ca_members_and_a_client_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let out = carbon().args(["tls", "init", "--members", "2"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    for name in [
        "ca.pem",
        "ca-key.pem",
        "member-1.pem",
        "member-1-key.pem",
        "member-2.pem",
        "member-2-key.pem",
        "client.pem",
        "client-key.pem",
    ] {
        let path = dir.path().join(name);
        assert!(path.exists(), "{name} written");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            if name.ends_with("-key.pem") {
                assert_eq!(mode, 0o600, "{name} is private");
            }
        }
    }
    // It tells how to use them.
    assert!(stdout.contains("--tls-cert"), "{stdout}");
    assert!(stdout.contains("CARBON_TLS_CA="), "{stdout}");
    assert!(!dir.path().join("member-3.pem").exists());

    // The certificates load, with the role each was made for.
    let tls = |cert: &str, key: &str| {
        cluster_facade::rpc::Tls::from_files(cluster_facade::rpc::TlsFiles {
            ca_cert: dir.path().join("ca.pem"),
            cert: dir.path().join(cert),
            key: dir.path().join(key),
        })
        .unwrap()
    };
    assert_eq!(tls("member-2.pem", "member-2-key.pem").role(), cluster_facade::rpc::Role::Member);
    assert_eq!(tls("client.pem", "client-key.pem").role(), cluster_facade::rpc::Role::Client);

    // A second run into the same directory changes nothing and exits 2.
    let before = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let again = carbon().args(["tls", "init"]).arg(dir.path()).output().unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), before);
}

#[test]
fn tls_init_refuses_zero_members() {
    let dir = tempfile::tempdir().unwrap();
    let out = carbon().args(["tls", "init", "--members", "0"]).arg(dir.path().join("x")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!dir.path().join("x").exists());
}
