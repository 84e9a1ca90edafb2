//! Runs the real `haloy` binary on the examples and on broken config files: `validate-config
//! --json` must resolve the examples exactly (replicas per target, merged env, defaults) and every
//! bad file must exit 1 with `FILE:LINE:COL: KEY.PATH: …` lines on stderr. Also covers
//! `targets`, `server add/list/delete` (0600 file) and the "which server failed" messages.

// Tests start real containerd, registries, Pebble and tools (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// Runs haloy with a private config home and no token in the environment.
fn haloy(args: &[&str], home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_haloy"))
        .args(args)
        .env("XDG_CONFIG_HOME", home)
        .env_remove("HALOY_API_TOKEN")
        .output()
        .expect("run haloy")
}

fn validate_json(dir: &Path) -> Value {
    let home = tempfile::tempdir().unwrap();
    let out = haloy(
        &["validate-config", "--json", "-c", dir.to_str().unwrap()],
        home.path(),
    );
    assert!(
        out.status.success(),
        "validate-config failed for {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON value")
}

/// Writes `text` as `name` in a fresh folder, runs validate-config, expects exit 1 and returns
/// (stderr lines, file path).
fn invalid(name: &str, text: &str) -> (Vec<String>, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(name);
    std::fs::write(&file, text).unwrap();
    let out = haloy(
        &["validate-config", "--json", "-c", file.to_str().unwrap()],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1), "expected exit 1 for:\n{text}");
    assert!(out.stdout.is_empty(), "nothing on stdout when invalid");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let path = file.display().to_string();
    (stderr.lines().map(str::to_string).collect(), path)
}

fn app(
    target: Value,
    name: &str,
    server: Value,
    image: (&str, &str),
    replicas: u32,
    extra: Value,
) -> Value {
    let mut v = json!({
        "target": target,
        "name": name,
        "server": server,
        "image": {"repository": image.0, "tag": image.1},
        "replicas": replicas,
        "port": "8080",
        "health_check_path": "/",
        "min_ready_seconds": 0,
        "deployment_strategy": "rolling",
        "domains": [],
        "env": [],
    });
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    v
}

fn domain(d: &str) -> Value {
    json!([{"domain": d, "aliases": []}])
}

#[test]
fn basic_scaling_example() {
    assert_eq!(
        validate_json(&examples().join("basic-scaling")),
        json!([app(
            Value::Null,
            "my-scalable-app",
            Value::Null,
            ("my-org/my-app", "1.2.0"),
            3,
            json!({"domains": domain("api.example.com")})
        )])
    );
}

#[test]
fn environments_example_resolves_each_target() {
    let expected: Vec<Value> = [
        ("production", "prod.haloy.com", 10, "my-app.com"),
        ("staging", "staging.haloy.com", 2, "staging.my-app.com"),
        ("development", "dev.haloy.com", 1, "dev.my-app.com"),
    ]
    .iter()
    .map(|(t, server, replicas, d)| {
        app(
            json!(t),
            // As in Haloy: a target without its own `name` is named after its key, and with
            // no image the app name is the repository (to be built).
            t,
            json!(server),
            (t, "latest"),
            *replicas,
            json!({"domains": domain(d)}),
        )
    })
    .collect();
    assert_eq!(
        validate_json(&examples().join("environments")),
        Value::Array(expected)
    );
}

#[test]
fn high_availability_example() {
    assert_eq!(
        validate_json(&examples().join("high-availability")),
        json!([app(
            Value::Null,
            "critical-app",
            Value::Null,
            ("my-org/critical-app", "v2.0.0"),
            3,
            json!({"health_check_path": "/health", "domains": domain("critical-app.com")})
        )])
    );
}

