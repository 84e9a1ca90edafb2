//! Unit tests of `proxy::routes`.

use super::*;

fn backend(port: u16) -> Arc<Backend> {
    let b = Backend::new(format!("c{port}"), 0, ([127, 0, 0, 1], port).into());
    b.set_ready(true);
    b
}

fn route(app: &str, canonical: &str, aliases: &[&str], backends: Vec<Arc<Backend>>) -> AppRoute {
    AppRoute {
        app: app.into(),
        domains: vec![DomainRoute {
            canonical: canonical.into(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
        }],
        backends,
    }
}

#[test]
fn host_normalization() {
    assert_eq!(normalize_host("Example.COM:8080"), "example.com");
    assert_eq!(normalize_host("example.com."), "example.com");
    assert_eq!(normalize_host("example.com.:80"), "example.com");
    assert_eq!(normalize_host("[::1]:80"), "[::1]");
    assert!(matches!(normalize_host("plain.host"), Cow::Borrowed(_)));
}

#[test]
fn trimming_matches_str_trim_on_every_kind_of_end() {
    let ends = [
        "", "a", " ", "\t", "\u{b}", "\u{c}", "\r\n", "\u{a0}", "\u{3000}", "é", ":", ".",
    ];
    for start in ends {
        for end in ends {
            for middle in ["", "x", "Host.Example:80", " in side "] {
                let host = format!("{start}{middle}{end}");
                assert_eq!(trim(&host), host.trim(), "{host:?}");
            }
        }
    }
}

#[test]
fn lookup_app_and_alias() {
    let routes = Routes::new();
    routes
        .set_app(route(
            "web",
            "example.com",
            &["www.example.com"],
            vec![backend(1)],
        ))
        .unwrap();
    let t = routes.load();
    assert!(matches!(t.lookup("EXAMPLE.com:80"), Some(HostMatch::App(e)) if e.name() == "web"));
    assert!(matches!(
        t.lookup("www.example.com."),
        Some(HostMatch::Alias("example.com"))
    ));
    assert!(t.lookup("other.com").is_none());
}

#[test]
fn domain_conflict_rejected_and_table_unchanged() {
    let routes = Routes::new();
    routes
        .set_app(route("a", "a.com", &["shared.com"], vec![]))
        .unwrap();
    let err = routes
        .set_app(route("b", "shared.com", &[], vec![]))
        .unwrap_err();
    assert!(matches!(err, RouteError::DomainTaken { ref owner, .. } if owner == "a"));
    assert!(routes.app("b").is_none());
}

#[test]
fn replacing_app_drops_old_hosts_and_remove_clears() {
    let routes = Routes::new();
    routes
        .set_app(route("a", "old.com", &["alias.com"], vec![]))
        .unwrap();
    routes.set_app(route("a", "new.com", &[], vec![])).unwrap();
    let t = routes.load();
    assert!(t.lookup("old.com").is_none());
    assert!(t.lookup("alias.com").is_none());
    assert!(t.lookup("new.com").is_some());
    assert!(routes.remove_app("a").is_some());
    assert!(routes.load().lookup("new.com").is_none());
}

#[test]
fn round_robin_skips_not_ready_and_excluded() {
    let (b1, b2, b3) = (backend(1), backend(2), backend(3));
    b2.set_ready(false);
    let routes = Routes::new();
    routes
        .set_app(route("a", "a.com", &[], vec![b1.clone(), b2, b3.clone()]))
        .unwrap();
    let t = routes.load();
    let Some(HostMatch::App(entry)) = t.lookup("a.com") else {
        panic!()
    };
    let mut counts = [0; 4];
    for _ in 0..300 {
        counts[entry.pick(None).unwrap().addr().port() as usize] += 1;
    }
    assert_eq!(counts[2], 0);
    assert_eq!((counts[1], counts[3]), (150, 150));
    assert!(Arc::ptr_eq(entry.pick(Some(&b1)).unwrap(), &b3));
}

#[test]
fn set_backends_requires_known_app() {
    let routes = Routes::new();
    assert_eq!(
        routes.set_backends("x", vec![]),
        Err(RouteError::UnknownApp("x".into()))
    );
}

#[test]
fn owner_covers_canonical_domains_and_aliases() {
    let routes = Routes::new();
    routes
        .set_app(route("web", "example.com", &["www.example.com"], vec![]))
        .unwrap();
    let table = routes.load();
    assert_eq!(table.owner("Example.com."), Some("web"));
    assert_eq!(table.owner("www.example.com:80"), Some("web"));
    assert_eq!(table.owner("other.example.com"), None);
}
