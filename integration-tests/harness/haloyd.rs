//! A private `haloyd` per test: its own server config (state/run dirs, the harness containerd's
//! socket and a namespace, a bridge and /24 subnet of its own, free loopback ports, ACME off,
//! 1 s health interval), a token file, and the daemon running as a child process that can be
//! SIGKILLed and started again. Helpers drive it with the real `haloy` CLI. On drop only its own
//! child is stopped, then its bridges (named networks' too), its nftables table, the iptables
//! rules CNI made for its subnets, its netns
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
    /// The harness binds the three listening sockets itself and passes them to every haloyd
    /// it starts the systemd way (`LISTEN_FDS=3`, `LISTEN_FDNAMES=http:https:api`,
    /// `LISTEN_PID`), so they outlive a restart: connections wait in the kernel backlog.
    pub pass_sockets: bool,
    /// Server config `proxy.drain_timeout`.
    pub drain_timeout: Option<Duration>,
    /// Extra environment for haloyd (e.g. `NOTIFY_SOCKET`, `WATCHDOG_USEC`).
    pub env: Vec<(String, String)>,
    /// Server config `logs.format` (`text` or `json`); haloyd's default if `None`.
    pub log_format: Option<String>,
    /// Server config `dns.upstream` (e.g. a resolver the test runs on loopback); the host's
    /// resolv.conf if empty.
    pub dns_upstream: Vec<String>,
    /// Whole top-level lines appended to the server config, e.g. `metrics: {listen: ...}`.
    pub extra_config: Vec<String>,
    /// Server config `containerd.shim` (`app`, `replica`, `host`); haloyd's default if `None`.
    pub shim: Option<String>,
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
            pass_sockets: false,
            drain_timeout: None,
            env: Vec::new(),
            log_format: None,
            dns_upstream: Vec::new(),
            extra_config: Vec::new(),
            shim: None,
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
    /// http, https, api: held by the harness when `pass_sockets` is set.
    sockets: Vec<std::net::TcpListener>,
    env: Vec<(String, String)>,
    /// A haloyd that took over by `upgrade` (not our child): stopped by pid on drop.
    successor: Option<i32>,
}

