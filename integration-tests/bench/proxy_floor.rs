//! Benchmark instrument, not a product: the least a tokio HTTP/1.1 keep-alive reverse proxy
//! costs in `proxy.sh`'s harness, so the gap between haloyd and that floor can be told apart
//! from the cost of tokio and of the kernel's TCP path.
//!
//! It does what the harness needs and no more: per client connection one upstream
//! connection, kept alive; a request head is found by its blank line and sent on with two
//! fields added (X-Forwarded-For/-Proto, as every measured proxy adds them); a response is
//! delimited by its Content-Length and sent back unchanged. No routing, no header hygiene, no
//! metrics, no request bodies. The same multi-thread tokio runtime as haloyd (one worker under
//! `TOKIO_WORKER_THREADS=1`), the same socket calls (recv/send, edge-triggered epoll).
//!
//! Started by `proxy.sh` with `FLOOR=1` in haloyd's place as peer B, so it takes haloyd's
//! command line: `serve --config FILE` (only `http_listen` and `https_listen` are read), the
//! backend from `HALOYD_BENCH_STATIC_ROUTES` (its first `host=addr`). Its HTTPS port only
//! tunnels bytes to `FLOOR_TLS_UPSTREAM` (haloyd's TLS port), so the harness's checks pass;
//! it measures plain HTTP only.

// Tests start real containerd, registries, Pebble and tools (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use anyhow::{anyhow, Context as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ADDED_FIELDS: &[u8] = b"x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n\r\n";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let config_path = args
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| args.get(i + 1))
        .ok_or_else(|| anyhow!("usage: bench-floor serve --config FILE"))?;
    let config = std::fs::read_to_string(config_path).with_context(|| config_path.clone())?;
    let http = config_value(&config, "http_listen:")?;
    let https = config_value(&config, "https_listen:")?;
    let routes =
        std::env::var("HALOYD_BENCH_STATIC_ROUTES").context("HALOYD_BENCH_STATIC_ROUTES")?;
    let backend = routes
        .split_whitespace()
        .next()
        .and_then(|route| route.split_once('='))
        .map(|(_, addr)| addr.to_string())
        .ok_or_else(|| anyhow!("HALOYD_BENCH_STATIC_ROUTES holds no host=addr"))?;
    let tls_upstream = std::env::var("FLOOR_TLS_UPSTREAM").context("FLOOR_TLS_UPSTREAM")?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve_all(http, https, backend, tls_upstream))
}

/// The value after `key` in haloyd's one-line YAML maps (`{http_listen: ADDR, ...}`).
fn config_value(config: &str, key: &str) -> anyhow::Result<String> {
    let start = config
        .find(key)
        .ok_or_else(|| anyhow!("the config has no {key}"))?
        + key.len();
    let value = config[start..].split([',', '}', '\n']).next().unwrap_or("");
    Ok(value.trim().to_string())
}

async fn serve_all(
    http: String,
    https: String,
    backend: String,
    tls_upstream: String,
) -> anyhow::Result<()> {
    let plain = TcpListener::bind(&http).await.context(http)?;
    let tls = TcpListener::bind(&https).await.context(https)?;
    tokio::spawn(async move {
        while let Ok((client, _)) = tls.accept().await {
            tokio::spawn(tunnel(client, tls_upstream.clone()));
        }
    });
    loop {
        let (client, _) = plain.accept().await?;
        let backend = backend.clone();
        tokio::spawn(async move {
            if let Err(e) = proxy(client, &backend).await {
                eprintln!("bench-floor: {e}");
            }
        });
    }
}

async fn tunnel(mut client: TcpStream, to: String) {
    if let Ok(mut upstream) = TcpStream::connect(&to).await {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}

/// Serve one client connection until it closes (or asks to).
async fn proxy(mut client: TcpStream, backend: &str) -> anyhow::Result<()> {
    client.set_nodelay(true)?;
    let mut upstream: Option<TcpStream> = None;
    let mut request = Vec::with_capacity(4096);
    let mut out = Vec::with_capacity(4096);
    let mut response = Vec::with_capacity(4096);
    loop {
        let Some(end) = read_head(&mut client, &mut request).await? else {
            return Ok(());
        };
        // proxy.sh's own check asks to close; wrk never does.
        let close = memchr::memmem::find(&request[..end], b": close").is_some();
        out.clear();
        out.extend_from_slice(&request[..end - 2]);
        out.extend_from_slice(ADDED_FIELDS);
        request.drain(..end);
        let conn = match &mut upstream {
            Some(conn) => conn,
            None => {
                let conn = TcpStream::connect(backend).await?;
                conn.set_nodelay(true)?;
                upstream.insert(conn)
            }
        };
        conn.write_all(&out).await?;
        response.clear();
        let Some(head_end) = read_head(conn, &mut response).await? else {
            return Err(anyhow!("the backend closed the connection"));
        };
        let total = head_end + content_length(&response[..head_end])?;
        while response.len() < total {
            if conn.read_buf(&mut response).await? == 0 {
                return Err(anyhow!("the backend closed in the middle of a body"));
            }
        }
        client.write_all(&response[..total]).await?;
        if close {
            return Ok(());
        }
    }
}

/// Read until `buf` holds a blank line; the length of the head including it, or `None` when
/// the peer closed first.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<Option<usize>> {
    loop {
        if let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") {
            return Ok(Some(end + 4));
        }
        if stream.read_buf(buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// The Content-Length of the backend's response head (the harness's backend writes one).
fn content_length(head: &[u8]) -> anyhow::Result<usize> {
    let start =
        memchr::memmem::find(head, b"ength:").ok_or_else(|| anyhow!("no Content-Length"))? + 6;
    let rest = &head[start..];
    let end = memchr::memmem::find(rest, b"\r\n").unwrap_or(rest.len());
    let digits = std::str::from_utf8(&rest[..end])?.trim();
    Ok(digits.parse()?)
}
