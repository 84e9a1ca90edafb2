//! The Haloy-compatible deploy config (haloy.yaml/.yml/.json/.toml): decoding of the root and
//! each `targets:` entry into layers, the target-over-root merge (scalars replace, `env` merges
//! by name, `image` merges field by field), presets, defaults, value sources and validation into
//! one `ResolvedApp` per target.

use super::decode::{index, join, Decoder};
use super::env::{interpolate, EnvSources, PendingEnv};
use super::limits;
use super::resolved::*;
use super::tree::{Node, Pos};
use super::values;
use std::collections::HashMap;
use std::path::Path;

/// Keys allowed at the top level and inside every target.
pub const TARGET_KEYS: &[&str] = &[
    "name",
    "server",
    "api_token",
    "image",
    "image_key",
    "replicas",
    "port",
    "health_check_path",
    "min_ready_seconds",
    "deployment_strategy",
    "naming_strategy",
    "domains",
    "env",
    "volumes",
    "network",
    "pre_deploy",
    "post_deploy",
    "protected",
    "preset",
    "acme_email",
    "resources",
    "security",
    "stop_timeout",
    "init",
];
/// Keys allowed only at the top level.
pub const ROOT_ONLY_KEYS: &[&str] = &[
    "images",
    "targets",
    "global_pre_deploy",
    "global_post_deploy",
    "secret_providers",
];
const IMAGE_KEYS: &[&str] = &[
    "repository",
    "tag",
    "pull_policy",
    "registry",
    "history",
    "build",
    "build_config",
];
const DEFAULT_STOP_TIMEOUT: u32 = 20;
const DEFAULT_HISTORY_COUNT: u32 = 6;

/// A value with the place it came from.
#[derive(Debug, Clone)]
struct Sp<T> {
    v: T,
    pos: Pos,
    path: String,
}

#[derive(Debug, Clone)]
enum Source {
    Value(String),
    Env(String),
    Secret(String),
}

#[derive(Debug, Clone)]
struct RawRegistry {
    server: Option<String>,
    username: Option<Sp<Source>>,
    password: Option<Sp<Source>>,
    pos: Pos,
    path: String,
}

#[derive(Debug, Clone)]
struct RawHistory {
    strategy: Option<HistoryStrategy>,
    count: Option<u32>,
    pattern: Option<String>,
    pos: Pos,
    path: String,
}

#[derive(Debug, Clone, Default)]
struct RawBuildConfig {
    context: Option<String>,
    dockerfile: Option<String>,
    platform: Option<String>,
    args: Vec<RawEnv>,
    push: Option<String>,
}

#[derive(Debug, Clone)]
struct RawImage {
    repository: Option<String>,
    tag: Option<String>,
    digest: Option<String>,
    pull_policy: Option<PullPolicy>,
    registry: Option<RawRegistry>,
    history: Option<RawHistory>,
    build: Option<bool>,
    build_config: Option<RawBuildConfig>,
    pos: Pos,
    path: String,
}

#[derive(Debug, Clone)]
struct RawEnv {
    name: String,
    source: Option<Source>,
    pos: Pos,
    path: String,
    /// `build_arg: true`: also passed to the build of the app's image (Haloy).
    build_arg: bool,
}

#[derive(Debug, Clone)]
struct RawDomain {
    domain: Sp<String>,
    aliases: Vec<Sp<String>>,
}

/// Everything one level (root or target) may set; `None` = not set here.
#[derive(Debug, Clone, Default)]
struct Layer {
    name: Option<Sp<String>>,
    server: Option<String>,
    api_token: Option<Sp<Source>>,
    image: Option<RawImage>,
    image_key: Option<Sp<String>>,
    replicas: Option<u32>,
    port: Option<u16>,
    health_check_path: Option<String>,
    min_ready_seconds: Option<u32>,
    deployment_strategy: Option<Sp<DeploymentStrategy>>,
    naming_strategy: Option<Sp<NamingStrategy>>,
    domains: Option<Vec<RawDomain>>,
    env: Option<Vec<RawEnv>>,
    volumes: Option<Vec<VolumeSpec>>,
    network: Option<String>,
    pre_deploy: Option<Vec<String>>,
    post_deploy: Option<Vec<String>>,
    protected: Option<bool>,
    preset: Option<Preset>,
    acme_email: Option<String>,
    resources: Option<Resources>,
    security: Option<AppSecurity>,
    stop_timeout: Option<u32>,
    init: Option<bool>,
}

struct Root {
    layer: Layer,
    images: HashMap<String, RawImage>,
    targets: Vec<(String, Pos, Layer)>,
    global_pre_deploy: Vec<String>,
    global_post_deploy: Vec<String>,
    secret_providers: Option<super::secrets::SecretProviders>,
    /// Set by `resolve_document` from `secret_providers`.
    secrets: Option<std::sync::Arc<super::secrets::SecretResolver>>,
}

