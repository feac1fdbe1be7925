use std::time::{Duration, SystemTime};

use cluster_core::testsuite::{DEADLINE, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::generate::{CertificateAuthority, write_bundle};
use super::*;

fn tls(ca: &CertificateAuthority, role: Role) -> Tls {
    let c = ca.issue(role, "t").unwrap();
    Tls::from_pem(ca.cert_pem(), &c.cert_pem, &c.key_pem).unwrap()
}

/// Runs one handshake (and one byte each way) between `server` and `client`
/// over an in-memory pipe; returns the role the server saw, or the error of
/// whichever side failed first.
async fn handshake(server: &Tls, client: &Tls) -> Result<Option<Role>, String> {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = server.acceptor().map_err(|e| e.to_string())?;
    let connector = client.connector();
    let serve = async move {
        let mut s = acceptor.accept(a).await.map_err(|e| format!("server: {e}"))?;
        let role = peer_role(s.get_ref().1);
        let mut byte = [0u8; 1];
        s.read_exact(&mut byte).await.map_err(|e| format!("server read: {e}"))?;
        s.write_all(&byte).await.map_err(|e| format!("server write: {e}"))?;
        s.flush().await.map_err(|e| format!("server flush: {e}"))?;
        Ok::<_, String>(role)
    };
    let call = async move {
        let mut c = connector.connect(Tls::server_name(), b).await.map_err(|e| format!("client: {e}"))?;
        c.write_all(b"x").await.map_err(|e| format!("client write: {e}"))?;
        c.flush().await.map_err(|e| format!("client flush: {e}"))?;
        let mut byte = [0u8; 1];
        c.read_exact(&mut byte).await.map_err(|e| format!("client read: {e}"))?;
        Ok::<_, String>(())
    };
    let (served, called) = tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(serve, call) })
        .await
        .map_err(|_| "timeout")?;
    called?;
    served
}

#[tokio::test]
async fn members_and_clients_are_told_apart() {
    let ca = CertificateAuthority::generate("c").unwrap();
    let member = tls(&ca, Role::Member);
    assert_eq!(handshake(&member, &tls(&ca, Role::Member)).await, Ok(Some(Role::Member)));
    assert_eq!(handshake(&member, &tls(&ca, Role::Client)).await, Ok(Some(Role::Client)));
}

#[tokio::test]
async fn a_client_certificate_cannot_serve() {
    let ca = CertificateAuthority::generate("c").unwrap();
    assert!(matches!(tls(&ca, Role::Client).acceptor(), Err(TlsError::NotAMember)));
}

#[tokio::test]
async fn another_cas_certificates_are_refused_both_ways() {
    let ours = CertificateAuthority::generate("c").unwrap();
    let theirs = CertificateAuthority::generate("c").unwrap();
    let member = tls(&ours, Role::Member);
    let err = handshake(&member, &tls(&theirs, Role::Member)).await.unwrap_err();
    assert!(err.contains("server") || err.contains("client"), "{err}");
    // A server of another CA is not trusted by our client either.
    assert!(handshake(&tls(&theirs, Role::Member), &tls(&ours, Role::Client)).await.is_err());
}

#[tokio::test]
async fn expired_certificates_are_refused() {
    let ca = CertificateAuthority::generate("c").unwrap();
    let day = Duration::from_secs(24 * 3600);
    let now = SystemTime::now();
    let old = ca.issue_valid(Role::Client, "old", now - 10 * day, now - day).unwrap();
    let expired = Tls::from_pem(ca.cert_pem(), &old.cert_pem, &old.key_pem).unwrap();
    assert!(handshake(&tls(&ca, Role::Member), &expired).await.is_err());
    let old = ca.issue_valid(Role::Member, "old", now - 10 * day, now - day).unwrap();
    let expired_server = Tls::from_pem(ca.cert_pem(), &old.cert_pem, &old.key_pem).unwrap();
    assert!(handshake(&expired_server, &tls(&ca, Role::Client)).await.is_err());
}

#[test]
fn bad_material_is_a_typed_error() {
    let ca = CertificateAuthority::generate("c").unwrap();
    let m = ca.issue(Role::Member, "m").unwrap();
    let other = ca.issue(Role::Member, "other").unwrap();
    assert!(matches!(Tls::from_pem("junk", &m.cert_pem, &m.key_pem), Err(TlsError::Pem { .. })));
    assert!(matches!(Tls::from_pem(ca.cert_pem(), "junk", &m.key_pem), Err(TlsError::Pem { .. })));
    assert!(matches!(Tls::from_pem(ca.cert_pem(), &m.cert_pem, "junk"), Err(TlsError::Pem { .. })));
    let mismatch = Tls::from_pem(ca.cert_pem(), &m.cert_pem, &other.key_pem).unwrap_err();
    assert!(matches!(mismatch, TlsError::Config { .. }), "{mismatch}");
    // A certificate of neither role (the CA's own) is refused.
    assert!(matches!(
        Tls::from_pem(ca.cert_pem(), ca.cert_pem(), ca.key_pem()),
        Err(TlsError::NoRole { .. })
    ));
}