#[test]
fn geographic_example_merges_env_by_name() {
    let expected: Vec<Value> = [
        ("us-east", 5, "us.global-app.com", "us-east-1"),
        ("eu-west", 3, "eu.global-app.com", "eu-west-1"),
        ("ap-south", 2, "ap.global-app.com", "ap-south-1"),
    ]
    .iter()
    .map(|(t, replicas, d, region)| {
        app(
            json!(t),
            t, // named after the target key, as in Haloy
            json!(format!("{t}.haloy.com")),
            ("my-org/global-app", "3.1.0"),
            *replicas,
            json!({
                "health_check_path": "/health",
                "domains": domain(d),
                "env": [
                    {"name": "LOG_LEVEL", "value": "info"},
                    {"name": "REGION", "value": region},
                ],
            }),
        )
    })
    .collect();
    assert_eq!(
        validate_json(&examples().join("geographic")),
        Value::Array(expected)
    );
}

#[test]
fn stateless_example() {
    assert_eq!(
        validate_json(&examples().join("stateless")),
        json!([app(
            Value::Null,
            "stateless-api",
            Value::Null,
            ("stateless-api", "latest"),
            10,
            json!({"env": [
                {"name": "REDIS_URL", "value": "redis://redis-server:6379"},
                {"name": "S3_BUCKET", "value": "my-app-uploads"},
            ]})
        )])
    );
}

#[test]
fn health_checks_example() {
    assert_eq!(
        validate_json(&examples().join("health-checks")),
        json!([app(
            Value::Null,
            "my-app",
            Value::Null,
            ("my-app", "latest"),
            5,
            json!({"health_check_path": "/health", "min_ready_seconds": 10})
        )])
    );
}

#[test]
fn local_demo_example() {
    assert_eq!(
        validate_json(&examples().join("local-demo")),
        json!([app(
            Value::Null,
            "demo",
            json!("127.0.0.1:9922"),
            ("127.0.0.1:5000/haloy-fixtures/web", "v1"),
            3,
            json!({"health_check_path": "/health", "domains": domain("demo.localhost")})
        )])
    );
}

#[test]
fn unknown_key_suggests_the_closest() {
    let (lines, f) = invalid("haloy.yaml", "name: a\nhelth_check_path: /x\n");
    assert_eq!(
        lines[0],
        format!("{f}:2:1: helth_check_path: unknown key `helth_check_path`; did you mean `health_check_path`?")
    );
    let (lines, f) = invalid(
        "haloy.yaml",
        "name: a\ntargets:\n  production:\n    replica: 3\n",
    );
    assert_eq!(
        lines[0],
        format!(
            "{f}:4:5: targets.production.replica: unknown key `replica`; did you mean `replicas`?"
        )
    );
}

#[test]
fn wrong_type() {
    let (lines, f) = invalid(
        "haloy.yaml",
        "name: a\ntargets:\n  production:\n    replicas: three\n",
    );
    assert_eq!(
        lines[0],
        format!("{f}:4:15: targets.production.replicas: expected an integer, found a string")
    );
}

#[test]
fn out_of_range_values() {
    let (lines, f) = invalid(
        "haloy.yaml",
        "name: a\nreplicas: 0\nport: \"70000\"\nmin_ready_seconds: 601\nhealth_check_path: health\n",
    );
    assert_eq!(
        lines[..4],
        [
            format!("{f}:2:11: replicas: 0 is out of range; must be between 1 and 1000"),
            format!("{f}:3:7: port: 70000 is out of range; must be between 1 and 65535"),
            format!("{f}:4:20: min_ready_seconds: 601 is out of range; must be between 0 and 600"),
            format!("{f}:5:20: health_check_path: `health` must start with `/`"),
        ]
    );
    assert_eq!(lines[4], "error: the config has 4 problems");
}

