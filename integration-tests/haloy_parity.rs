//! Keys Haloy accepts do what they do in Haloy (issue 14, "nothing accepted is ignored"):
//! deploy hooks run on the deploying machine, `protected` targets stay out of `deploy --all`,
//! `naming_strategy: static` names the container after the app, and image history strategy
//! `registry` keeps only the current image and rolls back by pulling the old tag. Each test
//! has its own containerd, registry and haloyd, driven by the real `haloy` CLI.

// Tests start real containerd, registries and tools (see clippy.toml).
#![allow(clippy::disallowed_methods)]

#[path = "harness/mod.rs"]
mod harness;

use std::path::{Path, PathBuf};

use harness::haloyd::{Haloyd, HaloydOptions};
use harness::stack::Stack;
use harness::{Containerd, Registry};

type Rig = Stack;

/// `haloy.yaml` in `folder`: the `web` fixture at `tag` with `extra` YAML appended.
fn app_config(rig: &Rig, folder: &str, tag: &str, extra: &str) -> PathBuf {
    let body = format!(
        "image: {}\nport: 8080\nhealth_check_path: /health\n{extra}",
        rig.registry.fixture_ref("web", tag)
    );
    rig.haloyd.write_app_config(folder, &body)
}

/// Position of `needle` in `text`, failing with the text when absent.
fn at(text: &str, needle: &str) -> usize {
    text.find(needle)
        .unwrap_or_else(|| panic!("`{needle}` not in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_around_the_deploy_in_the_config_folder() {
    let rig = Rig::start().await;
    // Relative file names prove the working directory; $NO_COLOR (set by the harness for the
    // CLI) proves the hooks get the CLI's environment.
    let config = app_config(&rig,
        "hooks",
        "v1",
        "targets:\n  hooked:\n    domains: [{domain: hooked.test}]\n    \
         pre_deploy: ['echo HOOK-pre; echo pre >> hooks.log']\n    \
         post_deploy: ['echo HOOK-post; echo post >> hooks.log']\n\
         global_pre_deploy: ['echo HOOK-global-pre NO_COLOR=$NO_COLOR; echo global-pre >> hooks.log']\n\
         global_post_deploy: ['echo HOOK-global-post; echo global-post >> hooks.log']\n",
    );
    let run = rig.ok(&config, &["deploy", "-a"]);
    let log = std::fs::read_to_string(config.with_file_name("hooks.log"))
        .expect("hooks.log next to haloy.yaml: the hooks ran in the config's folder");
    assert_eq!(log, "global-pre\npre\npost\nglobal-post\n");
    // Their output is shown, in order around the deploy's own lines.
    let out = run.stdout();
    assert!(out.contains("HOOK-global-pre NO_COLOR=1"), "{out}");
    assert!(at(&out, "HOOK-global-pre") < at(&out, "HOOK-pre"));
    assert!(at(&out, "HOOK-pre") < at(&out, "deploying hooked"));
    assert!(at(&out, "deployment succeeded") < at(&out, "HOOK-post"));
    assert!(at(&out, "HOOK-post") < at(&out, "HOOK-global-post"));
    assert_eq!(rig.get("hooked.test", "/").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pre_deploy_hook_sends_nothing() {
    let rig = Rig::start().await;
    let config = app_config(
        &rig,
        "hookfail",
        "v1",
        "name: hookfail\ndomains: [{domain: hookfail.test}]\n\
         pre_deploy: ['exit 7', 'touch ran-after-failure']\n\
         global_post_deploy: ['touch global-post-ran']\n",
    );
    let run = rig.haloy(&config, &["deploy"]);
    assert!(!run.output.status.success(), "{}", run.both());
    assert!(
        run.stderr()
            .contains("pre_deploy hook failed: `exit 7` exited with"),
        "{}",
        run.both()
    );
    assert!(!config.with_file_name("ran-after-failure").exists());
    assert!(!config.with_file_name("global-post-ran").exists());
    // haloyd never heard of the app.
    let status = rig.haloy(&config, &["status"]);
    assert!(
        status.stderr().contains("is not deployed"),
        "{}",
        status.both()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_all_skips_protected_targets_unless_included() {
    let rig = Rig::start().await;
    let config = app_config(
        &rig,
        "protected",
        "v1",
        "targets:\n  open:\n    domains: [{domain: open.test}]\n  \
         guarded:\n    protected: true\n    domains: [{domain: guarded.test}]\n",
    );
    let run = rig.ok(&config, &["deploy", "-a"]);
    assert!(
        run.stderr().contains("skipping protected targets: guarded"),
        "{}",
        run.both()
    );
    assert!(
        run.stderr().contains("--include-protected"),
        "{}",
        run.both()
    );
    assert_eq!(rig.status(&config, &["-t", "open"]).name, "open");
    let guarded = rig.haloy(&config, &["status", "-t", "guarded"]);
    assert!(
        guarded.stderr().contains("is not deployed"),
        "{}",
        guarded.both()
    );
    assert_eq!(rig.get("guarded.test", "/").await.0, 404);

    rig.ok(
        &config,
        &["deploy", "-a", "--include-protected", "--no-logs"],
    );
    assert_eq!(rig.status(&config, &["-t", "guarded"]).name, "guarded");
    assert_eq!(rig.get("guarded.test", "/").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_naming_names_the_one_container_after_the_app() {
    let rig = Rig::start().await;
    let extra = "name: fixed-name\ndomains: [{domain: fixed.test}]\n\
                 naming_strategy: static\ndeployment_strategy: replace\n";
    for tag in ["v1", "v2"] {
        let config = app_config(&rig, &format!("static-{tag}"), tag, extra);
        rig.ok(&config, &["deploy"]);
        let status = rig.status(&config, &[]);
        let ids: Vec<&str> = status
            .replicas
            .iter()
            .map(|r| r.container_id.as_str())
            .collect();
        assert_eq!(ids, ["fixed-name"], "{status:#?}");
        let (code, body) = rig.get("fixed.test", "/").await;
        assert_eq!(code, 200, "{body}");
        assert!(body.contains(&format!("version: {tag}")), "{body}");
    }
    // A stopped container keeps the name until the next deploy replaces it.
    let again = app_config(&rig, "static-again", "v1", extra);
    rig.ok(&again, &["stop"]);
    rig.ok(&again, &["deploy"]);
    let status = rig.status(&again, &[]);
    assert_eq!(status.replicas.len(), 1, "{status:#?}");
    assert_eq!(status.replicas[0].container_id, "fixed-name");
    assert_eq!(rig.get("fixed.test", "/").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_history_rolls_back_by_pulling_the_old_tag() {
    let rig = Rig::start().await;
    let history = |tag: &str| {
        format!(
            "name: reghist\ndomains: [{{domain: reghist.test}}]\nimage:\n  repository: {}\n  tag: {tag}\n  \
             history: {{strategy: registry, count: 5, pattern: 'v*'}}\n",
            rig.registry
                .fixture_ref("web", tag)
                .rsplit_once(':')
                .map(|(repo, _)| repo.to_string())
                .expect("fixture ref has a tag")
        )
    };
    let v1 = rig.haloyd.write_app_config(
        "reghist-v1",
        &format!("port: 8080\nhealth_check_path: /health\n{}", history("v1")),
    );
    let v2 = rig.haloyd.write_app_config(
        "reghist-v2",
        &format!("port: 8080\nhealth_check_path: /health\n{}", history("v2")),
    );
    rig.ok(&v1, &["deploy"]);
    let v1_id = rig.status(&v1, &[]).deployment_id;
    rig.ok(&v2, &["deploy"]);
    // v1's image is gone from the server, yet v1 stays a rollback target: the registry has it.
    let targets = rig.ok(&v2, &["rollback-targets"]).stdout();
    assert!(targets.contains(&v1_id), "{targets}");
    let has_v1 = |names: &[String]| names.iter().any(|n| n.ends_with("/web:v1"));
    let kept = rig.image_names().await;
    assert!(!has_v1(&kept), "v1 kept on the server: {kept:?}");
    assert!(kept.iter().any(|n| n.ends_with("/web:v2")), "{kept:?}");
    rig.ok(&v2, &["rollback", &v1_id]);
    let after = rig.image_names().await;
    assert!(
        has_v1(&after),
        "the rollback did not pull v1 again: {after:?}"
    );
    let (code, body) = rig.get("reghist.test", "/").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("version: v1"), "{body}");
}

/// Writes an executable stand-in for a provider CLI that checks its arguments (exactly what
/// Haloy passes) and prints `stdout`.
fn stand_in(dir: &Path, name: &str, args: &str, stdout: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    let script = format!(
        "#!/bin/sh\nif [ \"$*\" != '{args}' ]; then echo \"{name}: unexpected args: $*\" >&2; exit 2; fi\ncat <<'EOT'\n{stdout}\nEOT\n"
    );
    std::fs::write(&path, script).expect("write stand-in");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A loopback HTTP endpoint that records every request (head and body) and answers 503.
fn recording_server() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("address").to_string();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut data = Vec::new();
            let mut buf = [0u8; 8192];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&data).to_string();
                let Some(end) = text.find("\r\n\r\n") else {
                    continue;
                };
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if data.len() >= end + 4 + length {
                    break;
                }
            }
            record
                .lock()
                .expect("record lock")
                .push(String::from_utf8_lossy(&data).to_string());
            let _ = stream.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (addr, seen)
}

#[test]
fn secret_providers_resolve_on_the_deploying_machine_and_never_print() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    let app = dir.path().join("app");
    std::fs::create_dir_all(&app).expect("app dir");
    // Neither CLI is packaged for Debian: stand-ins on PATH, called exactly as Haloy calls them.
    stand_in(
        &bin,
        "op",
        "item get deploy-keys --vault Production --format json",
        r#"{"fields":[{"label":"db-password","value":"op-pw-4711"},{"label":"token","value":"tok-from-op"}]}"#,
    );
    stand_in(
        &bin,
        "sops",
        &format!(
            "decrypt --output-type yaml {}",
            app.join("secrets.enc.yaml").display()
        ),
        "stripe:\n  key: sk_sops_0815\n",
    );
    let (addr, seen) = recording_server();
    let config = app.join("haloy.yaml");
    std::fs::write(
        &config,
        format!(
            "name: secretive\nserver: {addr}\nimage: registry.example.com/secretive:1\n\
             api_token: {{from: {{secret: 'onepassword:keys:token'}}}}\n\
             secret_providers:\n  onepassword:\n    keys: {{vault: Production, item: deploy-keys}}\n  \
             sops:\n    app: {{file: secrets.enc.yaml}}\n\
             env:\n  - {{name: DB_PASSWORD, from: {{secret: 'onepassword:keys:db-password'}}}}\n  \
             - {{name: STRIPE_KEY, from: {{secret: 'sops:app:stripe.key'}}}}\n  \
             - {{name: DSN, value: 'postgres://app:${{DB_PASSWORD}}@db/app'}}\n"
        ),
    )
    .expect("write haloy.yaml");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let haloy = |args: &[&str]| {
        let out = std::process::Command::new(harness::haloyd::haloy_binary())
            .args(args)
            .arg("-c")
            .arg(&config)
            .env("PATH", &path)
            .env("XDG_CONFIG_HOME", dir.path())
            .env("HOME", dir.path())
            .env_remove("HALOY_API_TOKEN")
            .output()
            .expect("run haloy");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let secrets = ["op-pw-4711", "tok-from-op", "sk_sops_0815"];
    for args in [
        &["validate-config", "--show-resolved-config"][..],
        &["validate-config", "--json"][..],
        &["validate-config"][..],
    ] {
        let (ok, text) = haloy(args);
        assert!(ok, "haloy {args:?}:\n{text}");
        for secret in secrets {
            assert!(
                !text.contains(secret),
                "haloy {args:?} printed a secret:\n{text}"
            );
        }
        if args.len() > 1 {
            assert!(text.contains("<hidden>"), "{text}");
            assert!(text.contains("postgres://app:<hidden>@db/app"), "{text}");
        }
    }
    // The deploy request carries the resolved values (haloyd needs them) and the token.
    let (ok, text) = haloy(&["deploy"]);
    assert!(!ok, "the recording server answers 503:\n{text}");
    for secret in secrets {
        assert!(!text.contains(secret), "deploy printed a secret:\n{text}");
    }
    let requests = seen.lock().expect("requests").join("\n----\n");
    assert!(requests.contains("POST /v1/deploy"), "{requests}");
    assert!(requests.contains("Bearer tok-from-op"), "{requests}");
    for value in [
        "op-pw-4711",
        "sk_sops_0815",
        "postgres://app:op-pw-4711@db/app",
    ] {
        assert!(requests.contains(value), "`{value}` not sent:\n{requests}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_raw_prints_bare_lines_and_stop_server_overrides_the_config() {
    let rig = Rig::start().await;
    let config = app_config(
        &rig,
        "rawlogs",
        "v1",
        "name: rawlogs\nreplicas: 2\ndomains: [{domain: rawlogs.test}]\n",
    );
    rig.ok(&config, &["deploy"]);
    let prefixed = rig.ok(&config, &["logs", "--no-follow", "--all-containers"]);
    assert!(
        prefixed.stdout().contains("[replica "),
        "{}",
        prefixed.both()
    );
    let raw = rig.ok(
        &config,
        &["logs", "--no-follow", "--all-containers", "--raw"],
    );
    let out = raw.stdout();
    assert!(out.contains("web v1 listening on"), "{}", raw.both());
    assert!(
        out.lines().all(|l| !l.starts_with('[')),
        "--raw printed prefixes:\n{out}"
    );

    // The same app with a `server:` nothing listens on: --server takes its place.
    let elsewhere = config.with_file_name("elsewhere.yaml");
    let text = std::fs::read_to_string(&config).expect("read haloy.yaml");
    let body = text.split_once('\n').map_or("", |(_, rest)| rest);
    std::fs::write(&elsewhere, format!("server: 127.0.0.1:1\n{body}")).expect("write");
    let failed = rig.haloy(&elsewhere, &["stop"]);
    assert!(!failed.output.status.success(), "{}", failed.both());
    rig.ok(&elsewhere, &["stop", "--server", &rig.haloyd.api_addr()]);
    let status = rig.status(&config, &[]);
    let op = status.last_operation.expect("last operation");
    assert_eq!((op.kind.as_str(), op.state.as_str()), ("stop", "succeeded"));
    assert_eq!(rig.get("rawlogs.test", "/").await.0, 503);
}

#[test]
fn haloyd_config_get_and_set_as_haloy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("haloyd.yaml");
    let haloyd = |args: &[&str]| {
        let out = std::process::Command::new(harness::haloyd::haloyd_binary())
            .args(args)
            .arg("-c")
            .arg(&config)
            .output()
            .expect("run haloyd");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        (out.status.success(), stdout, stderr)
    };
    let state = dir.path().join("state");
    let (ok, _, err) = haloyd(&["init", "--state-dir", &state.to_string_lossy()]);
    assert!(ok, "{err}");
    let before = std::fs::read_to_string(&config).expect("read haloyd.yaml");

    let token = std::fs::read_to_string(dir.path().join("api-token")).expect("token file");
    let (ok, out, err) = haloyd(&["config", "get", "api-token", "--raw"]);
    assert!(ok, "{err}");
    assert_eq!(out, token.trim());

    let (ok, out, _) = haloyd(&["config", "get", "api-domain"]);
    assert!(ok && out.contains("api-domain is not set"), "{out}");
    let (ok, out, err) = haloyd(&["config", "set", "api-domain", "API.Example.com"]);
    assert!(ok, "{err}");
    assert!(out.contains("restart haloyd"), "{out}");
    let (_, out, _) = haloyd(&["config", "get", "api-domain", "--raw"]);
    assert_eq!(out, "api.example.com");
    // The file keeps its comments: only the domain line is new.
    let after = std::fs::read_to_string(&config).expect("read haloyd.yaml");
    let added: Vec<&str> = after.lines().filter(|l| !before.contains(*l)).collect();
    assert_eq!(added, ["  domain: api.example.com"], "{after}");

    let (ok, _, err) = haloyd(&["config", "set", "api-domain", "not a domain"]);
    assert!(!ok && err.contains("is not a valid api-domain"), "{err}");
    let (ok, _, err) = haloyd(&["config", "set", "listen", "x"]);
    assert!(!ok && err.contains("known keys: api-domain"), "{err}");
    let (ok, out, _) = haloyd(&["config", "get", "--help"]);
    assert!(
        ok && out.contains("api-token") && out.contains("api-domain"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_images_shows_a_plan_and_removes_with_yes() {
    let rig = Rig::start().await;
    let extra = "name: prunable\ndomains: [{domain: prunable.test}]\n";
    let v1 = app_config(&rig, "prune-v1", "v1", extra);
    let v2 = app_config(&rig, "prune-v2", "v2", extra);
    rig.ok(&v1, &["deploy"]);
    let v1_id = rig.status(&v1, &[]).deployment_id;
    rig.ok(&v2, &["deploy"]);
    let has_v1 = |names: &[String]| names.iter().any(|n| n.ends_with("/web:v1"));

    let plan = rig.ok(&v2, &["prune-images", "--keep", "1"]).stdout();
    assert!(plan.contains("dry run"), "{plan}");
    let remove_line = plan
        .lines()
        .find(|l| l.starts_with("remove"))
        .unwrap_or_else(|| panic!("no `remove` line:\n{plan}"));
    assert!(
        remove_line.contains("web:v1") && remove_line.contains(&v1_id),
        "{plan}"
    );
    assert!(has_v1(&rig.image_names().await), "a dry run removed v1");

    let applied = rig
        .ok(&v2, &["prune-images", "--keep", "1", "--yes"])
        .stdout();
    assert!(applied.contains("removed"), "{applied}");
    assert!(!has_v1(&rig.image_names().await), "v1 still there");
    let targets = rig.ok(&v2, &["rollback-targets"]).stdout();
    assert!(!targets.contains(&v1_id), "{targets}");
    let (code, body) = rig.get("prunable.test", "/").await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_registry_login_lets_haloyd_pull_private_images() {
    use std::io::Write;
    let containerd = Containerd::start().await;
    let registry = Registry::start_with_htpasswd("puller", "pull-pass-9").await;
    registry.push_fixtures().await;
    let options = HaloydOptions {
        insecure_registries: vec![registry.addr().to_string()],
        ..HaloydOptions::default()
    };
    let haloyd = Haloyd::start(&containerd, options).await;
    let config = haloyd.write_app_config(
        "private",
        &format!(
            "name: private\nimage: {}\nport: 8080\nhealth_check_path: /health\ndomains: [{{domain: private.test}}]\n",
            registry.fixture_ref("web", "v1")
        ),
    );
    let refused = haloyd.cli(&config, &["deploy"]);
    assert!(!refused.output.status.success(), "{}", refused.both());

    let client_home = haloyd.dir().join("client-home");
    let mut login = std::process::Command::new(harness::haloyd::haloy_binary())
        .args([
            "server",
            "registry",
            "login",
            registry.addr(),
            "-u",
            "puller",
        ])
        .arg("--password-stdin")
        .arg("-c")
        .arg(&config)
        .env("HALOY_API_TOKEN", haloyd.token())
        .env("XDG_CONFIG_HOME", &client_home)
        .env("HOME", &client_home)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start haloy server registry login");
    login
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"pull-pass-9\n")
        .expect("write password");
    let out = login.wait_with_output().expect("login output");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let file = haloyd.dir().join("state/registries.json");
    let meta = std::fs::metadata(&file).expect("registries.json");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    let list = haloyd.cli(&config, &["server", "registry", "list"]);
    list.assert_ok();
    assert!(list.stdout().contains(registry.addr()) && list.stdout().contains("puller"));
    assert!(!list.both().contains("pull-pass-9"), "{}", list.both());

    haloyd.cli(&config, &["deploy"]).assert_ok();
    assert!(
        !haloyd.log().contains("pull-pass-9"),
        "haloyd logged the password"
    );

    haloyd
        .cli(&config, &["server", "registry", "logout", registry.addr()])
        .assert_ok();
    let list = haloyd.cli(&config, &["server", "registry", "list"]);
    assert!(!list.stdout().contains("puller"), "{}", list.both());
    let again = haloyd.cli(&config, &["server", "registry", "logout", registry.addr()]);
    assert!(
        again.stderr().contains("no login stored"),
        "{}",
        again.both()
    );
    drop(haloyd);
    drop(registry);
    drop(containerd);
}