#[tokio::test]
async fn a_bundle_on_disk_loads_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = write_bundle(dir.path(), "c", 2).unwrap();
    assert_eq!(bundle.members.len(), 2);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in [&bundle.ca_key, &bundle.members[0].key, &bundle.client.key] {
            let mode = std::fs::metadata(key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
    }
    // Never overwrites.
    assert!(matches!(write_bundle(dir.path(), "c", 1), Err(TlsError::File { .. })));

    let server = Tls::from_files(bundle.members[0].clone()).unwrap();
    let client = Tls::from_files(bundle.client.clone()).unwrap();
    assert_eq!(handshake(&server, &client).await, Ok(Some(Role::Client)));
    assert_eq!(server.identity().map(|i| i.member_id), Some(bundle.member_ids[0]));
    assert_eq!(client.identity(), None, "client certificates name no member");

    // The whole set rotated to a new CA, for the same member: new
    // connections use it after the reload (and so our old client refuses them).
    rotate(&bundle.members[0], bundle.member_ids[0]);
    assert!(server.files_changed());
    assert!(server.reload().unwrap());
    assert!(handshake(&server, &client).await.is_err());

    // A broken file is refused and the configuration in force stays.
    std::fs::write(&bundle.members[0].key, "not a key").unwrap();
    assert!(server.reload().is_err());
    assert_eq!(server.role(), Role::Member);
}

/// Replaces the CA and the member certificate in `files` by a new CA's, the
/// certificate naming `member_id` again (a CA rotation); returns the new CA.
fn rotate(files: &TlsFiles, member_id: cluster_core::MemberId) -> CertificateAuthority {
    let ca = CertificateAuthority::generate("c").unwrap();
    let cert = ca.issue_member(member_id, "rotated").unwrap();
    std::fs::write(&files.ca_cert, ca.cert_pem()).unwrap();
    std::fs::write(&files.cert, &cert.cert_pem).unwrap();
    std::fs::write(&files.key, &cert.key_pem).unwrap();
    ca
}

/// A reload checks what a start checks, and that the holder stays who it
/// was: each bad set is refused, and the set in force keeps serving.
#[tokio::test]
async fn a_reload_refuses_what_a_start_refuses_and_keeps_the_set_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = write_bundle(dir.path(), "c", 2).unwrap();
    let files = bundle.members[0].clone();
    let server = Tls::from_files(files.clone()).unwrap();
    let client = Tls::from_files(bundle.client.clone()).unwrap();
    let ca = CertificateAuthority::from_pem(
        &std::fs::read_to_string(&bundle.ca_cert).unwrap(),
        &std::fs::read_to_string(&bundle.ca_key).unwrap(),
        "ca",
    )
    .unwrap();
    let other_ca = CertificateAuthority::generate("c").unwrap();
    let original = (std::fs::read(&files.cert).unwrap(), std::fs::read(&files.key).unwrap());
    let client_cert =
        (std::fs::read(&bundle.client.cert).unwrap(), std::fs::read(&bundle.client.key).unwrap());
    let other_member =
        (std::fs::read(&bundle.members[1].cert).unwrap(), std::fs::read(&bundle.members[1].key).unwrap());
    let foreign = other_ca.issue_member(bundle.member_ids[0], "foreign").unwrap();
    let legacy = ca.issue(Role::Member, "no id").unwrap();
    let bad_sets: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        ("a client certificate copied over the member's", client_cert.0, client_cert.1),
        ("another member's certificate", other_member.0, other_member.1),
        ("a member certificate without the member id", legacy.cert_pem.into(), legacy.key_pem.into()),
        ("another CA's certificate", foreign.cert_pem.into(), foreign.key_pem.into()),
        (
            "a key that is not the certificate's",
            original.0.clone(),
            std::fs::read(&bundle.members[1].key).unwrap(),
        ),
    ];
    for (what, cert, key) in bad_sets {
        std::fs::write(&files.cert, &cert).unwrap();
        std::fs::write(&files.key, &key).unwrap();
        let refused = server.reload();
        assert!(refused.is_err(), "{what}: reloaded");
        // A start refuses the same set, except what only a reload can see
        // (another holder than the one running).
        if !what.starts_with("a client") && !what.starts_with("another member") && !what.contains("without") {
            assert!(Tls::from_files(files.clone()).is_err(), "{what}: a start accepts it");
        }
        assert_eq!(server.role(), Role::Member, "{what}");
        assert_eq!(server.identity().map(|i| i.member_id), Some(bundle.member_ids[0]), "{what}");
        assert_eq!(
            handshake(&server, &client).await,
            Ok(Some(Role::Client)),
            "{what}: the set in force serves"
        );
    }
    // The good set again: accepted.
    std::fs::write(&files.cert, &original.0).unwrap();
    std::fs::write(&files.key, &original.1).unwrap();
    assert!(server.reload().unwrap());
}