fn decode_root(dec: &mut Decoder, node: &Node) -> Root {
    let mut root = Root {
        layer: Layer::default(),
        images: HashMap::new(),
        targets: Vec::new(),
        global_pre_deploy: Vec::new(),
        global_post_deploy: Vec::new(),
        secret_providers: None,
        secrets: None,
    };
    let known: Vec<&str> = TARGET_KEYS.iter().chain(ROOT_ONLY_KEYS).copied().collect();
    if node.value == super::tree::Value::Null {
        return root;
    }
    for (key, entry) in dec.map(node, "", &known) {
        let v = &entry.value;
        match key.as_str() {
            "images" => {
                for e in dec.free_map(v, "images") {
                    let path = join("images", &e.key);
                    if let Some(img) = decode_image(dec, &e.value, &path) {
                        root.images.insert(e.key.clone(), img);
                    }
                }
            }
            "targets" => {
                let entries = dec.free_map(v, "targets");
                if entries.is_empty() && matches!(v.value, super::tree::Value::Map(_)) {
                    dec.problem(v.pos, "targets", "has no targets; remove it or add one");
                }
                for e in entries {
                    let path = join("targets", &e.key);
                    let layer = decode_layer(dec, &e.value, &path);
                    root.targets.push((e.key.clone(), e.key_pos, layer));
                }
            }
            "global_pre_deploy" => root.global_pre_deploy = dec.string_list(v, &key),
            "global_post_deploy" => root.global_post_deploy = dec.string_list(v, &key),
            "secret_providers" => {
                root.secret_providers = Some(super::secrets::decode(dec, v, &key));
            }
            _ => decode_layer_key(dec, &mut root.layer, &key, v, &key),
        }
    }
    root
}

fn decode_layer(dec: &mut Decoder, node: &Node, path: &str) -> Layer {
    let mut layer = Layer::default();
    if node.value == super::tree::Value::Null {
        return layer;
    }
    let misplaced = [
        ("images", "`images` is only allowed at the top level"),
        ("targets", "targets cannot be nested"),
        (
            "global_pre_deploy",
            "`global_pre_deploy` is only allowed at the top level",
        ),
        (
            "global_post_deploy",
            "`global_post_deploy` is only allowed at the top level",
        ),
        (
            "secret_providers",
            "`secret_providers` is only allowed at the top level",
        ),
    ];
    for (key, entry) in dec.map_hinted(node, path, TARGET_KEYS, &misplaced) {
        let key_path = join(path, &key);
        decode_layer_key(dec, &mut layer, &key, &entry.value, &key_path);
    }
    layer
}

fn decode_layer_key(dec: &mut Decoder, l: &mut Layer, key: &str, v: &Node, path: &str) {
    let sp = |s: String| Sp {
        v: s,
        pos: v.pos,
        path: path.to_string(),
    };
    match key {
        "name" => {
            l.name = dec
                .parsed(v, path, |n| values::check_app_name(&n).map(|()| n))
                .map(sp)
        }
        "server" => l.server = dec.parsed_word(v, path, |s| values::check_server(&s).map(|()| s)),
        "api_token" => l.api_token = decode_source(dec, v, path),
        "image" => l.image = decode_image(dec, v, path),
        "image_key" => l.image_key = dec.word(v, path).map(sp),
        "replicas" => l.replicas = dec.int_limit(v, path, &limits::REPLICAS),
        "port" => l.port = dec.int_limit(v, path, &limits::PORT),
        "health_check_path" => {
            l.health_check_path = dec.parsed(v, path, |p| {
                if p.starts_with('/') {
                    Ok(p)
                } else {
                    Err(format!("`{p}` must start with `/`"))
                }
            })
        }
        "min_ready_seconds" => {
            l.min_ready_seconds = dec.int_limit(v, path, &limits::MIN_READY_SECONDS)
        }
        "deployment_strategy" => {
            let choices = [
                ("rolling", DeploymentStrategy::Rolling),
                ("replace", DeploymentStrategy::Replace),
            ];
            l.deployment_strategy = dec
                .one_of(v, path, &choices)
                .map(|s| positioned(s, v, path))
        }
        "naming_strategy" => {
            let choices = [
                ("dynamic", NamingStrategy::Dynamic),
                ("static", NamingStrategy::Static),
            ];
            l.naming_strategy = dec
                .one_of(v, path, &choices)
                .map(|s| positioned(s, v, path))
        }
        "domains" => l.domains = Some(decode_domains(dec, v, path)),
        "env" => l.env = Some(decode_env_list(dec, v, path)),
        "volumes" => {
            let items = dec.seq(v, path);
            let mut vols = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let p = index(path, i);
                if let Some(s) = dec.string(item, &p) {
                    match values::parse_volume(&s) {
                        Ok(vol) => vols.push(vol),
                        Err(e) => dec.problem(item.pos, &p, e),
                    }
                }
            }
            l.volumes = Some(vols);
        }
        "network" => l.network = network_name(dec, v, path),
        "pre_deploy" => l.pre_deploy = Some(dec.string_list(v, path)),
        "post_deploy" => l.post_deploy = Some(dec.string_list(v, path)),
        "protected" => l.protected = dec.bool(v, path),
        "preset" => {
            let choices = [("database", Preset::Database), ("service", Preset::Service)];
            l.preset = dec.one_of(v, path, &choices)
        }
        "acme_email" => {
            l.acme_email = dec.parsed_word(v, path, |e| {
                if e.contains('@') {
                    Ok(e)
                } else {
                    Err(format!("`{e}` is not an email address"))
                }
            })
        }
        "resources" => l.resources = decode_resources(dec, v, path),
        "security" => l.security = Some(decode_security(dec, v, path)),
        "stop_timeout" => l.stop_timeout = dec.int_limit(v, path, &limits::STOP_TIMEOUT),
        "init" => l.init = dec.bool(v, path),
        _ => {}
    }
}

/// A decoded value with the place it was written, for problems found later (merge, resolve).
fn positioned<T>(v: T, node: &Node, path: &str) -> Sp<T> {
    Sp {
        v,
        pos: node.pos,
        path: path.to_string(),
    }
}

