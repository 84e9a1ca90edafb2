//! Unit tests of `config::server`.

use super::*;

#[test]
fn empty_file_gives_defaults() {
    let c = ServerConfig::parse("", "haloyd.yaml").unwrap();
    assert_eq!(c, ServerConfig::default());
    assert_eq!(c.api.listen.to_string(), "127.0.0.1:9922");
    assert_eq!(c.containerd.namespace, "haloy");
    assert_eq!(c.containerd.shim, ShimGrouping::PerApp);
    assert_eq!(c.proxy.max_header_bytes, 65536);
    assert_eq!(c.network.subnet.to_string(), "10.89.0.0/16");
    assert_eq!(c.health_monitor.fall, 3);
    assert_eq!(c.deploy.timeout, Duration::from_secs(300));
    assert_eq!(c.logs.max_size, 10 << 20);
    assert_eq!(c.api.token_file, PathBuf::from("/var/lib/haloy/api-token"));
}

#[test]
fn every_key_is_read() {
    let text = r#"
api: {listen: "127.0.0.1:0", domain: API.example.com, token_file: /t/token}
containerd: {address: /t/containerd.sock, namespace: test-ns, shim: replica}
proxy:
  http_listen: "127.0.0.1:8080"
  https_listen: "127.0.0.1:8443"
  header_read_timeout: 500ms
  idle_timeout: 2m
  backend_response_timeout: 30s
  max_header_bytes: 32KiB
  max_body_bytes: 10Mi
  max_connections: 50
  drain_timeout: 1s
  trusted_proxies: [10.0.0.0/8, 127.0.0.1]
network: {subnet: 10.201.0.0/24, bridge: hl-test0, cni_bin_dir: /usr/lib/cni, cni_conf_dir: /t/cni}
state_dir: /t/state
run_dir: /t/run
registries: {insecure: ["127.0.0.1:5000"]}
acme:
  directory_url: https://127.0.0.1:14000/dir
  email: ops@example.com
  ca_bundle: /t/pebble.pem
  unknown_sni: self_signed
  certificates: [{domain: a.example.com, cert_file: /t/a.crt, key_file: /t/a.key}]
health_monitor: {interval: 1s, timeout: 200ms, fall: 2, rise: 1}
deploy: {timeout: 90s}
logs: {max_size: 1Mi, max_files: 2}
"#;
    let c = ServerConfig::parse(text, "haloyd.yaml").unwrap();
    assert_eq!(c.api.domain.as_deref(), Some("api.example.com"));
    assert_eq!(c.proxy.header_read_timeout, Duration::from_millis(500));
    assert_eq!(c.proxy.max_body_bytes, Some(10 << 20));
    assert!(c.proxy.trusted_proxies[0].contains("10.1.2.3".parse().unwrap()));
    assert!(!c.proxy.trusted_proxies[1].contains("127.0.0.2".parse().unwrap()));
    assert_eq!(c.network.bridge, "hl-test0");
    assert_eq!(c.containerd.shim, ShimGrouping::PerReplica);
    assert_eq!(c.network.cni_conf_dir, PathBuf::from("/t/cni"));
    assert_eq!(c.state_dir, PathBuf::from("/t/state"));
    assert_eq!(c.acme.unknown_sni, UnknownSni::SelfSigned);
    assert_eq!(c.acme.certificates.len(), 1);
    assert_eq!(c.health_monitor.timeout, Duration::from_millis(200));
    assert_eq!(c.deploy.timeout, Duration::from_secs(90));
    assert_eq!(c.logs.max_files, 2);
}

#[test]
fn template_parses_and_uncommented_values_are_valid() {
    let c = ServerConfig::parse(TEMPLATE_YAML, "template").unwrap();
    assert_eq!(c, ServerConfig::default());
    let uncommented: String = TEMPLATE_YAML
        .lines()
        .skip(1)
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect();
    let c = ServerConfig::parse(&uncommented, "uncommented").unwrap();
    assert_eq!(c.api.domain.as_deref(), Some("haloy.example.com"));
    assert_eq!(c.proxy.max_body_bytes, Some(100 << 20));
    assert_eq!(c.health_monitor, ServerConfig::default().health_monitor);
}