impl Haloyd {
    /// Writes a private config for `containerd` and starts haloyd; waits for `GET /health`.
    pub async fn start(containerd: &Containerd, options: HaloydOptions) -> Haloyd {
        require_binary("ip", "iproute2");
        require_binary("iptables", "iptables");
        require_binary("nft", "nftables");
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
        let sockets: Vec<std::net::TcpListener> = if options.pass_sockets {
            (0..3)
                .map(|_| {
                    std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback socket")
                })
                .collect()
        } else {
            Vec::new()
        };
        let port = |i: usize| sockets[i].local_addr().expect("socket address").port();
        let (http_port, https_port, api_port) = if options.pass_sockets {
            (port(0), port(1), port(2))
        } else {
            (
                options.http_port.unwrap_or_else(free_port),
                free_port(),
                free_port(),
            )
        };
        let mut haloyd = Haloyd {
            child: None,
            config_path: dir.path().join("haloyd.yaml"),
            token,
            namespace: format!("hld-{suffix:06x}"),
            bridge: format!("hld{suffix:06x}"),
            subnet_prefix,
            api_port,
            http_port,
            https_port,
            sockets,
            env: options.env.clone(),
            successor: None,
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

    /// The bridge gateway, where haloyd's DNS server for replicas listens.
    pub fn gateway(&self) -> String {
        format!("{}.1", self.subnet_prefix)
    }

    /// First three octets of `network.pool`: one /24, so one named network per test haloyd
    /// (`10.248.N` beside the default subnet `10.249.N`).
    pub fn pool_prefix(&self) -> String {
        self.subnet_prefix.replacen("10.249.", "10.248.", 1)
    }

    /// The default bridge's name.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// haloyd's nftables table (`network::firewall_table_name`).
    pub fn nft_table(&self) -> String {
        haloy::network::firewall_table_name(&self.bridge)
    }

    /// Named networks haloyd recorded: name → (subnet, bridge).
    pub fn named_networks(&self) -> Vec<(String, String, String)> {
        let path = self.dir().join("state/networks.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Vec::new();
        };
        let file: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        let Some(map) = file["networks"].as_object() else {
            return Vec::new();
        };
        map.iter()
            .map(|(name, n)| {
                let field = |k: &str| n[k].as_str().unwrap_or_default().to_string();
                (name.clone(), field("subnet"), field("bridge"))
            })
            .collect()
    }

    /// Task network namespaces haloyd has pinned (one per replica of any network).
    pub fn task_namespaces(&self) -> usize {
        std::fs::read_dir(self.dir().join("run/netns"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// What is left on the host of the named network `name` once its last app stopped: its
    /// bridge, veths on it, IPAM leases, cached CNI results, isolation rules
    /// and CNI iptables rules of its subnet. Empty when the network was cleaned up.
    pub fn network_leftovers(&self, name: &str) -> Vec<String> {
        let mut left = Vec::new();
        let Some((_, subnet, bridge)) = self.named_networks().into_iter().find(|n| n.0 == name)
        else {
            return vec![format!("network {name} is not in the registry")];
        };
        if Path::new("/sys/class/net").join(&bridge).exists() {
            left.push(format!("bridge {bridge}"));
        }
        let links = command_stdout("ip", &["-o", "link", "show", "master", &bridge]);
        if !links.trim().is_empty() {
            left.push(format!("links on {bridge}: {links}"));
        }
        let run = self.dir().join("run");
        for dir in [
            run.join("cni/ipam").join(format!("haloy-{name}")),
            run.join("cni/results").join(&bridge),
        ] {
            if dir.exists() {
                left.push(format!("{} exists", dir.display()));
            }
        }
        let table = command_stdout("nft", &["list", "table", "inet", &self.nft_table()]);
        if table.contains(&bridge) {
            left.push(format!("nft rules for {bridge}:\n{table}"));
        }
        let prefix = subnet.trim_end_matches(".0/24");
        for table in ["nat", "filter"] {
            let rules = command_stdout("iptables", &["-t", table, "-S"]);
            for rule in rules.lines().filter(|r| r.contains(&format!("{prefix}."))) {
                left.push(format!("iptables -t {table}: {rule}"));
            }
        }
        left
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
        let shim = options
            .shim
            .as_ref()
            .map(|shim| format!(", shim: {shim}"))
            .unwrap_or_default();
        let _ = writeln!(
            yaml,
            "containerd: {{address: {}, namespace: {}{shim}}}",
            containerd_socket.display(),
            self.namespace
        );
        let drain = options
            .drain_timeout
            .map(|d| format!(", drain_timeout: {}ms", d.as_millis()))
            .unwrap_or_default();
        let _ = writeln!(
            yaml,
            "proxy: {{http_listen: {}, https_listen: {}{drain}}}",
            self.http_addr(),
            self.https_addr()
        );
        let _ = writeln!(
            yaml,
            "network: {{bridge: {}, subnet: {}.0/24, pool: {}.0/24, cni_bin_dir: /usr/lib/cni}}",
            self.bridge,
            self.subnet_prefix,
            self.pool_prefix()
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
        if let Some(format) = &options.log_format {
            let _ = writeln!(yaml, "logs: {{format: {format}}}");
        }
        if !options.dns_upstream.is_empty() {
            let quoted: Vec<String> = options
                .dns_upstream
                .iter()
                .map(|u| format!("\"{u}\""))
                .collect();
            let _ = writeln!(yaml, "dns: {{upstream: [{}]}}", quoted.join(", "));
        }
        if !options.insecure_registries.is_empty() {
            let _ = writeln!(
                yaml,
                "registries: {{insecure: [{}]}}",
                options.insecure_registries.join(", ")
            );
        }
        for line in &options.extra_config {
            let _ = writeln!(yaml, "{line}");
        }
        yaml
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir().join("haloyd.log"))
            .expect("open haloyd log");
        let mut command = if self.sockets.is_empty() {
            Command::new(haloyd_binary())
        } else {
            // systemd's way, by systemd's own code: the harness hands the fds at 3.. to
            // systemd-socket-activate (the shell execs it, so LISTEN_PID is its pid), which
            // takes them with sd_listen_fds() and execs haloyd with LISTEN_FDS, LISTEN_PID and
            // LISTEN_FDNAMES set as systemd sets them for a service. It passes on only the
            // environment named with -E.
            let activate = require_binary("systemd-socket-activate", "systemd");
            let mut sh = Command::new("/bin/sh");
            sh.arg("-c")
                .arg("export LISTEN_PID=$$; exec \"$0\" \"$@\"")
                .arg(activate)
                .arg("--fdname=http:https:api");
            let passed = ["RUST_LOG"]
                .into_iter()
                .chain(self.env.iter().map(|(k, _)| k.as_str()));
            for name in passed {
                sh.arg(format!("--setenv={name}"));
            }
            sh.arg(haloyd_binary())
                .env("LISTEN_FDS", self.sockets.len().to_string())
                .env("LISTEN_FDNAMES", "http:https:api");
            let fds: Vec<i32> = self
                .sockets
                .iter()
                .map(std::os::fd::AsRawFd::as_raw_fd)
                .collect();
            // SAFETY: only fcntl and dup2 between fork and exec, on a Vec made before.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut sh, move || place_fds(&fds));
            }
            sh
        };
        command
            .arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .env_remove("HALOY_API_TOKEN")
            .env_remove("NOTIFY_SOCKET")
            .env("RUST_LOG", "info")
            // haloyd itself must see that its stderr is a file and write no colour codes.
            .env_remove("NO_COLOR")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        let child = command.spawn().expect("spawn haloyd");
        self.child = Some(child);
    }

    /// pid of the haloyd child the harness started (not of a successor).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERMs haloyd and waits up to `grace` for it to drain and exit (SIGKILL after).
    pub fn stop(&mut self, grace: Duration) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, grace);
        }
    }

    /// Waits up to `timeout` for the haloyd child to exit by itself; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// `haloyd upgrade -c <config>`: the real CLI subcommand against this daemon.
    pub fn upgrade_command(&self) -> Output {
        Command::new(haloyd_binary())
            .args(["upgrade", "--timeout", "60s", "--config"])
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .output()
            .expect("run haloyd upgrade")
    }

    /// Runs `haloyd upgrade`, adopts the daemon that took over (so drop stops it) and
    /// returns its pid; panics with the command's output and the log if no new daemon did.
    pub fn upgrade_to_successor(&mut self) -> i32 {
        let old = self.pid().expect("haloyd runs") as i32;
        let upgrade = self.upgrade_command();
        let new = self.pid_file_pid().expect("a pid file after the upgrade");
        if new != old {
            self.adopt_successor(new);
        }
        assert!(
            upgrade.status.success() && new != old,
            "haloyd upgrade failed ({}):\n{}{}\n--- haloyd log\n{}",
            upgrade.status,
            String::from_utf8_lossy(&upgrade.stdout),
            String::from_utf8_lossy(&upgrade.stderr),
            self.log_tail(40)
        );
        new
    }

    /// The pid in haloyd's pid file (written once a daemon is ready).
    pub fn pid_file_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir().join("run").join("haloyd.pid"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
    }

    /// Records a daemon that took over from our child, so drop stops it (by pid).
    pub fn adopt_successor(&mut self, pid: i32) {
        self.successor = Some(pid);
    }

    /// The server config file (tests break it to make a successor fail).
    pub fn config_path(&self) -> &Path {
        &self.config_path
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
        self.remove_iptables_rules_of(&self.subnet_prefix);
        self.remove_iptables_rules_of(&self.pool_prefix());
    }

    fn remove_iptables_rules_of(&self, subnet_prefix: &str) {
        let needle = format!("{subnet_prefix}.");
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

fn command_stdout(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default()
}

fn run_quietly(program: &str, args: &[&str]) {
    let _ = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// In the child between fork and exec: `fds[i]` becomes fd `3 + i`, inheritable. Each is
/// first copied above the targets, so no source is overwritten before it moves.
fn place_fds(fds: &[i32]) -> std::io::Result<()> {
    let mut high = [0i32; 8];
    for (slot, fd) in high.iter_mut().zip(fds) {
        // SAFETY: fcntl on an fd number; failure is reported.
        let copy = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 64) };
        if copy < 0 {
            return Err(std::io::Error::last_os_error());
        }
        *slot = copy;
    }
    for (i, fd) in high.iter().take(fds.len()).enumerate() {
        // SAFETY: as above; dup2 leaves the target without CLOEXEC.
        if unsafe { libc::dup2(*fd, 3 + i as i32) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// SIGTERM to a process that is not our child (a successor haloyd), then SIGKILL after
/// `grace`; "gone" once it no longer exists or is a zombie waiting for its new parent.
pub fn stop_pid(pid: i32, grace: Duration) {
    use nix::sys::signal::{kill, Signal};
    let target = nix::unistd::Pid::from_raw(pid);
    let gone = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true)
    };
    let _ = kill(target, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if gone() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = kill(target, Signal::SIGKILL);
}

impl Drop for Haloyd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Duration::from_secs(5));
        }
        if let Some(pid) = self.successor.take() {
            stop_pid(pid, Duration::from_secs(5));
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        for (_, _, bridge) in self.named_networks() {
            run_quietly("ip", &["link", "del", &bridge]);
        }
        run_quietly("nft", &["delete", "table", "inet", &self.nft_table()]);
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
        // The named networks' pool is 10.248.N (`Haloyd::pool_prefix`).
        if !routes.contains(&format!("{prefix}.")) && !routes.contains(&format!("10.248.{n}.")) {
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
    // A benchmark built in the dev profile measuring release binaries (footprint.sh).
    if let Some(dir) = std::env::var_os("HALOY_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let exe = std::env::current_exe().expect("path of the running test binary");
    let mut dir = exe.parent().expect("test binary folder").to_path_buf();
    if dir.ends_with("deps") || dir.ends_with("examples") {
        dir.pop();
    }
    dir.join(name)
}