fn decode_source(dec: &mut Decoder, node: &Node, path: &str) -> Option<Sp<Source>> {
    // A plain string is a literal value; a map is `{value}` or `{from: {env|secret}}`.
    if let Some(s) = node.scalar_text() {
        return Some(Sp {
            v: Source::Value(s),
            pos: node.pos,
            path: path.to_string(),
        });
    }
    let entries = dec.map(node, path, &["value", "from"]);
    decode_value_or_from(dec, &entries, node.pos, path)
}

fn decode_value_or_from(
    dec: &mut Decoder,
    entries: &[(String, &super::tree::Entry)],
    pos: Pos,
    path: &str,
) -> Option<Sp<Source>> {
    let value = entries.iter().find(|(k, _)| k == "value");
    let from = entries.iter().find(|(k, _)| k == "from");
    let source = match (value, from) {
        (Some(_), Some((_, f))) => {
            dec.problem(
                f.key_pos,
                &join(path, "from"),
                "give either `value` or `from`, not both",
            );
            return None;
        }
        (None, None) => {
            dec.problem(pos, path, "missing `value` or `from`");
            return None;
        }
        (Some((_, v)), None) => Source::Value(dec.string(&v.value, &join(path, "value"))?),
        (None, Some((_, f))) => {
            let fpath = join(path, "from");
            let inner = dec.map(&f.value, &fpath, &["env", "secret"]);
            match inner.as_slice() {
                [(k, e)] => {
                    let name = dec.word(&e.value, &join(&fpath, k))?;
                    if k == "env" {
                        Source::Env(name)
                    } else {
                        Source::Secret(name)
                    }
                }
                [] => {
                    dec.problem(f.value.pos, &fpath, "expected `env: NAME` or `secret: REF`");
                    return None;
                }
                _ => {
                    dec.problem(f.value.pos, &fpath, "give only one of `env` and `secret`");
                    return None;
                }
            }
        }
    };
    Some(Sp {
        v: source,
        pos,
        path: path.to_string(),
    })
}

fn decode_env_list(dec: &mut Decoder, node: &Node, path: &str) -> Vec<RawEnv> {
    let mut out: Vec<RawEnv> = Vec::new();
    for (i, item) in dec.seq(node, path).iter().enumerate() {
        let p = index(path, i);
        let entries = dec.map(item, &p, &["name", "value", "from", "build_arg"]);
        if entries.is_empty() && !matches!(item.value, super::tree::Value::Map(_)) {
            continue;
        }
        let name = match entries.iter().find(|(k, _)| k == "name") {
            Some((_, e)) => {
                let path = join(&p, "name");
                dec.word(&e.value, &path)
                    .and_then(|n| match values::check_env_name(&n) {
                        Ok(()) => Some(n),
                        Err(m) => {
                            dec.problem(e.value.pos, &path, m);
                            None
                        }
                    })
            }
            None => {
                dec.problem(item.pos, &p, "missing `name`");
                None
            }
        };
        let source = decode_value_or_from(dec, &entries, item.pos, &p);
        let Some(name) = name else { continue };
        if out.iter().any(|e| e.name == name) {
            dec.problem(
                item.pos,
                &p,
                format!("env `{name}` is defined more than once; keep one entry (Haloy would use the last one)"),
            );
            continue;
        }
        let build_arg = entries
            .iter()
            .find(|(k, _)| k == "build_arg")
            .and_then(|(_, e)| dec.bool(&e.value, &join(&p, "build_arg")))
            .unwrap_or(false);
        out.push(RawEnv {
            name,
            source: source.map(|s| s.v),
            pos: item.pos,
            path: p,
            build_arg,
        });
    }
    out
}

fn decode_domains(dec: &mut Decoder, node: &Node, path: &str) -> Vec<RawDomain> {
    let mut out = Vec::new();
    for (i, item) in dec.seq(node, path).iter().enumerate() {
        let p = index(path, i);
        // Haloy only knows the map form; a bare string is accepted as a convenience.
        if item.scalar_text().is_some() {
            if let Some(d) = hostname(dec, item, &p) {
                out.push(RawDomain {
                    domain: d,
                    aliases: Vec::new(),
                });
            }
            continue;
        }
        let entries = dec.map(item, &p, &["domain", "aliases"]);
        let mut domain = None;
        let mut aliases = Vec::new();
        for (k, e) in &entries {
            let kp = join(&p, k);
            if k == "domain" {
                domain = hostname(dec, &e.value, &kp);
            } else {
                for (j, a) in dec.seq(&e.value, &kp).iter().enumerate() {
                    if let Some(h) = hostname(dec, a, &index(&kp, j)) {
                        aliases.push(h);
                    }
                }
            }
        }
        if !entries.iter().any(|(k, _)| k == "domain")
            && matches!(item.value, super::tree::Value::Map(_))
        {
            dec.problem(item.pos, &p, "missing `domain`");
        }
        if let Some(domain) = domain {
            out.push(RawDomain { domain, aliases });
        }
    }
    out
}

fn hostname(dec: &mut Decoder, node: &Node, path: &str) -> Option<Sp<String>> {
    let s = dec.string(node, path)?;
    match values::normalize_domain(&s) {
        Ok(h) => Some(Sp {
            v: h,
            pos: node.pos,
            path: path.to_string(),
        }),
        Err(e) => {
            dec.problem(node.pos, path, e);
            None
        }
    }
}

