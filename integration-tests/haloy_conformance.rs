//! Conformance with the original Haloy: every case under `integration-tests/conformance/` is a
//! config taken from Haloy's own Go tests (each `expect.yaml` cites file and test name) with
//! Haloy's verdict and the values Haloy's loader resolves. The case is loaded with this
//! project's loader and compared. A case that differs on purpose says so (`differs:`) and states
//! what our loader does instead (`ours:`), including the message that tells the user what to
//! write. Cases listed in `conformance/known-open.txt` are disagreements not fixed yet: they are
//! printed loudly but do not fail the test (and must leave the list once they agree).

use haloy::config::load_deploy_config_with_env;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize, PartialEq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Verdict {
    Accepted,
    Rejected,
}

/// What a loader does with a case: its verdict, the resolved apps it must contain (each a
/// partial JSON object of `ResolvedApp`, in target order) or words its error must contain.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Outcome {
    verdict: Verdict,
    #[serde(default)]
    apps: Vec<Value>,
    #[serde(default)]
    error_contains: Vec<String>,
    /// Words the error must not contain (e.g. "missing" for a name that is there but invalid).
    #[serde(default)]
    error_lacks: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// `file TestName "subtest"` in haloydev/haloy.
    source: String,
    haloy: Outcome,
    /// Why this project differs on purpose; then `ours` is what it does instead.
    differs: Option<String>,
    ours: Option<Outcome>,
    /// Process environment for `from: {env: …}`.
    #[serde(default)]
    env: HashMap<String, String>,
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("integration-tests/conformance")
}

/// `expected` is a subset of `actual`: objects by key, arrays element by element (same length).
fn contains(actual: &Value, expected: &Value, path: &str, diffs: &mut Vec<String>) {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => {
            for (k, ev) in e {
                let p = format!("{path}.{k}");
                match a.get(k) {
                    Some(av) => contains(av, ev, &p, diffs),
                    None => diffs.push(format!("{p}: missing, want {ev}")),
                }
            }
        }
        (Value::Array(a), Value::Array(e)) if a.len() == e.len() => {
            for (i, (av, ev)) in a.iter().zip(e).enumerate() {
                contains(av, ev, &format!("{path}[{i}]"), diffs);
            }
        }
        _ if actual == expected => {}
        _ => diffs.push(format!("{path}: got {actual}, want {expected}")),
    }
}

/// Compares what our loader did with an expected outcome; the differences, empty when it agrees.
fn compare(dir: &Path, env: &HashMap<String, String>, want: &Outcome) -> Vec<String> {
    let mut diffs = Vec::new();
    match load_deploy_config_with_env(Some(dir), env) {
        Ok(cfg) => {
            if want.verdict == Verdict::Rejected {
                diffs.push("accepted, want rejected".into());
                return diffs;
            }
            let apps = serde_json::to_value(&cfg.apps).expect("ResolvedApp serializes");
            if !want.apps.is_empty() {
                contains(&apps, &Value::Array(want.apps.clone()), "apps", &mut diffs);
            }
        }
        Err(e) => {
            let msg = e.to_string();
            if want.verdict == Verdict::Accepted {
                diffs.push(format!("rejected, want accepted: {msg}"));
                return diffs;
            }
            for w in &want.error_contains {
                if !msg.contains(w.as_str()) {
                    diffs.push(format!("error does not mention `{w}`: {msg}"));
                }
            }
            for w in &want.error_lacks {
                if msg.contains(w.as_str()) {
                    diffs.push(format!("error mentions `{w}`: {msg}"));
                }
            }
        }
    }
    diffs
}

#[test]
fn haloy_conformance() {
    let dir = data_dir();
    let known_open: Vec<String> = std::fs::read_to_string(dir.join("known-open.txt"))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("read conformance dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no cases in {}", dir.display());

    let (mut agree, mut stated) = (0, 0);
    let mut open = Vec::new();
    let mut failures = Vec::new();
    for case in &cases {
        let id = case.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(case.join("expect.yaml"))
            .unwrap_or_else(|e| panic!("{id}/expect.yaml: {e}"));
        let expect: Expect =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{id}/expect.yaml: {e}"));
        assert!(!expect.source.trim().is_empty(), "{id}: cite the Go test");
        let diffs = compare(case, &expect.env, &expect.haloy);
        if diffs.is_empty() {
            agree += 1;
            if known_open.contains(&id) {
                failures.push(format!("{id}: agrees now; remove it from known-open.txt"));
            }
            if expect.differs.is_some() {
                failures.push(format!("{id}: agrees with Haloy but says `differs`"));
            }
            continue;
        }
        if let (Some(why), Some(ours)) = (&expect.differs, &expect.ours) {
            let ours_diffs = compare(case, &expect.env, ours);
            if ours_diffs.is_empty() {
                stated += 1;
                let _ = writeln!(std::io::stderr(), "differs on purpose  {id}: {why}");
                continue;
            }
            failures.push(format!("{id}: stated difference not met: {ours_diffs:?}"));
            continue;
        }
        let line = format!("{id} ({}): {}", expect.source, diffs.join("; "));
        if known_open.contains(&id) {
            open.push(line);
        } else {
            failures.push(line);
        }
    }
    let total = cases.len();
    // Straight to stderr, past the test harness's capture: the count and the open
    // disagreements show in every run, passing or not.
    let mut err = std::io::stderr();
    let _ = writeln!(
        err,
        "{agree}/{total} cases agree ({stated} differ on purpose, {} known open)",
        open.len()
    );
    if !open.is_empty() {
        let _ = writeln!(
            err,
            "!!!!!!!! KNOWN OPEN DISAGREEMENTS WITH HALOY ({}) !!!!!!!!",
            open.len()
        );
        for l in &open {
            let _ = writeln!(err, "!! {l}");
        }
    }
    assert!(
        failures.is_empty(),
        "disagreements:\n{}",
        failures.join("\n")
    );
}
