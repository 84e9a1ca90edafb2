//! Benchmark front: haloyd's `Proxy` on one tokio thread (like nginx `worker_processes 1` and
//! HAProxy `nbthread 1`) with one route `bench.test` → the backend.
//! Usage: `bench-proxy LISTEN_ADDR BACKEND_ADDR`.

// Tests start real containerd, registries, Pebble and tools (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use haloy::proxy::{AppRoute, Backend, DomainRoute, Proxy, ProxyConfig, Routes};

/// The same allocator as haloyd, so the benchmark measures what runs in production.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:18081".into());
    let backend: std::net::SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:18080".into())
        .parse()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let routes = Routes::new();
        let b = Backend::new("bench".into(), 0, backend);
        b.set_ready(true);
        routes.set_app(AppRoute {
            app: "bench".into(),
            domains: vec![DomainRoute {
                canonical: "bench.test".into(),
                aliases: vec![],
            }],
            backends: vec![b],
        })?;
        let proxy = Proxy::new(ProxyConfig::default(), routes, None);
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        proxy
            .serve_http(listener, async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await;
        Ok(())
    })
}
