//! Apps reach each other by name (issue 15) and `network` keeps names apart (issue 14): a
//! private containerd, registry and haloyd per test, apps deployed with the real `haloy` CLI,
//! and lookups made from inside a replica (the fixture's `/cgi-bin/lookup?NAME` runs busybox
//! `nslookup`, `/cgi-bin/fetch?HOST:PORT/PATH` runs `nc` (getaddrinfo), both against the replica's own
//! resolv.conf). Names outside haloy go to a resolver this test runs on loopback; no query
//! leaves the machine.

// Tests start real containerd, registries, Pebble and tools (see clippy.toml).
#![allow(clippy::disallowed_methods)]

#[path = "harness/mod.rs"]
mod harness;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use haloy::api::types::AppStatus;
use harness::haloyd::{Haloyd, HaloydOptions};
use harness::{Containerd, Registry};
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// The only outside name the loopback resolver knows, and its address.
const OUTSIDE_NAME: &str = "outside.example";
const OUTSIDE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 80);

/// A resolver on 127.0.0.1 standing in for the host's: it knows `outside.example` and says
/// NXDOMAIN to everything else; it records every name it was asked.
struct LoopbackResolver {
    addr: SocketAddr,
    asked: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl LoopbackResolver {
    async fn start() -> LoopbackResolver {
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind the loopback resolver");
        let addr = socket.local_addr().expect("resolver address");
        let asked = Arc::new(Mutex::new(Vec::new()));
        let seen = asked.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                if let Some(reply) = resolve(&query, &seen) {
                    let _ = socket.send_to(&reply, peer).await;
                }
            }
        });
        LoopbackResolver { addr, asked, task }
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().expect("resolver log").clone()
    }
}

impl Drop for LoopbackResolver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn resolve(query: &Message, seen: &Mutex<Vec<String>>) -> Option<Vec<u8>> {
    let question = query.queries().first()?.clone();
    let name = question.name().to_lowercase().to_ascii();
    seen.lock().ok()?.push(name.clone());
    let known = name.trim_end_matches('.') == OUTSIDE_NAME;
    let mut reply = Message::new();
    reply
        .set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(if known {
            ResponseCode::NoError
        } else {
            ResponseCode::NXDomain
        })
        .add_query(question.clone());
    if known && question.query_type() == RecordType::A {
        reply.add_answer(Record::from_rdata(
            question.name().clone(),
            60,
            RData::A(A(OUTSIDE_ADDR)),
        ));
    }
    reply.to_vec().ok()
}

/// Field order is drop order: haloyd first, containerd last.
struct Rig {
    haloyd: Haloyd,
    registry: Registry,
    resolver: LoopbackResolver,
    _containerd: Containerd,
}

impl Rig {
    async fn start() -> Rig {
        let containerd = Containerd::start().await;
        let registry = Registry::start().await;
        registry.push_fixtures().await;
        let resolver = LoopbackResolver::start().await;
        let options = HaloydOptions {
            insecure_registries: vec![registry.addr().to_string()],
            dns_upstream: vec![resolver.addr.to_string()],
            ..HaloydOptions::default()
        };
        let haloyd = Haloyd::start(&containerd, options).await;
        Rig {
            haloyd,
            registry,
            resolver,
            _containerd: containerd,
        }
    }

    /// haloy.yaml of `app` running fixture `web:tag`; `extra` adds keys (domains, preset …).
    fn app(&self, app: &str, tag: &str, extra: &str) -> PathBuf {
        let body = format!(
            "name: {app}\nimage: {}\nport: 8080\nhealth_check_path: /health\n{extra}",
            self.registry.fixture_ref("web", tag)
        );
        self.haloyd.write_app_config(&format!("{app}-{tag}"), &body)
    }

    fn run_ok(&self, config: &Path, args: &[&str]) {
        let run = self.haloyd.cli(config, args);
        if !run.output.status.success() {
            panic!(
                "haloy {args:?} of {} failed ({}):\n{}\n--- haloyd log (tail)\n{}",
                config.display(),
                run.output.status,
                run.both(),
                self.haloyd.log_tail(40)
            );
        }
    }

    /// The replica addresses `haloy status --json` shows for the app in `config`.
    fn replica_ips(&self, config: &Path) -> Vec<String> {
        let run = self.haloyd.cli(config, &["status", "--json"]);
        run.assert_ok();
        let list: Vec<AppStatus> =
            serde_json::from_str(&run.stdout()).expect("status --json is a list of app status");
        list.iter()
            .flat_map(|s| &s.replicas)
            .filter_map(|r| r.ip.clone())
            .collect()
    }

