//! Unit tests of `tls::manager`.

use super::*;

fn loaded(names: &[&str], valid_for: Duration) -> LoadedCertificate {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let cert = rcgen::generate_simple_self_signed(names.clone()).unwrap();
    let mut loaded = load_pair(
        "x",
        std::path::Path::new("x"),
        cert.cert.pem().as_bytes(),
        cert.signing_key.serialize_pem().as_bytes(),
    )
    .unwrap();
    loaded.not_after = SystemTime::now() + valid_for;
    loaded
}

const DAY: Duration = Duration::from_secs(86_400);

#[test]
fn renewal_reasons() {
    let set = DomainSet::new("a.test", &["www.a.test"]);
    let mut entry = Entry::new(set.clone(), CertificateSource::Acme);
    let now = SystemTime::now();
    assert_eq!(
        entry.renewal_reason(now, 30 * DAY, "https://ca/dir"),
        Some("no certificate yet")
    );
    entry.cert = Some(loaded(&["a.test", "www.a.test"], 60 * DAY));
    assert_eq!(entry.renewal_reason(now, 30 * DAY, "https://ca/dir"), None);
    entry.cert = Some(loaded(&["a.test", "www.a.test"], 10 * DAY));
    assert_eq!(
        entry.renewal_reason(now, 30 * DAY, "https://ca/dir"),
        Some("expires soon")
    );
    entry.cert = Some(loaded(&["a.test"], 60 * DAY));
    assert_eq!(
        entry.renewal_reason(now, 30 * DAY, "https://ca/dir"),
        Some("alias set changed")
    );
    entry.cert = Some(loaded(&["a.test", "www.a.test"], 60 * DAY));
    entry.issuer_directory = "https://staging/dir".into();
    assert_eq!(
        entry.renewal_reason(now, 30 * DAY, "https://ca/dir"),
        Some("issued by another ACME directory")
    );
}

#[test]
fn failures_back_off_exponentially_up_to_the_cap() {
    let mut settings = TlsSettings::new("/nonexistent");
    settings.retry_base = Duration::from_secs(10);
    settings.retry_max = Duration::from_secs(35);
    let mut entry = Entry::new(DomainSet::new("a.test", &[]), CertificateSource::Acme);
    let now = SystemTime::now();
    let delays: Vec<Duration> = (0..4)
        .map(|_| {
            entry.record_failure("boom".into(), now, &settings);
            entry.next_retry.unwrap().duration_since(now).unwrap()
        })
        .collect();
    assert_eq!(delays, [10, 20, 35, 35].map(Duration::from_secs));
    assert_eq!(entry.status().failures, 4);
}

#[tokio::test]
async fn unused_domain_is_kept_for_the_grace_period_then_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = TlsSettings::new(dir.path());
    settings.removal_grace = Duration::from_secs(3600);
    let store = CertStore::open(dir.path()).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["old.test".into()]).unwrap();
    let meta = StoredMeta {
        names: vec!["old.test".into()],
        directory: settings.acme.directory().to_string(),
        unused_since: None,
    };
    let key_pem = cert.signing_key.serialize_pem();
    store
        .save(
            "old.test",
            cert.cert.pem().as_bytes(),
            key_pem.as_bytes(),
            &meta,
        )
        .unwrap();

    let manager = CertificateManager::new(settings.clone()).unwrap();
    assert!(
        manager.has_certificate("old.test"),
        "stored certificate served at start"
    );
    let statuses = manager.ensure_certificates(&[]).await;
    let since = statuses[0].unused_since.expect("grace period started");
    assert!(
        manager.has_certificate("old.test"),
        "kept during the grace period"
    );

    // The grace clock survives a restart (persisted in meta.json)...
    let restarted = CertificateManager::new(settings.clone()).unwrap();
    let reloaded = restarted.status("old.test").unwrap().unused_since.unwrap();
    assert_eq!(
        reloaded.duration_since(UNIX_EPOCH).unwrap().as_secs(),
        since.duration_since(UNIX_EPOCH).unwrap().as_secs()
    );
    // ...is reset when the domain is deployed again...
    restarted
        .ensure_certificates(&[DomainSet::new("old.test", &[])])
        .await;
    assert!(restarted.status("old.test").unwrap().unused_since.is_none());
    assert_eq!(
        store.load("old.test").unwrap().unwrap().meta.unused_since,
        None
    );
    // ...and after the grace period the files go and the name is no longer served.
    restarted.ensure_certificates(&[]).await;
    restarted.retire_unused(&[], SystemTime::now() + Duration::from_secs(7200));
    restarted.publish();
    assert!(!restarted.has_certificate("old.test"));
    assert!(restarted.statuses().is_empty());
    assert!(store.load("old.test").unwrap().is_none());
}

#[tokio::test]
async fn invalid_name_fails_before_any_ca_request_and_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    // Default settings point at Let's Encrypt: the test relies on no request being made.
    let manager = CertificateManager::new(TlsSettings::new(dir.path())).unwrap();
    let statuses = manager
        .ensure_certificates(&[DomainSet::new("bad_name.test", &[])])
        .await;
    let error = statuses[0].last_error.clone().unwrap();
    assert!(error.contains("bad_name.test"), "{error}");
    assert_eq!(statuses[0].failures, 1);
    assert!(statuses[0].next_retry.is_some());
    assert!(!manager.has_certificate("bad_name.test"));
}

#[tokio::test]
async fn operator_certificate_is_served_for_domain_and_aliases_only() {
    let dir = tempfile::tempdir().unwrap();
    let cert =
        rcgen::generate_simple_self_signed(vec!["op.test".into(), "www.op.test".into()]).unwrap();
    let cert_file = dir.path().join("op.pem");
    let key_file = dir.path().join("op.key");
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).unwrap();
    let mut settings = TlsSettings::new(dir.path().join("state"));
    settings.certificates.push(OperatorCertificate {
        domain: "op.test".into(),
        cert_file,
        key_file,
    });
    let manager = CertificateManager::new(settings).unwrap();
    assert!(manager.has_certificate("op.test"));
    assert!(
        !manager.has_certificate("www.op.test"),
        "alias not deployed yet"
    );
    let statuses = manager
        .ensure_certificates(&[DomainSet::new("op.test", &["www.op.test"])])
        .await;
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].source, CertificateSource::Operator);
    // The proxy asks with the request's host normalized (TlsHooks' contract).
    assert!(manager.has_certificate("www.op.test"));
    assert!(!manager.has_certificate("other.test"));
    let json = serde_json::to_string(&statuses[0]).unwrap();
    assert!(json.contains("\"expires\":\""), "{json}");
}