#[test]
fn duplicate_domain_and_alias() {
    let (lines, f) = invalid(
        "haloy.yaml",
        "name: a\ndomains:\n  - domain: app.example.com\n    aliases: [www.example.com]\n  - domain: APP.example.com\n  - domain: other.example.com\n    aliases: [www.example.com]\n",
    );
    assert!(lines[0].starts_with(&format!(
        "{f}:5:13: domains[1].domain: `app.example.com` is listed more than once"
    )));
    assert!(lines[1].starts_with(&format!(
        "{f}:7:15: domains[2].aliases[0]: `www.example.com` is listed more than once"
    )));
}

#[test]
fn bad_hostname() {
    let (lines, f) = invalid(
        "haloy.yaml",
        "name: a\ndomains:\n  - domain: -bad.example.com\n",
    );
    assert!(
        lines[0].starts_with(&format!(
            "{f}:3:13: domains[0].domain: `-bad.example.com` is not a valid host name"
        )),
        "{lines:?}"
    );
}

#[test]
fn relative_volume() {
    let (lines, f) = invalid("haloy.yaml", "name: a\nvolumes:\n  - data/x:/data\n");
    assert!(
        lines[0].starts_with(&format!("{f}:3:5: volumes[0]: host path `data/x`")),
        "{lines:?}"
    );
    assert!(lines[0].contains("relative"));
}

#[test]
fn env_cycle() {
    let (lines, f) = invalid(
        "haloy.yaml",
        "name: a\nenv:\n  - name: A\n    value: x${B}\n  - name: B\n    value: ${C}\n  - name: C\n    value: ${A}\n",
    );
    assert_eq!(
        lines[0],
        format!("{f}:7:5: env[2]: env references form a cycle: A -> B -> C -> A")
    );
}

#[test]
fn several_problems_at_once() {
    let (lines, f) = invalid(
        "haloy.yaml",
        "name: a\nreplicas: -1\ndeployment_strategy: rolling-update\ntargets:\n  prod:\n    port: http\n    domians: []\n",
    );
    assert_eq!(
        lines,
        [
            format!("{f}:2:11: replicas: -1 is out of range; must be between 1 and 1000"),
            format!("{f}:3:22: deployment_strategy: `rolling-update` is not valid; expected one of `rolling`, `replace`; did you mean `rolling`?"),
            format!("{f}:6:11: targets.prod.port: expected an integer, found a string"),
            format!("{f}:7:5: targets.prod.domians: unknown key `domians`; did you mean `domains`?"),
            "error: the config has 4 problems".to_string(),
        ]
    );
}

#[test]
fn json_file_positions() {
    let (lines, f) = invalid(
        "haloy.json",
        "{\n  \"name\": \"a\",\n  \"replicas\": 0,\n  \"healthCheckPat\": \"/x\"\n}\n",
    );
    assert_eq!(
        lines[..2],
        [
            format!("{f}:3:15: replicas: 0 is out of range; must be between 1 and 1000"),
            format!("{f}:4:3: healthCheckPat: unknown key `healthCheckPat`; did you mean `health_check_path`?"),
        ]
    );
    let (lines, f) = invalid("haloy.json", "{\n  \"name\": \"a\",\n}\n");
    assert!(
        lines[0].starts_with(&format!("{f}:3:1: syntax error")),
        "{lines:?}"
    );
}

#[test]
fn toml_file_positions() {
    let (lines, f) = invalid(
        "haloy.toml",
        "name = \"a\"\nreplicas = 2\n\n[targets.prod]\nreplicas = 0\nmin_ready_secs = 5\n",
    );
    assert_eq!(
        lines[..2],
        [
            format!("{f}:5:12: targets.prod.replicas: 0 is out of range; must be between 1 and 1000"),
            format!("{f}:6:1: targets.prod.min_ready_secs: unknown key `min_ready_secs`; did you mean `min_ready_seconds`?"),
        ]
    );
}

