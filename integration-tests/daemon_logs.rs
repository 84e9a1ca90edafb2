//! haloyd's own log as journald and log shippers see it (issue 16): a real haloyd (private
//! containerd, registry with the busybox fixtures) whose stderr is a file deploys an app and
//! stops; its text log carries no ANSI escape codes and no Rust Debug forms, and with
//! `logs.format: json` every line is a JSON object with a timestamp, a level and a message,
//! and deploy steps carry the job's and the replica's span (app, deployment_id, replica);
//! its access log lines are then JSON objects too.

// Tests start real containerd, registries, Pebble and tools (see clippy.toml).
#![allow(clippy::disallowed_methods)]

#[path = "harness/mod.rs"]
mod harness;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use harness::haloyd::{Haloyd, HaloydOptions};
use harness::{Containerd, Registry};

/// Starts haloyd with `log_format`, deploys one replica of the web fixture, stops haloyd
/// gracefully (so start, deploy and shutdown lines are all in the log) and returns the log.
async fn log_of_a_deploy(log_format: Option<&str>) -> String {
    let containerd = Containerd::start().await;
    let registry = Registry::start().await;
    registry.push_fixtures().await;
    let options = HaloydOptions {
        log_format: log_format.map(str::to_string),
        ..HaloydOptions::default()
    };
    let mut haloyd = start_and_deploy(&containerd, &registry, options).await;
    haloyd.stop(Duration::from_secs(20));
    haloyd.log()
}

const APP_HOST: &str = "logs.test";

/// haloyd with `options` (pulling from `registry`) serving one replica of the web fixture
/// at [`APP_HOST`].
async fn start_and_deploy(
    containerd: &Containerd,
    registry: &Registry,
    options: HaloydOptions,
) -> Haloyd {
    let options = HaloydOptions {
        insecure_registries: vec![registry.addr().to_string()],
        ..options
    };
    let haloyd = Haloyd::start(containerd, options).await;
    let body = format!(
        "name: logs\nimage: {}\nport: 8080\nhealth_check_path: /health\ndomains:\n  - domain: {APP_HOST}\n",
        registry.fixture_ref("web", "v1")
    );
    let config = haloyd.write_app_config("logs", &body);
    let run = haloyd.cli(&config, &["deploy"]);
    assert!(
        run.output.status.success(),
        "deploy failed:\n{}\n--- haloyd log\n{}",
        run.both(),
        haloyd.log_tail(30)
    );
    haloyd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_log_to_a_file_has_no_colour_codes_and_no_debug_forms() {
    let log = log_of_a_deploy(None).await;
    assert!(
        log.contains("replica started"),
        "no deploy in the log:\n{log}"
    );
    // `ip=Some(10.0.0.5)`, `origins=[Bound, Bound, Bound]`: Rust's Debug forms, not values.
    // (Colour codes are stripped first, so this checks the words whatever the colouring.)
    let plain = strip_ansi(&log);
    let debug_forms: Vec<&str> = plain
        .lines()
        .filter(|l| l.contains("Some(") || l.contains("=None") || l.contains("=["))
        .collect();
    assert!(
        debug_forms.is_empty(),
        "Debug forms in log lines:\n{}",
        debug_forms.join("\n")
    );
    assert!(
        !log.as_bytes().contains(&0x1b),
        "ANSI escape codes in a log written to a file:\n{}",
        log.escape_debug()
    );
}

/// `text` without ANSI SGR sequences (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_has_one_object_per_line_with_timestamp_level_and_message() {
    let log = log_of_a_deploy(Some("json")).await;
    let mut messages = Vec::new();
    let mut spanned = false;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n--- whole log\n{log}"));
        for key in ["timestamp", "level"] {
            assert!(value[key].is_string(), "no `{key}` in {line}");
        }
        let message = value["fields"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no fields.message in {line}"));
        messages.push(message.to_string());
        if message.starts_with("starting replica") {
            // One span per job and per replica carries app, deployment_id and replica.
            let spans = value["spans"].as_array().cloned().unwrap_or_default();
            let job = spans.iter().find(|s| s["name"] == "job");
            assert!(
                job.is_some_and(|j| j["app"] == "logs" && j["deployment_id"].is_string()),
                "no job span with app and deployment_id: {line}"
            );
            assert!(
                spans
                    .iter()
                    .any(|s| s["name"] == "replica" && s["replica"] == 0),
                "no replica span: {line}"
            );
            spanned = true;
        }
        if message == "replica started" {
            let ip = value["fields"]["ip"].as_str().unwrap_or_default();
            assert!(
                ip.parse::<std::net::IpAddr>().is_ok(),
                "replica ip is not a plain address: {line}"
            );
        }
    }
    assert!(
        messages.iter().any(|m| m == "replica started"),
        "no deploy in the log:\n{log}"
    );
    assert!(spanned, "no `starting replica` step in the log:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_json_logs_each_access_log_line_is_one_json_object() {
    let containerd = Containerd::start().await;
    let registry = Registry::start().await;
    registry.push_fixtures().await;
    let log_dir = tempfile::tempdir().expect("access log dir");
    let access_file = log_dir.path().join("access.log");
    let options = HaloydOptions {
        log_format: Some("json".into()),
        extra_config: vec![format!(
            "access_log: {{to: file, file: {}}}",
            access_file.display()
        )],
        ..HaloydOptions::default()
    };
    let mut haloyd = start_and_deploy(&containerd, &registry, options).await;
    let http = haloyd.http_addr();
    assert_eq!(
        get_with_host(&http, APP_HOST, "/version.txt?secret=s3"),
        Some(200)
    );
    assert_eq!(get_with_host(&http, "nobody.test", "/elsewhere"), Some(404));
    // A graceful stop writes the pending batch.
    haloyd.stop(Duration::from_secs(20));

    let access = std::fs::read_to_string(&access_file)
        .unwrap_or_else(|e| panic!("read {}: {e}", access_file.display()));
    let lines: Vec<serde_json::Value> = access
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let served = lines
        .iter()
        .find(|l| l["path"] == "/version.txt")
        .unwrap_or_else(|| panic!("no line for /version.txt in:\n{access}"));
    assert_eq!(served["app"], "logs", "{served}");
    assert_eq!(served["host"], APP_HOST, "{served}");
    assert_eq!(served["method"], "GET", "{served}");
    assert_eq!(served["status"], 200, "{served}");
    assert!(served["time"].is_string(), "{served}");
    assert!(served["duration_ms"].is_f64(), "{served}");
    assert!(served["bytes"].is_u64(), "{served}");
    let upstream = served["upstream"].as_str().unwrap_or_default();
    assert!(
        upstream.parse::<std::net::SocketAddr>().is_ok(),
        "upstream is not an address: {served}"
    );
    assert!(
        !access.contains("secret=s3"),
        "a query reached the access log:\n{access}"
    );
    let unrouted = lines
        .iter()
        .find(|l| l["path"] == "/elsewhere")
        .unwrap_or_else(|| panic!("no line for the unrouted request in:\n{access}"));
    assert_eq!(unrouted["status"], 404, "{unrouted}");
    assert!(unrouted["app"].is_null(), "{unrouted}");
}

/// The status of `GET target` with `Host: host` through haloyd's proxy at `addr`.
fn get_with_host(addr: &str, host: &str, target: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response)
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
