//! `haloyd verify`: checks that a server can run haloyd with its config — containerd reachable
//! with the v1 services haloyd uses, runc and the CNI plugins present, the listen ports free or
//! held by haloyd, config/state dirs and the token file private — and says what to fix for each.
//! It changes nothing on the host (the only side effect is containerd's namespace being
//! created, as `haloyd serve` would).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::server::ServerConfig;
use crate::runtime::client::Containerd;

pub mod ports;

/// The conflist haloyd renders when `<cni_conf_dir>/haloy.conflist` does not exist.
const BUILT_IN_CONFLIST: &str = include_str!("../../cni/haloy.conflist");

/// containerd v1 gRPC services haloyd calls (see `runtime`).
const GRPC_SERVICES: [&str; 9] = [
    "containers",
    "content",
    "events",
    "images",
    "leases",
    "namespaces",
    "snapshots",
    "tasks",
    "version",
];

/// How a check came out. `Warn` is something that works now but limits a feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

/// One check's outcome: what was looked at, and for anything not ok, what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub check: &'static str,
    pub level: Level,
    pub detail: String,
    pub fix: Option<String>,
}

impl Finding {
    pub fn ok(check: &'static str, detail: impl Into<String>) -> Finding {
        Finding {
            check,
            level: Level::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn fail(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            check,
            level: Level::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn warn(check: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            level: Level::Warn,
            ..Finding::fail(check, detail, fix)
        }
    }
}

/// Every finding of one run, in the order checked.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn failures(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.level == Level::Fail)
            .count()
    }

    /// One line per check (`ok`, `warn`, `FAIL`), an indented `fix:` line under each problem,
    /// and a closing summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.findings {
            let tag = match f.level {
                Level::Ok => "ok  ",
                Level::Warn => "warn",
                Level::Fail => "FAIL",
            };
            let _ = writeln!(out, "{tag}  {:<11} {}", f.check, f.detail);
            if let Some(fix) = &f.fix {
                let _ = writeln!(out, "      {:<11} fix: {fix}", "");
            }
        }
        match self.failures() {
            0 => {
                let _ = writeln!(out, "all {} checks passed", self.findings.len());
            }
            n => {
                let _ = writeln!(
                    out,
                    "{n} of {} checks failed: fix them and run `haloyd verify` again",
                    self.findings.len()
                );
            }
        }
        out
    }
}

/// Runs every check against `config` (loaded from `config_path`).
pub async fn run(config: &ServerConfig, config_path: &Path) -> Report {
    let mut report = Report::default();
    report.findings.extend(check_containerd(config).await);
    report.findings.push(check_runc());
    report.findings.push(check_cni_plugins(config));
    report.findings.push(check_tini());
    report.findings.push(check_nft());
    for (key, addr) in [
        ("proxy.http_listen", config.proxy.http_listen),
        ("proxy.https_listen", config.proxy.https_listen),
        ("api.listen", config.api.listen),
    ] {
        report.findings.push(check_port(key, addr));
    }
    report.findings.push(check_config_file(config_path));
    report
        .findings
        .push(check_dir("state_dir", &config.state_dir));
    report.findings.push(check_dir("run_dir", &config.run_dir));
    report
        .findings
        .push(check_token_file(&config.api.token_file));
    report
}

async fn check_containerd(config: &ServerConfig) -> Vec<Finding> {
    let socket = &config.containerd.address;
    let client = match Containerd::connect(socket, &config.containerd.namespace).await {
        Ok(client) => client,
        Err(e) => {
            return vec![Finding::fail(
                "containerd",
                e.to_string(),
                format!(
                    "start containerd (`systemctl enable --now containerd`; Debian package `containerd`) or set containerd.address to its socket (now {})",
                    socket.display()
                ),
            )]
        }
    };
    let version = match client.server_version().await {
        Ok(v) => v,
        Err(e) => {
            return vec![Finding::fail(
                "containerd",
                e.to_string(),
                "restart containerd and look at `journalctl -u containerd`",
            )]
        }
    };
    let reachable = Finding::ok(
        "containerd",
        format!("{} answers: containerd {version}", socket.display()),
    );
    vec![reachable, check_grpc_services(&client).await]
}

