//! What a client command says when it cannot talk to the member it was
//! given: wrong TLS credentials, the wrong port. Each is something the user
//! must fix, so each exits 2 at once, in words, instead of retrying until
//! `--timeout` and printing the transport's raw error (issue 25, bugs 4 and 5).

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::{agent, carbon, tls_flags};

const CLUSTER: &str = "client-errors";

/// Far longer than any answer takes: a command that waits this long retried
/// what it should have refused.
const TIMEOUT: Duration = Duration::from_secs(60);

/// `carbon kv get k` at `service` with `tls`, and how long it took.
fn get(service: &str, tls: &[String]) -> (Output, Duration) {
    let started = Instant::now();
    let out = carbon()
        .args(["kv", "get", "k", "--service", service, "--cluster-id", CLUSTER])
        .args(["--timeout", &format!("{}s", TIMEOUT.as_secs())])
        .args(tls)
        .env_remove("CARBON_TLS_CA")
        .env_remove("CARBON_TLS_CERT")
        .env_remove("CARBON_TLS_KEY")
        .output()
        .expect("carbon runs");
    (out, started.elapsed())
}

/// Exit 2, before the timeout, saying `words`, without the transport's
/// debug output.
fn refused_in_words(what: &str, (out, took): (Output, Duration), words: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{what}: {err}");
    assert!(err.contains(words), "{what}: {words:?} not said: {err}");
    for raw in ["Custom {", "AlertReceived(", "TooLarge", "kind: "] {
        assert!(!err.contains(raw), "{what}: raw error {raw:?} shown: {err}");
    }
    assert!(took < TIMEOUT, "{what}: retried until the timeout ({took:?})");
}

#[test]
fn wrong_tls_credentials_exit_2_at_once_saying_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let (certs, other) = (dir.path().join("certs"), dir.path().join("other"));
    for d in [&certs, &other] {
        let out = carbon().args(["tls", "init", "--members", "1"]).arg(d).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let mut args: Vec<String> =
        ["--host", "127.0.0.1", "--cluster-id", CLUSTER].iter().map(|s| s.to_string()).collect();
    args.extend(tls_flags(&certs, "member-1"));
    let tls_member = agent(&args);
    let plain_member = agent(&["--host".into(), "127.0.0.1".into(), "--cluster-id".into(), CLUSTER.into()]);

    // The right credentials work: what follows is about the credentials only.
    let (ok, _) = get(&tls_member.service(), &tls_flags(&certs, "client"));
    assert_eq!(ok.status.code(), Some(1), "a missing key: {}", String::from_utf8_lossy(&ok.stderr));

    // Another cluster's CA: the member's certificate fails our check.
    refused_in_words(
        "another CA",
        get(&tls_member.service(), &tls_flags(&other, "client")),
        "not signed by your CA",
    );
    // Our CA, another cluster's client certificate: refused before any
    // connection, since loading checks that a certificate chains to its CA
    // (the member would refuse it; a start or a reload refuses it first).
    let mut foreign_cert = tls_flags(&other, "client");
    foreign_cert[1] = certs.join("ca.pem").display().to_string();
    refused_in_words(
        "another cluster's client certificate",
        get(&tls_member.service(), &foreign_cert),
        "not a certificate of the CA",
    );
    // TLS to a member without TLS.
    refused_in_words(
        "TLS to a plain member",
        get(&plain_member.service(), &tls_flags(&certs, "client")),
        "does not speak TLS",
    );
}

#[test]
fn the_http_port_given_as_the_service_port_exits_2_naming_it() {
    let member = agent(&[
        "--host".into(),
        "127.0.0.1".into(),
        "--cluster-id".into(),
        CLUSTER.into(),
        "--http-port".into(),
        "0".into(),
    ]);
    let http = member.http().clone().expect("the start line names the HTTP address");
    let answer = get(&http, &[]);
    let err = String::from_utf8_lossy(&answer.0.stderr).into_owned();
    refused_in_words("the HTTP port", answer, "HTTP");
    assert!(err.contains("not a service port") && err.contains(&http), "{err}");
}
