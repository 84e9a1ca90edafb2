//! Keeps README.md's "A day with haloy" true: every `$ ` command of that section runs, in
//! order, against a real haloyd (private containerd, registry with the busybox fixtures, CNI),
//! and its output must have the shape the README shows: the same lines once deployment ids,
//! addresses, digests and times are masked (compared as a multiset, since concurrent replicas
//! may report in either order). The rolling deploy runs under load, and no request may fail.
//!
//! Commands understood: `haloy ARGS…` (run with `-c haloy.yaml`), `sed -i 's/OLD/NEW/'
//! haloy.yaml && haloy ARGS…` (the edit, then the command), `curl -s -H 'Host: H' URL` (to
//! haloyd's proxy). `WALKTHROUGH_PRINT=1` prints the real transcript in the README's form.

// Tests start real containerd, registries and tools (see clippy.toml).
#![allow(clippy::disallowed_methods)]

#[path = "harness/mod.rs"]
mod harness;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use harness::haloyd::{Haloyd, HaloydOptions};
use harness::{Containerd, Registry};

const SECTION: &str = "## A day with haloy";
/// The step under load: the one that moves the app to a new image.
const LOADED_STEP: &str = "web:v2";

/// One `$ command` of the README and the output shown under it.
struct Step {
    command: String,
    expected: Vec<String>,
}

fn readme_steps() -> Vec<Step> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let start = readme
        .find(SECTION)
        .unwrap_or_else(|| panic!("README.md has no {SECTION:?} section"));
    let body = &readme[start + SECTION.len()..];
    let body = &body[..body.find("\n## ").unwrap_or(body.len())];
    let mut steps: Vec<Step> = Vec::new();
    let mut in_block = false;
    for line in body.lines() {
        let Some(code) = line.strip_prefix("    ") else {
            in_block = line.trim().is_empty() && in_block;
            continue;
        };
        if let Some(command) = code.strip_prefix("$ ") {
            steps.push(Step {
                command: command.to_string(),
                expected: Vec::new(),
            });
            in_block = true;
        } else if in_block {
            if let Some(step) = steps.last_mut() {
                step.expected.push(code.to_string());
            }
        }
    }
    assert!(steps.len() >= 6, "{SECTION} lists too few commands");
    steps
}

/// Masks what changes from run to run: ULIDs, digests, addresses, numbers with units.
fn shape(line: &str) -> String {
    let mut out = String::new();
    // Table columns widen with their values: spacing is not part of the shape.
    let words: Vec<&str> = line.split_whitespace().collect();
    for (i, word) in words.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(&mask_word(word));
    }
    out.trim_end().to_string()
}

/// Replaces every run of 26 letters and digits with a digit among them (a ULID: deployment
/// and job ids, and the container names built from them in lower case) with `<id>`.
fn mask_ulids(word: &str) -> String {
    let chars: Vec<char> = word.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let run = chars[i..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric())
            .count();
        let has_digit = chars[i..i + run].iter().any(char::is_ascii_digit);
        if run == 26 && has_digit {
            out.push_str("<id>");
            i += run;
        } else if run > 0 {
            out.extend(&chars[i..i + run]);
            i += run;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

fn mask_word(word: &str) -> String {
    let word = &mask_ulids(word);
    let core = word.trim_matches(|c: char| "()[],;:".contains(c));
    let has_digit = core.chars().any(|c| c.is_ascii_digit());
    let masked = if core.contains("<id>") {
        core.to_string()
    } else if core.starts_with("sha256:") {
        "<digest>".to_string()
    } else if core.contains("127.0.0.1") || looks_like_ip(core) {
        // Addresses, image references on the local registry, URLs.
        let tail = core.rsplit_once('/').map(|(_, t)| t).unwrap_or("");
        if core.contains('/') && !core.starts_with("http") {
            format!(
                "<registry>/{}",
                core.split_once('/').map(|(_, p)| p).unwrap_or(tail)
            )
        } else {
            "<addr>".to_string()
        }
    } else if has_digit && core.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        // Durations, counts of time, sizes: "1.2s", "350ms", "4".
        if core.chars().all(|c| c.is_ascii_digit()) {
            core.to_string()
        } else {
            "<n>".to_string()
        }
    } else {
        core.to_string()
    };
    word.replacen(core, &masked, 1)
}

fn looks_like_ip(s: &str) -> bool {
    let host = s.split(':').next().unwrap_or("");
    host.split('.').count() == 4 && host.split('.').all(|p| p.parse::<u8>().is_ok())
}

fn sorted_shapes(lines: &[String]) -> Vec<String> {
    let mut shapes: Vec<String> = lines
        .iter()
        .map(|l| shape(l))
        .filter(|l| !l.is_empty())
        .collect();
    shapes.sort();
    shapes
}

struct Rig {
    haloyd: Haloyd,
    registry: Registry,
    config: PathBuf,
    _containerd: Containerd,
}

impl Rig {
    async fn start() -> Rig {
        let containerd = Containerd::start().await;
        let registry = Registry::start().await;
        registry.push_fixtures().await;
        let options = HaloydOptions {
            insecure_registries: vec![registry.addr().to_string()],
            deploy_timeout: Duration::from_secs(60),
            ..HaloydOptions::default()
        };
        let haloyd = Haloyd::start(&containerd, options).await;
        // examples/local-demo/haloy.yaml with this test's registry and haloyd.
        let example = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/local-demo/haloy.yaml"
        ))
        .expect("read the local demo's haloy.yaml");
        let body: String = example
            .lines()
            .filter(|l| !l.starts_with("server:") && !l.starts_with('#'))
            .map(|l| l.replace("127.0.0.1:5000", registry.addr()))
            .collect::<Vec<_>>()
            .join("\n");
        let config = haloyd.write_app_config("demo", &format!("{body}\n"));
        Rig {
            haloyd,
            registry,
            config,
            _containerd: containerd,
        }
    }

    /// Runs one README command; returns its output lines (stdout, then stderr).
    fn run(&self, command: &str) -> Vec<String> {
        let mut rest = command;
        if let Some(after) = rest.strip_prefix("sed -i 's/") {
            let (edit, tail) = after
                .split_once("/' haloy.yaml && ")
                .unwrap_or_else(|| panic!("unsupported sed form: {command}"));
            let (old, new) = edit.split_once('/').expect("s/OLD/NEW/");
            let text = std::fs::read_to_string(&self.config).expect("read haloy.yaml");
            assert!(
                text.contains(old),
                "haloy.yaml has no {old:?} for: {command}"
            );
            std::fs::write(&self.config, text.replacen(old, new, 1)).expect("write haloy.yaml");
            rest = tail;
        }
        if let Some(args) = rest.strip_prefix("haloy ") {
            let args: Vec<&str> = args.split_whitespace().collect();
            let mut run = self.haloyd.cli(&self.config, &args);
            // A replica that joined a moment ago shows health `-` until the monitor's first
            // check: the README shows the settled table, so wait for it (bounded).
            for _ in 0..40 {
                let settling = args == ["status"]
                    && run.stdout().lines().any(|l| l.trim_end().ends_with("  -"));
                if !settling {
                    break;
                }
                std::thread::sleep(Duration::from_millis(250));
                run = self.haloyd.cli(&self.config, &args);
            }
            let text = format!("{}{}", run.stdout(), run.stderr());
            assert!(
                run.output.status.success(),
                "`{command}` failed:\n{text}\n--- haloyd log\n{}",
                self.haloyd.log_tail(30)
            );
            return text.lines().map(str::to_string).collect();
        }
        if let Some(args) = rest.strip_prefix("curl -s -H 'Host: ") {
            let (args, grep) = match args.split_once(" | grep ") {
                Some((args, word)) => (args, Some(word)),
                None => (args, None),
            };
            let (host, _url) = args.split_once("' ").expect("curl -s -H 'Host: H' URL");
            let body = http_get(&self.haloyd.http_addr(), host)
                .unwrap_or_else(|e| panic!("{command}: {e}"));
            return body
                .lines()
                .filter(|l| grep.is_none_or(|w| l.contains(w)))
                .map(str::to_string)
                .collect();
        }
        panic!("the walkthrough test does not know how to run: {command}")
    }
}

