//! A private `haloyd` per test: its own server config (state/run dirs, the harness containerd's
//! socket and a namespace, a bridge and /24 subnet of its own, free loopback ports, ACME off,
//! 1 s health interval), a token file, and the daemon running as a child process that can be
//! SIGKILLed and started again. Helpers drive it with the real `haloy` CLI. On drop only its own
//! child is stopped, then its bridge, the iptables rules CNI made for its subnet, its netns
//! mounts and its temp dir are removed (containers and tasks go with the harness containerd).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{free_port, require_binary, stop_child, unmount_all_under, Containerd};

/// How long haloyd may take to answer `GET /health` after start.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Knobs a test may change before start.
#[derive(Clone, Debug)]
pub struct HaloydOptions {
    /// Server config `deploy.timeout`.
    pub deploy_timeout: Duration,
    /// Server config `health_monitor.interval`.
    pub health_interval: Duration,
    /// `host:port` registries haloyd may use over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Port of the proxy's plain-HTTP listener (e.g. Pebble's HTTP-01 port); free if `None`.
    pub http_port: Option<u16>,
    /// Body of the server config `acme:` mapping, e.g. `{enabled: true, ...}`; ACME off if `None`.
    pub acme: Option<String>,
    /// Server config `api.domain`.
    pub api_domain: Option<String>,
    /// More `api:` keys, e.g. `idle_timeout: 1s, max_connections: 2`.
    pub api_extra: Option<String>,
    /// A state dir to start from (copied into the private one), e.g. stored-format fixtures.
    pub seed_state: Option<PathBuf>,
}

impl Default for HaloydOptions {
    fn default() -> Self {
        HaloydOptions {
            deploy_timeout: Duration::from_secs(30),
            health_interval: Duration::from_secs(1),
            insecure_registries: Vec::new(),
            http_port: None,
            acme: None,
            api_domain: None,
            api_extra: None,
            seed_state: None,
        }
    }
}

pub struct Haloyd {
    child: Option<Child>,
    dir: Option<TempDir>,
    config_path: PathBuf,
    token: String,
    namespace: String,
    bridge: String,
    /// First three octets of the /24, e.g. `10.249.17`.
    subnet_prefix: String,
    api_port: u16,
    http_port: u16,
    https_port: u16,
}

