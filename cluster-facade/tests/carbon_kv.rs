//! `carbon kv` as a new user meets it (issue 25): values too long for a
//! command line, reads linearizable by default, lists of addresses with
//! spaces, and a watch from a forgotten revision.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};

use common::{agent, carbon};

const CLUSTER: &str = "kv-test";

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `carbon ARGS --service SVC --cluster-id CLUSTER`, with `stdin` as its input.
fn run(svc: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = carbon()
        .args(args)
        .args(["--service", svc, "--cluster-id", CLUSTER])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("carbon runs");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

/// One member that snapshots every few entries, so that a restart forgets
/// the changes before its snapshot.
fn config(dir: &Path) -> String {
    let path = dir.join("node.toml");
    std::fs::write(
        &path,
        format!(
            "cluster_id = \"{CLUSTER}\"\nhost = \"127.0.0.1\"\nnum_voters = 1\n\
             data_dir = \"{}\"\n[raft]\nsnapshot_after_entries = 5\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn values_from_a_file_or_stdin_linearizable_reads_and_spaced_address_lists() {
    let dir = tempfile::tempdir().unwrap();
    let member = agent(&["--config".into(), config(dir.path())]);
    member.wait_ready();
    let svc = member.service().clone();

    // 200 KB: past what one command-line argument may hold (128 KiB on Linux).
    let big: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let file = dir.path().join("big.txt");
    std::fs::write(&file, &big).unwrap();
    let out = run(&svc, &["kv", "set", "big", "--file", file.to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let got = run(&svc, &["kv", "get", "big"], b"");
    assert!(got.status.success(), "{}", stderr(&got));
    assert_eq!(got.stdout.strip_suffix(b"\n"), Some(&big[..]), "the file's bytes, exactly");

    // `-` reads standard input, byte for byte (binary too).
    let binary = [0u8, 0xff, b'\n', 7];
    let out = run(&svc, &["kv", "set", "bin", "-"], &binary);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value =
        serde_json::from_slice(&run(&svc, &["kv", "get", "bin", "--json"], b"").stdout).unwrap();
    assert_eq!(json["value_base64"], "AP8KBw==", "{json}");
    // Compare-and-set takes its new value the same ways.
    let out = run(&svc, &["kv", "cas", "bin", "-", "--absent"], b"x");
    assert_eq!(out.status.code(), Some(1), "bin exists: {}", stderr(&out));
    let out = run(&svc, &["kv", "cas", "big", "--file", file.to_str().unwrap(), "--expect", "nope"], b"");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = run(&svc, &["kv", "cas", "fresh", "-", "--absent"], b"from stdin");
    assert!(out.status.success(), "{}", stderr(&out));
    let missing = dir.path().join("missing");
    let out = run(&svc, &["kv", "set", "k", "--file", missing.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains(missing.to_str().unwrap()), "{}", stderr(&out));
    let out = run(&svc, &["kv", "set", "k", "v", "--file", file.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(2), "a value and a file: {}", stderr(&out));

    // Reads: linearizable by default, --stale to read locally, --consistent
    // still accepted.
    for flags in [&[][..], &["--stale"], &["--consistent"]] {
        let mut args = vec!["kv", "get", "fresh"];
        args.extend_from_slice(flags);
        let out = run(&svc, &args, b"");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "from stdin", "{flags:?}: {}", stderr(&out));
    }
    let out = run(&svc, &["kv", "get", "fresh", "--stale", "--consistent"], b"");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let help = carbon().args(["kv", "get", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("--stale"));

    // Addresses as people write lists: spaces after commas, a trailing space.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    for list in [format!("{dead}, {svc}"), format!("{svc} ")] {
        let out = carbon()
            .args(["kv", "get", "fresh", "--cluster-id", CLUSTER])
            .env("CARBON_SERVICE", &list)
            .output()
            .unwrap();
        assert!(out.status.success(), "CARBON_SERVICE={list:?}: {}", stderr(&out));
    }
}

#[test]
fn a_watch_from_a_compacted_revision_exits_4_saying_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let member = agent(&["--config".into(), config.clone()]);
    member.wait_ready();
    for i in 0..20 {
        let out = run(&member.service(), &["kv", "set", &format!("k{i}"), "v"], b"");
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert!(member.stop().success());
    // Reopened from its snapshot, the member no longer remembers revision 1.
    let member = agent(&["--config".into(), config]);
    member.wait_ready();
    let out = run(&member.service(), &["kv", "watch", "", "--from-revision", "1"], b"");
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("compacted") && err.contains("kv list"), "{err}");
}

/// The body of `GET path` at the HTTP address `addr`.
fn http_get(addr: &str, path: &str) -> Vec<u8> {
    use std::io::Read;
    let mut c = std::net::TcpStream::connect(addr).expect("http connects");
    c.set_read_timeout(Some(cluster_core::testsuite::DEADLINE)).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).unwrap();
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").expect("a header");
    out[split + 4..].to_vec()
}

#[test]
fn status_json_has_the_shape_of_the_http_status() {
    let member = agent(&[
        "--cluster-id".into(),
        CLUSTER.into(),
        "--num-voters".into(),
        "1".into(),
        "--http-port".into(),
        "0".into(),
    ]);
    member.wait_ready();
    let http: serde_json::Value =
        serde_json::from_slice(&http_get(member.http().as_deref().unwrap(), "/v1/status")).unwrap();
    let out = run(&member.service(), &["status", "--json"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let cli: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let fields = |v: &serde_json::Value| {
        let mut keys: Vec<String> = v.as_object().expect("an object").keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(fields(&cli), fields(&http), "cli {cli}\nhttp {http}");
    for field in ["committed_index", "snapshot_index", "role", "short_id"] {
        assert!(cli.get(field).is_some(), "{field} missing: {cli}");
    }
    for same in ["member_id", "short_id", "role", "leader"] {
        assert_eq!(cli[same], http[same], "{same}");
    }
    assert_eq!(cli["role"], "leader", "{cli}");
    assert_eq!(cli["short_id"], 1, "{cli}");
    let text = run(&member.service(), &["status"], b"");
    let text = String::from_utf8_lossy(&text.stdout);
    for row in ["short id", "committed index", "snapshot index"] {
        assert!(text.contains(row), "{row} not shown: {text}");
    }
}

/// CRC-32 (IEEE), as the backup header carries it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

fn json_of(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", stderr(out));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn snapshot_restore_keeps_the_revision_and_writes_nothing_from_refused_content() {
    let dir = tempfile::tempdir().unwrap();
    let member = agent(&["--cluster-id".into(), CLUSTER.into(), "--num-voters".into(), "1".into()]);
    member.wait_ready();
    // Many changes of few keys: a revision far above the number of keys.
    for i in 0..30 {
        let out = run(&member.service(), &["kv", "set", &format!("k{}", i % 3), &i.to_string()], b"");
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let backup = dir.path().join("backup.snap");
    let saved =
        json_of(&run(&member.service(), &["snapshot", "save", backup.to_str().unwrap(), "--json"], b""));
    let revision = saved["revision"].as_u64().unwrap();
    assert!(revision >= 30, "{saved}");
    let before = json_of(&run(&member.service(), &["kv", "list", "", "--json"], b""))["entries"].take();
    drop(member);

    let restored = dir.path().join("restored");
    let restore = |file: &Path| {
        carbon()
            .args(["snapshot", "restore", file.to_str().unwrap(), "--json", "--cluster-id", CLUSTER])
            .args(["--data-dir", restored.to_str().unwrap()])
            .output()
            .unwrap()
    };

    // Content the store refuses (an empty key) under a valid checksum: exit
    // 2, and no data directory.
    let bytes = std::fs::read(&backup).unwrap();
    let newline = bytes.iter().position(|b| *b == b'\n').unwrap();
    let mut doc: serde_json::Value = serde_json::from_slice(&bytes[newline + 1..]).unwrap();
    doc["entries"].as_array_mut().unwrap().push(serde_json::json!({"key": "", "value_base64": "eA=="}));
    let body = serde_json::to_vec(&doc).unwrap();
    let mut refused =
        format!("carbon-snapshot 1 crc32 {:08x} bytes {}\n", crc32(&body), body.len()).into_bytes();
    refused.extend_from_slice(&body);
    let refused_file = dir.path().join("refused.snap");
    std::fs::write(&refused_file, refused).unwrap();
    let out = restore(&refused_file);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("empty key"), "{}", stderr(&out));
    assert!(!restored.exists(), "a refused restore left {}", restored.display());

    // The restored store goes on from the backup's revision.
    let done = json_of(&restore(&backup));
    assert!(done["revision"].as_u64().unwrap() >= revision, "{done} after a backup at {revision}");
    let member = agent(&[
        "--cluster-id".into(),
        CLUSTER.into(),
        "--num-voters".into(),
        "1".into(),
        "--data-dir".into(),
        restored.display().to_string(),
    ]);
    member.wait_ready();
    let list = json_of(&run(&member.service(), &["kv", "list", "", "--json"], b""));
    assert!(list["revision"].as_u64().unwrap() >= revision, "{list} after a backup at {revision}");
    assert_eq!(list["entries"], before);
}

#[test]
fn kv_get_print_revision_shows_the_create_and_mod_revision_of_a_key() {
    let member = agent(&["--cluster-id".into(), CLUSTER.into(), "--num-voters".into(), "1".into()]);
    member.wait_ready();
    let svc = member.service().clone();
    let set = |k: &str, v: &str| assert!(run(&svc, &["kv", "set", k, v], b"").status.success());
    let meta = |k: &str, stale: bool| {
        let mut args = vec!["kv", "get", k, "--print-revision", "--json"];
        if stale {
            args.push("--stale");
        }
        let v = json_of(&run(&svc, &args, b""));
        (v["create_revision"].as_u64().unwrap(), v["mod_revision"].as_u64().unwrap())
    };
    let revision = || json_of(&run(&svc, &["kv", "list", "", "--json"], b""))["revision"].as_u64().unwrap();
    set("a", "1");
    let created = revision();
    set("b", "1");
    set("a", "2");
    let modified = revision();
    assert!(created < modified);
    assert_eq!(meta("a", false), (created, modified));
    assert_eq!(meta("a", true), (created, modified), "a stale read on the leader is its state");
    let (b_create, b_mod) = meta("b", false);
    assert!(b_create == b_mod && created < b_create && b_create < modified);
    // Deleted and set again: created anew.
    assert!(run(&svc, &["kv", "delete", "a"], b"").status.success());
    set("a", "3");
    let again = revision();
    assert_eq!(meta("a", false), (again, again));
    // The text form: a line of revisions, then the value.
    let out = run(&svc, &["kv", "get", "a", "--print-revision"], b"");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("create_revision {again} mod_revision {again}\n3\n")
    );
    let missing = run(&svc, &["kv", "get", "nope", "--print-revision", "--json"], b"");
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn kv_delete_prefix_deletes_every_key_under_it_at_one_revision() {
    use std::io::BufRead;

    let member = agent(&["--cluster-id".into(), CLUSTER.into(), "--num-voters".into(), "1".into()]);
    member.wait_ready();
    let svc = member.service();
    for k in ["app/a", "app/b", "apps", "cache/x"] {
        assert!(run(&svc, &["kv", "set", k, "v"], b"").status.success());
    }
    let revision = || json_of(&run(&svc, &["kv", "list", "", "--json"], b""))["revision"].as_u64().unwrap();
    let before = revision();

    // What `kv delete` prints, with the count.
    let out = run(&svc, &["kv", "delete", "--prefix", "app/"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "deleted 2\n");
    assert_eq!(revision(), before + 1, "one write, one revision");
    let keys: Vec<String> = json_of(&run(&svc, &["kv", "list", "", "--json"], b""))["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys, ["apps", "cache/x"]);

    // A watcher sees one delete per key, both at that revision.
    let from = (before + 1).to_string();
    let mut watch = carbon()
        .args(["kv", "watch", "app/", "--from-revision", &from, "--json"])
        .args(["--service", &svc, "--cluster-id", CLUSTER])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("carbon runs");
    let mut lines = std::io::BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let line: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        seen.push((
            line["key"].as_str().unwrap().to_owned(),
            line["deleted"].clone(),
            line["revision"].clone(),
        ));
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let at = serde_json::json!(before + 1);
    assert_eq!(
        seen,
        [
            ("app/a".to_owned(), serde_json::json!(true), at.clone()),
            ("app/b".to_owned(), serde_json::json!(true), at)
        ]
    );

    // Nothing left under it: exit 1, as a missing key; JSON says so.
    let out = run(&svc, &["kv", "delete", "--prefix", "app/", "--json"], b"");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(printed, serde_json::json!({"prefix": "app/", "deleted": false, "count": 0}));

    // Hostile prefixes: the empty one and the cluster's are refused, saying
    // why; one that also covers the cluster's records deletes users' keys only.
    let out = run(&svc, &["kv", "delete", "--prefix", ""], b"");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("must not be empty"), "{}", stderr(&out));
    let out = run(&svc, &["kv", "delete", "--prefix", "carbon-grid/members/"], b"");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("reserves"), "{}", stderr(&out));
    let out = run(&svc, &["kv", "delete", "--prefix", "c"], b"");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "deleted 1\n", "{}", stderr(&out));
    let all = json_of(&run(&svc, &["kv", "list", "carbon-grid/", "--all", "--json"], b""));
    assert!(!all["entries"].as_array().unwrap().is_empty(), "the cluster's records stay: {all}");
    let out = run(&svc, &["kv", "delete", "k", "--prefix", "p"], b"");
    assert_eq!(out.status.code(), Some(2), "a key and a prefix at once is a usage error");
}