/// containerd lists its plugins; the grpc ones are the services, and one that failed to
/// initialise is listed with its error.
async fn check_grpc_services(client: &Containerd) -> Finding {
    use containerd_client::services::v1::{
        introspection_client::IntrospectionClient, PluginsRequest,
    };
    let mut introspection = IntrospectionClient::new(client.channel());
    let call = introspection.plugins(client.request(PluginsRequest::default()));
    let plugins = match call.await {
        Ok(response) => response.into_inner().plugins,
        Err(status) => {
            return Finding::fail(
                "services",
                format!(
                    "containerd's introspection service failed: {}",
                    status.message()
                ),
                "use containerd 1.6 or newer (Debian 12's package is)",
            )
        }
    };
    let healthy: BTreeSet<String> = plugins
        .iter()
        .filter(|p| p.r#type == "io.containerd.grpc.v1" && p.init_err.is_none())
        .map(|p| p.id.clone())
        .collect();
    missing_services(&healthy)
}

/// Which of the v1 services haloyd needs are absent from `healthy` (grpc plugin ids).
pub fn missing_services(healthy: &BTreeSet<String>) -> Finding {
    let missing: Vec<&str> = GRPC_SERVICES
        .iter()
        .copied()
        .filter(|s| !healthy.contains(*s))
        .collect();
    if missing.is_empty() {
        return Finding::ok(
            "services",
            format!(
                "containerd v1 services present: {}",
                GRPC_SERVICES.join(", ")
            ),
        );
    }
    Finding::fail(
        "services",
        format!(
            "containerd lacks v1 services haloyd uses: {}",
            missing.join(", ")
        ),
        "check `disabled_plugins` in /etc/containerd/config.toml and `ctr plugins ls`",
    )
}

/// containerd's runc shim finds `runc` on its PATH.
fn check_runc() -> Finding {
    match find_executable("runc", &search_path()) {
        Some(path) => Finding::ok("runc", format!("{} is executable", path.display())),
        None => Finding::fail(
            "runc",
            "no executable `runc` on PATH or in /usr/sbin, /usr/bin, /usr/local/sbin",
            "apt-get install runc",
        ),
    }
}

fn search_path() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for extra in ["/usr/local/sbin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let extra = PathBuf::from(extra);
        if !dirs.contains(&extra) {
            dirs.push(extra);
        }
    }
    dirs
}

pub fn find_executable(name: &str, dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| is_executable_file(p))
}

fn is_executable_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn check_cni_plugins(config: &ServerConfig) -> Finding {
    let dir = &config.network.cni_bin_dir;
    let template_path = config.network.cni_conf_dir.join("haloy.conflist");
    let template =
        std::fs::read_to_string(&template_path).unwrap_or_else(|_| BUILT_IN_CONFLIST.to_string());
    let needed = match plugin_types(&template) {
        Ok(types) => types,
        Err(reason) => {
            return Finding::fail(
                "cni",
                format!("{}: {reason}", template_path.display()),
                format!(
                    "fix the JSON in {} or remove it to use the built-in one",
                    template_path.display()
                ),
            )
        }
    };
    let missing: Vec<&String> = needed
        .iter()
        .filter(|t| !is_executable_file(&dir.join(t)))
        .collect();
    if missing.is_empty() {
        let list: Vec<&str> = needed.iter().map(String::as_str).collect();
        return Finding::ok(
            "cni",
            format!("plugins {} in {}", list.join(", "), dir.display()),
        );
    }
    let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
    Finding::fail(
        "cni",
        format!(
            "CNI plugins missing in {} (network.cni_bin_dir): {}",
            dir.display(),
            names.join(", ")
        ),
        "apt-get install containernetworking-plugins, or set network.cni_bin_dir to where they are",
    )
}

/// Plugin types a conflist runs: `loopback` (haloyd adds it to every task), each plugin's
/// `type` and its `ipam.type`.
pub fn plugin_types(conflist: &str) -> Result<BTreeSet<String>, String> {
    let value: serde_json::Value =
        serde_json::from_str(conflist).map_err(|e| format!("not a JSON conflist: {e}"))?;
    let plugins = value
        .get("plugins")
        .and_then(|p| p.as_array())
        .ok_or("no \"plugins\" list")?;
    let mut types = BTreeSet::from(["loopback".to_string()]);
    for plugin in plugins {
        for t in [plugin.get("type"), plugin.pointer("/ipam/type")]
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str())
        {
            types.insert(t.to_string());
        }
    }
    Ok(types)
}

fn check_tini() -> Finding {
    let path = Path::new(crate::runtime::DEFAULT_INIT_BINARY);
    if is_executable_file(path) {
        Finding::ok("tini", format!("{} present (`init: true`)", path.display()))
    } else {
        Finding::warn(
            "tini",
            format!(
                "{} missing: apps with `init: true` are refused",
                path.display()
            ),
            "apt-get install tini",
        )
    }
}

/// Named networks (`network` in haloy.yaml) are kept apart with nftables rules.
fn check_nft() -> Finding {
    match find_executable("nft", &search_path()) {
        Some(path) => Finding::ok(
            "nft",
            format!("{} is executable (named networks)", path.display()),
        ),
        None => Finding::warn(
            "nft",
            "no executable `nft`: deploys of apps with a `network` name fail",
            "apt-get install nftables",
        ),
    }
}

