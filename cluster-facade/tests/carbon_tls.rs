//! `carbon tls init`: the files it writes, their modes, and its refusals.

mod agent;

use agent::{Agent, carbon};

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

fn tls_flags(dir: &std::path::Path, name: &str) -> Vec<String> {
    vec![
        "--tls-ca".into(),
        dir.join("ca.pem").display().to_string(),
        "--tls-cert".into(),
        dir.join(format!("{name}.pem")).display().to_string(),
        "--tls-key".into(),
        dir.join(format!("{name}-key.pem")).display().to_string(),
    ]
}

fn client_cmd(args: &[&str], service: &str, tls: &[String]) -> std::process::Output {
    client_within(args, service, tls, "20s")
}

fn client_within(args: &[&str], service: &str, tls: &[String], timeout: &str) -> std::process::Output {
    carbon()
        .args(args)
        .args(["--service", service, "--cluster-id", "tls-test", "--timeout", timeout])
        .args(tls)
        .env_remove("CARBON_TLS_CA")
        .env_remove("CARBON_TLS_CERT")
        .env_remove("CARBON_TLS_KEY")
        .output()
        .unwrap()
}

#[test]
fn agents_speak_mutual_tls_and_refuse_callers_without_a_certificate_of_their_ca() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let other = dir.path().join("other");
    assert!(carbon().args(["tls", "init", "--members", "2"]).arg(&certs).status().unwrap().success());
    assert!(carbon().args(["tls", "init", "--members", "1"]).arg(&other).status().unwrap().success());
    let base = |name: &str| {
        let mut a: Vec<String> =
            ["--host", "127.0.0.1", "--cluster-id", "tls-test"].iter().map(|s| s.to_string()).collect();
        a.extend(tls_flags(&certs, name));
        a
    };
    let first = Agent::spawn(&base("member-1"));
    let mut second_args = base("member-2");
    second_args.extend(["--seed".to_owned(), first.gossip.clone()]);
    let second = Agent::spawn(&second_args);

    // A client with the cluster's client certificate reads and writes, through either member.
    let client = tls_flags(&certs, "client");
    let set = client_cmd(&["kv", "set", "color", "blue"], &second.service, &client);
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    let get = client_cmd(&["kv", "get", "color", "--consistent"], &first.service, &client);
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "blue");

    // Without a certificate the member says TLS is needed (a configuration
    // problem: exit 2); with another CA's the handshake fails (exit 3).
    let plain = client_within(&["kv", "get", "color"], &first.service, &[], "3s");
    assert_eq!(plain.status.code(), Some(2), "{}", String::from_utf8_lossy(&plain.stderr));
    assert!(String::from_utf8_lossy(&plain.stderr).contains("TLS"));
    let foreign = client_within(&["kv", "get", "color"], &first.service, &tls_flags(&other, "client"), "3s");
    assert_eq!(foreign.status.code(), Some(3), "{}", String::from_utf8_lossy(&foreign.stderr));

    // A client certificate may not write the cluster's own records, whatever the client sends.
    let reserved = client_cmd(&["kv", "set", "carbon-grid/members/x", "y"], &first.service, &client);
    assert_eq!(reserved.status.code(), Some(2), "{}", String::from_utf8_lossy(&reserved.stderr));

    // Only some of the three TLS flags is a usage error.
    let partial = client_cmd(&["kv", "get", "color"], &first.service, &client[..2]);
    assert_eq!(partial.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&partial.stderr).contains("--tls-key"));
}

#[test]
fn a_member_on_a_network_address_needs_tls_and_a_gossip_key_or_insecure() {
    let out = carbon()
        .args(["agent", "--host", "0.0.0.0", "--advertise-host", "127.0.0.1"])
        .env_remove("CARBON_TLS_CA")
        .env_remove("CARBON_TLS_CERT")
        .env_remove("CARBON_TLS_KEY")
        .env_remove("CARBON_GOSSIP_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--tls-ca") && err.contains("--gossip-key") && err.contains("--insecure"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    // A client certificate cannot run a member.
    let dir = tempfile::tempdir().unwrap();
    assert!(carbon().args(["tls", "init", "--members", "1"]).arg(dir.path()).status().unwrap().success());
    let out = carbon()
        .args(["agent", "--host", "127.0.0.1"])
        .args(tls_flags(dir.path(), "client"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("client certificate"));
}