#[test]
fn json_and_toml_files_resolve_like_yaml() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("haloy.toml"),
        "name = \"t\"\nimage = \"r/t:v1\"\nport = 9000\n[[env]]\nname = \"A\"\nvalue = \"1\"\n",
    )
    .unwrap();
    let v = validate_json(dir.path());
    assert_eq!(v[0]["port"], "9000");
    assert_eq!(v[0]["env"], json!([{"name": "A", "value": "1"}]));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("haloy.json"),
        r#"{"name": "j", "image": {"repository": "r/j", "tag": "v2"}, "replicas": 2, "healthCheckPath": "/up"}"#,
    )
    .unwrap();
    let v = validate_json(dir.path());
    assert_eq!(v[0]["image"], json!({"repository": "r/j", "tag": "v2"}));
    assert_eq!(v[0]["health_check_path"], "/up");
}

#[test]
fn dotenv_files_and_from_env() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "DB_HOST=db.internal\nDB_PASS=base\n",
    )
    .unwrap();
    std::fs::write(dir.path().join(".env.prod"), "DB_PASS=prod-secret\n").unwrap();
    std::fs::write(
        dir.path().join("haloy.yaml"),
        "name: a\nenv:\n  - name: PASS\n    from: {env: DB_PASS}\n  - name: DB_HOST\n    from: {env: DB_HOST}\n  - name: URL\n    value: postgres://u:${PASS}@${DB_HOST}/x\ntargets:\n  prod:\n    server: p.example.com\n  dev:\n    server: d.example.com\n",
    )
    .unwrap();
    let v = validate_json(dir.path());
    assert_eq!(
        v[0]["env"][2]["value"],
        "postgres://u:prod-secret@db.internal/x"
    );
    assert_eq!(v[1]["env"][2]["value"], "postgres://u:base@db.internal/x");
}

#[test]
fn targets_command_and_selection() {
    let home = tempfile::tempdir().unwrap();
    let dir = examples().join("environments");
    let out = haloy(&["targets", "-c", dir.to_str().unwrap()], home.path());
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("production"), "{stdout}");
    assert!(stdout
        .lines()
        .any(|l| l.starts_with("staging") && l.contains("staging.haloy.com")));

    let out = haloy(
        &[
            "validate-config",
            "--json",
            "-t",
            "staging",
            "-c",
            dir.to_str().unwrap(),
        ],
        home.path(),
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["replicas"], 2);

    let out = haloy(
        &["deploy", "-t", "stagin", "-c", dir.to_str().unwrap()],
        home.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("did you mean `staging`?"), "{stderr}");

    let out = haloy(&["deploy", "-c", dir.to_str().unwrap()], home.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("use -a for all"));
}

#[test]
fn server_store_is_private_and_round_trips() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().unwrap();
    let out = haloy(&["server", "add", "127.0.0.1", "tok-1"], home.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = home.path().join("haloy/client.yaml");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let stored: Value = serde_yaml::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(
        stored,
        json!({"format_version": 1, "servers": {"http://127.0.0.1:9922": "tok-1"}})
    );
    let out = haloy(&["server", "list"], home.path());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "http://127.0.0.1:9922"
    );
    let out = haloy(&["server", "delete", "http://127.0.0.1:9922"], home.path());
    assert!(out.status.success());
    let out = haloy(&["server", "list"], home.path());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no servers stored"));
}

