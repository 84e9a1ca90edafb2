//! Unit tests of deploy config resolution (merging, defaults, value sources, problems).

use super::*;

fn resolve(text: &str) -> Result<Vec<ResolvedApp>, Vec<String>> {
    resolve_with(text, Format::Yaml, &HashMap::new())
}

fn resolve_with(
    text: &str,
    format: Format,
    env: &HashMap<String, String>,
) -> Result<Vec<ResolvedApp>, Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    resolve_text(text, format, "haloy.yaml", dir.path(), env)
        .map(|(apps, _)| apps)
        .map_err(|e| e.lines())
}

#[test]
fn defaults_for_a_minimal_file() {
    let apps = resolve("name: web\nimage: nginx:1.27\n").unwrap();
    let app = &apps[0];
    assert_eq!(app.target, None);
    assert_eq!(app.image.repository, "nginx");
    assert_eq!(app.image.tag, "1.27");
    assert!(!app.image.build);
    assert_eq!(app.image.history.strategy, HistoryStrategy::Local);
    assert_eq!(app.image.history.count, 6);
    assert_eq!(app.replicas, 1);
    assert_eq!(app.port, 8080);
    assert_eq!(app.health_check_path, "/");
    assert_eq!(app.min_ready_seconds, 0);
    assert_eq!(app.deployment_strategy, DeploymentStrategy::Rolling);
    assert_eq!(app.stop_timeout, 20);
}

#[test]
fn image_omitted_means_build_named_after_app() {
    let app = &resolve("name: web\n").unwrap()[0];
    assert_eq!(app.image.repository, "web");
    assert_eq!(app.image.tag, "latest");
    assert!(app.image.build);
}

#[test]
fn targets_merge_over_root() {
    let apps = resolve(
        r#"
name: app
replicas: 2
image:
  repository: reg.example.com/app
  tag: v1
env:
  - name: A
    value: root-a
  - name: B
    value: root-b
targets:
  production:
    server: prod.example.com
    replicas: 10
    image:
      tag: v2
    env:
      - name: B
        value: prod-b
      - name: C
        value: prod-c
  staging:
    name: app-staging
    server: staging.example.com
"#,
    )
    .unwrap();
    let prod = &apps[0];
    assert_eq!(prod.target.as_deref(), Some("production"));
    // As in Haloy, a target without its own `name` is named after its key.
    assert_eq!(prod.name, "production");
    assert_eq!(prod.replicas, 10);
    assert_eq!(prod.image.reference(), "reg.example.com/app:v2");
    let env: Vec<(&str, &str)> = prod
        .env
        .iter()
        .map(|e| (e.name.as_str(), e.value.as_str()))
        .collect();
    assert_eq!(env, [("A", "root-a"), ("B", "prod-b"), ("C", "prod-c")]);
    let staging = &apps[1];
    assert_eq!(staging.name, "app-staging");
    assert_eq!(staging.replicas, 2);
    assert_eq!(staging.image.tag, "v1");
}

#[test]
fn target_name_defaults_to_key_without_root_name() {
    let apps = resolve("targets:\n  api:\n    server: a.example.com\n").unwrap();
    assert_eq!(apps[0].name, "api");
}

#[test]
fn image_key_picks_from_images() {
    let apps = resolve(
        "images:\n  web:\n    repository: r/web\n    tag: v3\ntargets:\n  a:\n    image_key: web\n",
    )
    .unwrap();
    assert_eq!(apps[0].image.reference(), "r/web:v3");
    let err = resolve("images:\n  web: r/web\ntargets:\n  a:\n    image_key: wbe\n").unwrap_err();
    assert_eq!(
        err,
        ["haloy.yaml:5:16: targets.a.image_key: `wbe` is not defined under `images`; did you mean `web`?"]
    );
}

