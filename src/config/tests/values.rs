//! Unit tests of `config::values`.

use super::*;

#[test]
fn sizes() {
    assert_eq!(parse_byte_size("512Mi"), Ok(512 << 20));
    assert_eq!(parse_byte_size("1G"), Ok(1_000_000_000));
    assert_eq!(parse_byte_size("64KiB"), Ok(65536));
    assert_eq!(parse_byte_size("1048576"), Ok(1048576));
    assert!(parse_byte_size("lots").is_err());
    assert!(parse_byte_size("5Qb").is_err());
}

#[test]
fn durations() {
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert!(parse_duration("soon").is_err());
}

#[test]
fn hostnames() {
    assert_eq!(
        normalize_hostname("API.Example.com").unwrap(),
        "api.example.com"
    );
    assert!(normalize_hostname("bad_host.com").is_err());
    assert!(normalize_hostname("-a.com").is_err());
    assert!(normalize_hostname("a..com").is_err());
    assert!(normalize_hostname(&"a".repeat(64)).is_err());
    assert!(normalize_hostname("demo.localhost").is_ok());
    assert_eq!(
        normalize_hostname("a.example.com.").unwrap(),
        "a.example.com"
    );
}

#[test]
fn volumes() {
    assert_eq!(
        parse_volume("/data:/var/data:ro").unwrap(),
        VolumeSpec::Bind {
            host: "/data".into(),
            container: "/var/data".into(),
            read_only: true
        }
    );
    assert_eq!(
        parse_volume("pgdata:/var/lib/postgresql").unwrap(),
        VolumeSpec::Named {
            name: "pgdata".into(),
            container: "/var/lib/postgresql".into(),
            read_only: false
        }
    );
    assert!(parse_volume("./data:/data")
        .unwrap_err()
        .contains("relative"));
    assert!(parse_volume("data/x:/data")
        .unwrap_err()
        .contains("relative"));
    assert!(parse_volume("/data:data").is_err());
    assert!(parse_volume("/data:/d:zz").is_err());
}

#[test]
fn servers() {
    for ok in [
        "127.0.0.1",
        "127.0.0.1:9922",
        "prod.haloy.com",
        "http://x:1",
        "https://a.b/c",
        "::1",
        "[::1]:5",
        "localhost",
    ] {
        assert!(check_server(ok).is_ok(), "{ok}");
    }
    for bad in ["ftp://x", "a b", "host:0", "host:x", "bad_host"] {
        assert!(check_server(bad).is_err(), "{bad}");
    }
}

#[test]
fn image_refs() {
    assert_eq!(
        split_image_ref("127.0.0.1:5000/x/web:v1").unwrap(),
        ("127.0.0.1:5000/x/web".into(), Some("v1".into()), None)
    );
    assert_eq!(
        split_image_ref("localhost:5000/web").unwrap(),
        ("localhost:5000/web".into(), None, None)
    );
    let d = format!("sha256:{}", "ab".repeat(32));
    assert_eq!(
        split_image_ref(&format!("ghcr.io/o/a:v1@{d}")).unwrap(),
        ("ghcr.io/o/a".into(), Some("v1".into()), Some(d.clone()))
    );
    assert_eq!(
        split_image_ref(&format!("ghcr.io/o/a@{d}")).unwrap(),
        ("ghcr.io/o/a".into(), None, Some(d))
    );
    assert!(split_image_ref("a@sha256:123")
        .unwrap_err()
        .contains("@sha256:<64 hex digits>"));
    assert_eq!(registry_of("ghcr.io/a/b"), "ghcr.io");
    assert_eq!(registry_of("library/nginx"), "docker.io");
}

#[test]
fn domains_need_a_dot_and_a_letter_tld() {
    for ok in [
        "example.com",
        "sub.example.co.uk",
        "Example-Domain.COM",
        "localhost",
        "a.xn--p1ai",
    ] {
        assert!(normalize_domain(ok).is_ok(), "{ok}");
    }
    for bad in [
        "example.c",
        "example",
        "-example.com",
        "example domain.com",
        "",
        "a.b1",
    ] {
        assert!(normalize_domain(bad).is_err(), "{bad}");
    }
    assert!(normalize_domain("example")
        .unwrap_err()
        .contains("example.com"));
}