#[test]
fn token_file_follows_state_dir() {
    let c = ServerConfig::parse("state_dir: /srv/haloy\n", "f").unwrap();
    assert_eq!(c.api.token_file, PathBuf::from("/srv/haloy/api-token"));
    assert_eq!(c.network.cni_conf_dir, PathBuf::from("/srv/haloy/cni"));
}

#[test]
fn staging_switches_directory() {
    let c = ServerConfig::parse("acme: {staging: true}\n", "f").unwrap();
    assert_eq!(c.acme.directory_url, LETS_ENCRYPT_STAGING);
}

#[test]
fn problems_are_positioned() {
    let err = ServerConfig::parse(
            "api:\n  listn: 1.2.3.4:5\nproxy:\n  idle_timeout: soon\nnetwork:\n  bridge: a-very-long-bridge-name\nstate_dir: relative/dir\n",
            "haloyd.yaml",
        )
        .unwrap_err();
    let lines = err.lines();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(
        lines[0],
        "haloyd.yaml:2:3: api.listn: unknown key `listn`; did you mean `listen`?"
    );
    assert!(lines[1].starts_with("haloyd.yaml:4:17: proxy.idle_timeout: `soon` is not a duration"));
    assert!(lines[2].starts_with("haloyd.yaml:6:11: network.bridge:"));
    assert!(lines[3]
        .starts_with("haloyd.yaml:7:12: state_dir: `relative/dir` must be an absolute path"));
}

#[test]
fn security_keys_are_read_and_checked() {
    let c = ServerConfig::parse(
        "security:\n  allowed_host_paths: [/etc/ssl, /srv/shared]\n  pids_limit: 512\n",
        "haloyd.yaml",
    )
    .unwrap();
    assert_eq!(
        c.security.allowed_host_paths,
        [PathBuf::from("/etc/ssl"), PathBuf::from("/srv/shared")]
    );
    assert_eq!(c.security.pids_limit, 512);
    assert_eq!(
        ServerConfig::default().security.pids_limit,
        crate::runtime::task::DEFAULT_PIDS_LIMIT
    );
    let err = ServerConfig::parse(
        "security:\n  allowed_host_paths: [etc]\n  pids_limit: 0\n",
        "haloyd.yaml",
    )
    .unwrap_err();
    let lines = err.lines();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with(
            "haloyd.yaml:2:24: security.allowed_host_paths[0]: `etc` must be an absolute path"
        ),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("haloyd.yaml:3:15: security.pids_limit: 0 is out of range"),
        "{lines:?}"
    );
}

#[test]
fn api_listener_limits_default_and_parse() {
    let c = ServerConfig::parse("", "haloyd.yaml").unwrap();
    assert_eq!(c.api.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.api.idle_timeout, Duration::from_secs(60));
    assert_eq!(c.api.max_connections, 256);
    let c = ServerConfig::parse(
        "api: {header_read_timeout: 2s, idle_timeout: 500ms, max_connections: 3}\n",
        "haloyd.yaml",
    )
    .unwrap();
    assert_eq!(c.api.header_read_timeout, Duration::from_secs(2));
    assert_eq!(c.api.idle_timeout, Duration::from_millis(500));
    assert_eq!(c.api.max_connections, 3);
    let err = ServerConfig::parse("api: {max_connections: 0}\n", "haloyd.yaml").unwrap_err();
    assert!(err.to_string().contains("api.max_connections"), "{err}");
}

#[test]
fn logs_format_defaults_to_text_and_reads_json() {
    assert_eq!(ServerConfig::default().logs.format, LogFormat::Text);
    let c = ServerConfig::parse("logs:\n  format: json\n", "haloyd.yaml").unwrap();
    assert_eq!(c.logs.format, LogFormat::Json);
    let c = ServerConfig::parse("logs: {format: text}\n", "haloyd.yaml").unwrap();
    assert_eq!(c.logs.format, LogFormat::Text);
    let err = ServerConfig::parse("logs:\n  format: jsn\n", "haloyd.yaml").unwrap_err();
    let lines = err.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("haloyd.yaml:2:11: logs.format: `jsn` is not valid"),
        "{lines:?}"
    );
    assert!(lines[0].contains("did you mean `json`?"), "{lines:?}");
}