#[test]
fn every_problem_is_reported_with_position() {
    let err = resolve(
        "name: app\nreplicas: 0\nhelth_check_path: /x\nport: 70000\nmin_ready_seconds: 601\ndomains:\n  - domain: bad_host.com\n",
    )
    .unwrap_err();
    assert_eq!(
        err,
        [
            "haloy.yaml:2:11: replicas: 0 is out of range; must be between 1 and 1000",
            "haloy.yaml:3:1: helth_check_path: unknown key `helth_check_path`; did you mean `health_check_path`?",
            "haloy.yaml:4:7: port: 70000 is out of range; must be between 1 and 65535",
            "haloy.yaml:5:20: min_ready_seconds: 601 is out of range; must be between 0 and 600",
            "haloy.yaml:7:13: domains[0].domain: `bad_host.com` is not a valid host name (character `_` is not allowed; use letters, digits, `-` and `.`)",
        ]
    );
}

#[test]
fn duplicate_domains_and_aliases() {
    let err = resolve(
        "name: app\ndomains:\n  - domain: A.example.com\n    aliases: [www.example.com]\n  - domain: a.example.com\n    aliases: [www.example.com]\n",
    )
    .unwrap_err();
    assert_eq!(err.len(), 2, "{err:?}");
    assert!(err[0].starts_with("haloy.yaml:5:13: domains[1].domain: `a.example.com` is listed more than once (first at 3:13 as domains[0].domain)"));
    assert!(err[1].starts_with("haloy.yaml:6:15: domains[1].aliases[0]:"));
}

#[test]
fn value_sources_and_interpolation() {
    let env = HashMap::from([("DB_PASS".to_string(), "s3cret".to_string())]);
    let apps = resolve_with(
        "name: app\napi_token:\n  from:\n    env: DB_PASS\nenv:\n  - name: PASS\n    from:\n      env: DB_PASS\n  - name: URL\n    value: postgres://u:${PASS}@db/x\n",
        Format::Yaml,
        &env,
    )
    .unwrap();
    assert_eq!(apps[0].env[1].value, "postgres://u:s3cret@db/x");
    assert_eq!(apps[0].api_token.as_ref().unwrap().expose(), "s3cret");
    let json = serde_json::to_string(&apps[0]).unwrap();
    assert!(!json.contains("api_token"));
}

#[test]
fn missing_env_secret_and_cycle() {
    let err = resolve(
        "name: app\nenv:\n  - name: A\n    from: {env: NOPE_NOT_SET}\n  - name: B\n    from: {secret: 'op:x'}\n  - name: C\n    value: ${D}\n  - name: D\n    value: ${C}\n",
    )
    .unwrap_err();
    assert_eq!(err.len(), 3, "{err:?}");
    assert!(err[0].contains("env[0]: environment variable `NOPE_NOT_SET` is not set"));
    assert!(
        err[1].contains("env[1]: found `from.secret: op:x` but no `secret_providers` block"),
        "{err:?}"
    );
    assert!(err[2].contains("env references form a cycle"), "{err:?}");
}

#[test]
fn dotenv_files_feed_from_env() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), "TOKEN=base\nOTHER=o\n").unwrap();
    std::fs::write(dir.path().join(".env.prod"), "TOKEN=prod\n").unwrap();
    let text = "name: a\nenv:\n  - name: T\n    from: {env: TOKEN}\n  - name: O\n    from: {env: OTHER}\ntargets:\n  prod:\n    server: p.example.com\n  dev:\n    server: d.example.com\n";
    let (apps, _) = resolve_text(
        text,
        Format::Yaml,
        "haloy.yaml",
        dir.path(),
        &HashMap::new(),
    )
    .unwrap();
    assert_eq!(apps[0].env[0].value, "prod");
    assert_eq!(apps[1].env[0].value, "base");
    assert_eq!(apps[1].env[1].value, "o");
}

