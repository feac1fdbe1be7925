//! Mutual TLS through the RPC layer, with real sockets: who gets in, who is
//! refused and how, and certificates reloaded without a restart.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use cluster_core::MemberId;
use cluster_rpc::tls::generate::CertificateAuthority;
use cluster_rpc::{Access, Limits, Role, RpcError, Security, Tls, TlsFiles};
use cluster_testkit::rpc::CALL_DEADLINE as DEADLINE;
use cluster_testkit::rpc::*;
use cluster_testkit::testsuite::net::{held_open, idle_connections};

fn tls(ca: &CertificateAuthority, role: Role, name: &str) -> Tls {
    let issued = ca.issue(role, name).expect("issue");
    Tls::from_pem(ca.cert_pem(), &issued.cert_pem, &issued.key_pem).expect("load")
}

fn call_error(r: Result<Said, RpcError>) -> RpcError {
    match r {
        Ok(answer) => panic!("expected a refusal, got {answer:?}"),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_and_clients_get_in_with_their_role() {
    let ca = CertificateAuthority::generate(CLUSTER).expect("ca");
    let (server, _) = start(Limits::default(), Security::Tls(tls(&ca, Role::Member, "m1"))).await;
    let addr = server.local_addr().to_string();
    for role in [Role::Member, Role::Client] {
        let c = client(Security::Tls(tls(&ca, role, "caller")));
        let answer = c.call(&addr, &Ask::WhoAmI, DEADLINE).await.expect("an answer");
        assert_eq!(answer, Said::Caller(Some(role)));
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_tcp_client_is_refused_with_a_clear_error() {
    let ca = CertificateAuthority::generate(CLUSTER).expect("ca");
    let (server, counters) = start(Limits::default(), Security::Tls(tls(&ca, Role::Member, "m1"))).await;
    let e = call_error(
        client(Security::Plain).call(&server.local_addr().to_string(), &Ask::WhoAmI, DEADLINE).await,
    );
    match &e {
        RpcError::Refused { error: cluster_core::Error::Forbidden(m), .. } => {
            assert!(m.contains("TLS"), "{m}")
        }
        other => panic!("expected a refusal that says TLS is needed, got {other:?}"),
    }
    assert_eq!(counters.started.load(Ordering::SeqCst), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_of_another_ca_is_refused() {
    let ca = CertificateAuthority::generate(CLUSTER).expect("ca");
    let other = CertificateAuthority::generate(CLUSTER).expect("another ca");
    let (server, counters) = start(Limits::default(), Security::Tls(tls(&ca, Role::Member, "m1"))).await;
    let addr = server.local_addr().to_string();
    // A caller whose certificate and trust are of another CA.
    let stranger = client(Security::Tls(tls(&other, Role::Member, "intruder")));
    let e = call_error(stranger.call(&addr, &Ask::WhoAmI, DEADLINE).await);
    assert!(matches!(e, RpcError::Handshake { .. }), "{e:?}");
    // A set that trusts our CA but holds a certificate of another is refused
    // as it loads (the stranger above shows the wire refuses such a certificate).
    let issued = other.issue(Role::Member, "forger").expect("issue");
    let forger = Tls::from_pem(ca.cert_pem(), &issued.cert_pem, &issued.key_pem);
    assert!(matches!(forger, Err(cluster_rpc::tls::TlsError::Config { .. })), "{forger:?}");
    assert_eq!(counters.started.load(Ordering::SeqCst), 0, "no request reached the handler");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_refused_on_a_members_only_port() {
    let ca = CertificateAuthority::generate(CLUSTER).expect("ca");
    let security = Security::Tls(tls(&ca, Role::Member, "m1"));
    let (server, counters) = start_with(Limits::default(), security, Access::MembersOnly).await;
    let addr = server.local_addr().to_string();
    let e = call_error(
        client(Security::Tls(tls(&ca, Role::Client, "c1"))).call(&addr, &Ask::WhoAmI, DEADLINE).await,
    );
    assert!(matches!(e, RpcError::Refused { error: cluster_core::Error::Forbidden(_), .. }), "{e:?}");
    let member = client(Security::Tls(tls(&ca, Role::Member, "m2")));
    assert_eq!(
        member.call(&addr, &Ask::WhoAmI, DEADLINE).await.expect("in"),
        Said::Caller(Some(Role::Member))
    );
    assert_eq!(counters.started.load(Ordering::SeqCst), 1);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused() {
    let ca = CertificateAuthority::generate(CLUSTER).expect("ca");
    let (server, counters) = start(Limits::default(), Security::Tls(tls(&ca, Role::Member, "m1"))).await;
    let day = Duration::from_secs(86_400);
    let now = SystemTime::now();
    let old = ca.issue_valid(Role::Member, "old", now - 3 * day, now - day).expect("issue");
    let expired = Tls::from_pem(ca.cert_pem(), &old.cert_pem, &old.key_pem).expect("load");
    let r =
        client(Security::Tls(expired)).call(&server.local_addr().to_string(), &Ask::WhoAmI, DEADLINE).await;
    assert!(r.is_err(), "{r:?}");
    assert_eq!(counters.started.load(Ordering::SeqCst), 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_certificate_serves_new_connections_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = TlsFiles {
        ca_cert: dir.path().join("ca.pem"),
        cert: dir.path().join("m.pem"),
        key: dir.path().join("m.key"),
        crl: None,
    };
    let write = |ca: &CertificateAuthority| {
        let issued = ca.issue(Role::Member, "m1").expect("issue");
        std::fs::write(&files.ca_cert, ca.cert_pem()).expect("write");
        std::fs::write(&files.cert, &issued.cert_pem).expect("write");
        std::fs::write(&files.key, &issued.key_pem).expect("write");
    };
    let first = CertificateAuthority::generate(CLUSTER).expect("ca");
    write(&first);
    let server_tls = Tls::from_files(files.clone()).expect("load");
    let (server, _) = start(Limits::default(), Security::Tls(server_tls.clone())).await;
    let addr = server.local_addr().to_string();
    // A caller of the next CA is refused until the server reloads.
    let next = CertificateAuthority::generate(CLUSTER).expect("next ca");
    let caller = client(Security::Tls(tls(&next, Role::Member, "m2")));
    assert!(caller.call(&addr, &Ask::WhoAmI, DEADLINE).await.is_err());
    write(&next);
    assert!(server_tls.reload().expect("reload"));
    caller.close();
    let answer = caller.call(&addr, &Ask::WhoAmI, DEADLINE).await.expect("served after the reload");
    assert_eq!(answer, Said::Caller(Some(Role::Member)));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_member_certificate_of_this_ca_proves_membership() {
    let ca = CertificateAuthority::generate(CLUSTER).expect("ca");
    let other = CertificateAuthority::generate(CLUSTER).expect("another ca");
    let ours = Security::Tls(tls(&ca, Role::Member, "leader"));
    let short = Duration::from_secs(2);

    let (member, _) = start(Limits::default(), Security::Tls(tls(&ca, Role::Member, "m1"))).await;
    ours.prove_member(&member.local_addr().to_string(), MemberId::generate(), DEADLINE)
        .await
        .expect("a member proves it");

    // A member certificate of another CA.
    let (foreign, _) = start(Limits::default(), Security::Tls(tls(&other, Role::Member, "m1"))).await;
    let e = ours
        .prove_member(&foreign.local_addr().to_string(), MemberId::generate(), DEADLINE)
        .await
        .expect_err("another CA");
    assert!(matches!(e, RpcError::Handshake { .. }), "{e:?}");

    // A port that speaks no TLS at all: it accepts and stays silent.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let silent_addr = silent.local_addr().expect("addr").to_string();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let e = ours.prove_member(&silent_addr, MemberId::generate(), short).await.expect_err("no TLS");
    assert!(matches!(e, RpcError::Handshake { .. }), "{e:?}");
    hold.abort();

    // Nobody listening.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let closed_addr = closed.local_addr().expect("addr").to_string();
    drop(closed);
    let e = ours.prove_member(&closed_addr, MemberId::generate(), short).await.expect_err("nobody");
    assert!(matches!(e, RpcError::Connect { .. }), "{e:?}");

    // Without TLS nothing can be proven, and nothing is asked.
    Security::Plain
        .prove_member(&closed_addr, MemberId::generate(), short)
        .await
        .expect("plain asks nothing");
    member.shutdown().await;
    foreign.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_find_a_place_while_outsiders_hold_every_other_one() {
    let ca = CertificateAuthority::generate(CLUSTER).expect("ca");
    let limits = Limits {
        max_connections: 2,
        max_client_connections: 1,
        max_handshakes: 8,
        max_handshakes_per_ip: 8,
        handshake_timeout: Duration::from_secs(120),
        ..Limits::default()
    };
    let (server, _) = start(limits, Security::Tls(tls(&ca, Role::Member, "m1"))).await;
    let addr = server.local_addr().to_string();
    // A client holds the one client place; another client is refused.
    let holder = client(Security::Tls(tls(&ca, Role::Client, "c1")));
    assert_eq!(
        holder.call(&addr, &Ask::WhoAmI, DEADLINE).await.expect("in"),
        Said::Caller(Some(Role::Client))
    );
    let refused = client(Security::Tls(tls(&ca, Role::Client, "c2")));
    match call_error(refused.call(&addr, &Ask::WhoAmI, DEADLINE).await) {
        RpcError::Refused { error: cluster_core::Error::Unreachable(m), .. } => {
            assert!(m.contains("too many client connections"), "{m}")
        }
        other => panic!("expected a typed refusal, got {other:?}"),
    }
    // Strangers hold every handshake place, and never finish one.
    let mut idle = idle_connections([127, 0, 0, 2], server.local_addr(), 8).await.expect("connect");
    // Members still get in: up to max_connections of their own.
    let mut members = Vec::new();
    for i in 0..2 {
        let member = client(Security::Tls(tls(&ca, Role::Member, &format!("m{}", i + 2))));
        let answer = member.call(&addr, &Ask::WhoAmI, DEADLINE).await.expect("a member gets in");
        assert_eq!(answer, Said::Caller(Some(Role::Member)));
        members.push(member);
    }
    // The first member took the oldest stranger's place; the second found
    // the first's place free once it had authenticated.
    let held = held_open(&mut idle, Duration::from_secs(1)).await;
    assert_eq!(held, 7, "strangers' connections held");
    server.shutdown().await;
}

/// With member identities, the certificate at the raft address must name
/// the member id claimed: another member's certificate, or one that names
/// no member, proves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_claimed_members_certificate_proves_it() {
    let ca = CertificateAuthority::generate(CLUSTER).expect("ca");
    let member_tls = |id| {
        let c = ca.issue_member(id, "m").expect("issue");
        Tls::from_pem(ca.cert_pem(), &c.cert_pem, &c.key_pem).expect("load")
    };
    let (leader, m2) = (MemberId::generate(), MemberId::generate());
    let ours = Security::Tls(member_tls(leader));
    let (server, _) = start(Limits::default(), Security::Tls(member_tls(m2))).await;
    let addr = server.local_addr().to_string();
    ours.prove_member(&addr, m2, DEADLINE).await.expect("m2 proves to be m2");
    // A phantom claiming another member id at m2's address.
    let e = ours.prove_member(&addr, MemberId::generate(), DEADLINE).await.expect_err("not m2's id");
    assert!(
        matches!(&e, RpcError::Handshake { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied),
        "{e:?}"
    );
    assert!(e.to_string().contains(&m2.to_string()) || format!("{e:?}").contains(&m2.to_string()), "{e:?}");
    // A member certificate made before identities proves nobody to a member that has one.
    let (legacy, _) = start(Limits::default(), Security::Tls(tls(&ca, Role::Member, "old"))).await;
    let legacy_addr = legacy.local_addr().to_string();
    let e = ours.prove_member(&legacy_addr, m2, DEADLINE).await.expect_err("no member id");
    assert!(matches!(e, RpcError::Handshake { .. }), "{e:?}");
    // Between two such members, the role is all there is to prove.
    let old_leader = Security::Tls(tls(&ca, Role::Member, "old leader"));
    old_leader.prove_member(&legacy_addr, m2, DEADLINE).await.expect("role only");
    server.shutdown().await;
    legacy.shutdown().await;
}

/// A revoked member proves nothing to a leader that loaded the revocation list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_member_certificate_proves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = cluster_rpc::tls::generate::write_bundle(dir.path(), CLUSTER, 2).expect("bundle");
    let m2 = Tls::from_files(bundle.members[1].clone()).expect("m2 loads");
    let (server, _) = start(Limits::default(), Security::Tls(m2)).await;
    let addr = server.local_addr().to_string();
    let leader = Tls::from_files(bundle.members[0].clone()).expect("m1 loads");
    Security::Tls(leader).prove_member(&addr, bundle.member_ids[1], DEADLINE).await.expect("not revoked yet");

    let crl = cluster_rpc::tls::generate::revoke_in(dir.path(), &bundle.members[1].cert).expect("revoke");
    let leader = Tls::from_files(TlsFiles { crl: Some(crl), ..bundle.members[0].clone() }).expect("m1 loads");
    let e =
        Security::Tls(leader).prove_member(&addr, bundle.member_ids[1], DEADLINE).await.expect_err("revoked");
    assert!(matches!(e, RpcError::Handshake { .. }), "{e:?}");
    server.shutdown().await;
}