/// One GET through haloyd's proxy; the body, or why it failed.
fn http_get(addr: &str, host: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no response head")?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "answered {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    Ok(body.to_string())
}

/// Requests through the proxy until stopped; counts answers and failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: String, host: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, o, f) = (stop.clone(), ok.clone(), failed.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match http_get(&addr, host) {
                    Ok(_) => {
                        o.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => f.lock().unwrap_or_else(|p| p.into_inner()).push(e),
                }
            }
        });
        Load {
            stop,
            ok,
            failed,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let failed = std::mem::take(&mut *self.failed.lock().unwrap_or_else(|p| p.into_inner()));
        (self.ok.load(Ordering::Relaxed), failed)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_runs_as_shown() {
    let steps = readme_steps();
    let rig = Rig::start().await;
    let print = std::env::var_os("WALKTHROUGH_PRINT").is_some();
    let mut rollback_id = String::new();
    let mut mismatches = Vec::new();
    for step in &steps {
        let mut command = step.command.clone();
        if command.starts_with("haloy rollback ") {
            command = format!("haloy rollback {rollback_id}");
        }
        let load = command
            .contains(LOADED_STEP)
            .then(|| Load::start(rig.haloyd.http_addr(), "demo.localhost"));
        let output = rig.run(&command);
        if let Some(load) = load {
            let (ok, failed) = load.finish();
            eprintln!(
                "under load: {ok} requests answered, {} failed",
                failed.len()
            );
            assert!(ok > 0, "the load sent no request");
            assert!(
                failed.is_empty(),
                "requests failed during the rolling deploy: {failed:?}"
            );
        }
        if command == "haloy rollback-targets" {
            // The oldest deployment listed: the first deploy of the day.
            rollback_id = output
                .iter()
                .flat_map(|l| l.split_whitespace())
                .rfind(|w| w.len() == 26 && w.chars().all(|c| c.is_ascii_alphanumeric()))
                .unwrap_or_default()
                .to_string();
            assert!(!rollback_id.is_empty(), "no deployment id in: {output:?}");
        }
        if print {
            // With the local demo's addresses, ready to paste into the README.
            eprintln!("    $ {}", step.command);
            for line in &output {
                let line = line
                    .replace(rig.registry.addr(), "127.0.0.1:5000")
                    .replace(&rig.haloyd.api_addr(), "127.0.0.1:9922");
                eprintln!("    {line}");
            }
            eprintln!();
        }
        if sorted_shapes(&output) != sorted_shapes(&step.expected) {
            mismatches.push(format!(
                "`{}`\n--- README shows\n{}\n--- real output\n{}",
                step.command,
                step.expected.join("\n"),
                output.join("\n")
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "README.md's {SECTION:?} no longer matches (rerun with WALKTHROUGH_PRINT=1 --nocapture for the real transcript):\n{}",
        mismatches.join("\n\n")
    );
}