    /// GET `path` through haloyd's proxy with `Host: host`; the body of a 200.
    async fn page(&self, host: &str, path: &str) -> String {
        let addr = self.haloyd.http_addr();
        let call = async {
            let mut stream = TcpStream::connect(&addr)
                .await
                .expect("connect to the proxy");
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            stream
                .write_all(request.as_bytes())
                .await
                .expect("send request");
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await.expect("read response");
            String::from_utf8_lossy(&raw).to_string()
        };
        let response = tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .unwrap_or_else(|_| panic!("GET {path} on {host}: no answer within 30 s"));
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "GET {path} on {host}: {head}\n--- haloyd log (tail)\n{}",
            self.haloyd.log_tail(30)
        );
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        }
    }

    /// `nslookup NAME` run inside a replica of the app serving `host`.
    async fn lookup_from(&self, host: &str, name: &str) -> String {
        self.page(host, &format!("/cgi-bin/lookup?{name}")).await
    }

    /// A GET of `http://TARGET` made with `nc` inside a replica of the app serving `host`.
    async fn fetch_from(&self, host: &str, target: &str) -> String {
        self.page(host, &format!("/cgi-bin/fetch?{target}")).await
    }

    /// Polls `lookup_from` until `done` holds (a stop is a job the CLI may leave running).
    async fn lookup_until(
        &self,
        host: &str,
        name: &str,
        what: &str,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.lookup_from(host, name).await;
            if done(&out) {
                return out;
            }
            if Instant::now() > deadline {
                panic!(
                    "{what}: not seen within 30 s; last nslookup {name}:\n{out}\n--- haloyd log (tail)\n{}",
                    self.haloyd.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The payload of a chunked body (CGI output reaches the client chunked).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The addresses in nslookup's answer section (after the `Name:` line; the lines before it
/// name the server).
fn answered_addresses(nslookup: &str) -> Vec<String> {
    nslookup
        .lines()
        .skip_while(|l| !l.starts_with("Name:"))
        .filter_map(|l| l.strip_prefix("Address:"))
        .map(|a| a.trim().to_string())
        .collect()
}

fn is_nxdomain(nslookup: &str) -> bool {
    nslookup.contains("NXDOMAIN") && answered_addresses(nslookup).is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_app_reaches_database_by_name_across_redeploy_and_stop() {
    let rig = Rig::start().await;
    let db_v1 = rig.app("db", "v1", "preset: database\n");
    let web = rig.app("web", "v1", "domains:\n  - domain: web.test\n");
    rig.run_ok(&db_v1, &["deploy"]);
    rig.run_ok(&web, &["deploy"]);

    // By bare name (as on a Docker network) and qualified, through haloyd's resolver.
    let page = rig.fetch_from("web.test", "db:8080/version.txt").await;
    assert!(
        page.contains("version=v1"),
        "web fetched db by name: {page}"
    );
    let page = rig
        .fetch_from("web.test", "db.haloy.internal:8080/version.txt")
        .await;
    assert!(page.contains("version=v1"), "qualified name: {page}");
    let first_ips = rig.replica_ips(&db_v1);
    assert_eq!(first_ips.len(), 1, "one db replica: {first_ips:?}");
    let out = rig.lookup_from("web.test", "db.haloy.internal").await;
    assert!(
        out.contains(&format!("Server:\t\t{}", rig.haloyd.gateway())),
        "the replica asks haloyd on the bridge gateway {}:\n{out}",
        rig.haloyd.gateway()
    );
    assert_eq!(answered_addresses(&out), first_ips, "{out}");

    // A redeploy moves the name to the new replica.
    let db_v2 = rig.app("db", "v2", "preset: database\n");
    rig.run_ok(&db_v2, &["deploy"]);
    let second_ips = rig.replica_ips(&db_v2);
    assert_eq!(second_ips.len(), 1, "one db replica: {second_ips:?}");
    assert_ne!(first_ips, second_ips, "the new replica has a new address");
    let out = rig.lookup_from("web.test", "db.haloy.internal").await;
    assert_eq!(
        answered_addresses(&out),
        second_ips,
        "after redeploy:\n{out}"
    );
    let page = rig.fetch_from("web.test", "db:8080/version.txt").await;
    assert!(page.contains("version=v2"), "after redeploy: {page}");

    // Names outside haloy go to the host's (here: the test's loopback) resolver.
    let out = rig.lookup_from("web.test", OUTSIDE_NAME).await;
    assert_eq!(
        answered_addresses(&out),
        [OUTSIDE_ADDR.to_string()],
        "outside name through the upstream resolver:\n{out}"
    );
    assert!(
        rig.resolver
            .asked()
            .iter()
            .any(|n| n == &format!("{OUTSIDE_NAME}.")),
        "the loopback resolver was asked: {:?}",
        rig.resolver.asked()
    );
    // App names never reach the upstream resolver.
    assert!(
        !rig.resolver.asked().iter().any(|n| n.starts_with("db")),
        "db leaked upstream: {:?}",
        rig.resolver.asked()
    );

    // A stopped app's name stops resolving, in both forms.
    rig.run_ok(&db_v2, &["stop"]);
    let out = rig
        .lookup_until(
            "web.test",
            "db.haloy.internal",
            "db NXDOMAIN after stop",
            is_nxdomain,
        )
        .await;
    assert!(is_nxdomain(&out), "{out}");
    let page = rig.fetch_from("web.test", "db:8080/version.txt").await;
    assert!(
        page.contains("fetch failed") && !page.contains("version="),
        "db after stop: {page}"
    );
    assert!(
        !rig.resolver.asked().iter().any(|n| n.starts_with("db")),
        "a stopped app's name is answered here, not forwarded: {:?}",
        rig.resolver.asked()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_resolve_only_apps_on_their_own_network_also_after_an_upgrade() {
    let mut rig = Rig::start().await;
    let ledger = rig.app("ledger", "v1", "preset: database\nnetwork: billing\n");
    let billing = rig.app(
        "billing",
        "v1",
        "network: billing\ndomains:\n  - domain: billing.test\n",
    );
    let shop = rig.app("shop", "v1", "domains:\n  - domain: shop.test\n");
    for config in [&ledger, &billing, &shop] {
        rig.run_ok(config, &["deploy"]);
    }
    let ledger_ips = rig.replica_ips(&ledger);

    // Same network: found.
    let out = rig
        .lookup_from("billing.test", "ledger.haloy.internal")
        .await;
    assert_eq!(answered_addresses(&out), ledger_ips, "{out}");
    let page = rig
        .fetch_from("billing.test", "ledger:8080/version.txt")
        .await;
    assert!(
        page.contains("version=v1"),
        "billing reaches ledger: {page}"
    );

    // Other network: not there, in either direction.
    let out = rig.lookup_from("shop.test", "ledger.haloy.internal").await;
    assert!(is_nxdomain(&out), "shop must not see ledger:\n{out}");
    let page = rig.fetch_from("shop.test", "ledger:8080/version.txt").await;
    assert!(
        page.contains("fetch failed") && !page.contains("version="),
        "shop must not reach ledger by name: {page}"
    );
    let out = rig.lookup_from("billing.test", "shop.haloy.internal").await;
    assert!(is_nxdomain(&out), "billing must not see shop:\n{out}");

    // `haloyd upgrade`: the successor binds the DNS sockets beside its predecessor
    // (SO_REUSEPORT) and answers alone once the old one exited; no replica restarts.
    rig.haloyd.upgrade_to_successor();
    let exited = rig.haloyd.wait_exit(Duration::from_secs(30));
    assert!(
        exited.is_some_and(|s| s.success()),
        "the old haloyd did not exit: {exited:?}\n{}",
        rig.haloyd.log_tail(40)
    );
    let log = rig.haloyd.log();
    assert_eq!(
        log.matches("dns for replicas").count(),
        2,
        "both daemons listened for DNS:\n{}",
        rig.haloyd.log_tail(40)
    );
    assert!(
        !log.contains("app names will not resolve"),
        "{}",
        rig.haloyd.log_tail(40)
    );
    let out = rig
        .lookup_from("billing.test", "ledger.haloy.internal")
        .await;
    assert_eq!(
        answered_addresses(&out),
        ledger_ips,
        "after the upgrade:\n{out}"
    );
    assert_eq!(
        rig.replica_ips(&ledger),
        ledger_ips,
        "ledger was not replaced"
    );
    let out = rig.lookup_from("shop.test", "ledger.haloy.internal").await;
    assert!(is_nxdomain(&out), "after the upgrade:\n{out}");
}

/// `GET /version.txt` through the proxy for `host` shows `version=v1`.
async fn assert_served(rig: &Rig, host: &str) {
    let page = rig.page(host, "/version.txt").await;
    assert!(
        page.contains("version=v1"),
        "{host} through the proxy: {page}"
    );
}

/// The backend apps reach each other by name and address, shop (default network) neither
/// resolves nor reaches them, nor they shop; the proxy serves all three.
async fn check_isolation(rig: &Rig, db_ips: &[String], shop_ips: &[String], label: &str) {
    for host in ["db.test", "api.test", "shop.test"] {
        assert_served(rig, host).await;
    }
    // Same network: by name and by address.
    let out = rig.lookup_from("api.test", "db.haloy.internal").await;
    assert_eq!(answered_addresses(&out), db_ips, "{label}: {out}");
    let page = rig.fetch_from("api.test", "db:8080/version.txt").await;
    assert!(
        page.contains("version=v1"),
        "{label}: api reaches db by name: {page}"
    );
    let page = rig
        .fetch_from("api.test", &format!("{}:8080/version.txt", db_ips[0]))
        .await;
    assert!(
        page.contains("version=v1"),
        "{label}: api reaches db by IP: {page}"
    );
    // Default network: neither the name nor the address (nc gives up after 5 s).
    let out = rig.lookup_from("shop.test", "db.haloy.internal").await;
    assert!(is_nxdomain(&out), "{label}: shop must not see db:\n{out}");
    let page = rig
        .fetch_from("shop.test", &format!("{}:8080/version.txt", db_ips[0]))
        .await;
    assert!(
        page.contains("fetch failed") && !page.contains("version="),
        "{label}: shop must not reach db by IP: {page}"
    );
    // Nor the other way round.
    let page = rig
        .fetch_from("api.test", &format!("{}:8080/version.txt", shop_ips[0]))
        .await;
    assert!(
        page.contains("fetch failed") && !page.contains("version="),
        "{label}: api must not reach shop by IP: {page}"
    );
}

/// Issue 14: `network: backend` is a CNI network of its own (bridge, /24 from the pool,
/// isolation rules): its apps reach each other by name and address, an app on the default
/// network neither resolves nor reaches them, the proxy serves all, a haloyd restart keeps it
/// so, and stopping the network's last app leaves nothing of it on the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_network_is_its_own_bridge_and_subnet_isolated_from_the_default_one() {
    let mut rig = Rig::start().await;
    let db = rig.app(
        "db",
        "v1",
        "network: backend\ndomains:\n  - domain: db.test\n",
    );
    let api = rig.app(
        "api",
        "v1",
        "network: backend\ndomains:\n  - domain: api.test\n",
    );
    let shop = rig.app("shop", "v1", "domains:\n  - domain: shop.test\n");
    for config in [&db, &api, &shop] {
        rig.run_ok(config, &["deploy"]);
    }

    // One named network, from the pool, on a bridge of its own.
    let networks = rig.haloyd.named_networks();
    assert_eq!(networks.len(), 1, "{networks:?}");
    let (name, subnet, bridge) = networks[0].clone();
    assert_eq!(name, "backend");
    assert_eq!(subnet, format!("{}.0/24", rig.haloyd.pool_prefix()));
    assert!(
        bridge.starts_with("hl-") && bridge.len() == 15,
        "bridge {bridge}"
    );
    assert!(Path::new("/sys/class/net").join(&bridge).exists());
    let db_ips = rig.replica_ips(&db);
    let shop_ips = rig.replica_ips(&shop);
    assert!(
        db_ips
            .iter()
            .all(|ip| ip.starts_with(&format!("{}.", rig.haloyd.pool_prefix()))),
        "db on the backend subnet: {db_ips:?}"
    );
    let default_prefix = rig.haloyd.gateway().trim_end_matches(".1").to_string();
    assert!(
        shop_ips
            .iter()
            .all(|ip| ip.starts_with(&format!("{default_prefix}."))),
        "shop stays on the default subnet: {shop_ips:?}"
    );

    check_isolation(&rig, &db_ips, &shop_ips, "after deploy").await;

    rig.haloyd.kill();
    rig.haloyd.start_again().await;
    assert_eq!(rig.replica_ips(&db), db_ips, "db was not replaced");
    check_isolation(&rig, &db_ips, &shop_ips, "after a haloyd restart").await;

    // The network's last app stops: bridge, leases, results and rules go (a stopped replica
    // keeps its container, not its network); shop is untouched.
    for config in [&api, &db] {
        rig.run_ok(config, &["stop"]);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = rig.haloyd.network_leftovers("backend");
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left of network backend after its apps stopped:\n{}\n--- haloyd log (tail)\n{}",
            left.join("\n"),
            rig.haloyd.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_served(&rig, "shop.test").await;
    assert_eq!(
        rig.haloyd.named_networks()[0].1,
        subnet,
        "the subnet stays reserved for the name"
    );
    rig.run_ok(&shop, &["stop"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while rig.haloyd.task_namespaces() > 0 {
        assert!(
            Instant::now() < deadline,
            "task namespaces left after every app stopped"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