#[test]
fn bridge_subnet_and_name_are_checked_with_their_position() {
    let text = "network:\n  subnet: fd00::/64\n  bridge: \"br/0\"\n";
    let lines = ServerConfig::parse(text, "haloyd.yaml")
        .unwrap_err()
        .lines();
    assert!(
        lines
            .contains(&"haloyd.yaml:2:11: network.subnet: `fd00::/64`: not an IPv4 address".into()),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("haloyd.yaml:3:11: network.bridge: `br/0` must be 1-15")),
        "{lines:?}"
    );
    let text = "network: {subnet: 10.0.0.0/31}\n";
    let lines = ServerConfig::parse(text, "haloyd.yaml")
        .unwrap_err()
        .lines();
    assert!(
        lines[0].ends_with("prefix length must be between 8 and 30"),
        "{lines:?}"
    );
}

#[test]
fn dns_keys_are_read_and_checked() {
    assert!(ServerConfig::default().dns.enabled);
    let c = ServerConfig::parse(
        "dns:\n  enabled: false\n  upstream: [192.0.2.53, \"127.0.0.1:5353\", \"[2001:db8::1]:53\"]\n",
        "haloyd.yaml",
    )
    .unwrap();
    assert!(!c.dns.enabled);
    let want: Vec<SocketAddr> = ["192.0.2.53:53", "127.0.0.1:5353", "[2001:db8::1]:53"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(c.dns.upstream, want);
    let err =
        ServerConfig::parse("dns:\n  upstream: [resolver.example]\n", "haloyd.yaml").unwrap_err();
    assert!(
        err.lines()[0].contains("dns.upstream[0]: `resolver.example` is not a resolver address"),
        "{:?}",
        err.lines()
    );
}

#[test]
fn metrics_listen_is_off_by_default_and_loopback_only() {
    assert_eq!(ServerConfig::default().metrics.listen, None);
    let c = ServerConfig::parse("metrics: {listen: 127.0.0.1:9923}\n", "f").unwrap();
    assert_eq!(c.metrics.listen, Some("127.0.0.1:9923".parse().unwrap()));
    let err = ServerConfig::parse("metrics:\n  listen: 0.0.0.0:9923\n", "haloyd.yaml").unwrap_err();
    let lines = err.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with(
            "haloyd.yaml:2:11: metrics.listen: `0.0.0.0:9923` is not a loopback address"
        ),
        "{lines:?}"
    );
}

#[test]
fn network_pool_defaults_apart_from_the_subnet_and_is_checked_with_its_position() {
    let c = ServerConfig::parse("", "haloyd.yaml").unwrap();
    assert_eq!(c.network.pool.to_string(), "10.90.0.0/16");
    let c = ServerConfig::parse("network: {pool: 10.200.0.0/20}\n", "haloyd.yaml").unwrap();
    assert_eq!(c.network.pool.to_string(), "10.200.0.0/20");
    let text = "network:\n  subnet: 10.89.0.0/16\n  pool: 10.89.128.0/20\n";
    let lines = ServerConfig::parse(text, "haloyd.yaml")
        .unwrap_err()
        .lines();
    assert!(
        lines.iter().any(|l| {
            l.starts_with(
            "haloyd.yaml:3:9: network.pool: `10.89.128.0/20` overlaps network.subnet `10.89.0.0/16`"
        )
        }),
        "{lines:?}"
    );
    let lines = ServerConfig::parse("network:\n  pool: 10.90.0.0/25\n", "haloyd.yaml")
        .unwrap_err()
        .lines();
    assert!(
        lines.iter().any(|l| l.starts_with(
            "haloyd.yaml:2:9: network.pool: `10.90.0.0/25`: use an IPv4 network of prefix 8 to 24"
        )),
        "{lines:?}"
    );
}
