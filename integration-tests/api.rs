//! haloyd's API listener and the API's refusals, against a real haloyd (private containerd,
//! registry with the busybox fixtures) on loopback: a half-sent head and an idle keep-alive
//! connection are closed at the timeouts, connections beyond `api.max_connections` wait until
//! one frees, a deploy's SSE progress stream outlives the idle timeout, and two concurrent
//! deploys of different apps claiming one domain end with exactly one winner.

// Tests start real containerd, registries, Pebble and tools (see clippy.toml).
#![allow(clippy::disallowed_methods)]

#[path = "harness/mod.rs"]
mod harness;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use harness::haloyd::{CliRun, Haloyd, HaloydOptions};
use harness::{Containerd, Registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The API timeouts of these tests; the listener closes at 1 to 1.25 times this, plus up to
/// this again for a graceful close.
const LIMIT: Duration = Duration::from_secs(1);

async fn haloyd_with_api(
    containerd: &Containerd,
    extra: &str,
    registry: Option<&Registry>,
) -> Haloyd {
    let options = HaloydOptions {
        api_extra: Some(extra.to_string()),
        insecure_registries: registry
            .map(|r| vec![r.addr().to_string()])
            .unwrap_or_default(),
        deploy_timeout: Duration::from_secs(30),
        ..HaloydOptions::default()
    };
    Haloyd::start(containerd, options).await
}

/// Reads until the peer closes; `Err` with what arrived if it stays open for `within`.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Result<Vec<u8>, String> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    match read {
        Ok(()) => Ok(got),
        Err(_) => Err(format!(
            "still open after {within:?}; received {:?}",
            String::from_utf8_lossy(&got)
        )),
    }
}

/// Reads one response head and its Content-Length body.
async fn read_response(stream: &mut TcpStream, within: Duration) -> Result<String, String> {
    let mut got = Vec::new();
    tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if got.len() >= end + 4 + length {
                    return Ok(String::from_utf8_lossy(&got).to_string());
                }
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    return Err(format!(
                        "closed before a full response: {:?}",
                        String::from_utf8_lossy(&got)
                    ))
                }
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .map_err(|_| format!("no response within {within:?}"))?
}