#[test]
fn unreachable_server_is_named() {
    // A port that was free a moment ago: nobody listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("haloy.yaml"),
        format!("name: a\nimage: r/a:v1\nserver: 127.0.0.1:{port}\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_haloy"))
        .args(["deploy", "-c", dir.path().to_str().unwrap()])
        .env("XDG_CONFIG_HOME", dir.path())
        .env("HALOY_API_TOKEN", "t")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot reach haloyd at http://127.0.0.1:{port}: connection refused"
        )),
        "{stderr}"
    );
    let out = haloy(&["status", "-c", dir.path().to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no API token for"));
}

/// A stand-in haloyd speaking the documented wire format (the real one lives in src/api), so
/// the CLI's remote commands are checked end to end through real HTTP.
mod fake_haloyd {
    use bytes::Bytes;
    use haloy::api::types::*;
    use http_body_util::{BodyExt, Full};
    use hyper::{Request, Response};
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::sync::Barrier;

    pub struct Fake {
        pub fail_deploy: bool,
        /// Both fakes of a parallel deploy wait here, so a sequential CLI would time out.
        pub barrier: Option<Arc<Barrier>>,
        /// Deploy requests (`deploy <app>`) and ends of event streams (`events done`), in
        /// the order they reached this fake.
        pub calls: Option<Arc<std::sync::Mutex<Vec<String>>>>,
    }

    fn json(status: u16, body: impl serde::Serialize) -> Response<Full<Bytes>> {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
            .unwrap()
    }

    fn sse(events: Vec<String>) -> Response<Full<Bytes>> {
        let body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    }

    fn event(
        kind: EventKind,
        replica: Option<u32>,
        step: Option<&str>,
        msg: &str,
        ok: Option<bool>,
    ) -> String {
        serde_json::to_string(&DeployEvent {
            deployment_id: "01TEST".into(),
            app: "web".into(),
            time: "2026-01-01T00:00:00Z".into(),
            kind,
            replica,
            step: step.map(str::to_string),
            message: msg.into(),
            ok,
        })
        .unwrap()
    }

    async fn handle(fake: Arc<Fake>, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or_default().to_string();
        if path != "/health"
            && req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                != Some("Bearer tok")
        {
            return json(
                401,
                ApiError {
                    error: "unauthorized".into(),
                    problems: vec![],
                },
            );
        }
        let method = req.method().clone();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        match (method.as_str(), path.as_str()) {
            ("POST", "/v1/deploy") => {
                let parsed: DeployRequest = match serde_json::from_slice(&body) {
                    Ok(p) => p,
                    Err(e) => {
                        return json(
                            400,
                            ApiError {
                                error: format!("bad body: {e}"),
                                problems: vec![],
                            },
                        )
                    }
                };
                assert_eq!(parsed.app.replicas, 2);
                if let Some(calls) = &fake.calls {
                    calls
                        .lock()
                        .unwrap()
                        .push(format!("deploy {}", parsed.app.name));
                }
                if let Some(b) = &fake.barrier {
                    if tokio::time::timeout(Duration::from_secs(20), b.wait())
                        .await
                        .is_err()
                    {
                        return json(
                            500,
                            ApiError {
                                error: "targets were not deployed in parallel".into(),
                                problems: vec![],
                            },
                        );
                    }
                }
                json(
                    202,
                    DeployAccepted {
                        deployment_id: "01TEST".into(),
                    },
                )
            }
            ("GET", "/v1/deployments/01TEST/events") => {
                let mut events = vec![
                    event(EventKind::Step, Some(1), Some(steps::PULLING), "", None),
                    event(EventKind::Step, Some(1), Some(steps::STARTING), "", None),
                    event(
                        EventKind::Step,
                        Some(1),
                        Some(steps::IN_ROTATION),
                        "10.89.0.2",
                        None,
                    ),
                ];
                if fake.fail_deploy {
                    events.push(event(
                        EventKind::Finished,
                        None,
                        None,
                        "replica 2 never became healthy\nlast log line",
                        Some(false),
                    ));
                } else {
                    events.push(event(
                        EventKind::Step,
                        Some(2),
                        Some(steps::IN_ROTATION),
                        "",
                        None,
                    ));
                    events.push(event(
                        EventKind::Finished,
                        None,
                        None,
                        "2 replicas in rotation",
                        Some(true),
                    ));
                }
                if let Some(calls) = &fake.calls {
                    calls.lock().unwrap().push("events done".into());
                }
                sse(events)
            }
            ("GET", "/v1/apps/web") => json(
                200,
                AppStatus {
                    name: "web".into(),
                    deployment_id: "01TEST".into(),
                    image: "r/web:v1".into(),
                    digest: Some("sha256:abc".into()),
                    strategy: "rolling".into(),
                    domains: vec!["web.localhost".into()],
                    replicas: vec![ReplicaStatus {
                        replica: 1,
                        container_id: "web-01test-1".into(),
                        state: ReplicaState::Ready,
                        ip: Some("10.89.0.2".into()),
                        uptime_seconds: 75,
                        restarts: 0,
                        last_health: Some("200 OK".into()),
                        requests: 42,
                        errors: 0,
                        in_flight: 0,
                    }],
                    certificates: vec![],
                    last_operation: None,
                },
            ),
            ("GET", "/v1/apps/web/logs") => {
                assert!(
                    query.contains("all=true")
                        && query.contains("follow=false")
                        && query.contains("tail=5"),
                    "{query}"
                );
                let lines = (1..=2)
                    .map(|r| {
                        serde_json::to_string(&LogLine {
                            replica: r,
                            container_id: format!("c{r}"),
                            stream: LogStreamKind::Stdout,
                            time: "t".into(),
                            line: format!("hello from {r}"),
                        })
                        .unwrap()
                    })
                    .collect();
                sse(lines)
            }
            ("POST", "/v1/apps/web/stop") => {
                let req: StopRequest = serde_json::from_slice(&body).unwrap();
                assert!(req.remove_containers);
                json(
                    202,
                    JobAccepted {
                        job_id: "01STOP".into(),
                    },
                )
            }
            ("GET", "/v1/jobs/01STOP/events") => sse(vec![
                event(
                    EventKind::Step,
                    Some(1),
                    Some(steps::REMOVED),
                    "web-01test-1",
                    None,
                ),
                event(
                    EventKind::Step,
                    Some(2),
                    Some(steps::REMOVED),
                    "web-01test-2",
                    None,
                ),
                event(
                    EventKind::Finished,
                    None,
                    None,
                    "2 replica(s) stopped, containers removed",
                    Some(true),
                ),
            ]),
            _ => json(
                404,
                ApiError {
                    error: format!("no route {path}"),
                    problems: vec![],
                },
            ),
        }
    }

    pub async fn start(fake: Fake) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = Arc::new(fake);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let fake = fake.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let fake = fake.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(fake, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        addr
    }
}

/// Runs haloy off the async runtime so the fakes keep serving.
async fn haloy_async(args: Vec<String>, home: PathBuf) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_haloy"))
            .args(&args)
            .env("XDG_CONFIG_HOME", &home)
            .env("HALOY_API_TOKEN", "tok")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_runs_targets_in_parallel_and_summarizes() {
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(2));
    let a = fake_haloyd::start(fake_haloyd::Fake {
        fail_deploy: false,
        barrier: Some(barrier.clone()),
        calls: None,
    })
    .await;
    let b = fake_haloyd::start(fake_haloyd::Fake {
        fail_deploy: true,
        barrier: Some(barrier),
        calls: None,
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("haloy.yaml"),
        format!("name: web\nimage: r/web:v1\nreplicas: 2\ntargets:\n  a:\n    server: {a}\n  b:\n    server: http://{b}\n"),
    )
    .unwrap();
    let cfg = dir.path().to_str().unwrap().to_string();
    let out = haloy_async(
        vec!["deploy".into(), "-a".into(), "-c".into(), cfg],
        dir.path().to_path_buf(),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for expected in [
        format!("[a] deploying a (r/web:v1, 2 replicas, rolling) to http://{a}"),
        "[a] replica 1: pulling".to_string(),
        "[a] replica 1: in rotation: 10.89.0.2".to_string(),
        "[a] deployment succeeded: 2 replicas in rotation".to_string(),
        "[b] deployment FAILED: replica 2 never became healthy".to_string(),
        "[b]   last log line".to_string(),
    ] {
        assert!(
            stdout.lines().any(|l| l == expected),
            "missing `{expected}` in:\n{stdout}"
        );
    }
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("  a ") && l.contains("ok      deployment 01TEST")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("  b ") && l.contains("FAILED  replica 2 never became healthy")),
        "{stdout}"
    );
    assert!(stderr.contains("error: 1 of 2 targets failed"), "{stderr}");
}

