//! Benchmark-only static routes: `HALOYD_BENCH_STATIC_ROUTES` lets
//! `integration-tests/bench/proxy.sh` measure the real `haloyd serve` in front of a host
//! process without deploying a container. Not a user feature: no server-config key, not in
//! the docs for operators; haloyd logs a warning whenever it is set.
//!
//! Format: entries separated by whitespace, each `DOMAIN=IP:PORT`; every entry becomes an app
//! `bench-N` with one always-ready backend.

use std::net::SocketAddr;

use super::{AppRoute, Backend, DomainRoute, RouteError, Routes};

/// The environment variable haloyd reads (only in `haloyd serve`).
pub const BENCH_ROUTES_ENV: &str = "HALOYD_BENCH_STATIC_ROUTES";

#[derive(Debug, thiserror::Error)]
pub enum BenchRouteError {
    #[error("{BENCH_ROUTES_ENV}: entry {entry:?} is not DOMAIN=IP:PORT")]
    Malformed { entry: String },
    #[error("{BENCH_ROUTES_ENV}: entry {entry:?}: {source}")]
    Route {
        entry: String,
        #[source]
        source: RouteError,
    },
}

/// Parses the variable's value into one app route per entry.
pub fn parse_bench_routes(value: &str) -> Result<Vec<AppRoute>, BenchRouteError> {
    value
        .split_whitespace()
        .enumerate()
        .map(|(index, entry)| parse_entry(index, entry))
        .collect()
}

fn parse_entry(index: usize, entry: &str) -> Result<AppRoute, BenchRouteError> {
    let malformed = || BenchRouteError::Malformed {
        entry: entry.to_string(),
    };
    let (domain, addr) = entry.split_once('=').ok_or_else(malformed)?;
    let addr: SocketAddr = addr.parse().map_err(|_| malformed())?;
    if domain.is_empty() {
        return Err(malformed());
    }
    let app = format!("bench-{index}");
    let backend = Backend::new(app.clone(), 0, addr);
    backend.set_ready(true);
    Ok(AppRoute {
        app,
        domains: vec![DomainRoute {
            canonical: domain.to_string(),
            aliases: Vec::new(),
        }],
        backends: vec![backend],
    })
}

/// Installs the routes of `value` into `routes`.
pub fn install_bench_routes(routes: &Routes, value: &str) -> Result<usize, BenchRouteError> {
    let parsed = parse_bench_routes(value)?;
    let count = parsed.len();
    for route in parsed {
        let entry = route.domains[0].canonical.clone();
        routes
            .set_app(route)
            .map_err(|source| BenchRouteError::Route { entry, source })?;
    }
    Ok(count)
}

#[cfg(test)]
#[path = "tests/bench_route.rs"]
mod tests;