impl Haloyd {
    /// Writes a private config for `containerd` and starts haloyd; waits for `GET /health`.
    pub async fn start(containerd: &Containerd, options: HaloydOptions) -> Haloyd {
        require_binary("ip", "iproute2");
        require_binary("iptables", "iptables");
        assert!(
            Path::new("/usr/lib/cni/bridge").is_file(),
            "/usr/lib/cni/bridge missing: install the Debian package containernetworking-plugins"
        );
        let dir = tempfile::Builder::new()
            .prefix("haloy-d-")
            .tempdir()
            .expect("haloyd temp dir");
        let suffix: u32 = rand::random::<u32>() & 0xff_ffff;
        let subnet_prefix = free_subnet_prefix();
        let token = format!("test-token-{:016x}", rand::random::<u64>());
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, &token).expect("write token file");
        let mut haloyd = Haloyd {
            child: None,
            config_path: dir.path().join("haloyd.yaml"),
            token,
            namespace: format!("hld-{suffix:06x}"),
            bridge: format!("hld{suffix:06x}"),
            subnet_prefix,
            api_port: free_port(),
            http_port: options.http_port.unwrap_or_else(free_port),
            https_port: free_port(),
            dir: Some(dir),
        };
        let config = haloyd.config_yaml(containerd.socket(), &token_file, &options);
        std::fs::write(&haloyd.config_path, config).expect("write haloyd config");
        if let Some(seed) = &options.seed_state {
            copy_tree(seed, &haloyd.dir().join("state"));
        }
        haloyd.spawn();
        haloyd.wait_until_healthy().await;
        haloyd
    }

    /// The temp dir holding config, token, state, run dir and the daemon log.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("haloyd dir").path()
    }

    /// containerd namespace haloyd works in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// `127.0.0.1:PORT` of the API.
    pub fn api_addr(&self) -> String {
        format!("127.0.0.1:{}", self.api_port)
    }

    /// `127.0.0.1:PORT` of the proxy's plain-HTTP listener.
    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    /// `127.0.0.1:PORT` of the proxy's HTTPS listener.
    pub fn https_addr(&self) -> String {
        format!("127.0.0.1:{}", self.https_port)
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("haloyd.log")).unwrap_or_default()
    }

    /// The last `n` lines of the daemon's log (for assertion messages), without the access
    /// log of API requests (tests poll status).
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().filter(|l| !l.contains("api request")).collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// SIGKILLs haloyd (replicas keep running under containerd).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts haloyd again with the same config after `kill`; waits for `GET /health`.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "haloyd is still running");
        self.spawn();
        self.wait_until_healthy().await;
    }

    /// Writes `haloy.yaml` for an app into a fresh folder under the temp dir, with `server:`
    /// pointing at this haloyd; `body` is the rest of the YAML. Returns the file's path.
    pub fn write_app_config(&self, folder: &str, body: &str) -> PathBuf {
        let dir = self.dir().join("apps").join(folder);
        std::fs::create_dir_all(&dir).expect("create app config folder");
        let path = dir.join("haloy.yaml");
        let yaml = format!("server: {}\n{body}", self.api_addr());
        std::fs::write(&path, yaml).expect("write haloy.yaml");
        path
    }

    /// Runs the real `haloy` CLI with `-c config` and `args` against this haloyd (token from
    /// HALOY_API_TOKEN, client config isolated in the temp dir).
    pub fn cli(&self, config: &Path, args: &[&str]) -> CliRun {
        let client_home = self.dir().join("client-home");
        let output = Command::new(haloy_binary())
            .args(args)
            .arg("-c")
            .arg(config)
            .env("HALOY_API_TOKEN", &self.token)
            .env("XDG_CONFIG_HOME", &client_home)
            .env("HOME", &client_home)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()
            .expect("run the haloy CLI");
        CliRun {
            args: args.iter().map(|a| a.to_string()).collect(),
            output,
        }
    }

    /// Starts the real `haloy` CLI like `cli` but without waiting, so a test can kill it (by
    /// its PID) in the middle of a command. Its output goes to `<name>.out` in the temp dir.
    pub fn spawn_cli(&self, config: &Path, args: &[&str], name: &str) -> Child {
        let client_home = self.dir().join("client-home");
        let out = std::fs::File::create(self.dir().join(format!("{name}.out")))
            .expect("create CLI output file");
        Command::new(haloy_binary())
            .args(args)
            .arg("-c")
            .arg(config)
            .env("HALOY_API_TOKEN", &self.token)
            .env("XDG_CONFIG_HOME", &client_home)
            .env("HOME", &client_home)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone CLI output handle"))
            .stderr(out)
            .spawn()
            .expect("start the haloy CLI")
    }

    /// What a CLI started with `spawn_cli(.., name)` printed.
    pub fn cli_output(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir().join(format!("{name}.out"))).unwrap_or_default()
    }

    fn config_yaml(
        &self,
        containerd_socket: &Path,
        token_file: &Path,
        options: &HaloydOptions,
    ) -> String {
        let dir = self.dir();
        let mut yaml = String::new();
        let _ = writeln!(yaml, "state_dir: {}", dir.join("state").display());
        let _ = writeln!(yaml, "run_dir: {}", dir.join("run").display());
        let api_domain = options
            .api_domain
            .as_ref()
            .map(|d| format!(", domain: {d}"))
            .unwrap_or_default();
        let api_extra = options
            .api_extra
            .as_ref()
            .map(|extra| format!(", {extra}"))
            .unwrap_or_default();
        let _ = writeln!(
            yaml,
            "api: {{listen: {}, token_file: {}{api_domain}{api_extra}}}",
            self.api_addr(),
            token_file.display()
        );
        let _ = writeln!(
            yaml,
            "containerd: {{address: {}, namespace: {}}}",
            containerd_socket.display(),
            self.namespace
        );
        let _ = writeln!(
            yaml,
            "proxy: {{http_listen: {}, https_listen: {}}}",
            self.http_addr(),
            self.https_addr()
        );
        let _ = writeln!(
            yaml,
            "network: {{bridge: {}, subnet: {}.0/24, cni_bin_dir: /usr/lib/cni}}",
            self.bridge, self.subnet_prefix
        );
        let acme = options.acme.as_deref().unwrap_or("{enabled: false}");
        let _ = writeln!(yaml, "acme: {acme}");
        let _ = writeln!(
            yaml,
            "health_monitor: {{interval: {}ms}}",
            options.health_interval.as_millis()
        );
        let _ = writeln!(
            yaml,
            "deploy: {{timeout: {}ms}}",
            options.deploy_timeout.as_millis()
        );
        if !options.insecure_registries.is_empty() {
            let _ = writeln!(
                yaml,
                "registries: {{insecure: [{}]}}",
                options.insecure_registries.join(", ")
            );
        }
        yaml
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir().join("haloyd.log"))
            .expect("open haloyd log");
        let child = Command::new(haloyd_binary())
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .env_remove("HALOY_API_TOKEN")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn haloyd");
        self.child = Some(child);
    }

    async fn wait_until_healthy(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = self.api_addr();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("haloyd exited at start ({status}):\n{}", self.log_tail(40));
                }
            }
            let probe = addr.clone();
            let status = tokio::task::spawn_blocking(move || {
                super::registry::http_status(&probe, "/health")
            })
            .await
            .unwrap_or(None);
            if status == Some(200) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "haloyd did not answer GET /health on {addr} within {START_TIMEOUT:?}:\n{}",
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Deletes the nat/filter rules the bridge and firewall CNI plugins made for addresses of
    /// this haloyd's subnet (tasks killed by the containerd teardown never got a CNI DEL).
    /// Rules are deleted by their full spec, not position: other tests edit the same chains.
    fn remove_iptables_rules(&self) {
        let needle = format!("{}.", self.subnet_prefix);
        for table in ["nat", "filter"] {
            let Ok(out) = Command::new("iptables").args(["-t", table, "-S"]).output() else {
                continue;
            };
            let rules = String::from_utf8_lossy(&out.stdout).to_string();
            let mut chains_to_drop = Vec::new();
            for rule in rules.lines().filter(|r| r.starts_with("-A ")) {
                let words = split_rule(rule);
                let in_subnet = words
                    .windows(2)
                    .any(|w| (w[0] == "-s" || w[0] == "-d") && w[1].starts_with(&needle));
                if !in_subnet {
                    continue;
                }
                // The masquerade chain of one task is jumped to from POSTROUTING `-s IP/32`.
                if words[1] == "POSTROUTING" {
                    if let Some(target) = words.windows(2).find(|w| w[0] == "-j").map(|w| &w[1]) {
                        if target.starts_with("CNI-") {
                            chains_to_drop.push(target.clone());
                        }
                    }
                }
                let mut delete = vec!["-t".to_string(), table.to_string(), "-D".to_string()];
                delete.extend(words[1..].iter().cloned());
                let args: Vec<&str> = delete.iter().map(String::as_str).collect();
                run_quietly("iptables", &args);
            }
            for chain in chains_to_drop {
                run_quietly("iptables", &["-t", table, "-F", &chain]);
                run_quietly("iptables", &["-t", table, "-X", &chain]);
            }
        }
    }
}