#[test]
fn volumes_and_resources() {
    let app = &resolve(
        "name: a\nvolumes: ['/srv/data:/data:ro', 'cache:/cache']\nresources: {memory: 512Mi, cpus: 0.5}\nstop_timeout: 5\n",
    )
    .unwrap()[0];
    assert_eq!(app.volumes.len(), 2);
    assert_eq!(
        app.resources,
        Some(Resources {
            memory_bytes: Some(512 << 20),
            cpus: Some(0.5),
            pids: None,
        })
    );
    assert_eq!(app.stop_timeout, 5);
    let err = resolve("name: a\nvolumes: ['./data:/data']\n").unwrap_err();
    assert!(
        err[0].starts_with("haloy.yaml:2:11: volumes[0]: host path `./data`"),
        "{err:?}"
    );
}

#[test]
fn preset_database_defaults() {
    let app = &resolve("name: db\nimage: postgres:16\npreset: database\n").unwrap()[0];
    assert_eq!(app.deployment_strategy, DeploymentStrategy::Replace);
    assert_eq!(app.naming_strategy, NamingStrategy::Static);
    assert!(app.protected);
    assert_eq!(app.image.history.strategy, HistoryStrategy::None);
    let err = resolve("name: db\nnaming_strategy: static\nreplicas: 2\n").unwrap_err();
    assert_eq!(err.len(), 2, "{err:?}");
}

#[test]
fn wrong_types() {
    let err = resolve("name: a\nreplicas: three\nprotected: yes\ndomains: x.com\n").unwrap_err();
    assert_eq!(
        err,
        [
            "haloy.yaml:2:11: replicas: expected an integer, found a string",
            "haloy.yaml:3:12: protected: expected true or false, found a string",
            "haloy.yaml:4:10: domains: expected a list, found a string",
        ]
    );
}