fn decode_resources(dec: &mut Decoder, node: &Node, path: &str) -> Option<Resources> {
    let mut r = Resources::default();
    for (k, e) in dec.map(node, path, &["memory", "cpus", "pids"]) {
        let kp = join(path, &k);
        let v = &e.value;
        if k == "pids" {
            r.pids = dec.int_limit(v, &kp, &limits::PIDS);
        } else if k == "memory" {
            if let Some(s) = dec.string(v, &kp) {
                match values::parse_byte_size(&s) {
                    Ok(b) if b >= 4 << 20 => r.memory_bytes = Some(b),
                    Ok(_) => dec.problem(v.pos, &kp, format!("`{s}` is below the 4Mi minimum")),
                    Err(m) => dec.problem(v.pos, &kp, m),
                }
            }
        } else if let Some(c) = dec.float(v, &kp) {
            if c > 0.0 && c <= 1024.0 {
                r.cpus = Some(c);
            } else {
                dec.problem(v.pos, &kp, format!("{c} is out of range; must be above 0"));
            }
        }
    }
    Some(r)
}

fn decode_security(dec: &mut Decoder, node: &Node, path: &str) -> AppSecurity {
    let mut s = AppSecurity::default();
    for (k, e) in dec.map(node, path, &["seccomp"]) {
        let kp = join(path, &k);
        let choices = [
            ("default", SeccompMode::Default),
            ("unconfined", SeccompMode::Unconfined),
        ];
        if let Some(mode) = dec.one_of(&e.value, &kp, &choices) {
            s.seccomp = mode;
        }
    }
    s
}

fn decode_image(dec: &mut Decoder, node: &Node, path: &str) -> Option<RawImage> {
    let mut img = RawImage {
        repository: None,
        tag: None,
        digest: None,
        pull_policy: None,
        registry: None,
        history: None,
        build: None,
        build_config: None,
        pos: node.pos,
        path: path.to_string(),
    };
    if let super::tree::Value::Str(s) = &node.value {
        match values::split_image_ref(s) {
            Ok((repo, tag, digest)) => {
                img.repository = Some(repo);
                img.tag = tag;
                img.digest = digest;
                return Some(img);
            }
            Err(e) => {
                dec.problem(node.pos, path, e);
                return None;
            }
        }
    }
    for (k, e) in dec.map(node, path, IMAGE_KEYS) {
        let kp = join(path, &k);
        let v = &e.value;
        match k.as_str() {
            "repository" => {
                img.repository = dec
                    .word(v, &kp)
                    .and_then(|r| match values::split_image_ref(&r) {
                        Ok((repo, tag, digest)) => {
                            // `repository: app:v1` is how Haloy users often write it.
                            if let Some(tag) = tag {
                                img.tag.get_or_insert(tag);
                            }
                            img.digest = digest;
                            Some(repo)
                        }
                        Err(m) => {
                            dec.problem(v.pos, &kp, m);
                            None
                        }
                    })
            }
            "tag" => img.tag = dec.word(v, &kp),
            "pull_policy" => {
                let choices = [
                    ("always", PullPolicy::Always),
                    ("if_missing", PullPolicy::IfMissing),
                    ("never", PullPolicy::Never),
                ];
                img.pull_policy = dec.one_of(v, &kp, &choices)
            }
            "registry" => img.registry = decode_registry(dec, v, &kp),
            "history" => img.history = decode_history(dec, v, &kp),
            "build" => img.build = dec.bool(v, &kp),
            "build_config" => img.build_config = decode_build_config(dec, v, &kp),
            _ => {}
        }
    }
    Some(img)
}

fn decode_registry(dec: &mut Decoder, node: &Node, path: &str) -> Option<RawRegistry> {
    let mut reg = RawRegistry {
        server: None,
        username: None,
        password: None,
        pos: node.pos,
        path: path.to_string(),
    };
    for (k, e) in dec.map(node, path, &["server", "username", "password"]) {
        let kp = join(path, &k);
        match k.as_str() {
            "server" => reg.server = dec.word(&e.value, &kp),
            "username" => reg.username = decode_source(dec, &e.value, &kp),
            _ => reg.password = decode_source(dec, &e.value, &kp),
        }
    }
    Some(reg)
}

fn decode_history(dec: &mut Decoder, node: &Node, path: &str) -> Option<RawHistory> {
    let mut h = RawHistory {
        strategy: None,
        count: None,
        pattern: None,
        pos: node.pos,
        path: path.to_string(),
    };
    for (k, e) in dec.map(node, path, &["strategy", "count", "pattern"]) {
        let kp = join(path, &k);
        match k.as_str() {
            "strategy" => {
                let choices = [
                    ("local", HistoryStrategy::Local),
                    ("registry", HistoryStrategy::Registry),
                    ("none", HistoryStrategy::None),
                ];
                h.strategy = dec.one_of(&e.value, &kp, &choices)
            }
            "count" => h.count = dec.int_limit(&e.value, &kp, &limits::HISTORY_COUNT),
            _ => h.pattern = dec.string(&e.value, &kp),
        }
    }
    Some(h)
}

fn decode_build_config(dec: &mut Decoder, node: &Node, path: &str) -> Option<RawBuildConfig> {
    let mut b = RawBuildConfig::default();
    let keys = ["context", "dockerfile", "platform", "args", "push"];
    for (k, e) in dec.map(node, path, &keys) {
        let kp = join(path, &k);
        match k.as_str() {
            "context" => b.context = dec.word(&e.value, &kp),
            "dockerfile" => b.dockerfile = dec.word(&e.value, &kp),
            "platform" => b.platform = dec.word(&e.value, &kp),
            "args" => b.args = decode_env_list(dec, &e.value, &kp),
            _ => b.push = dec.choice(&e.value, &kp, &["server", "registry"]),
        }
    }
    Some(b)
}

