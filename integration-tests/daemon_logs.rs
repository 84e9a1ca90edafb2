//! haloyd's own log as journald and log shippers see it (issue 16): a real haloyd (private
//! containerd, registry with the busybox fixtures) whose stderr is a file deploys an app and
//! stops; its text log carries no ANSI escape codes and no Rust Debug forms, and with
//! `logs.format: json` every line is a JSON object with a timestamp, a level and a message,
//! and deploy steps carry the job's and the replica's span (app, deployment_id, replica).

// Tests start real containerd, registries, Pebble and tools (see clippy.toml).
#![allow(clippy::disallowed_methods)]

#[path = "harness/mod.rs"]
mod harness;

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
        insecure_registries: vec![registry.addr().to_string()],
        log_format: log_format.map(str::to_string),
        ..HaloydOptions::default()
    };
    let mut haloyd = Haloyd::start(&containerd, options).await;
    let body = format!(
        "name: logs\nimage: {}\nport: 8080\nhealth_check_path: /health\ndomains:\n  - domain: logs.test\n",
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
    haloyd.stop(Duration::from_secs(20));
    haloyd.log()
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
