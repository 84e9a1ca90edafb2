use super::*;
use crate::proxy::{AppRoute, DomainRoute, Routes};
use std::sync::Barrier;

fn hosts(list: &[&str]) -> Vec<String> {
    list.iter().map(|h| h.to_string()).collect()
}

#[test]
fn racing_apps_for_one_host_have_exactly_one_winner_per_round() {
    let claims = Arc::new(DomainClaims::default());
    let table = Routes::new().load();
    let threads = 8;
    for round in 0..300 {
        let barrier = Arc::new(Barrier::new(threads));
        let outcomes: Vec<Result<DomainClaim, Vec<String>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (claims, table, barrier) = (&claims, &table, barrier.clone());
                    scope.spawn(move || {
                        barrier.wait();
                        claims.claim(
                            &format!("app{t}"),
                            &format!("{round}-{t}"),
                            &hosts(&["shared.test", &format!("own{t}.test")]),
                            table,
                        )
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<_> = outcomes.iter().filter(|o| o.is_ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
        for problems in outcomes.iter().filter_map(|o| o.as_ref().err()) {
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(
                problems[0].starts_with("domains: `shared.test` is already claimed by app `app"),
                "{problems:?}"
            );
        }
        // Dropping the winner's claim frees the host for the next round.
        drop(outcomes);
        assert!(claims.held.lock().unwrap().is_empty());
    }
}

#[test]
fn published_routes_and_haloyds_api_domain_are_taken() {
    let routes = Routes::new();
    for (app, host) in [("web", "web.test"), ("haloyd-api", "api.test")] {
        routes
            .set_app(AppRoute {
                app: app.into(),
                domains: vec![DomainRoute {
                    canonical: host.into(),
                    aliases: vec![],
                }],
                backends: vec![],
            })
            .unwrap();
    }
    let claims = Arc::new(DomainClaims::default());
    let refused = claims
        .claim(
            "other",
            "1",
            &hosts(&["web.test", "api.test"]),
            &routes.load(),
        )
        .unwrap_err();
    assert_eq!(
        refused,
        [
            "domains: `web.test` is already claimed by app `web` on this server; remove it from one of the apps",
            "domains: `api.test` is haloyd's own API domain (server config `api.domain`)",
        ]
    );
    // Redeploying the app that serves the host is fine.
    let again = claims.claim("web", "2", &hosts(&["web.test"]), &routes.load());
    assert!(again.is_ok());
}

#[test]
fn a_refused_second_deploy_of_the_same_app_keeps_the_first_ones_hold() {
    let claims = Arc::new(DomainClaims::default());
    let table = Routes::new().load();
    let first = claims
        .claim("web", "1", &hosts(&["web.test"]), &table)
        .unwrap();
    // The second deploy of `web` passes the claim (then the app lock refuses it) and drops.
    drop(claims.claim("web", "2", &hosts(&["web.test", "more.test"]), &table));
    let other = claims.claim("other", "3", &hosts(&["web.test"]), &table);
    assert!(other.is_err(), "the first deploy's hold was released");
    assert!(claims
        .claim("other", "4", &hosts(&["more.test"]), &table)
        .is_ok());
    drop(first);
}