/// `env` merges by name: root order first (target values replace), then new target entries.
fn merge_env(base: &[RawEnv], over: &[RawEnv]) -> Vec<RawEnv> {
    let mut out: Vec<RawEnv> = base
        .iter()
        .map(|b| over.iter().find(|o| o.name == b.name).unwrap_or(b).clone())
        .collect();
    out.extend(
        over.iter()
            .filter(|o| !base.iter().any(|b| b.name == o.name))
            .cloned(),
    );
    out
}

/// `image` merges field by field.
fn merge_image(base: &RawImage, over: &RawImage) -> RawImage {
    RawImage {
        repository: over.repository.clone().or_else(|| base.repository.clone()),
        tag: over.tag.clone().or_else(|| base.tag.clone()),
        // A target naming another repository or tag does not keep the base's pin.
        digest: if over.repository.is_some() || over.tag.is_some() {
            over.digest.clone()
        } else {
            base.digest.clone()
        },
        pull_policy: over.pull_policy.or(base.pull_policy),
        registry: over.registry.clone().or_else(|| base.registry.clone()),
        history: over.history.clone().or_else(|| base.history.clone()),
        build: over.build.or(base.build),
        build_config: over
            .build_config
            .clone()
            .or_else(|| base.build_config.clone()),
        pos: over.pos,
        path: over.path.clone(),
    }
}

fn merge_layers(root: &Layer, t: &Layer) -> Layer {
    Layer {
        // Haloy: a target without its own `name` is named after its key, even when the file
        // has a top-level `name` (two targets on one server are two apps).
        name: t.name.clone(),
        server: t.server.clone().or_else(|| root.server.clone()),
        api_token: t.api_token.clone().or_else(|| root.api_token.clone()),
        image: None, // resolved separately with `images`
        image_key: None,
        replicas: t.replicas.or(root.replicas),
        port: t.port.or(root.port),
        health_check_path: t
            .health_check_path
            .clone()
            .or_else(|| root.health_check_path.clone()),
        min_ready_seconds: t.min_ready_seconds.or(root.min_ready_seconds),
        deployment_strategy: t
            .deployment_strategy
            .clone()
            .or_else(|| root.deployment_strategy.clone()),
        naming_strategy: t
            .naming_strategy
            .clone()
            .or_else(|| root.naming_strategy.clone()),
        domains: t.domains.clone().or_else(|| root.domains.clone()),
        env: match (&root.env, &t.env) {
            (Some(b), Some(o)) => Some(merge_env(b, o)),
            (b, o) => o.clone().or_else(|| b.clone()),
        },
        volumes: t.volumes.clone().or_else(|| root.volumes.clone()),
        network: t.network.clone().or_else(|| root.network.clone()),
        pre_deploy: t.pre_deploy.clone().or_else(|| root.pre_deploy.clone()),
        post_deploy: t.post_deploy.clone().or_else(|| root.post_deploy.clone()),
        protected: t.protected.or(root.protected),
        preset: t.preset.or(root.preset),
        acme_email: t.acme_email.clone().or_else(|| root.acme_email.clone()),
        resources: t.resources.or(root.resources),
        security: t.security.or(root.security),
        stop_timeout: t.stop_timeout.or(root.stop_timeout),
        init: t.init.or(root.init),
    }
}

/// The image of one layer: inline `image`, or the `images` entry named by `image_key`.
fn layer_image(
    dec: &mut Decoder,
    l: &Layer,
    images: &HashMap<String, RawImage>,
) -> Option<RawImage> {
    if let (Some(_), Some(key)) = (&l.image, &l.image_key) {
        dec.problem(
            key.pos,
            &key.path,
            "give either `image` or `image_key`, not both",
        );
    }
    if let Some(key) = &l.image_key {
        return match images.get(&key.v) {
            Some(img) => Some(img.clone()),
            None => {
                let mut names: Vec<&str> = images.keys().map(String::as_str).collect();
                names.sort_unstable();
                let mut msg = format!("`{}` is not defined under `images`", key.v);
                if let Some(s) = super::decode::suggest(&key.v, &names) {
                    msg.push_str(&format!("; did you mean `{s}`?"));
                }
                dec.problem(key.pos, &key.path, msg);
                None
            }
        };
    }
    l.image.clone()
}

/// Everything needed to resolve one target.
struct TargetInput<'a> {
    key: Option<&'a str>,
    key_pos: Pos,
    layer: Layer,
    image: Option<RawImage>,
}

/// Decodes, merges, validates and resolves a whole deploy config document.
pub fn resolve_document(
    dec: &mut Decoder,
    node: &Node,
    dir: &Path,
    process_env: &HashMap<String, String>,
) -> Vec<ResolvedApp> {
    let mut root = decode_root(dec, node);
    root.secrets = root.secret_providers.clone().map(|providers| {
        std::sync::Arc::new(super::secrets::SecretResolver::new(
            providers,
            dir,
            super::secrets::Programs::default(),
        ))
    });
    let root_image = layer_image(dec, &root.layer, &root.images);
    let mut inputs = Vec::new();
    if root.targets.is_empty() {
        inputs.push(TargetInput {
            key: None,
            key_pos: Pos { line: 1, col: 1 },
            layer: root.layer.clone(),
            image: root_image.clone(),
        });
    } else {
        for (key, key_pos, t) in &root.targets {
            let image = match (&t.image, &t.image_key) {
                (Some(over), None) => Some(match &root_image {
                    Some(base) => merge_image(base, over),
                    None => over.clone(),
                }),
                (None, None) => root_image.clone(),
                _ => layer_image(dec, t, &root.images),
            };
            inputs.push(TargetInput {
                key: Some(key),
                key_pos: *key_pos,
                layer: merge_layers(&root.layer, t),
                image,
            });
        }
    }
    let mut apps = Vec::new();
    let mut claimed: Vec<(Option<String>, Sp<String>)> = Vec::new();
    for input in inputs {
        let app = resolve_target(dec, &input, &root, dir, process_env, &mut claimed);
        apps.extend(app);
    }
    check_duplicate_names(dec, &apps, &root);
    apps
}

