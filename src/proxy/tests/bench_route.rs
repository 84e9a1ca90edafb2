//! Unit tests of `proxy::bench_route`.

use super::*;

#[test]
fn entries_become_one_ready_app_each() {
    let routes = parse_bench_routes("a.test=127.0.0.1:1  b.test=127.0.0.1:2\n").unwrap();
    assert_eq!(routes.len(), 2);
    assert_eq!(routes[0].app, "bench-0");
    assert_eq!(routes[0].domains[0].canonical, "a.test");
    assert_eq!(routes[1].domains[0].canonical, "b.test");
    assert_eq!(
        routes[1].backends[0].addr(),
        "127.0.0.1:2".parse::<SocketAddr>().unwrap()
    );
    assert!(routes.iter().all(|r| r.backends[0].is_ready()));
}

#[test]
fn malformed_entries_are_refused_with_the_entry_named() {
    for bad in [
        "a.test",
        "a.test=nothost",
        "=127.0.0.1:1",
        "a.test=127.0.0.1",
    ] {
        let err = parse_bench_routes(bad).unwrap_err().to_string();
        assert!(err.contains(BENCH_ROUTES_ENV), "{err}");
        assert!(err.contains(bad), "{err}");
    }
}

#[test]
fn install_puts_the_routes_in_the_table() {
    let routes = Routes::new();
    let n = install_bench_routes(&routes, "a.test=127.0.0.1:1").unwrap();
    assert_eq!(n, 1);
    assert!(routes.load().app("bench-0").is_some());
}

#[test]
fn a_domain_twice_is_a_route_error() {
    let routes = Routes::new();
    let err = install_bench_routes(&routes, "a.test=127.0.0.1:1 a.test=127.0.0.1:2").unwrap_err();
    assert!(matches!(err, BenchRouteError::Route { .. }), "{err}");
}
