//! The in-process reverse proxy on :80/:443: host routing from an atomically swapped route
//! table, round-robin over ready backends, upstream pooling, header hygiene, upgrades, limits,
//! draining, per-backend counters. Never talks to containerd.
//!
//! Wiring, as haloyd does it:
//! ```no_run
//! # async fn wire() -> std::io::Result<()> {
//! use haloy::proxy::{AppRoute, Backend, DomainRoute, Proxy, ProxyConfig, Routes};
//! let routes = Routes::new();
//! let backend = Backend::new("task-id".into(), 0, "10.88.0.5:8080".parse().unwrap());
//! backend.set_ready(true); // after health::wait_ready passed
//! routes
//!     .set_app(AppRoute {
//!         app: "web".into(),
//!         domains: vec![DomainRoute { canonical: "example.com".into(), aliases: vec!["www.example.com".into()] }],
//!         backends: vec![backend],
//!     })
//!     .expect("no domain conflict");
//! let proxy = Proxy::new(ProxyConfig::default(), routes.clone(), None);
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:80").await?;
//! proxy.serve_http(listener, std::future::pending()).await;
//! # Ok(()) }
//! ```

mod backend;
pub mod bench_route;
mod body;
mod deadline;
mod gate;
mod guard;
mod handler;
mod headers;
mod http1;
mod linger;
mod pages;
mod routes;
pub(crate) mod server;
mod simple;
pub mod tls_hooks;
mod upstream;

use std::net::IpAddr;
use std::time::Duration;

pub use crate::network::{CidrError, IpCidr};
pub use backend::{Backend, BackendStats, DrainOutcome};
pub(crate) use routes::normalize_host;
pub use routes::{AppRoute, DomainRoute, RouteError, RouteTable, Routes};
pub use server::Proxy;
pub use tls_hooks::TlsHooks;

/// Limits and timeouts of the proxy. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Time a client has to send complete request headers (slowloris guard). For HTTP/1 it
    /// also bounds how long a keep-alive connection may sit idle between requests. Default 10 s.
    pub header_read_timeout: Duration,
    /// Idle keep-alive connections (no request in progress) are closed after this. Default 60 s.
    pub idle_timeout: Duration,
    /// Time a backend has to send its response head; 504 when hit. Default 60 s.
    pub backend_response_timeout: Duration,
    /// Time to open a TCP connection to a backend before trying the next one. Default 3 s.
    pub connect_timeout: Duration,
    /// Idle pooled upstream connections older than this are not reused (kept below the 5 s
    /// keep-alive of common app servers so a reused connection is rarely closed under us).
    /// Default 4 s.
    pub upstream_idle_timeout: Duration,
    /// Largest request head accepted; 431 beyond it. hyper enforces at least 8192. Default
    /// here 16 KiB; haloyd takes its server config's `proxy.max_header_bytes` (default 64 KiB).
    pub max_header_bytes: usize,
    /// Largest request body forwarded; 413 beyond it. Default: unlimited.
    pub max_body_bytes: Option<u64>,
    /// Concurrent client connections; further ones wait in the listen backlog. Default 10 000.
    pub max_connections: usize,
    /// On shutdown, how long open connections get to finish. Default 30 s.
    pub drain_timeout: Duration,
    /// Peers whose X-Forwarded-For is kept (and appended to). Default: none.
    pub trusted_proxies: Vec<IpCidr>,
    /// Port used in HTTP→HTTPS redirects (omitted from the URL when 443). Default 443.
    pub https_port: u16,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            backend_response_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(3),
            upstream_idle_timeout: Duration::from_secs(4),
            max_header_bytes: 16 * 1024,
            max_body_bytes: None,
            max_connections: 10_000,
            drain_timeout: Duration::from_secs(30),
            trusted_proxies: Vec::new(),
            https_port: 443,
        }
    }
}

impl ProxyConfig {
    pub(crate) fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|c| c.contains(ip))
    }
}