fn resolve_target(
    dec: &mut Decoder,
    input: &TargetInput<'_>,
    root: &Root,
    dir: &Path,
    process_env: &HashMap<String, String>,
    claimed: &mut Vec<(Option<String>, Sp<String>)>,
) -> Option<ResolvedApp> {
    let l = &input.layer;
    let name = match (&l.name, input.key) {
        (Some(n), _) => n.v.clone(),
        (None, Some(key)) => key.to_string(),
        (None, None) => {
            // An invalid `name` was already reported where it is written.
            if !dec.problems.iter().any(|p| p.path == "name") {
                dec.problem(
                    Pos { line: 1, col: 1 },
                    "name",
                    "missing required key `name`",
                );
            }
            return None;
        }
    };
    if l.name.is_none() {
        if let Err(e) = values::check_app_name(&name) {
            let path = join("targets", &name);
            dec.problem(
                input.key_pos,
                &path,
                format!("{e}; set `name` for this target"),
            );
            return None;
        }
    }
    let sources =
        EnvSources::load(dir, input.key, process_env, dec).with_secrets(root.secrets.clone());
    let preset = l.preset;
    let preset_defaults = preset.is_some();
    let deployment_strategy =
        l.deployment_strategy
            .as_ref()
            .map(|s| s.v)
            .unwrap_or(if preset_defaults {
                DeploymentStrategy::Replace
            } else {
                DeploymentStrategy::Rolling
            });
    let naming_strategy = l
        .naming_strategy
        .as_ref()
        .map(|s| s.v)
        .unwrap_or(if preset_defaults {
            NamingStrategy::Static
        } else {
            NamingStrategy::Dynamic
        });
    let replicas = l.replicas.unwrap_or(1);
    check_naming(dec, l, naming_strategy, deployment_strategy, replicas);
    let image = resolve_image(dec, input.image.as_ref(), &name, preset, &sources);
    let domains = resolve_domains(dec, l, input.key, claimed);
    let env = resolve_env(dec, l.env.as_deref().unwrap_or(&[]), &sources);
    let image = image.map(|image| {
        let raw_env = l.env.as_deref().unwrap_or(&[]);
        with_env_build_args(image, raw_env, env.as_deref().unwrap_or(&[]))
    });
    let api_token = l
        .api_token
        .as_ref()
        .and_then(|s| resolve_source(dec, s, &sources))
        .map(SecretString::new);
    Some(ResolvedApp {
        target: input.key.map(str::to_string),
        name,
        server: l.server.clone(),
        api_token,
        image: image?,
        replicas,
        port: l.port.unwrap_or(8080),
        health_check_path: l.health_check_path.clone().unwrap_or_else(|| "/".into()),
        min_ready_seconds: l.min_ready_seconds.unwrap_or(0),
        deployment_strategy,
        naming_strategy,
        domains,
        env: env?,
        volumes: l.volumes.clone().unwrap_or_default(),
        network: l.network.clone(),
        pre_deploy: l.pre_deploy.clone().unwrap_or_default(),
        post_deploy: l.post_deploy.clone().unwrap_or_default(),
        global_pre_deploy: root.global_pre_deploy.clone(),
        global_post_deploy: root.global_post_deploy.clone(),
        // Haloy's applyPreset sets `protected` for databases whatever the file says.
        protected: preset == Some(Preset::Database) || l.protected.unwrap_or(false),
        preset,
        acme_email: l.acme_email.clone(),
        resources: l.resources,
        security: l.security.unwrap_or_default(),
        stop_timeout: l.stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT),
        init: l.init.unwrap_or(false),
        secret_values: sources
            .revealed_secrets()
            .into_iter()
            .map(SecretString::new)
            .collect(),
    })
}

/// Haloy: env entries with `build_arg: true` become build args of a built image, after the
/// explicit `build_config.args` (an explicit arg of the same name wins).
fn with_env_build_args(
    mut image: ResolvedImage,
    raw_env: &[RawEnv],
    env: &[EnvVar],
) -> ResolvedImage {
    let marked: Vec<&str> = raw_env
        .iter()
        .filter(|e| e.build_arg)
        .map(|e| e.name.as_str())
        .collect();
    if !image.build || marked.is_empty() {
        return image;
    }
    let build = image.build_config.get_or_insert_with(|| BuildConfig {
        context: None,
        dockerfile: None,
        platform: None,
        args: Vec::new(),
        push: None,
    });
    for var in env.iter().filter(|v| marked.contains(&v.name.as_str())) {
        if !build.args.iter().any(|a| a.name == var.name) {
            build.args.push(var.clone());
        }
    }
    image
}

