//! Unit tests of `cli::servers`.

use super::*;

#[test]
fn server_values_become_urls() {
    assert_eq!(server_url("127.0.0.1").unwrap(), "http://127.0.0.1:9922");
    assert_eq!(
        server_url("127.0.0.1:9000").unwrap(),
        "http://127.0.0.1:9000"
    );
    assert_eq!(server_url("localhost").unwrap(), "http://localhost:9922");
    assert_eq!(server_url("::1").unwrap(), "http://[::1]:9922");
    assert_eq!(server_url("[::1]:7").unwrap(), "http://[::1]:7");
    assert_eq!(
        server_url("prod.haloy.com").unwrap(),
        "https://prod.haloy.com"
    );
    assert_eq!(
        server_url("prod.haloy.com:8443").unwrap(),
        "https://prod.haloy.com:8443"
    );
    assert_eq!(server_url("http://x:1/").unwrap(), "http://x:1");
    assert!(server_url("x:notaport").is_err());
}

#[test]
fn store_round_trip_with_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("haloy/client.yaml");
    let mut c = ClientConfig::default();
    c.servers
        .insert("http://127.0.0.1:9922".into(), "tok".into());
    c.save(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(ClientConfig::load(&path).unwrap(), c);
}

#[test]
fn plain_http_is_refused_only_to_non_loopback_hosts() {
    for remote in [
        "http://192.0.2.10:9922",
        "http://example.com",
        "http://[2001:db8::1]:9922",
        "http://10.0.0.1:9922/prefix",
    ] {
        assert!(is_plain_http_to_remote(remote), "{remote}");
    }
    for fine in [
        "http://127.0.0.1:9922",
        "http://127.8.9.10",
        "http://localhost:9922",
        "http://LOCALHOST",
        "http://[::1]:9922",
        "http://[::ffff:127.0.0.1]:1",
        "https://192.0.2.10",
        "https://example.com:8443",
    ] {
        assert!(!is_plain_http_to_remote(fine), "{fine}");
    }
    let mut store = ClientConfig::default();
    let refused = check_transport("http://192.0.2.10:9922", &store).unwrap_err();
    assert!(refused.to_string().contains("--insecure-http"), "{refused}");
    store.insecure_http.insert("http://192.0.2.10:9922".into());
    assert!(check_transport("http://192.0.2.10:9922", &store).is_ok());
    assert!(check_transport("http://192.0.2.11:9922", &store).is_err());
}

#[test]
fn format_1_client_config_loads_and_a_newer_one_is_refused() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("integration-tests/fixtures/state/v1/client.yaml");
    let loaded = ClientConfig::load(&fixture).unwrap();
    assert_eq!(
        loaded
            .servers
            .get("http://127.0.0.1:9922")
            .map(String::as_str),
        Some("fixture-token-0123456789")
    );
    assert_eq!(loaded.servers.len(), 2);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.yaml");
    loaded.save(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("format_version: 1"), "{text}");
    assert_eq!(ClientConfig::load(&path).unwrap(), loaded);

    std::fs::write(&path, "format_version: 3\nservers: {}\n").unwrap();
    let err = ClientConfig::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("client.yaml") && err.contains("format_version 3"),
        "{err}"
    );
}