#[test]
fn member_certificates_name_their_member_and_clients_none() {
    let ca = CertificateAuthority::generate("prod").unwrap();
    let id = cluster_core::MemberId::generate();
    let m = ca.issue_member(id, "m").unwrap();
    let tls = Tls::from_pem(ca.cert_pem(), &m.cert_pem, &m.key_pem).unwrap();
    assert_eq!(tls.identity(), Some(identity::CertIdentity { cluster_id: "prod".into(), member_id: id }));
    let c = ca.issue(Role::Client, "c").unwrap();
    assert_eq!(Tls::from_pem(ca.cert_pem(), &c.cert_pem, &c.key_pem).unwrap().identity(), None);
    // A CA read back from its files issues for the same cluster.
    let again = CertificateAuthority::from_pem(ca.cert_pem(), ca.key_pem(), "ca").unwrap();
    assert_eq!(again.cluster_id(), "prod");
    let other = CertificateAuthority::generate("prod").unwrap();
    assert!(
        CertificateAuthority::from_pem(ca.cert_pem(), other.key_pem(), "ca").is_err(),
        "a key not the CA's"
    );
}

#[test]
fn issue_adds_certificates_to_a_ca_directory() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = write_bundle(dir.path(), "c", 2).unwrap();
    let added = generate::issue_into(dir.path(), dir.path(), Role::Member, None).unwrap();
    assert_eq!(added.files.cert, dir.path().join("member-3.pem"));
    let id = added.member_id.expect("a member id");
    assert!(!bundle.member_ids.contains(&id), "a fresh member id");
    let tls = Tls::from_files(added.files).unwrap();
    assert_eq!(tls.identity().map(|i| (i.cluster_id, i.member_id)), Some(("c".to_owned(), id)));
    let out = dir.path().join("elsewhere");
    let client = generate::issue_into(dir.path(), &out, Role::Client, None).unwrap();
    assert_eq!((client.files.cert, client.member_id), (out.join("client.pem"), None));
    let client2 = generate::issue_into(dir.path(), &out, Role::Client, None).unwrap();
    assert_eq!(client2.files.cert, out.join("client-2.pem"));
    // A renewal names the member id it is given; a client certificate names none.
    let renewed = generate::issue_into(dir.path(), dir.path(), Role::Member, Some(id)).unwrap();
    assert_eq!(renewed.files.cert, dir.path().join("member-4.pem"));
    assert_eq!(Tls::from_files(renewed.files).unwrap().identity().map(|i| i.member_id), Some(id));
    assert!(matches!(
        generate::issue_into(dir.path(), &out, Role::Client, Some(id)),
        Err(TlsError::Identity { .. })
    ));
    // Without the CA's key nothing is issued.
    std::fs::remove_file(&bundle.ca_key).unwrap();
    assert!(matches!(
        generate::issue_into(dir.path(), dir.path(), Role::Member, None),
        Err(TlsError::File { .. })
    ));
}

#[tokio::test]
async fn the_reloader_picks_up_changed_files() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = write_bundle(dir.path(), "c", 1).unwrap();
    let server = Tls::from_files(bundle.members[0].clone()).unwrap();
    let client = Tls::from_files(bundle.client.clone()).unwrap();
    let cancel = CancellationToken::new();
    let task = server.spawn_reloader(Duration::from_millis(20), cancel.clone());

    // The set rotated to a new CA on disk: the reloader puts it in force.
    rotate(&bundle.members[0], bundle.member_ids[0]);
    wait_until(DEADLINE, "the reloader to put the new CA in force", async || {
        handshake(&server, &client).await.is_err()
    })
    .await;
    cancel.cancel();
    task.await.unwrap();
}