fn check_naming(
    dec: &mut Decoder,
    l: &Layer,
    naming: NamingStrategy,
    strategy: DeploymentStrategy,
    replicas: u32,
) {
    if naming != NamingStrategy::Static {
        return;
    }
    let (pos, path) = l
        .naming_strategy
        .as_ref()
        .map_or((Pos { line: 1, col: 1 }, "preset".to_string()), |s| {
            (s.pos, s.path.clone())
        });
    if strategy == DeploymentStrategy::Rolling {
        dec.problem(
            pos,
            &path,
            "`static` naming needs `deployment_strategy: replace` (rolling updates run two containers at once)",
        );
    }
    if replicas > 1 {
        dec.problem(
            pos,
            &path,
            format!("`static` naming allows one replica, not {replicas}"),
        );
    }
}

fn resolve_source(dec: &mut Decoder, s: &Sp<Source>, sources: &EnvSources) -> Option<String> {
    match &s.v {
        Source::Value(v) => Some(v.clone()),
        Source::Env(var) => match sources.get(var) {
            Some(v) => Some(v.to_string()),
            None => {
                dec.problem(
                    s.pos,
                    &s.path,
                    format!(
                        "environment variable `{var}` is not set (looked in {})",
                        sources.describe()
                    ),
                );
                None
            }
        },
        Source::Secret(r) => match sources.secret(r) {
            Ok(value) => Some(value),
            Err(e) => {
                dec.problem(s.pos, &s.path, e.to_string());
                None
            }
        },
    }
}

fn resolve_env(dec: &mut Decoder, raw: &[RawEnv], sources: &EnvSources) -> Option<Vec<EnvVar>> {
    let pending: Vec<PendingEnv> = raw
        .iter()
        .map(|e| {
            let interpolate = matches!(e.source, Some(Source::Value(_)));
            let value = e.source.as_ref().and_then(|src| {
                let sp = Sp {
                    v: src.clone(),
                    pos: e.pos,
                    path: e.path.clone(),
                };
                resolve_source(dec, &sp, sources)
            });
            PendingEnv {
                name: e.name.clone(),
                value,
                interpolate,
                pos: e.pos,
                path: e.path.clone(),
            }
        })
        .collect();
    let resolved = interpolate(&pending, dec);
    resolved
        .into_iter()
        .map(|(name, value)| value.map(|value| EnvVar { name, value }))
        .collect()
}

fn resolve_domains(
    dec: &mut Decoder,
    l: &Layer,
    target: Option<&str>,
    claimed: &mut Vec<(Option<String>, Sp<String>)>,
) -> Vec<DomainSpec> {
    let mut seen: Vec<&Sp<String>> = Vec::new();
    let raw = l.domains.as_deref().unwrap_or(&[]);
    for d in raw {
        for host in std::iter::once(&d.domain).chain(&d.aliases) {
            if let Some(first) = seen.iter().find(|s| s.v == host.v) {
                dec.problem(
                    host.pos,
                    &host.path,
                    format!(
                        "`{}` is listed more than once (first at {} as {})",
                        host.v, first.pos, first.path
                    ),
                );
            } else {
                seen.push(host);
            }
        }
    }
    // The same host on two targets of one server would make both fight over the route.
    for host in &seen {
        let other = claimed
            .iter()
            .find(|(server, c)| c.v == host.v && *server == l.server && c.pos != host.pos);
        if let Some((_, c)) = other {
            dec.problem(
                host.pos,
                &host.path,
                format!(
                    "`{}` is also used by another target on the same server (at {} as {})",
                    host.v, c.pos, c.path
                ),
            );
        }
    }
    for host in &seen {
        if !claimed
            .iter()
            .any(|(s, c)| c.pos == host.pos && *s == l.server)
        {
            claimed.push((l.server.clone(), (*host).clone()));
        }
    }
    let _ = target;
    raw.iter()
        .map(|d| DomainSpec {
            domain: d.domain.v.clone(),
            aliases: d.aliases.iter().map(|a| a.v.clone()).collect(),
        })
        .collect()
}

fn resolve_image(
    dec: &mut Decoder,
    raw: Option<&RawImage>,
    app_name: &str,
    preset: Option<Preset>,
    sources: &EnvSources,
) -> Option<ResolvedImage> {
    let default_history = |strategy| ImageHistory {
        strategy,
        count: DEFAULT_HISTORY_COUNT,
        pattern: None,
    };
    let preset_history = if preset.is_some() {
        HistoryStrategy::None
    } else {
        HistoryStrategy::Local
    };
    let Some(raw) = raw else {
        // Image omitted: build an image named after the app (building comes later).
        return Some(ResolvedImage {
            repository: app_name.to_string(),
            tag: "latest".into(),
            digest: None,
            pull_policy: PullPolicy::Always,
            registry: None,
            history: default_history(preset_history),
            build: true,
            build_config: None,
        });
    };
    // Haloy: an image without `repository` (only `tag`, `history` or `build_config`) is the
    // app's own image, built locally.
    let repository = raw
        .repository
        .clone()
        .unwrap_or_else(|| app_name.to_string());
    let build_default = raw.repository.is_none() || raw.build_config.is_some();
    let tag = raw.tag.clone().unwrap_or_else(|| "latest".into());
    let history = match &raw.history {
        None => default_history(preset_history),
        Some(h) => resolve_history(dec, h, &tag)?,
    };
    let registry = match &raw.registry {
        None => None,
        Some(r) => Some(resolve_registry(dec, r, &repository, sources)?),
    };
    let build_config = match &raw.build_config {
        None => None,
        Some(b) => Some(BuildConfig {
            context: b.context.clone(),
            dockerfile: b.dockerfile.clone(),
            platform: b.platform.clone(),
            args: resolve_env(dec, &b.args, sources)?,
            push: b.push.clone(),
        }),
    };
    Some(ResolvedImage {
        repository,
        tag,
        digest: raw.digest.clone(),
        // Haloy: presets run images that are pulled once and kept (databases, services).
        pull_policy: raw.pull_policy.unwrap_or(if preset.is_some() {
            PullPolicy::IfMissing
        } else {
            PullPolicy::Always
        }),
        registry,
        history,
        build: raw.build.unwrap_or(build_default),
        build_config,
    })
    .inspect(|img| check_push_strategy(dec, raw, img))
}

