//! haloyd's server config (YAML). Every key is optional, so an empty file works; unknown keys,
//! wrong types and bad values are reported like haloy.yaml problems (file:line:col: key: what).
//! Every path and address a test needs to make private is a key.

use super::decode::{index, join, Decoder, Problems};
use super::tree::{self, Format, Node, Value};
use super::values;
use super::ConfigError;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::proxy::IpCidr;
pub use crate::runtime::task::ShimGrouping;
pub use crate::tls::UnknownSni;
use crate::tls::{LETS_ENCRYPT_PRODUCTION, LETS_ENCRYPT_STAGING};

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub api: ApiConfig,
    pub containerd: ContainerdConfig,
    pub proxy: ProxySection,
    pub network: NetworkConfig,
    /// Deployment history, volumes, certificates (default /var/lib/haloy).
    pub state_dir: PathBuf,
    /// Runtime files: sockets, pid files, per-task scratch (default /run/haloy).
    pub run_dir: PathBuf,
    pub registries: RegistriesConfig,
    pub acme: AcmeConfig,
    pub health_monitor: HealthMonitorConfig,
    pub deploy: DeploySection,
    pub logs: LogsConfig,
    pub security: SecurityConfig,
    pub dns: DnsConfig,
    pub metrics: MetricsConfig,
    pub access_log: AccessLogConfig,
}