/// Free (we could bind it), or held by haloyd itself or by systemd for haloyd.socket.
fn check_port(key: &'static str, addr: SocketAddr) -> Finding {
    let err = match TcpListener::bind(addr) {
        Ok(_) => return Finding::ok("port", format!("{addr} ({key}) is free")),
        Err(e) => e,
    };
    if err.kind() != std::io::ErrorKind::AddrInUse {
        return Finding::fail(
            "port",
            format!("cannot bind {addr} ({key}): {err}"),
            format!("run haloyd as root, or change {key} in the server config"),
        );
    }
    let holders = ports::listeners_of(addr.port());
    port_verdict(key, addr, &holders)
}

/// The verdict on a port in use, from the processes listening on it.
pub fn port_verdict(key: &'static str, addr: SocketAddr, holders: &[ports::Holder]) -> Finding {
    let ours = |h: &ports::Holder| h.command == "haloyd" || (h.pid == 1 && h.command == "systemd");
    if !holders.is_empty() && holders.iter().all(ours) {
        let who: Vec<String> = holders.iter().map(ports::Holder::to_string).collect();
        return Finding::ok(
            "port",
            format!("{addr} ({key}) is held by {}", who.join(", ")),
        );
    }
    let others: Vec<String> = holders
        .iter()
        .filter(|h| !ours(h))
        .map(ports::Holder::to_string)
        .collect();
    let who = if others.is_empty() {
        "another process (not found in /proc)".to_string()
    } else {
        others.join(", ")
    };
    Finding::fail(
        "port",
        format!("{addr} ({key}) is in use by {who}"),
        format!("stop that service (e.g. `systemctl disable --now nginx`) or change {key} in the server config"),
    )
}

fn check_config_file(path: &Path) -> Finding {
    match std::fs::metadata(path) {
        Ok(meta) => not_writable_by_others("config", path, meta.mode(), meta.uid()),
        Err(e) => Finding::fail(
            "config",
            format!("cannot read {}: {e}", path.display()),
            "run `haloyd init` to write one",
        ),
    }
}

fn check_dir(key: &'static str, path: &Path) -> Finding {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_dir() => Finding::fail(
            "dirs",
            format!("{} ({key}) is not a directory", path.display()),
            format!("move it away or set {key} to a directory"),
        ),
        Ok(meta) => not_writable_by_others("dirs", path, meta.mode(), meta.uid()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Finding::ok(
            "dirs",
            format!(
                "{} ({key}) does not exist yet: `haloyd serve` creates it",
                path.display()
            ),
        ),
        Err(e) => Finding::fail(
            "dirs",
            format!("cannot read {} ({key}): {e}", path.display()),
            format!("check the permissions of {}'s parents", path.display()),
        ),
    }
}

/// haloyd runs as root: a file or dir it trusts must be root's and not writable by others, or
/// whoever can write it controls what root runs.
pub fn not_writable_by_others(check: &'static str, path: &Path, mode: u32, uid: u32) -> Finding {
    let shown = path.display();
    if uid != 0 {
        return Finding::fail(
            check,
            format!("{shown} is owned by uid {uid}, not root"),
            format!("chown root: {shown}"),
        );
    }
    if mode & 0o022 != 0 {
        return Finding::fail(
            check,
            format!(
                "{shown} is writable by group or others (mode {:04o})",
                mode & 0o7777
            ),
            format!("chmod go-w {shown}"),
        );
    }
    Finding::ok(
        check,
        format!("{shown} is root's, mode {:04o}", mode & 0o7777),
    )
}

fn check_token_file(path: &Path) -> Finding {
    match std::fs::metadata(path) {
        Ok(meta) => token_verdict(path, meta.mode(), meta.uid(), meta.len()),
        Err(e) => Finding::fail(
            "token",
            format!("cannot read {} (api.token_file): {e}", path.display()),
            "run `haloyd init` to create it",
        ),
    }
}

/// The token is root on this host: only root may read it.
pub fn token_verdict(path: &Path, mode: u32, uid: u32, len: u64) -> Finding {
    let shown = path.display();
    if len == 0 {
        return Finding::fail(
            "token",
            format!("{shown} is empty"),
            "run `haloyd init --new-token`",
        );
    }
    if uid != 0 {
        return Finding::fail(
            "token",
            format!("{shown} is owned by uid {uid}, not root"),
            format!("chown root: {shown}"),
        );
    }
    if mode & 0o077 != 0 {
        return Finding::fail(
            "token",
            format!(
                "{shown} is readable or writable by others (mode {:04o}); the token is root on this host",
                mode & 0o7777
            ),
            format!("chmod 600 {shown}, then `haloyd init --new-token` if others may have read it"),
        );
    }
    Finding::ok(
        "token",
        format!("{shown} is root's, mode {:04o}", mode & 0o7777),
    )
}

#[cfg(test)]
#[path = "tests/verify.rs"]
mod tests;