#[test]
fn json_and_toml_positions() {
    let err = resolve_with(
        "{\n  \"name\": \"a\",\n  \"replicas\": 0\n}",
        Format::Json,
        &HashMap::new(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        ["haloy.yaml:3:15: replicas: 0 is out of range; must be between 1 and 1000"]
    );
    let err = resolve_with(
        "name = \"a\"\n[targets.prod]\nreplica = 2\n",
        Format::Toml,
        &HashMap::new(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        ["haloy.yaml:3:1: targets.prod.replica: unknown key `replica`; did you mean `replicas`?"]
    );
    let err = resolve_with("name = \n", Format::Toml, &HashMap::new()).unwrap_err();
    assert!(err[0].starts_with("haloy.yaml:1:"), "{err:?}");
}

#[test]
fn missing_name() {
    let err = resolve("replicas: 2\n").unwrap_err();
    assert_eq!(err, ["haloy.yaml:1:1: name: missing required key `name`"]);
}

#[test]
fn root_only_keys_in_a_target() {
    let err = resolve("name: a\ntargets:\n  p:\n    images: {}\n").unwrap_err();
    assert_eq!(
        err,
        ["haloy.yaml:4:5: targets.p.images: `images` is only allowed at the top level"]
    );
}

#[test]
fn target_names_are_checked() {
    let err = resolve("targets:\n  \"bad key\":\n    server: a.example.com\n").unwrap_err();
    assert!(
        err[0].starts_with("haloy.yaml:2:3: targets.bad key: `bad key` is not a valid app name"),
        "{err:?}"
    );
    let err = resolve("targets:\n  a:\n    name: app\n  b:\n    name: app\n").unwrap_err();
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(
        err[0].contains("targets.b.name: app `app` on the same server is already deployed by target `a`; give this target its own `name` or `server`"),
        "{err:?}"
    );
}

#[test]
fn arbitrary_input_never_panics() {
    use rand::{Rng, SeedableRng};
    let pieces = [
        "name", ": ", "\n", "  ", "- ", "{", "}", "[", "]", "\"", "'", ",", "=", "targets", "env",
        "${A}", "value", "from", "é", "\t", "#", "&a ", "*a", "<<", "0x", "1.5", "[[x]]", "\\u12",
        "domains", "domain", "image", ":", "-", "null", "true",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..3000 {
        let n = rng.random_range(0..40);
        let text: String = (0..n)
            .map(|_| pieces[rng.random_range(0..pieces.len())])
            .collect();
        for format in [Format::Yaml, Format::Json, Format::Toml] {
            let _ = resolve_text(&text, format, "f", dir.path(), &HashMap::new());
        }
        let _ = ServerConfig::parse(&text, "f");
    }
}

#[test]
fn resolved_app_round_trips_as_json() {
    let env = HashMap::from([("PW".to_string(), "pw".to_string())]);
    let apps = resolve_with(
        "name: a\napi_token: secret-token\nimage:\n  repository: ghcr.io/o/a\n  tag: v1\n  registry:\n    username: u\n    password: {from: {env: PW}}\nvolumes: ['/srv:/srv:ro', 'data:/data']\nresources: {memory: 1G, cpus: 2}\n",
        Format::Yaml,
        &env,
    )
    .unwrap();
    let json = serde_json::to_string(&apps[0]).unwrap();
    assert!(!json.contains("secret-token"));
    assert!(json.contains(r#""kind":"bind""#), "{json}");
    let back: ResolvedApp = serde_json::from_str(&json).unwrap();
    let mut expected = apps[0].clone();
    expected.api_token = None;
    assert_eq!(back, expected);
    assert_eq!(back.image.registry.unwrap().server, "ghcr.io");
    assert!(!format!("{:?}", apps[0]).contains("secret-token"));
}

#[test]
fn resolved_apps_validate_themselves() {
    let apps = resolve(
        "name: a\nimage: r/a:v1\ndomains: [{domain: a.example.com}]\nvolumes: ['data:/data']\n",
    )
    .unwrap();
    assert!(apps[0].problems().is_empty(), "{:?}", apps[0].problems());
    let mut bad = apps[0].clone();
    bad.replicas = 0;
    bad.health_check_path = "x".into();
    bad.domains.push(DomainSpec {
        domain: "a.example.com".into(),
        aliases: vec!["Bad_Host".into()],
    });
    bad.volumes.push(VolumeSpec::Bind {
        host: "rel/path".into(),
        container: "/x".into(),
        read_only: false,
    });
    assert_eq!(
        bad.problems(),
        [
            "replicas: 0 is out of range; must be between 1 and 1000",
            "health_check_path: `x` must start with `/`",
            "domains[1].domain: `a.example.com` is listed more than once",
            "domains[1].aliases[0]: `Bad_Host` is not a valid host name (character `_` is not allowed; use letters, digits, `-` and `.`)",
            "volumes[1]: host path `rel/path` in `rel/path:/x` is relative; bind mounts need an absolute path (or use a bare name for a named volume)",
        ]
    );
}

#[test]
fn security_and_pids_keys() {
    let apps = resolve(
        "name: a\nimage: r/a\nresources: {pids: 256}\nsecurity:\n  seccomp: unconfined\ntargets:\n  one: {}\n  two:\n    name: b\n    security: {seccomp: default}\n",
    )
    .unwrap();
    assert_eq!(apps[0].security.seccomp, SeccompMode::Unconfined);
    assert_eq!(apps[1].security.seccomp, SeccompMode::Default);
    assert_eq!(apps[0].resources.as_ref().unwrap().pids, Some(256));
    let plain = &resolve("name: a\nimage: r/a\n").unwrap()[0];
    assert_eq!(plain.security, AppSecurity::default());
    assert_eq!(plain.security.seccomp, SeccompMode::Default);

    let err = resolve(
        "name: a\nimage: r/a\nsecurity:\n  seccomp: off\n  apparmor: x\nresources: {pids: 0}\n",
    )
    .unwrap_err();
    assert_eq!(err.len(), 3, "{err:?}");
    let joined = err.join("\n");
    assert!(
        joined.contains("haloy.yaml:4:12: security.seccomp:"),
        "{joined}"
    );
    assert!(
        joined.contains("haloy.yaml:5:3: security.apparmor: unknown key"),
        "{joined}"
    );
    assert!(
        joined.contains("haloy.yaml:6:19: resources.pids: 0 is out of range"),
        "{joined}"
    );
}

#[test]
fn configs_from_older_clients_get_the_default_security() {
    let app = &resolve("name: a\nimage: r/a\n").unwrap()[0];
    let mut json = serde_json::to_value(app).unwrap();
    json.as_object_mut().unwrap().remove("security");
    let back: ResolvedApp = serde_json::from_value(json).unwrap();
    assert_eq!(back.security.seccomp, SeccompMode::Default);
    let mut problems_app = app.clone();
    problems_app.resources = Some(Resources {
        pids: Some(0),
        ..Default::default()
    });
    assert!(problems_app
        .problems()
        .iter()
        .any(|p| p.starts_with("resources.pids: 0 is out of range")));
}

#[test]
fn env_names_are_checked_in_the_file_and_in_a_received_config() {
    let err =
        resolve("name: a\nimage: r/a:v1\nenv:\n  - name: BAD=NAME\n    value: x\n").unwrap_err();
    assert_eq!(
        err,
        ["haloy.yaml:4:11: env[0].name: `BAD=NAME` is not a valid environment variable name; use printable ASCII without `=` (e.g. `DATABASE_URL`)"]
    );
    // The API gets resolved JSON and must not trust the CLI to have checked.
    let mut app = resolve("name: a\nimage: r/a:v1\n").unwrap().remove(0);
    for (name, _) in [("BAD=NAME", ""), ("", ""), ("NUL\0X", ""), ("SP ACE", "")] {
        app.env = vec![EnvVar {
            name: name.into(),
            value: "x".into(),
        }];
        let problems = app.validate_for_deploy();
        assert_eq!(problems.len(), 1, "{name:?}: {problems:?}");
        assert!(problems[0].starts_with("env[0].name: "), "{problems:?}");
    }
    app.env = vec![EnvVar {
        name: "spring.datasource.url".into(),
        value: "x".into(),
    }];
    assert!(app.validate_for_deploy().is_empty());
}

#[test]
fn app_names_haloyd_uses_itself_are_refused() {
    for name in ["haloyd-api", "haloyd", "HALOYD-x", "haloyd_api"] {
        let err = resolve(&format!("name: {name}\nimage: r/a:v1\n")).unwrap_err();
        let expected = format!("haloy.yaml:1:7: name: `{name}` is reserved for haloyd itself (names starting with `haloyd`); pick another app name");
        assert!(err.contains(&expected), "{name}: {err:?}");
        let mut app = resolve("name: a\nimage: r/a:v1\n").unwrap().remove(0);
        app.name = name.into();
        assert_eq!(
            app.validate_for_deploy(),
            [format!("name: `{name}` is reserved for haloyd itself (names starting with `haloyd`); pick another app name")]
        );
    }
    assert!(resolve("name: haloy-web\nimage: r/a:v1\n").is_ok());
}

#[test]
fn init_is_off_by_default_set_per_target_and_checked() {
    let app = &resolve("name: a\n").unwrap()[0];
    assert!(!app.init);
    let apps = resolve(
        "name: a\ninit: true\ntargets:\n  one: {server: one.example.com}\n  two: {server: two.example.com, init: false}\n",
    )
    .unwrap();
    let inits: Vec<bool> = apps.iter().map(|a| a.init).collect();
    assert_eq!(inits, [true, false]);
    let err = resolve("name: a\ninit: sometimes\n").unwrap_err();
    assert!(err[0].starts_with("haloy.yaml:2:7: init:"), "{err:?}");
}

#[test]
fn network_names_are_kept_and_docker_special_networks_refused() {
    let app = &resolve("name: web\nimage: nginx:1\nnetwork: billing\n").unwrap()[0];
    assert_eq!(app.network.as_deref(), Some("billing"));
    let problems = resolve("name: web\nimage: nginx:1\nnetwork: host\n").unwrap_err();
    assert!(
        problems[0].contains("network: Docker's `host` network does not exist here"),
        "{problems:?}"
    );
    let problems = resolve("name: web\nimage: nginx:1\nnetwork: a/b\n").unwrap_err();
    assert!(
        problems[0].contains("`a/b` is not a network name"),
        "{problems:?}"
    );
}