/// A revoked certificate is refused at the handshake whichever side shows
/// it, once the revocation list is loaded (at start or by a reload); the
/// list grows with each revocation and only takes the CA's certificates.
#[tokio::test]
async fn a_revoked_certificate_is_refused_on_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = write_bundle(dir.path(), "c", 3).unwrap();
    let with_crl =
        |files: &TlsFiles| TlsFiles { crl: Some(dir.path().join(generate::CRL_FILE)), ..files.clone() };
    let client = Tls::from_files(bundle.client.clone()).unwrap();
    let m1 = Tls::from_files(bundle.members[0].clone()).unwrap();
    let m2 = Tls::from_files(bundle.members[1].clone()).unwrap();
    assert_eq!(handshake(&m1, &m2).await, Ok(Some(Role::Member)));

    // m2 is revoked; m1 starts with the list.
    let crl = generate::revoke_in(dir.path(), &bundle.members[1].cert).unwrap();
    assert_eq!(crl, dir.path().join(generate::CRL_FILE));
    let m1 = Tls::from_files(with_crl(&bundle.members[0])).unwrap();
    assert!(handshake(&m1, &m2).await.is_err(), "m1 serves, revoked m2 calls");
    assert!(
        handshake(&m2, &Tls::from_files(with_crl(&bundle.client)).unwrap()).await.is_err(),
        "revoked m2 serves"
    );
    assert_eq!(handshake(&m1, &client).await, Ok(Some(Role::Client)), "others still pass");
    // A revoked member cannot load its own certificate with the list.
    assert!(matches!(Tls::from_files(with_crl(&bundle.members[1])), Err(TlsError::Config { .. })));

    // The next revocation keeps the first on the list; m1 reloads it.
    let m3 = Tls::from_files(bundle.members[2].clone()).unwrap();
    assert_eq!(handshake(&m1, &m3).await, Ok(Some(Role::Member)));
    generate::revoke_in(dir.path(), &bundle.members[2].cert).unwrap();
    assert!(m1.files_changed(), "a new list is a change");
    assert!(m1.reload().unwrap());
    assert!(handshake(&m1, &m3).await.is_err(), "m3 revoked");
    assert!(handshake(&m1, &m2).await.is_err(), "m2 still revoked");
    // Revoking twice changes nothing; another CA's certificate is refused.
    generate::revoke_in(dir.path(), &bundle.members[2].cert).unwrap();
    let other = tempfile::tempdir().unwrap();
    let foreign = write_bundle(other.path(), "c", 1).unwrap();
    assert!(generate::revoke_in(dir.path(), &foreign.members[0].cert).is_err());
    // A list that is not one is a typed error, at start and on reload.
    std::fs::write(dir.path().join(generate::CRL_FILE), "junk").unwrap();
    assert!(matches!(m1.reload(), Err(TlsError::Pem { .. })));
    assert!(handshake(&m1, &m3).await.is_err(), "the list in force stays");
}

/// A revocation list that is not one (garbage, a CRL block with garbage
/// inside, truncated) is refused with a typed error at start; at a reload
/// the set in force stays, still revoking what it revoked.
#[tokio::test]
async fn a_corrupt_revocation_list_is_refused_and_a_reload_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = write_bundle(dir.path(), "c", 2).unwrap();
    let crl_path = dir.path().join(generate::CRL_FILE);
    let with_crl = |files: &TlsFiles| TlsFiles { crl: Some(crl_path.clone()), ..files.clone() };
    let good = std::fs::read(generate::revoke_in(dir.path(), &bundle.members[1].cert).unwrap()).unwrap();
    let corrupt: [&[u8]; 4] = [
        b"not a revocation list",
        b"-----BEGIN X509 CRL-----\nAAAAAAAAAAAAAAAAAAAAAAAA\n-----END X509 CRL-----\n",
        &good[..good.len() / 2],
        b"",
    ];
    for bytes in corrupt {
        std::fs::write(&crl_path, bytes).unwrap();
        assert!(
            Tls::from_files(with_crl(&bundle.members[0])).is_err(),
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    std::fs::write(&crl_path, &good).unwrap();
    let m1 = Tls::from_files(with_crl(&bundle.members[0])).unwrap();
    let m2 = Tls::from_files(bundle.members[1].clone()).unwrap();
    for bytes in corrupt {
        std::fs::write(&crl_path, bytes).unwrap();
        assert!(m1.reload().is_err(), "a corrupt list is not put in force");
        assert!(handshake(&m1, &m2).await.is_err(), "the list in force still revokes m2");
    }
}