/// Splits one `iptables -S` line into words; `"..."` (with `\"` inside) is one word.
pub fn split_rule(rule: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_quotes = false;
    let mut chars = rule.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if in_quotes => word.extend(chars.next()),
            '"' => in_quotes = !in_quotes,
            ' ' if !in_quotes => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            other => word.push(other),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

fn run_quietly(program: &str, args: &[&str]) {
    let _ = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Drop for Haloyd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Duration::from_secs(5));
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        self.remove_iptables_rules();
        if let Some(dir) = self.dir.take() {
            unmount_all_under(dir.path());
            let _ = std::fs::remove_dir_all(dir.path());
        }
    }
}

/// A run of the `haloy` CLI.
pub struct CliRun {
    pub args: Vec<String>,
    pub output: Output,
}

impl CliRun {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).to_string()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).to_string()
    }

    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    /// Panics with both streams unless the command exited 0.
    pub fn assert_ok(&self) -> &CliRun {
        assert!(
            self.output.status.success(),
            "`haloy {}` failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
            self.args.join(" "),
            self.output.status,
            self.stdout(),
            self.stderr()
        );
        self
    }

    /// Both streams, for assertion messages.
    pub fn both(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            self.stdout(),
            self.stderr()
        )
    }
}

/// Copies the files under `from` into `to` (folders created as needed).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create seeded state dir");
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("read {}: {e}", from.display()))
    {
        let entry = entry.expect("seed dir entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target)
                .unwrap_or_else(|e| panic!("copy {}: {e}", entry.path().display()));
        }
    }
}

/// `10.249.N` with no route or address on the host using it yet.
fn free_subnet_prefix() -> String {
    let routes = Command::new("ip")
        .args(["-4", "route", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    // Distinct per call within this test process; the route check avoids other processes.
    static NEXT: std::sync::OnceLock<std::sync::atomic::AtomicU32> = std::sync::OnceLock::new();
    let next = NEXT.get_or_init(|| std::sync::atomic::AtomicU32::new(rand::random::<u32>()));
    for _ in 0..256 {
        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 256;
        let prefix = format!("10.249.{n}");
        if !routes.contains(&format!("{prefix}.")) {
            return prefix;
        }
    }
    panic!("no free 10.249.N.0/24 subnet left for a test haloyd (ip -4 route show)");
}

/// The `haloy` binary cargo built for this integration test.
pub fn haloy_binary() -> PathBuf {
    built_binary(option_env!("CARGO_BIN_EXE_haloy"), "haloy")
}

/// The `haloyd` binary cargo built for this integration test.
pub fn haloyd_binary() -> PathBuf {
    built_binary(option_env!("CARGO_BIN_EXE_haloyd"), "haloyd")
}

/// Examples share the harness but get no CARGO_BIN_EXE_*: they find the binary beside them.
fn built_binary(from_cargo: Option<&'static str>, name: &str) -> PathBuf {
    if let Some(path) = from_cargo {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("path of the running test binary");
    let mut dir = exe.parent().expect("test binary folder").to_path_buf();
    if dir.ends_with("deps") || dir.ends_with("examples") {
        dir.pop();
    }
    dir.join(name)
}