/// POSTs a `DeployRequest` for `app` and returns the raw response.
async fn post_deploy(haloyd: &Haloyd, app: &haloy::config::ResolvedApp) -> String {
    let body =
        serde_json::to_string(&haloy::api::types::DeployRequest { app: app.clone() }).unwrap();
    let mut stream = TcpStream::connect(haloyd.api_addr()).await.unwrap();
    let request = format!(
        "POST /v1/deploy HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        haloyd.api_addr(),
        haloyd.token(),
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    read_response(&mut stream, Duration::from_secs(5))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_refuses_bad_env_names_and_haloyds_own_app_names() {
    let containerd = Containerd::start().await;
    let haloyd = haloyd_with_api(&containerd, "max_connections: 8", None).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut apps, _) = haloy::config::resolve_text(
        "name: web\nimage: 127.0.0.1:1/never/pulled:v1\n",
        haloy::config::tree::Format::Yaml,
        "haloy.yaml",
        dir.path(),
        &Default::default(),
    )
    .unwrap();
    let good = apps.remove(0);

    let mut bad_env = good.clone();
    bad_env.env = vec![haloy::config::EnvVar {
        name: "BAD=NAME".into(),
        value: "x".into(),
    }];
    let answer = post_deploy(&haloyd, &bad_env).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("env[0].name: `BAD=NAME` is not a valid environment variable name"),
        "{answer}"
    );

    let mut reserved = good.clone();
    reserved.name = "haloyd-api".into();
    let answer = post_deploy(&haloyd, &reserved).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("name: `haloyd-api` is reserved for haloyd itself"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_listener_closes_half_heads_and_idle_connections_and_caps_connections() {
    let containerd = Containerd::start().await;
    let haloyd = haloyd_with_api(
        &containerd,
        "header_read_timeout: 1s, idle_timeout: 1s, max_connections: 2",
        None,
    )
    .await;
    let api = haloyd.api_addr();
    let health = format!("GET /health HTTP/1.1\r\nHost: {api}\r\n\r\n");

    // Half a head: closed at the header timeout, not held forever.
    let mut half = TcpStream::connect(&api).await.unwrap();
    half.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    read_to_close(&mut half, 4 * LIMIT)
        .await
        .expect("a half-sent head is closed");
    eprintln!("half-sent head closed after {:?}", started.elapsed());
    drop(half);

    // Not even the first bytes of HTTP/2's preface (hyper's protocol sniffing waits on them).
    let mut sniffing = TcpStream::connect(&api).await.unwrap();
    sniffing.write_all(b"PRI").await.unwrap();
    read_to_close(&mut sniffing, 4 * LIMIT)
        .await
        .expect("a stalled preface is closed");
    drop(sniffing);

    // An idle keep-alive connection: one answer, then closed at the idle timeout.
    let mut idle = TcpStream::connect(&api).await.unwrap();
    idle.write_all(health.as_bytes()).await.unwrap();
    let answer = read_response(&mut idle, 5 * LIMIT).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("content-length:"),
        "JSON answers keep their Content-Length: {answer}"
    );
    let started = Instant::now();
    read_to_close(&mut idle, 4 * LIMIT)
        .await
        .expect("an idle keep-alive connection is closed");
    eprintln!("idle keep-alive closed after {:?}", started.elapsed());
    drop(idle);

    // Two connections with a request in progress (a deploy body still arriving) fill the
    // limit; they are busy, so no timeout frees them.
    let slow_deploy = format!(
        "POST /v1/deploy HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
        haloyd.token()
    );
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(&api).await.unwrap();
        stream.write_all(slow_deploy.as_bytes()).await.unwrap();
        busy.push(stream);
    }
    tokio::time::sleep(LIMIT / 2).await;
    let mut third = TcpStream::connect(&api)
        .await
        .expect("the kernel queues the third connection");
    third.write_all(health.as_bytes()).await.unwrap();
    let waited = read_response(&mut third, 3 * LIMIT).await;
    assert!(
        waited.is_err(),
        "a third connection beyond max_connections 2 was served at once: {waited:?}"
    );
    // Still waiting after the timeouts: the busy two were not cut either.
    for stream in &mut busy {
        stream.write_all(b" ").await.expect("busy connection open");
    }
    drop(busy.remove(0));
    let answer = read_response(&mut third, 5 * LIMIT)
        .await
        .expect("served once a connection freed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    drop(haloyd);
}

struct Rig {
    haloyd: Haloyd,
    registry: Registry,
    _containerd: Containerd,
}

impl Rig {
    async fn start(api_extra: &str) -> Rig {
        let containerd = Containerd::start().await;
        let registry = Registry::start().await;
        registry.push_fixtures().await;
        let haloyd = haloyd_with_api(&containerd, api_extra, Some(&registry)).await;
        Rig {
            haloyd,
            registry,
            _containerd: containerd,
        }
    }

    fn app(&self, app: &str, fixture: &str, domain: &str, extra: &str) -> PathBuf {
        let body = format!(
            "name: {app}\nimage: {image}\nport: 8080\nhealth_check_path: /health\ndomains:\n  - domain: {domain}\n{extra}",
            image = self.registry.fixture_ref(fixture, "v1"),
        );
        self.haloyd.write_app_config(app, &body)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploys_progress_stream_outlives_the_api_idle_timeout() {
    let rig = Rig::start("header_read_timeout: 1s, idle_timeout: 1s").await;
    // Healthy after 3 s: the progress stream has nothing to say for longer than the timeout.
    let config = rig.app(
        "slow",
        "slow-start",
        "slow.test",
        "env:\n  - name: SLOW_START\n    value: \"3\"\n",
    );
    let run = rig.haloyd.cli(&config, &["deploy"]);
    assert!(
        run.output.status.success(),
        "deploy through a 1 s API idle timeout failed:\n{}\n--- haloyd log\n{}",
        run.both(),
        rig.haloyd.log_tail(30)
    );
    assert!(
        !run.both().contains("closed the progress stream"),
        "{}",
        run.both()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deploys_of_two_apps_claiming_one_domain_have_one_winner() {
    let rig = Rig::start("max_connections: 64").await;
    let first = rig.app("first", "web", "shared.test", "");
    let second = rig.app("second", "web", "shared.test", "");
    let runs: Vec<(&str, CliRun)> = std::thread::scope(|scope| {
        let handles: Vec<_> = [("first", &first), ("second", &second)]
            .into_iter()
            .map(|(name, config)| {
                let haloyd = &rig.haloyd;
                scope.spawn(move || (name, haloyd.cli(config, &["deploy"])))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<&str> = runs
        .iter()
        .filter(|(_, run)| run.output.status.success())
        .map(|(name, _)| *name)
        .collect();
    let report: String = runs
        .iter()
        .map(|(name, run)| format!("--- {name}\n{}\n", run.both()))
        .collect();
    assert_eq!(winners.len(), 1, "exactly one deploy wins:\n{report}");
    let winner = winners[0];
    let (_, loser_run) = runs.iter().find(|(name, _)| *name != winner).unwrap();
    eprintln!("{report}");
    let expected = format!("`shared.test` is already claimed by app `{winner}`");
    assert!(
        loser_run.both().contains(&expected),
        "the loser names the domain and its holder ({expected}):\n{report}"
    );
    // The winner really serves the domain.
    let mut stream = TcpStream::connect(rig.haloyd.http_addr()).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: shared.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let page = read_to_close(&mut stream, Duration::from_secs(5))
        .await
        .unwrap();
    let page = String::from_utf8_lossy(&page);
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
}

/// `GET /v1/version` with `token`; the status code.
async fn status_with_token(addr: &str, token: &str) -> u16 {
    let mut stream = TcpStream::connect(addr).await.expect("connect to the API");
    let head = format!(
        "GET /v1/version HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("send");
    let got = read_to_close(&mut stream, Duration::from_secs(10))
        .await
        .expect("answer");
    let text = String::from_utf8_lossy(&got);
    text.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

/// `haloyd generate-token` against a running haloyd: the new token is printed and works at
/// once, the old one keeps working (no client is cut off) until the new one is first used.
#[tokio::test]
async fn generate_token_rotates_without_refusing_the_old_token_first() {
    let containerd = Containerd::start().await;
    let haloyd = haloyd_with_api(&containerd, "", None).await;
    let old = haloyd.token().to_string();
    let addr = haloyd.api_addr();
    assert_eq!(status_with_token(&addr, &old).await, 200);
    let out = std::process::Command::new(harness::haloyd::haloyd_binary())
        .args(["generate-token", "--grace", "1h", "--config"])
        .arg(haloyd.config_path())
        .output()
        .expect("run haloyd generate-token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(new.len(), 64, "{new:?}");
    assert_eq!(
        status_with_token(&addr, &old).await,
        200,
        "old token during grace"
    );
    assert_eq!(status_with_token(&addr, &new).await, 200, "new token");
    assert_eq!(
        status_with_token(&addr, &old).await,
        401,
        "the new token's first use ends the old one"
    );
    assert_eq!(status_with_token(&addr, "not-a-token").await, 401);
}
