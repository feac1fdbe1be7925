use std::time::{Duration, SystemTime};

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

    // The member's certificate is replaced on disk by one of another CA: new
    // connections use it after the reload (and so our client refuses them).
    let other = CertificateAuthority::generate("c").unwrap();
    let replacement = other.issue(Role::Member, "new").unwrap();
    std::fs::write(&bundle.members[0].cert, &replacement.cert_pem).unwrap();
    std::fs::write(&bundle.members[0].key, &replacement.key_pem).unwrap();
    assert!(server.files_changed());
    assert!(server.reload().unwrap());
    assert!(handshake(&server, &client).await.is_err());

    // A broken file is refused and the configuration in force stays.
    std::fs::write(&bundle.members[0].key, "not a key").unwrap();
    assert!(server.reload().is_err());
    assert_eq!(server.role(), Role::Member);
}

#[tokio::test]
async fn the_reloader_picks_up_changed_files() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = write_bundle(dir.path(), "c", 1).unwrap();
    let server = Tls::from_files(bundle.members[0].clone()).unwrap();
    let client = Tls::from_files(bundle.client.clone()).unwrap();
    let cancel = CancellationToken::new();
    let task = server.spawn_reloader(Duration::from_millis(20), cancel.clone());

    // Client certificate files replaced by a member's: the reloader swaps the role.
    let ca_other = CertificateAuthority::generate("c").unwrap();
    let swapped = ca_other.issue(Role::Member, "m2").unwrap();
    std::fs::write(&bundle.members[0].cert, &swapped.cert_pem).unwrap();
    std::fs::write(&bundle.members[0].key, &swapped.key_pem).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while handshake(&server, &client).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "reload not seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cancel.cancel();
    task.await.unwrap();
}