/// Haloy's build push rules (haloydev/haloy internal/config/image.go `Validate`,
/// `GetEffectivePushStrategy`): a built image goes to the registry when `build_config.push`
/// says so or, unset, when `registry` auth is given, otherwise it is uploaded to the server;
/// pushing needs auth, uploading must not have any.
fn check_push_strategy(dec: &mut Decoder, raw: &RawImage, img: &ResolvedImage) {
    if !img.build {
        return;
    }
    let push = img
        .build_config
        .as_ref()
        .and_then(|b| b.push.as_deref())
        .unwrap_or(if img.registry.is_some() {
            "registry"
        } else {
            "server"
        });
    match (push, img.registry.is_some()) {
        ("registry", false) => dec.problem(
            raw.pos,
            &raw.path,
            "registry authentication required when building with the registry push strategy (`build_config.push: registry`); add `registry: {username: …, password: …}` or use `push: server`",
        ),
        ("server", true) => dec.problem(
            raw.pos,
            &raw.path,
            "`registry` cannot be set when `build_config.push` is `server` (uploaded images don't use registry authentication); remove `registry` or use `push: registry`",
        ),
        _ => {}
    }
}

fn resolve_history(dec: &mut Decoder, h: &RawHistory, tag: &str) -> Option<ImageHistory> {
    let strategy = h.strategy.unwrap_or_default();
    if strategy == HistoryStrategy::Registry {
        if h.pattern.as_deref().is_none_or(|p| p.trim().is_empty()) {
            dec.problem(h.pos, &h.path, "the `registry` strategy needs a `pattern`");
            return None;
        }
        if [
            "latest",
            "main",
            "master",
            "develop",
            "staging",
            "production",
        ]
        .contains(&tag)
        {
            dec.problem(
                h.pos,
                &h.path,
                format!(
                    "the `registry` strategy needs an immutable tag like `v1.2.3`, not `{tag}`"
                ),
            );
            return None;
        }
    }
    Some(ImageHistory {
        strategy,
        count: h.count.unwrap_or(DEFAULT_HISTORY_COUNT),
        pattern: h.pattern.clone(),
    })
}

fn resolve_registry(
    dec: &mut Decoder,
    r: &RawRegistry,
    repository: &str,
    sources: &EnvSources,
) -> Option<RegistryAuth> {
    let field = |dec: &mut Decoder, src: &Option<Sp<Source>>, key: &str| match src {
        Some(s) => resolve_source(dec, s, sources),
        None => {
            dec.problem(r.pos, &r.path, format!("missing `{key}`"));
            None
        }
    };
    let username = field(dec, &r.username, "username");
    let password = field(dec, &r.password, "password");
    Some(RegistryAuth {
        server: r
            .server
            .clone()
            .unwrap_or_else(|| values::registry_of(repository)),
        username: username?,
        password: SecretString::new(password?),
    })
}

/// Two targets deploying the same app name to the same server would overwrite each other.
fn check_duplicate_names(dec: &mut Decoder, apps: &[ResolvedApp], root: &Root) {
    for (i, a) in apps.iter().enumerate() {
        let Some(dup) = apps[..i]
            .iter()
            .find(|b| b.name == a.name && b.server == a.server)
        else {
            continue;
        };
        let key = a.target.as_deref().unwrap_or_default();
        let target = root.targets.iter().find(|(k, _, _)| k == key);
        let (pos, path) = match target {
            Some((_, _, l)) if l.name.is_some() => l
                .name
                .as_ref()
                .map_or((Pos::default(), String::new()), |n| (n.pos, n.path.clone())),
            Some((k, key_pos, _)) => (*key_pos, join("targets", k)),
            None => (Pos { line: 1, col: 1 }, "name".to_string()),
        };
        dec.problem(
            pos,
            &path,
            format!(
                "app `{}` on the same server is already deployed by target `{}`; give this target its own `name` or `server`",
                a.name,
                dup.target.as_deref().unwrap_or_default()
            ),
        );
    }
}

/// A `network` is a name apps share to see and reach each other, a CNI network of its own
/// on the server (issue 14, `network::named`); Docker's special networks
/// have no meaning without Docker and are refused rather than silently ignored.
fn network_name(dec: &mut Decoder, v: &Node, path: &str) -> Option<String> {
    let name = dec.word(v, path)?;
    if matches!(name.as_str(), "host" | "none" | "bridge") {
        dec.problem(
            v.pos,
            path,
            format!("Docker's `{name}` network does not exist here: apps without `network` share haloyd's default bridge; remove `network`, or write a name shared by the apps that must reach each other (each name is a bridge and subnet of its own)"),
        );
        return None;
    }
    let valid = name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        dec.problem(
            v.pos,
            path,
            format!(
                "`{name}` is not a network name: use up to 63 letters, digits, '-', '_' or '.'"
            ),
        );
        return None;
    }
    Some(name)
}

#[cfg(test)]
#[path = "tests/build_args.rs"]
mod tests;
