//! `carbon tls init` and `carbon tls issue`: the files they write, their
//! modes, their refusals, and the member id a certificate gives an agent.

mod common;

use std::time::Duration;

use cluster_core::testsuite::holds_within_blocking;
use common::{agent, carbon, carbon_tls_client, tls_flags};

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
        "gossip.key",
    ] {
        let path = dir.path().join(name);
        assert!(path.exists(), "{name} written");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            if name.ends_with("-key.pem") || name == "gossip.key" {
                assert_eq!(mode, 0o600, "{name} is private");
            }
        }
    }
    // It tells how to use them.
    assert!(stdout.contains("--tls-cert"), "{stdout}");
    assert!(stdout.contains("CARBON_TLS_CA="), "{stdout}");
    assert!(!dir.path().join("member-3.pem").exists());
    let key = std::fs::read_to_string(dir.path().join("gossip.key")).unwrap();
    assert!(cluster_facade::GossipKey::from_base64(key.trim()).is_ok(), "gossip.key holds a key: {key}");
    assert!(stdout.contains("CARBON_GOSSIP_KEY="), "{stdout}");

    // The certificates load, with the role each was made for.
    let tls = |cert: &str, key: &str| {
        cluster_facade::rpc::Tls::from_files(cluster_facade::rpc::TlsFiles {
            ca_cert: dir.path().join("ca.pem"),
            cert: dir.path().join(cert),
            key: dir.path().join(key),
            crl: None,
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

fn client_cmd(args: &[&str], service: &str, tls: &[String]) -> std::process::Output {
    client_within(args, service, tls, "20s")
}

fn client_within(args: &[&str], service: &str, tls: &[String], timeout: &str) -> std::process::Output {
    carbon_tls_client(args, service, "tls-test", tls, timeout)
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
    let first = agent(&base("member-1"));
    let mut second_args = base("member-2");
    second_args.extend(["--seed".to_owned(), first.gossip().clone()]);
    let second = agent(&second_args);

    // A client with the cluster's client certificate reads and writes, through either member.
    let client = tls_flags(&certs, "client");
    let set = client_cmd(&["kv", "set", "color", "blue"], &second.service(), &client);
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    let get = client_cmd(&["kv", "get", "color", "--consistent"], &first.service(), &client);
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "blue");

    // Without a certificate the member says TLS is needed (a configuration
    // problem: exit 2); with another CA's the handshake is refused (exit 2
    // too: carbon_client_errors.rs covers each kind of wrong credentials).
    let plain = client_within(&["kv", "get", "color"], &first.service(), &[], "3s");
    assert_eq!(plain.status.code(), Some(2), "{}", String::from_utf8_lossy(&plain.stderr));
    assert!(String::from_utf8_lossy(&plain.stderr).contains("TLS"));
    let foreign =
        client_within(&["kv", "get", "color"], &first.service(), &tls_flags(&other, "client"), "3s");
    assert_eq!(foreign.status.code(), Some(2), "{}", String::from_utf8_lossy(&foreign.stderr));

    // A client certificate may not write the cluster's own records, whatever the client sends.
    let reserved = client_cmd(&["kv", "set", "carbon-grid/members/x", "y"], &first.service(), &client);
    assert_eq!(reserved.status.code(), Some(2), "{}", String::from_utf8_lossy(&reserved.stderr));

    // Only some of the three TLS flags is a usage error.
    let partial = client_cmd(&["kv", "get", "color"], &first.service(), &client[..2]);
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

/// Runs `carbon` with `args` until `ok` holds for its output, or panics after a minute.
fn eventually(
    what: &str,
    args: &[&str],
    service: &str,
    tls: &[String],
    ok: impl Fn(&serde_json::Value) -> bool,
) {
    let mut last = String::new();
    let held = holds_within_blocking(Duration::from_secs(90), || {
        let out = client_within(args, service, tls, "5s");
        let json = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default();
        last = format!("{json} {}", String::from_utf8_lossy(&out.stderr));
        out.status.success() && ok(&json)
    });
    assert!(held, "{what}: last answer {last}");
}

fn keyring(service: &str, tls: &[String]) -> serde_json::Value {
    let out = client_cmd(&["keys", "list", "--json"], service, tls);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("keys list --json prints JSON")
}

#[test]
fn carbon_keys_rotates_the_gossip_key_on_every_member_and_a_restarted_member_keeps_its_ring() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    assert!(carbon().args(["tls", "init", "--members", "3"]).arg(&certs).status().unwrap().success());
    let generate = || {
        let out = carbon().args(["keys", "generate"]).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let (old, new) = (generate(), generate());
    let args = |i: usize, seed: Option<&str>| {
        let mut a: Vec<String> = ["--host", "127.0.0.1", "--cluster-id", "tls-test", "--gossip-key", &old]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(["--data-dir".to_owned(), dir.path().join(format!("m{i}")).display().to_string()]);
        a.extend(tls_flags(&certs, &format!("member-{i}")));
        if let Some(seed) = seed {
            a.extend(["--seed".to_owned(), seed.to_owned()]);
        }
        a
    };
    let first = agent(&args(1, None));
    let second = agent(&args(2, Some(&first.gossip())));
    let mut third = agent(&args(3, Some(&first.gossip())));
    let operator = tls_flags(&certs, "member-1");
    let client = tls_flags(&certs, "client");
    let all_alive = |v: &serde_json::Value| {
        v.as_array().is_some_and(|m| m.len() == 3 && m.iter().all(|m| m["liveness"] == "alive"))
    };
    eventually("three live members", &["members", "--json"], &first.service(), &client, all_alive);

    // Keys cross the wire only to a member certificate.
    let refused = client_cmd(&["keys", "list"], &first.service(), &client);
    assert_eq!(refused.status.code(), Some(2), "{}", String::from_utf8_lossy(&refused.stderr));

    let ring = keyring(&first.service(), &operator);
    assert_eq!(ring["members_answered"], 3, "{ring}");
    assert_eq!(ring["keys"], serde_json::json!([{"key": old, "members": 3, "primary_on": 3}]));

    // The rotation, each step on every member.
    for step in [["keys", "install", &new], ["keys", "use", &new], ["keys", "remove", &old]] {
        let out = client_cmd(&step, &second.service(), &operator);
        assert!(out.status.success(), "{step:?}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text.lines().filter(|l| l.ends_with(": done")).count(),
            3,
            "{step:?} on three members: {text}"
        );
    }
    let ring = keyring(&third.service(), &operator);
    assert_eq!(ring["keys"], serde_json::json!([{"key": new, "members": 3, "primary_on": 3}]), "{ring}");

    // The primary cannot be removed; a key nobody has cannot be used.
    let primary = client_cmd(&["keys", "remove", &new], &first.service(), &operator);
    assert_eq!(primary.status.code(), Some(2), "{}", String::from_utf8_lossy(&primary.stderr));
    assert!(String::from_utf8_lossy(&primary.stderr).contains("primary"));
    let unknown = client_cmd(&["keys", "use", &generate()], &first.service(), &operator);
    assert_eq!(unknown.status.code(), Some(2), "{}", String::from_utf8_lossy(&unknown.stderr));

    // Gossip on the new key alone: writes work through every member, nobody failed.
    let set = client_cmd(&["kv", "set", "rotated", "yes"], &third.service(), &client);
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    eventually(
        "three live members after the rotation",
        &["members", "--json"],
        &first.service(),
        &client,
        all_alive,
    );

    // A member restarted with the old key on its command line keeps the ring
    // it persisted, so it gets back in.
    drop(third);
    eventually("the third member seen gone", &["members", "--json"], &first.service(), &client, |v| {
        v.as_array().is_some_and(|m| m.iter().any(|m| m["liveness"] != "alive"))
    });
    third = agent(&args(3, Some(&first.gossip())));
    eventually("the restarted member back", &["members", "--json"], &first.service(), &client, all_alive);
    // Its record names its new service port once the leader updated it;
    // until then `keys list` reaches two members.
    let expected = serde_json::json!([{"key": new, "members": 3, "primary_on": 3}]);
    eventually(
        "every member's ring holds the new key only",
        &["keys", "list", "--json"],
        &third.service(),
        &operator,
        |v| v["members_answered"] == 3 && v["keys"] == expected,
    );
}

/// The member id `carbon tls issue --member` printed.
fn issued_member_id(stdout: &[u8]) -> String {
    let text = String::from_utf8_lossy(stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    let at = words.windows(2).position(|w| w == ["for", "member"]).expect("names the member") + 2;
    words[at].to_owned()
}

/// Waits (bounded) for `child` to exit; kills it and fails if it does not.
fn exit_of(mut child: std::process::Child) -> std::process::Output {
    if !holds_within_blocking(Duration::from_secs(120), || child.try_wait().unwrap().is_some()) {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the agent did not exit");
    }
    child.wait_with_output().unwrap()
}

#[test]
fn tls_issue_adds_certificates_and_an_agent_runs_as_the_member_its_certificate_names() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    assert!(carbon().args(["tls", "init", "--members", "1"]).arg(&certs).status().unwrap().success());
    // One more member, into the CA directory `tls init` refuses to run in again.
    let issue = carbon().args(["tls", "issue", "--member", "--dir"]).arg(&certs).output().unwrap();
    assert!(issue.status.success(), "{}", String::from_utf8_lossy(&issue.stderr));
    let id = issued_member_id(&issue.stdout);
    assert!(certs.join("member-2.pem").exists() && certs.join("member-2-key.pem").exists());

    // A new data dir takes the member id of the certificate.
    let data = dir.path().join("data");
    let args = |name: &str| {
        let mut a: Vec<String> =
            ["--host", "127.0.0.1", "--cluster-id", "tls-test"].iter().map(|s| s.to_string()).collect();
        a.extend(["--data-dir".to_owned(), data.display().to_string()]);
        a.extend(tls_flags(&certs, name));
        a
    };
    let agent = agent(&args("member-2"));
    assert_eq!(agent.member_id(), id, "the member runs as its certificate's member id");
    assert!(agent.stop().success());

    // That data dir with another member's certificate: exit 2, naming both ids.
    let child = carbon()
        .arg("agent")
        .args(args("member-1"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let refused = exit_of(child);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&id), "names the data dir's member id: {stderr}");
    let cert_pem = std::fs::read_to_string(certs.join("member-1.pem")).unwrap();
    let tls = cluster_facade::rpc::Tls::from_pem(
        &std::fs::read_to_string(certs.join("ca.pem")).unwrap(),
        &cert_pem,
        &std::fs::read_to_string(certs.join("member-1-key.pem")).unwrap(),
    )
    .unwrap();
    let other = tls.identity().expect("tls init's certificates name their member").member_id.to_string();
    assert!(stderr.contains(&other), "names the certificate's member id: {stderr}");

    // A client certificate, written elsewhere: it names no member.
    let out = dir.path().join("clients");
    let client = carbon()
        .args(["tls", "issue", "--client", "--dir"])
        .arg(&certs)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(client.status.success(), "{}", String::from_utf8_lossy(&client.stderr));
    let tls = cluster_facade::rpc::Tls::from_files(cluster_facade::rpc::TlsFiles {
        ca_cert: certs.join("ca.pem"),
        cert: out.join("client.pem"),
        key: out.join("client-key.pem"),
        crl: None,
    })
    .unwrap();
    assert_eq!((tls.role(), tls.identity()), (cluster_facade::rpc::Role::Client, None));

    // Revoking member-2 writes the CA directory's revocation list; with it
    // the member cannot start any more (its own certificate is on it).
    let revoke = carbon()
        .args(["tls", "revoke"])
        .arg(certs.join("member-2.pem"))
        .arg("--dir")
        .arg(&certs)
        .output()
        .unwrap();
    assert!(revoke.status.success(), "{}", String::from_utf8_lossy(&revoke.stderr));
    assert!(certs.join("crl.pem").exists());
    let mut revoked_args = args("member-2");
    revoked_args.extend(["--tls-crl".to_owned(), certs.join("crl.pem").display().to_string()]);
    let child = carbon()
        .arg("agent")
        .args(revoked_args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let refused = exit_of(child);
    assert_eq!(refused.status.code(), Some(2), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("revoked"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // Another CA's certificate cannot be revoked here.
    let other = dir.path().join("other");
    assert!(carbon().args(["tls", "init", "--members", "1"]).arg(&other).status().unwrap().success());
    let foreign = carbon()
        .args(["tls", "revoke"])
        .arg(other.join("member-1.pem"))
        .arg("--dir")
        .arg(&certs)
        .output()
        .unwrap();
    assert_eq!(foreign.status.code(), Some(2));

    // Neither --member nor --client, or no CA there: usage errors.
    assert_eq!(carbon().args(["tls", "issue", "--dir"]).arg(&certs).output().unwrap().status.code(), Some(2));
    let nowhere = carbon().args(["tls", "issue", "--member", "--dir"]).arg(dir.path()).output().unwrap();
    assert_eq!(nowhere.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&nowhere.stderr).contains("ca.pem"));
}