/// Haloy's order (internal/haloy/deploy.go): targets on one server deploy one after another,
/// each job followed to its end before the next target's deploy is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_on_one_server_deploy_one_after_another() {
    let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let addr = fake_haloyd::start(fake_haloyd::Fake {
        fail_deploy: false,
        barrier: None,
        calls: Some(calls.clone()),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("haloy.yaml"),
        format!("image: r/web:v1\nreplicas: 2\nserver: {addr}\ntargets:\n  api: {{}}\n  web: {{}}\n  worker: {{}}\n"),
    )
    .unwrap();
    let cfg = dir.path().to_str().unwrap().to_string();
    let out = haloy_async(
        vec!["deploy".into(), "-a".into(), "-c".into(), cfg],
        dir.path().to_path_buf(),
    )
    .await;
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        *calls.lock().unwrap(),
        [
            "deploy api",
            "events done",
            "deploy web",
            "events done",
            "deploy worker",
            "events done"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_logs_and_stop_against_the_api() {
    let addr = fake_haloyd::start(fake_haloyd::Fake {
        fail_deploy: false,
        barrier: None,
        calls: None,
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("haloy.yaml"),
        format!("name: web\nimage: r/web:v1\nreplicas: 2\nserver: {addr}\n"),
    )
    .unwrap();
    let cfg = dir.path().to_str().unwrap().to_string();
    let home = dir.path().to_path_buf();
    let run = |args: &[&str]| {
        let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        v.extend(["-c".to_string(), cfg.clone()]);
        haloy_async(v, home.clone())
    };

    let out = run(&["status", "--json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["replicas"][0]["state"], "ready");
    assert_eq!(v[0]["replicas"][0]["requests"], 42);

    let out = run(&["status"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("app web on http://{addr}")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("1") && l.contains("ready") && l.contains("1m15s")),
        "{text}"
    );

    let out = run(&["logs", "--all-containers", "--tail", "5", "--no-follow"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "[replica 1] hello from 1\n[replica 2] hello from 2\n"
    );

    let out = run(&["stop", "--remove-containers"]).await;
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("remove succeeded: 2 replica(s) stopped, containers removed"));

    let out = run(&["rollback-targets"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains(&format!("haloyd at http://{addr} answered 404")));
}

/// Runs haloy with a private config home, `env` set (HALOY_* removed otherwise) and `stdin`.
fn haloy_with(args: &[&str], home: &Path, env: &[(&str, &str)], stdin: &str) -> Output {
    use std::io::Write;
    let mut command = Command::new(env!("CARGO_BIN_EXE_haloy"));
    command
        .args(args)
        .env("XDG_CONFIG_HOME", home)
        .env_remove("HALOY_API_TOKEN")
        .env_remove("HALOY_INSECURE_HTTP")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("run haloy");
    let mut input = child.stdin.take().expect("stdin");
    // haloy may exit before reading stdin (a refused command never reads it): a broken pipe
    // here is not the test's failure; the exit status and output are.
    if let Err(e) = input.write_all(stdin.as_bytes()) {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "write stdin: {e}");
    }
    drop(input);
    child.wait_with_output().expect("haloy output")
}

fn stored(home: &Path) -> Value {
    let text = std::fs::read_to_string(home.join("haloy/client.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

#[test]
fn plain_http_token_to_a_remote_server_is_refused_before_connecting() {
    // 192.0.2.0/24 is TEST-NET-1: never connected to; the refusal comes before any socket.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("haloy.yaml"),
        "name: a\nimage: r/a:v1\nserver: 192.0.2.10\n",
    )
    .unwrap();
    let config = dir.path().to_str().unwrap();
    for command in ["deploy", "status"] {
        let out = haloy_with(
            &[command, "-c", config],
            dir.path(),
            &[("HALOY_API_TOKEN", "t")],
            "",
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command}: {stderr}");
        assert!(
            stderr.contains(
                "refusing to send the API token over plain http:// to http://192.0.2.10:9922"
            ),
            "{command}: {stderr}"
        );
        assert!(stderr.contains("--insecure-http"), "{stderr}");
        assert!(
            !stderr.contains("cannot reach"),
            "{command} tried to connect: {stderr}"
        );
    }
    // Adding such a server needs the explicit flag, which is stored with it.
    let home = tempfile::tempdir().unwrap();
    let out = haloy_with(
        &["server", "add", "http://192.0.2.10:9922", "--token-stdin"],
        home.path(),
        &[],
        "tok\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pass --insecure-http"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = haloy_with(
        &[
            "server",
            "add",
            "http://192.0.2.10:9922",
            "--token-stdin",
            "--insecure-http",
        ],
        home.path(),
        &[],
        "tok\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stored(home.path()),
        json!({"format_version": 1, "servers": {"http://192.0.2.10:9922": "tok"}, "insecure_http": ["http://192.0.2.10:9922"]})
    );
}

#[test]
fn server_add_takes_the_token_from_stdin_or_the_environment() {
    let home = tempfile::tempdir().unwrap();
    let out = haloy_with(
        &["server", "add", "127.0.0.1", "--token-stdin"],
        home.path(),
        &[],
        "tok-stdin\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = haloy_with(
        &["server", "add", "localhost:9000"],
        home.path(),
        &[("HALOY_API_TOKEN", "tok-env")],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stored(home.path()),
        json!({"format_version": 1, "servers": {"http://127.0.0.1:9922": "tok-stdin", "http://localhost:9000": "tok-env"}})
    );
    // No token anywhere: a clear error, nothing stored.
    let out = haloy_with(&["server", "add", "127.0.0.2"], home.path(), &[], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no token given"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A token in argv still works, with a warning.
    let out = haloy_with(
        &["server", "add", "127.0.0.3", "tok-argv"],
        home.path(),
        &[],
        "",
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("shell history"));
    let help = haloy_with(&["server", "add", "--help"], home.path(), &[], "");
    let help = String::from_utf8_lossy(&help.stdout);
    for expected in [
        "--token-stdin",
        "--insecure-http",
        "shell history",
        "HALOY_API_TOKEN",
    ] {
        assert!(
            help.contains(expected),
            "`{expected}` missing from:\n{help}"
        );
    }
}

/// `haloy export kubernetes -o DIR`: one file per target, owner-only (it holds Secrets), notes
/// on stderr; `-o -` (the default) prints the same manifests.
#[test]
fn export_kubernetes_writes_one_private_file_per_target() {
    use std::os::unix::fs::PermissionsExt;
    let home = tempfile::tempdir().expect("home");
    let out = tempfile::tempdir().expect("out");
    let config = examples().join("environments");
    let run = haloy(
        &[
            "export",
            "kubernetes",
            "-c",
            config.to_str().expect("utf-8"),
            "-o",
            out.path().to_str().expect("utf-8"),
        ],
        home.path(),
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("note: production: server: `prod.haloy.com` not used"),
        "{stderr}"
    );
    for target in ["production", "staging", "development"] {
        let path = out.path().join(format!("{target}.yaml"));
        let text = std::fs::read_to_string(&path).expect("manifest written");
        assert!(text.contains("kind: Deployment"), "{text}");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
    let printed = haloy(
        &[
            "export",
            "kubernetes",
            "-c",
            config.to_str().expect("utf-8"),
            "-t",
            "staging",
        ],
        home.path(),
    );
    assert!(printed.status.success());
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout),
        std::fs::read_to_string(out.path().join("staging.yaml")).expect("read")
    );
}