/// Where the proxy's access log goes: `off` (default), `stderr` (the journal under systemd)
/// or `file` (rotated by size).
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogConfig {
    pub to: AccessLogTo,
    pub file: PathBuf,
    pub max_size: u64,
    pub max_files: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessLogTo {
    #[default]
    Off,
    Stderr,
    File,
}

impl AccessLogConfig {
    /// The access log module's target for this config.
    pub fn target(&self) -> crate::access_log::AccessLogTarget {
        use crate::access_log::AccessLogTarget;
        match self.to {
            AccessLogTo::Off => AccessLogTarget::Off,
            AccessLogTo::Stderr => AccessLogTarget::Stderr,
            AccessLogTo::File => AccessLogTarget::File {
                path: self.file.clone(),
                max_size: self.max_size,
                max_files: self.max_files,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricsConfig {
    /// Loopback address of the Prometheus/OpenMetrics endpoint (`GET /metrics`); off when unset.
    pub listen: Option<SocketAddr>,
}

/// haloyd's DNS server for replicas (app names, then the host's resolvers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Replicas use haloyd's DNS server on the bridge gateway (default true); when false they
    /// get the host's resolvers and no app names.
    pub enabled: bool,
    /// Resolvers for other names (`ip` or `ip:port`); empty: the host's /etc/resolv.conf.
    pub upstream: Vec<SocketAddr>,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            enabled: true,
            upstream: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SecurityConfig {
    /// Host paths apps may bind-mount although they are (or contain, or lie under) one of the
    /// paths haloyd refuses: `/`, `/etc`, `/proc`, `/sys`, `/dev`, `/boot`, its state and run
    /// dirs, the containerd socket.
    pub allowed_host_paths: Vec<PathBuf>,
    /// pids.max of a replica whose app sets no `resources.pids`.
    pub pids_limit: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    /// Plain-HTTP listener (default 127.0.0.1:9922).
    pub listen: SocketAddr,
    /// Host name under which the proxy also serves the API over HTTPS.
    pub domain: Option<String>,
    /// File holding the bearer token (default `<state_dir>/api-token`).
    pub token_file: PathBuf,
    /// A request head must arrive within this time.
    pub header_read_timeout: Duration,
    /// A connection without a request in progress is closed after this time (an open SSE
    /// stream is a request in progress). Plain HTTP/1 closes at the shorter of both timeouts,
    /// as the proxy does: an idle connection and a half-sent head look the same.
    pub idle_timeout: Duration,
    /// Open connections at most; more wait in the listen backlog until one closes.
    pub max_connections: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ContainerdConfig {
    pub address: PathBuf,
    pub namespace: String,
    /// `app` (default): one containerd-shim-runc-v2 per app; `replica`: one per replica;
    /// `host`: one for all.
    pub shim: ShimGrouping,
}

/// The `proxy:` section (haloyd turns it into the proxy's own `proxy::ProxyConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProxySection {
    pub http_listen: SocketAddr,
    pub https_listen: SocketAddr,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub backend_response_timeout: Duration,
    pub max_header_bytes: u64,
    /// `None` = unlimited.
    pub max_body_bytes: Option<u64>,
    pub max_connections: u32,
    pub drain_timeout: Duration,
    /// Peers whose X-Forwarded-For is trusted.
    pub trusted_proxies: Vec<IpCidr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    pub subnet: IpCidr,
    /// Bridge device name (at most 15 characters).
    pub bridge: String,
    pub cni_bin_dir: PathBuf,
    /// Where haloyd writes its CNI conflist (default `<state_dir>/cni`).
    pub cni_conf_dir: PathBuf,
    /// Apps with a `network` name get a /24 of their own from here (default 10.90.0.0/16).
    pub pool: IpCidr,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RegistriesConfig {
    /// `host:port` registries allowed over plain HTTP.
    pub insecure: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StaticCertificate {
    pub domain: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AcmeConfig {
    /// Order certificates for deployed domains. Off: HTTPS only for `certificates` files.
    pub enabled: bool,
    pub directory_url: String,
    pub staging: bool,
    pub email: Option<String>,
    /// Extra CA certificates (PEM) to trust for the ACME directory, e.g. Pebble's.
    pub ca_bundle: Option<PathBuf>,
    pub unknown_sni: UnknownSni,
    pub certificates: Vec<StaticCertificate>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HealthMonitorConfig {
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures before a replica leaves rotation.
    pub fall: u32,
    /// Consecutive successes before it comes back.
    pub rise: u32,
}

/// The `deploy:` section (`deploy::DeploySettings` is what haloyd builds from it).
#[derive(Debug, Clone, PartialEq)]
pub struct DeploySection {
    /// How long a new replica may take to become ready.
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogsConfig {
    pub max_size: u64,
    pub max_files: u32,
    /// How haloyd writes its own log lines to stderr, and the access log's lines.
    pub format: LogFormat,
}

/// haloyd's log and access log line format: `text` for people (and journald), `json` for log
/// shippers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

fn default_cni_bin_dir() -> PathBuf {
    ["/usr/lib/cni", "/opt/cni/bin"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_dir())
        .unwrap_or_else(|| PathBuf::from("/usr/lib/cni"))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)))
}

impl Default for ServerConfig {
    fn default() -> Self {
        let state_dir = PathBuf::from("/var/lib/haloy");
        ServerConfig {
            api: ApiConfig {
                listen: addr("127.0.0.1:9922"),
                domain: None,
                token_file: state_dir.join("api-token"),
                header_read_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(60),
                max_connections: 256,
            },
            containerd: ContainerdConfig {
                address: PathBuf::from("/run/containerd/containerd.sock"),
                namespace: "haloy".into(),
                shim: ShimGrouping::PerApp,
            },
            proxy: ProxySection {
                http_listen: addr("0.0.0.0:80"),
                https_listen: addr("0.0.0.0:443"),
                header_read_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(60),
                backend_response_timeout: Duration::from_secs(60),
                max_header_bytes: 64 * 1024,
                max_body_bytes: None,
                max_connections: 10_000,
                drain_timeout: Duration::from_secs(30),
                trusted_proxies: Vec::new(),
            },
            network: NetworkConfig {
                subnet: IpCidr::new(IpAddr::from([10, 89, 0, 0]), 16)
                    .expect("16 is a valid IPv4 prefix length"),
                bridge: "haloy0".into(),
                cni_bin_dir: default_cni_bin_dir(),
                cni_conf_dir: state_dir.join("cni"),
                pool: IpCidr::new(IpAddr::from([10, 90, 0, 0]), 16)
                    .expect("16 is a valid IPv4 prefix length"),
            },
            run_dir: PathBuf::from("/run/haloy"),
            registries: RegistriesConfig::default(),
            acme: AcmeConfig {
                enabled: true,
                directory_url: LETS_ENCRYPT_PRODUCTION.into(),
                staging: false,
                email: None,
                ca_bundle: None,
                unknown_sni: UnknownSni::Refuse,
                certificates: Vec::new(),
            },
            health_monitor: HealthMonitorConfig {
                interval: Duration::from_secs(5),
                timeout: Duration::from_secs(2),
                fall: 3,
                rise: 2,
            },
            deploy: DeploySection {
                timeout: Duration::from_secs(300),
            },
            logs: LogsConfig {
                max_size: 10 << 20,
                max_files: 3,
                format: LogFormat::Text,
            },
            security: SecurityConfig {
                allowed_host_paths: Vec::new(),
                pids_limit: crate::runtime::task::DEFAULT_PIDS_LIMIT,
            },
            dns: DnsConfig::default(),
            metrics: MetricsConfig::default(),
            access_log: AccessLogConfig {
                to: AccessLogTo::Off,
                file: PathBuf::from("/var/log/haloy/access.log"),
                max_size: 100 << 20,
                max_files: 5,
            },
            state_dir,
        }
    }
}

/// A commented config listing every key with its default, for `haloyd init` to write.
/// Uncommenting a line keeps the default; the file as is parses to `ServerConfig::default()`.
pub const TEMPLATE_YAML: &str = r#"# haloyd server config. Every key is optional; the values shown are the defaults.
# api:
#   listen: 127.0.0.1:9922           # plain-HTTP API, loopback only
#   domain: haloy.example.com        # also serve the API over HTTPS through the proxy
#   token_file: /var/lib/haloy/api-token
#   header_read_timeout: 10s
#   idle_timeout: 60s
#   max_connections: 256             # more wait in the listen backlog
# containerd:
#   address: /run/containerd/containerd.sock
#   namespace: haloy
#   shim: app                        # one runc shim per app; or `replica`, `host`
# proxy:
#   http_listen: 0.0.0.0:80
#   https_listen: 0.0.0.0:443
#   header_read_timeout: 10s
#   idle_timeout: 60s
#   backend_response_timeout: 60s
#   max_header_bytes: 64KiB
#   max_body_bytes: 100Mi            # unlimited when unset
#   max_connections: 10000
#   drain_timeout: 30s
#   trusted_proxies: []              # CIDRs/IPs whose X-Forwarded-For is trusted
# network:
#   subnet: 10.89.0.0/16
#   bridge: haloy0
#   cni_bin_dir: /usr/lib/cni        # first existing of /usr/lib/cni, /opt/cni/bin
#   cni_conf_dir: /var/lib/haloy/cni
# state_dir: /var/lib/haloy
# run_dir: /run/haloy
# registries:
#   insecure: []                     # host:port registries allowed over plain HTTP
# acme:
#   enabled: true                    # false: HTTPS only for `certificates` files
#   directory_url: https://acme-v02.api.letsencrypt.org/directory
#   staging: false                   # true switches to Let's Encrypt staging
#   email: ops@example.com
#   ca_bundle: /etc/haloy/acme-ca.pem
#   unknown_sni: refuse              # or self_signed
#   certificates: []                 # [{domain, cert_file, key_file}]
# health_monitor:
#   interval: 5s
#   timeout: 2s
#   fall: 3
#   rise: 2
# deploy:
#   timeout: 5m
# logs:
#   max_size: 10MiB
#   max_files: 3
#   format: text                     # haloyd's log and access log lines; json for log shippers
# dns:
#   enabled: true                    # replicas resolve app names through haloyd (bridge gateway:53)
#   upstream: []                     # resolvers for other names; default: the host's resolv.conf
# security:
#   allowed_host_paths: []           # host paths apps may bind although haloyd refuses them
#   pids_limit: 4096                 # per replica, unless the app sets resources.pids
# metrics:
#   listen: 127.0.0.1:9923           # Prometheus GET /metrics, loopback only; off when unset
# access_log:
#   to: off                          # off, stderr (the journal under systemd) or file
#   file: /var/log/haloy/access.log
#   max_size: 100MiB                 # then rotated to access.log.1 … access.log.<max_files>
#   max_files: 5
"#;

const ROOT_KEYS: &[&str] = &[
    "api",
    "containerd",
    "proxy",
    "network",
    "state_dir",
    "run_dir",
    "registries",
    "acme",
    "health_monitor",
    "deploy",
    "logs",
    "security",
    "dns",
    "metrics",
    "access_log",
];

impl ServerConfig {
    /// Reads and validates the YAML file at `path`.
    pub fn load(path: &Path) -> Result<ServerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        ServerConfig::parse(&text, &path.display().to_string())
    }

    /// Parses YAML text; `label` names the file in messages.
    pub fn parse(text: &str, label: &str) -> Result<ServerConfig, ConfigError> {
        let mut dec = Decoder::new(label, Format::Yaml);
        let node = match tree::parse(Format::Yaml, text) {
            Ok(n) => n,
            Err(e) => {
                dec.problem(e.pos, "", format!("syntax error: {}", e.message));
                return Err(ConfigError::Invalid(Problems(dec.problems)));
            }
        };
        let cfg = decode_server(&mut dec, &node);
        if dec.problems.is_empty() {
            Ok(cfg)
        } else {
            let mut p = Problems(dec.problems);
            p.normalize();
            Err(ConfigError::Invalid(p))
        }
    }
}

fn decode_server(dec: &mut Decoder, node: &Node) -> ServerConfig {
    let mut c = ServerConfig::default();
    if node.value == Value::Null {
        return c;
    }
    let mut token_file = None;
    let mut cni_conf_dir = None;
    for (key, e) in dec.map(node, "", ROOT_KEYS) {
        let v = &e.value;
        match key.as_str() {
            "api" => token_file = decode_api(dec, v, &mut c.api),
            "containerd" => decode_containerd(dec, v, &mut c.containerd),
            "proxy" => decode_proxy(dec, v, &mut c.proxy),
            "network" => cni_conf_dir = decode_network(dec, v, &mut c.network),
            "state_dir" => set(&mut c.state_dir, abs_path(dec, v, &key)),
            "run_dir" => set(&mut c.run_dir, abs_path(dec, v, &key)),
            "registries" => {
                for (k, e) in dec.map(v, &key, &["insecure"]) {
                    c.registries.insecure = host_ports(dec, &e.value, &join(&key, &k));
                }
            }
            "acme" => decode_acme(dec, v, &mut c.acme),
            "health_monitor" => decode_health(dec, v, &mut c.health_monitor),
            "deploy" => {
                for (k, e) in dec.map(v, &key, &["timeout"]) {
                    set(
                        &mut c.deploy.timeout,
                        duration(dec, &e.value, &join(&key, &k)),
                    );
                }
            }
            "logs" => decode_logs(dec, v, &mut c.logs),
            "security" => decode_security(dec, v, &mut c.security),
            "dns" => decode_dns(dec, v, &mut c.dns),
            "metrics" => decode_metrics(dec, v, &mut c.metrics),
            "access_log" => decode_access_log(dec, v, &mut c.access_log),
            _ => {}
        }
    }
    // Paths that default to places under state_dir follow a custom state_dir.
    c.api.token_file = token_file.unwrap_or_else(|| c.state_dir.join("api-token"));
    c.network.cni_conf_dir = cni_conf_dir.unwrap_or_else(|| c.state_dir.join("cni"));
    c
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

fn abs_path(dec: &mut Decoder, v: &Node, path: &str) -> Option<PathBuf> {
    let s = dec.word(v, path)?;
    if !s.starts_with('/') {
        dec.problem(v.pos, path, format!("`{s}` must be an absolute path"));
        return None;
    }
    Some(PathBuf::from(s))
}

fn socket_addr(dec: &mut Decoder, v: &Node, path: &str) -> Option<SocketAddr> {
    let s = dec.word(v, path)?;
    match s.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            dec.problem(
                v.pos,
                path,
                format!("`{s}` is not an IP:port address (e.g. `127.0.0.1:9922` or `[::]:443`)"),
            );
            None
        }
    }
}

fn duration(dec: &mut Decoder, v: &Node, path: &str) -> Option<Duration> {
    let s = dec.string(v, path)?;
    // A bare number means seconds.
    if let Ok(secs) = s.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    match values::parse_duration(&s) {
        Ok(d) => Some(d),
        Err(m) => {
            dec.problem(v.pos, path, m);
            None
        }
    }
}

fn byte_size(dec: &mut Decoder, v: &Node, path: &str) -> Option<u64> {
    let s = dec.string(v, path)?;
    match values::parse_byte_size(&s) {
        Ok(b) => Some(b),
        Err(m) => {
            dec.problem(v.pos, path, m);
            None
        }
    }
}

fn cidr(dec: &mut Decoder, v: &Node, path: &str) -> Option<IpCidr> {
    let s = dec.word(v, path)?;
    match s.parse::<IpCidr>() {
        Ok(c) => Some(c),
        Err(e) => {
            dec.problem(v.pos, path, e.to_string());
            None
        }
    }
}

/// `network.subnet`: a CIDR the CNI bridge accepts, reported here with its position rather
/// than when haloyd sets up the network.
fn bridge_subnet(dec: &mut Decoder, v: &Node, path: &str) -> Option<IpCidr> {
    let subnet = cidr(dec, v, path)?;
    match crate::network::check_subnet(&subnet) {
        Ok(()) => Some(subnet),
        Err(reason) => {
            dec.problem(v.pos, path, format!("`{subnet}`: {reason}"));
            None
        }
    }
}

fn host_ports(dec: &mut Decoder, v: &Node, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, item) in dec.seq(v, path).iter().enumerate() {
        let p = index(path, i);
        let Some(s) = dec.word(item, &p) else {
            continue;
        };
        let valid = s
            .rsplit_once(':')
            .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
        if valid {
            out.push(s);
        } else {
            dec.problem(item.pos, &p, format!("`{s}` must be `host:port`"));
        }
    }
    out
}

fn decode_api(dec: &mut Decoder, v: &Node, api: &mut ApiConfig) -> Option<PathBuf> {
    let mut token_file = None;
    let keys = [
        "listen",
        "domain",
        "token_file",
        "header_read_timeout",
        "idle_timeout",
        "max_connections",
    ];
    for (k, e) in dec.map(v, "api", &keys) {
        let p = join("api", &k);
        match k.as_str() {
            "listen" => set(&mut api.listen, socket_addr(dec, &e.value, &p)),
            "header_read_timeout" => set(&mut api.header_read_timeout, duration(dec, &e.value, &p)),
            "idle_timeout" => set(&mut api.idle_timeout, duration(dec, &e.value, &p)),
            "max_connections" => set(
                &mut api.max_connections,
                dec.int_in(&e.value, &p, 1, 1_000_000).map(|n| n as u32),
            ),
            "domain" => {
                if let Some(s) = dec.word(&e.value, &p) {
                    match values::normalize_hostname(&s) {
                        Ok(h) => api.domain = Some(h),
                        Err(m) => dec.problem(e.value.pos, &p, m),
                    }
                }
            }
            _ => token_file = abs_path(dec, &e.value, &p),
        }
    }
    token_file
}

fn decode_containerd(dec: &mut Decoder, v: &Node, c: &mut ContainerdConfig) {
    for (k, e) in dec.map(v, "containerd", &["address", "namespace", "shim"]) {
        let p = join("containerd", &k);
        match k.as_str() {
            "address" => set(
                &mut c.address,
                dec.word(&e.value, &p)
                    .map(|s| PathBuf::from(s.strip_prefix("unix://").unwrap_or(&s))),
            ),
            "shim" => set(
                &mut c.shim,
                dec.one_of(
                    &e.value,
                    &p,
                    &[
                        ("app", ShimGrouping::PerApp),
                        ("replica", ShimGrouping::PerReplica),
                        ("host", ShimGrouping::PerHost),
                    ],
                ),
            ),
            _ => set(&mut c.namespace, dec.word(&e.value, &p)),
        }
    }
}

fn decode_proxy(dec: &mut Decoder, v: &Node, c: &mut ProxySection) {
    let keys = [
        "http_listen",
        "https_listen",
        "header_read_timeout",
        "idle_timeout",
        "backend_response_timeout",
        "max_header_bytes",
        "max_body_bytes",
        "max_connections",
        "drain_timeout",
        "trusted_proxies",
    ];
    for (k, e) in dec.map(v, "proxy", &keys) {
        let p = join("proxy", &k);
        let v = &e.value;
        match k.as_str() {
            "http_listen" => set(&mut c.http_listen, socket_addr(dec, v, &p)),
            "https_listen" => set(&mut c.https_listen, socket_addr(dec, v, &p)),
            "header_read_timeout" => set(&mut c.header_read_timeout, duration(dec, v, &p)),
            "idle_timeout" => set(&mut c.idle_timeout, duration(dec, v, &p)),
            "backend_response_timeout" => {
                set(&mut c.backend_response_timeout, duration(dec, v, &p))
            }
            "max_header_bytes" => set(&mut c.max_header_bytes, byte_size(dec, v, &p)),
            "max_body_bytes" => c.max_body_bytes = byte_size(dec, v, &p),
            "max_connections" => set(
                &mut c.max_connections,
                dec.int_in(v, &p, 1, 10_000_000).map(|n| n as u32),
            ),
            "drain_timeout" => set(&mut c.drain_timeout, duration(dec, v, &p)),
            _ => {
                c.trusted_proxies = dec
                    .seq(v, &p)
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| cidr(dec, item, &index(&p, i)))
                    .collect()
            }
        }
    }
}

fn decode_network(dec: &mut Decoder, v: &Node, c: &mut NetworkConfig) -> Option<PathBuf> {
    let mut conf_dir = None;
    let mut pool_pos = None;
    for (k, e) in dec.map(
        v,
        "network",
        &["subnet", "bridge", "cni_bin_dir", "cni_conf_dir", "pool"],
    ) {
        let p = join("network", &k);
        let v = &e.value;
        match k.as_str() {
            "subnet" => set(&mut c.subnet, bridge_subnet(dec, v, &p)),
            "pool" => {
                if let Some(pool) = network_pool(dec, v, &p) {
                    c.pool = pool;
                    pool_pos = Some(v.pos);
                }
            }
            "bridge" => {
                if let Some(b) = dec.word(v, &p) {
                    match crate::network::check_bridge_name(&b) {
                        Ok(()) => c.bridge = b,
                        Err(reason) => dec.problem(v.pos, &p, format!("`{b}` {reason}")),
                    }
                }
            }
            "cni_bin_dir" => set(&mut c.cni_bin_dir, abs_path(dec, v, &p)),
            _ => conf_dir = abs_path(dec, v, &p),
        }
    }
    if crate::network::overlaps(&c.pool, &c.subnet) {
        dec.problem(
            pool_pos.unwrap_or(v.pos),
            "network.pool",
            format!(
                "`{}` overlaps network.subnet `{}`: named networks need addresses of their own; pick a pool outside the subnet",
                c.pool, c.subnet
            ),
        );
    }
    conf_dir
}

/// `network.pool`: an IPv4 network of /24s for named networks.
fn network_pool(dec: &mut Decoder, v: &Node, path: &str) -> Option<IpCidr> {
    let pool = cidr(dec, v, path)?;
    let prefix = crate::network::NETWORK_PREFIX;
    if !pool.addr().is_ipv4() || !(8..=prefix).contains(&pool.prefix()) {
        dec.problem(
            v.pos,
            path,
            format!("`{pool}`: use an IPv4 network of prefix 8 to {prefix}; it is split into /{prefix}s, one per named network"),
        );
        return None;
    }
    Some(pool)
}

fn decode_acme(dec: &mut Decoder, v: &Node, c: &mut AcmeConfig) {
    let keys = [
        "enabled",
        "directory_url",
        "staging",
        "email",
        "ca_bundle",
        "unknown_sni",
        "certificates",
    ];
    let mut explicit_url = false;
    for (k, e) in dec.map(v, "acme", &keys) {
        let p = join("acme", &k);
        let v = &e.value;
        match k.as_str() {
            "directory_url" => {
                if let Some(u) = dec.word(v, &p) {
                    if u.starts_with("https://") || u.starts_with("http://") {
                        c.directory_url = u;
                        explicit_url = true;
                    } else {
                        dec.problem(v.pos, &p, format!("`{u}` is not an http(s) URL"));
                    }
                }
            }
            "enabled" => set(&mut c.enabled, dec.bool(v, &p)),
            "staging" => set(&mut c.staging, dec.bool(v, &p)),
            "email" => c.email = dec.word(v, &p),
            "ca_bundle" => c.ca_bundle = abs_path(dec, v, &p),
            "unknown_sni" => {
                c.unknown_sni = match dec.choice(v, &p, &["refuse", "self_signed"]).as_deref() {
                    Some("self_signed") => UnknownSni::SelfSigned,
                    _ => UnknownSni::Refuse,
                }
            }
            _ => c.certificates = decode_certificates(dec, v, &p),
        }
    }
    if c.staging && !explicit_url {
        c.directory_url = LETS_ENCRYPT_STAGING.into();
    }
}

fn decode_certificates(dec: &mut Decoder, v: &Node, path: &str) -> Vec<StaticCertificate> {
    let mut out = Vec::new();
    for (i, item) in dec.seq(v, path).iter().enumerate() {
        let p = index(path, i);
        let entries = dec.map(item, &p, &["domain", "cert_file", "key_file"]);
        let mut domain = None;
        let mut cert = None;
        let mut key = None;
        for (k, e) in &entries {
            let kp = join(&p, k);
            match k.as_str() {
                "domain" => {
                    if let Some(s) = dec.word(&e.value, &kp) {
                        match values::normalize_hostname(&s) {
                            Ok(h) => domain = Some(h),
                            Err(m) => dec.problem(e.value.pos, &kp, m),
                        }
                    }
                }
                "cert_file" => cert = abs_path(dec, &e.value, &kp),
                _ => key = abs_path(dec, &e.value, &kp),
            }
        }
        for (name, missing) in [
            ("domain", domain.is_none()),
            ("cert_file", cert.is_none()),
            ("key_file", key.is_none()),
        ] {
            if missing && !entries.iter().any(|(k, _)| k == name) {
                dec.problem(item.pos, &p, format!("missing `{name}`"));
            }
        }
        if let (Some(domain), Some(cert_file), Some(key_file)) = (domain, cert, key) {
            out.push(StaticCertificate {
                domain,
                cert_file,
                key_file,
            });
        }
    }
    out
}

fn decode_health(dec: &mut Decoder, v: &Node, c: &mut HealthMonitorConfig) {
    for (k, e) in dec.map(
        v,
        "health_monitor",
        &["interval", "timeout", "fall", "rise"],
    ) {
        let p = join("health_monitor", &k);
        let v = &e.value;
        match k.as_str() {
            "interval" => set(&mut c.interval, duration(dec, v, &p)),
            "timeout" => set(&mut c.timeout, duration(dec, v, &p)),
            "fall" => set(&mut c.fall, dec.int_in(v, &p, 1, 100).map(|n| n as u32)),
            _ => set(&mut c.rise, dec.int_in(v, &p, 1, 100).map(|n| n as u32)),
        }
    }
}

fn decode_logs(dec: &mut Decoder, v: &Node, c: &mut LogsConfig) {
    for (k, e) in dec.map(v, "logs", &["max_size", "max_files", "format"]) {
        let p = join("logs", &k);
        match k.as_str() {
            "max_size" => set(&mut c.max_size, byte_size(dec, &e.value, &p)),
            "format" => {
                c.format = match dec.choice(&e.value, &p, &["text", "json"]).as_deref() {
                    Some("json") => LogFormat::Json,
                    _ => LogFormat::Text,
                }
            }
            _ => set(
                &mut c.max_files,
                dec.int_in(&e.value, &p, 1, 1000).map(|n| n as u32),
            ),
        }
    }
}

fn decode_security(dec: &mut Decoder, v: &Node, c: &mut SecurityConfig) {
    for (k, e) in dec.map(v, "security", &["allowed_host_paths", "pids_limit"]) {
        let p = join("security", &k);
        match k.as_str() {
            "allowed_host_paths" => {
                c.allowed_host_paths = dec
                    .seq(&e.value, &p)
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| abs_path(dec, item, &index(&p, i)))
                    .collect()
            }
            _ => set(
                &mut c.pids_limit,
                dec.int_in(&e.value, &p, 1, crate::config::MAX_PIDS as i64)
                    .map(|n| n as u64),
            ),
        }
    }
}

fn decode_dns(dec: &mut Decoder, v: &Node, c: &mut DnsConfig) {
    for (k, e) in dec.map(v, "dns", &["enabled", "upstream"]) {
        let p = join("dns", &k);
        match k.as_str() {
            "enabled" => set(&mut c.enabled, dec.bool(&e.value, &p)),
            _ => {
                c.upstream = dec
                    .seq(&e.value, &p)
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| resolver_addr(dec, item, &index(&p, i)))
                    .collect()
            }
        }
    }
}

fn decode_access_log(dec: &mut Decoder, v: &Node, c: &mut AccessLogConfig) {
    let keys = &["to", "file", "max_size", "max_files"];
    for (k, e) in dec.map(v, "access_log", keys) {
        let p = join("access_log", &k);
        match k.as_str() {
            "to" => {
                c.to = match dec
                    .choice(&e.value, &p, &["off", "stderr", "file"])
                    .as_deref()
                {
                    Some("stderr") => AccessLogTo::Stderr,
                    Some("file") => AccessLogTo::File,
                    _ => AccessLogTo::Off,
                }
            }
            "file" => set(&mut c.file, abs_path(dec, &e.value, &p)),
            "max_size" => set(&mut c.max_size, byte_size(dec, &e.value, &p)),
            _ => set(
                &mut c.max_files,
                dec.int_in(&e.value, &p, 1, 1000).map(|n| n as u32),
            ),
        }
    }
}

/// `ip` (port 53) or `ip:port` / `[ipv6]:port`.
fn resolver_addr(dec: &mut Decoder, v: &Node, path: &str) -> Option<SocketAddr> {
    let s = dec.word(v, path)?;
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 53));
    }
    match s.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            dec.problem(
                v.pos,
                path,
                format!("`{s}` is not a resolver address (e.g. `192.0.2.53` or `127.0.0.1:5353`)"),
            );
            None
        }
    }
}

fn decode_metrics(dec: &mut Decoder, v: &Node, c: &mut MetricsConfig) {
    for (k, e) in dec.map(v, "metrics", &["listen"]) {
        let p = join("metrics", &k);
        let Some(addr) = socket_addr(dec, &e.value, &p) else {
            continue;
        };
        if addr.ip().is_loopback() {
            c.listen = Some(addr);
        } else {
            // The endpoint has no token: it must not be reachable from other hosts.
            dec.problem(
                e.value.pos,
                &p,
                format!("`{addr}` is not a loopback address; metrics have no authentication, use e.g. 127.0.0.1:9923 and scrape locally"),
            );
        }
    }
}

#[cfg(test)]
#[path = "tests/server.rs"]
mod tests;
