//! Deploys end to end (issue 5): a private containerd, registry and haloyd per test, driven by
//! the real `haloy` CLI, with traffic sent to haloyd's loopback proxy port: round-robin spread,
//! rolling deploys under keep-alive load, failed deploys (never healthy, dying inside
//! min_ready_seconds), replace/stop/rollback/logs/status, recovery after `kill -9 haloyd`, bad
//! config input, and a replica killed from outside.

// Tests start real containerd, registries, Pebble and tools (see clippy.toml).
#![allow(clippy::disallowed_methods)]

#[path = "harness/mod.rs"]
mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use containerd_client::services::v1::{GetRequest, ListContainersRequest};
use haloy::api::types::{AppStatus, ReplicaState};
use harness::haloyd::{CliRun, HaloydOptions};
use harness::stack::Stack;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// The shared stack (private containerd, registry with the fixtures, haloyd) and a keep-alive
/// HTTP client for the proxy.
struct Rig {
    stack: Stack,
    http: HttpClient,
}

impl std::ops::Deref for Rig {
    type Target = Stack;
    fn deref(&self) -> &Stack {
        &self.stack
    }
}

impl std::ops::DerefMut for Rig {
    fn deref_mut(&mut self) -> &mut Stack {
        &mut self.stack
    }
}

impl Rig {
    async fn start(deploy_timeout: Duration) -> Rig {
        let options = HaloydOptions {
            deploy_timeout,
            ..HaloydOptions::default()
        };
        Rig {
            stack: Stack::start_with(options).await,
            http: keep_alive_client(),
        }
    }

    /// `haloy deploy`, which must succeed.
    fn deploy_ok(&self, config: &Path) -> CliRun {
        let run = self.haloy(config, &["deploy"]);
        if !run.output.status.success() {
            panic!(
                "haloy deploy of {} failed ({}):\n{}\n--- haloyd log (tail)\n{}",
                config.display(),
                run.output.status,
                run.both(),
                self.haloyd.log_tail(40)
            );
        }
        run
    }

    /// GET `path` on the proxy with `Host: host`.
    async fn get(&self, host: &str, path: &str) -> Result<(u16, String), String> {
        get(&self.http, &self.haloyd.http_addr(), host, path).await
    }

    /// `n` sequential requests that must all be 200; returns the parsed pages.
    async fn get_pages(&self, host: &str, n: usize) -> Vec<Page> {
        let mut pages = Vec::new();
        for i in 0..n {
            match self.get(host, "/").await {
                Ok((200, body)) => pages.push(Page::parse(&body)),
                other => panic!(
                    "request {i} of {n} to {host} failed: {other:?}\n--- haloyd log (tail)\n{}",
                    self.haloyd.log_tail(30)
                ),
            }
        }
        pages
    }

    /// Ids of every container in haloyd's containerd namespace.
    async fn containers(&self) -> BTreeSet<String> {
        let client = self.containerd.client(self.haloyd.namespace()).await;
        let list = client
            .containers()
            .list(client.request(ListContainersRequest::default()))
            .await
            .expect("list containers")
            .into_inner();
        list.containers.into_iter().map(|c| c.id).collect()
    }

    /// Keys of the non-image (container) snapshots in haloyd's namespace.
    async fn active_snapshots(&self) -> Vec<String> {
        use containerd_client::services::v1::snapshots::ListSnapshotsRequest;
        let client = self.containerd.client(self.haloyd.namespace()).await;
        let request = ListSnapshotsRequest {
            snapshotter: "overlayfs".into(),
            filters: vec![],
        };
        let mut stream = client
            .snapshots()
            .list(client.request(request))
            .await
            .expect("list snapshots")
            .into_inner();
        let mut active = Vec::new();
        while let Some(page) = stream.message().await.expect("snapshot page") {
            // Kind 3 is COMMITTED (image layers); anything else belongs to a container.
            active.extend(
                page.info
                    .into_iter()
                    .filter(|i| i.kind != 3)
                    .map(|i| i.name),
            );
        }
        active
    }

    /// Host pid of a container's task.
    async fn task_pid(&self, container_id: &str) -> u32 {
        let client = self.containerd.client(self.haloyd.namespace()).await;
        let get = GetRequest {
            container_id: container_id.to_string(),
            exec_id: String::new(),
        };
        let task = client
            .tasks()
            .get(client.request(get))
            .await
            .unwrap_or_else(|e| panic!("Tasks.Get {container_id}: {e}"))
            .into_inner();
        task.process.expect("task process").pid
    }
}

fn keep_alive_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    // No silent retry of a request whose pooled connection was closed: every connection the
    // proxy drops under us must show up as a failure.
    Client::builder(TokioExecutor::new())
        .retry_canceled_requests(false)
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(4)
        .build(connector)
}

async fn get(
    client: &HttpClient,
    addr: &str,
    host: &str,
    path: &str,
) -> Result<(u16, String), String> {
    let request = http::Request::get(format!("http://{addr}{path}"))
        .header(http::header::HOST, host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let call = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e:?}"))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).to_string()))
    };
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .map_err(|_| "no answer within 10s".to_string())?
}

/// A raw HTTP/1.1 call to haloyd's API (`Connection: close`); returns status and body.
fn api_call(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the API");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status from {method} {path}: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// What the fixture web page says about the replica that answered.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Page {
    fixture: String,
    version: String,
    replica: String,
}

impl Page {
    fn parse(body: &str) -> Page {
        let after = |prefix: &str, end: &str| -> String {
            body.split(prefix)
                .nth(1)
                .and_then(|rest| rest.split(end).next())
                .unwrap_or_else(|| panic!("no `{prefix}` in the page:\n{body}"))
                .trim()
                .to_string()
        };
        Page {
            fixture: after("haloy fixture ", "<"),
            version: after("version: ", "<"),
            replica: after("replica: ", "<"),
        }
    }
}

/// Counts of answers per replica id.
fn per_replica(pages: &[Page]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for page in pages {
        *counts.entry(page.replica.clone()).or_insert(0) += 1;
    }
    counts
}

/// A background client sending `GET /` at a fixed rate over keep-alive connections.
struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<LoadReport>,
}

#[derive(Debug, Default)]
struct LoadReport {
    ok: usize,
    /// `(ms since start, what went wrong)` for every non-2xx or connection error.
    failures: Vec<(u128, String)>,
    pages: Vec<Page>,
}

impl Load {
    fn start(addr: String, host: &str, per_second: u32) -> Load {
        Load::start_on(addr, host, "/", per_second)
    }

    /// Load on `path` (e.g. the fixture's slow CGI, so requests are in flight at any moment).
    fn start_on(addr: String, host: &str, path: &'static str, per_second: u32) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let host = host.to_string();
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let client = keep_alive_client();
            let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let started = Instant::now();
            let mut report = LoadReport::default();
            while !flag.load(Ordering::Relaxed) {
                tick.tick().await;
                match get(&client, &addr, &host, path).await {
                    Ok((status, body)) if (200..300).contains(&status) => {
                        report.ok += 1;
                        report.pages.push(Page::parse(&body));
                    }
                    Ok((status, body)) => report.failures.push((
                        started.elapsed().as_millis(),
                        format!("HTTP {status}: {}", body.trim()),
                    )),
                    Err(e) => report
                        .failures
                        .push((started.elapsed().as_millis(), format!("connection: {e}"))),
                }
            }
            report
        });
        Load { stop, task }
    }

    async fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("load task")
    }
}

fn ready_replicas(status: &AppStatus) -> usize {
    status
        .replicas
        .iter()
        .filter(|r| r.state == ReplicaState::Ready)
        .count()
}

/// All `replicas` ready, `victim` among them after exactly one restart.
fn restarted_once(status: &AppStatus, replicas: usize, victim: u32) -> bool {
    ready_replicas(status) == replicas
        && status
            .replicas
            .iter()
            .any(|r| r.replica == victim && r.restarts == 1)
}

/// SIGKILL to a replica's task from outside, as a crash.
fn kill_task(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL the replica's task");
}

fn container_ids(status: &AppStatus) -> BTreeSet<String> {
    status
        .replicas
        .iter()
        .map(|r| r.container_id.clone())
        .collect()
}

/// True when `text` has a `PATH:LINE:COL:` location of `config`.
fn has_file_line_col(text: &str, config: &Path) -> bool {
    let prefix = format!("{}:", config.display());
    text.lines().any(|line| {
        let Some(rest) = line.find(&prefix).map(|i| &line[i + prefix.len()..]) else {
            return false;
        };
        let mut parts = rest.splitn(3, ':');
        let line_no = parts.next().unwrap_or("");
        let col = parts.next().unwrap_or("");
        !line_no.is_empty()
            && line_no.chars().all(|c| c.is_ascii_digit())
            && !col.is_empty()
            && col.chars().all(|c| c.is_ascii_digit())
    })
}

fn warnings(log: &str) -> String {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

fn assert_no_failures(report: &LoadReport, during: &str, rig: &Rig) {
    // Uncaptured stderr: CI's log shows it on a pass too.
    let _ = writeln!(
        std::io::stderr(),
        "load during {during}: {} ok, {} failed",
        report.ok,
        report.failures.len()
    );
    assert!(
        report.failures.is_empty(),
        "{} of {} requests failed during {during}: {:#?}\n--- haloyd warnings\n{}\n--- haloyd log (tail)\n{}",
        report.failures.len(),
        report.ok + report.failures.len(),
        report.failures,
        warnings(&rig.haloyd.log_tail(usize::MAX)),
        rig.haloyd.log_tail(40)
    );
    assert!(report.ok > 0, "the load sent no request during {during}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_requests_round_robin() {
    let rig = Rig::start(Duration::from_secs(30)).await;
    let config = rig.app_config("spread", "web", "v1", 3, "");
    rig.deploy_ok(&config);
    let status = rig.status(&config, &[]);
    assert_eq!(ready_replicas(&status), 3, "{status:#?}");

    let pages = rig.get_pages("spread.test", 300).await;
    let counts = per_replica(&pages);
    eprintln!("300 requests per replica: {counts:?}");
    assert_eq!(counts.len(), 3, "expected 3 replicas to answer: {counts:?}");
    for (replica, n) in &counts {
        assert!(
            (98..=102).contains(n),
            "replica {replica} answered {n} of 300 requests (want 100 ± 2): {counts:?}"
        );
    }
    // `requests` in status comes from the proxy's per-backend counters.
    let status = rig.status(&config, &[]);
    let served: u64 = status.replicas.iter().map(|r| r.requests).sum();
    assert_eq!(served, 300, "proxy counters in status: {status:#?}");
    for replica in &status.replicas {
        let n = counts
            .get(&replica.replica.to_string())
            .copied()
            .unwrap_or(0);
        assert_eq!(replica.requests, n as u64, "{status:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_deploy_under_load_drops_nothing_and_removes_old_containers() {
    let rig = Rig::start(Duration::from_secs(30)).await;
    let v1 = rig.app_config("roll", "web", "v1", 3, "");
    rig.deploy_ok(&v1);
    let before = rig.status(&v1, &[]);

    let load = Load::start(rig.haloyd.http_addr(), "roll.test", 50);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let v2 = rig.app_config("roll", "web", "v2", 3, "");
    rig.deploy_ok(&v2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = load.finish().await;
    assert_no_failures(&report, "the rolling deploy v1 → v2", &rig);
    let versions: BTreeSet<&str> = report.pages.iter().map(|p| p.version.as_str()).collect();
    assert!(
        versions.contains("v1") && versions.contains("v2"),
        "{versions:?}"
    );

    let pages = rig.get_pages("roll.test", 30).await;
    assert!(
        pages.iter().all(|p| p.version == "v2"),
        "after the deploy only v2 may answer: {pages:?}"
    );
    assert_eq!(per_replica(&pages).len(), 3, "{pages:?}");

    let after = rig.status(&v2, &[]);
    assert_ne!(after.deployment_id, before.deployment_id);
    assert_eq!(ready_replicas(&after), 3, "{after:#?}");
    let new_ids = container_ids(&after);
    assert!(
        container_ids(&before).is_disjoint(&new_ids),
        "old containers still listed: {after:#?}"
    );
    let ulid = after.deployment_id.to_lowercase();
    assert!(
        new_ids.iter().all(|id| id.contains(&ulid)),
        "{new_ids:?} vs {ulid}"
    );
    assert_eq!(
        rig.containers().await,
        new_ids,
        "containerd still holds old containers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_healthy_version_fails_and_old_replicas_keep_serving() {
    let rig = Rig::start(Duration::from_secs(8)).await;
    let v1 = rig.app_config("sick", "web", "v1", 3, "");
    rig.deploy_ok(&v1);
    let before = rig.status(&v1, &[]);

    let load = Load::start(rig.haloyd.http_addr(), "sick.test", 50);
    let bad = rig.app_config("sick", "unhealthy", "v1", 3, "");
    let started = Instant::now();
    let run = rig.haloy(&bad, &["deploy"]);
    eprintln!(
        "never-healthy deploy failed after {:?}:\n{}",
        started.elapsed(),
        run.both()
    );
    let report = load.finish().await;

    assert!(
        !run.output.status.success(),
        "deploying a never-healthy image must fail:\n{}",
        run.both()
    );
    assert!(
        run.both().contains("unhealthy: answering 500"),
        "the failing replica's log lines are printed:\n{}",
        run.both()
    );
    assert_no_failures(&report, "the failed deploy", &rig);
    assert!(report.pages.iter().all(|p| p.fixture == "web"));

    let after = rig.status(&v1, &[]);
    assert_eq!(after.deployment_id, before.deployment_id, "{after:#?}");
    assert_eq!(ready_replicas(&after), 3, "{after:#?}");
    assert_eq!(container_ids(&after), container_ids(&before));
    assert_eq!(
        rig.containers().await,
        container_ids(&before),
        "new containers left behind"
    );
    let pages = rig.get_pages("sick.test", 30).await;
    assert!(
        pages
            .iter()
            .all(|p| p.version == "v1" && p.fixture == "web"),
        "{pages:?}"
    );
    assert_eq!(per_replica(&pages).len(), 3, "{pages:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_dying_inside_min_ready_window_never_gets_traffic() {
    let rig = Rig::start(Duration::from_secs(20)).await;
    let v1 = rig.app_config("settle", "web", "v1", 2, "");
    rig.deploy_ok(&v1);
    let before = rig.status(&v1, &[]);

    let load = Load::start(rig.haloyd.http_addr(), "settle.test", 50);
    let crashing = rig.app_config(
        "settle",
        "crash-after",
        "v1",
        2,
        "min_ready_seconds: 6\nenv:\n  - name: CRASH_AFTER\n    value: \"2\"\n",
    );
    let started = Instant::now();
    let run = rig.haloy(&crashing, &["deploy"]);
    eprintln!(
        "crash-after deploy failed after {:?}:\n{}",
        started.elapsed(),
        run.both()
    );
    let report = load.finish().await;

    assert!(
        !run.output.status.success(),
        "a replica dying inside min_ready_seconds must fail the deploy:\n{}",
        run.both()
    );
    assert_no_failures(&report, "the crash-after deploy", &rig);
    let leaked: Vec<&Page> = report.pages.iter().filter(|p| p.fixture != "web").collect();
    assert!(leaked.is_empty(), "crash-after got traffic: {leaked:?}");

    let after = rig.status(&v1, &[]);
    assert_eq!(after.deployment_id, before.deployment_id, "{after:#?}");
    assert_eq!(ready_replicas(&after), 2, "{after:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_logs_status_rollback_and_stop() {
    let rig = Rig::start(Duration::from_secs(30)).await;
    let v1 = rig.app_config("ops", "web", "v1", 3, "");
    rig.deploy_ok(&v1);
    let first = rig.status(&v1, &[]);

    let v2 = rig.app_config("ops", "web", "v2", 3, "deployment_strategy: replace\n");
    rig.deploy_ok(&v2);
    let pages = rig.get_pages("ops.test", 30).await;
    assert!(
        pages.iter().all(|p| p.version == "v2"),
        "replace: only v2 answers: {pages:?}"
    );
    assert_eq!(
        per_replica(&pages).len(),
        3,
        "replace: all 3 new replicas serve: {pages:?}"
    );

    let status = rig.status(&v2, &[]);
    assert_eq!(ready_replicas(&status), 3, "{status:#?}");
    assert_eq!(status.strategy, "replace");
    assert_eq!(rig.containers().await, container_ids(&status));

    let first_only = rig.haloy(&v2, &["logs", "--no-follow"]);
    first_only.assert_ok();
    assert!(
        first_only.stdout().contains("web v2 listening"),
        "haloy logs shows the first replica:\n{}",
        first_only.both()
    );
    let logs = rig.haloy(&v2, &["logs", "--all-containers", "--no-follow"]);
    logs.assert_ok();
    for replica in &status.replicas {
        let prefix = format!("[replica {}]", replica.replica);
        assert!(
            logs.stdout()
                .lines()
                .any(|l| l.contains(&prefix) && l.contains("web v2 listening")),
            "no `{prefix}` line in logs --all-containers:\n{}",
            logs.both()
        );
    }

    let targets = rig.haloy(&v2, &["rollback-targets"]);
    targets.assert_ok();
    assert!(
        targets.stdout().contains(&first.deployment_id),
        "rollback-targets lists the v1 deployment {}:\n{}",
        first.deployment_id,
        targets.both()
    );
    let bogus = rig.haloy(&v2, &["rollback", "01AAAAAAAAAAAAAAAAAAAAAAAA"]);
    assert!(
        !bogus.output.status.success() && bogus.stderr().contains("01AAAAAAAAAAAAAAAAAAAAAAAA"),
        "rollback to an unknown id fails naming it:\n{}",
        bogus.both()
    );
    rig.haloy(&v2, &["rollback", &first.deployment_id])
        .assert_ok();
    let pages = rig.get_pages("ops.test", 30).await;
    assert!(
        pages.iter().all(|p| p.version == "v1"),
        "after rollback v1 answers: {pages:?}"
    );
    assert_eq!(per_replica(&pages).len(), 3, "{pages:?}");

    rig.haloy(&v2, &["stop"]).assert_ok();
    let answer = rig.get("ops.test", "/").await;
    assert!(
        matches!(answer, Ok((503, _))),
        "a stopped app answers 503: {answer:?}"
    );
    assert!(
        !rig.containers().await.is_empty(),
        "plain stop keeps the containers"
    );
    let stopped = rig.status(&v2, &[]);
    assert!(
        stopped
            .replicas
            .iter()
            .all(|r| r.state == ReplicaState::Stopped),
        "status after stop: {stopped:#?}"
    );

    rig.haloy(&v2, &["stop", "--remove-containers"]).assert_ok();
    let left = rig.containers().await;
    assert!(left.is_empty(), "stop --remove-containers left {left:?}");
    let snapshots = rig.active_snapshots().await;
    assert!(
        snapshots.is_empty(),
        "stop --remove-containers left snapshots {snapshots:?}"
    );

    // A stopped app comes back with the next deploy.
    rig.deploy_ok(&v1);
    let pages = rig.get_pages("ops.test", 30).await;
    assert!(pages.iter().all(|p| p.version == "v1"), "{pages:?}");
    assert_eq!(per_replica(&pages).len(), 3, "{pages:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haloyd_killed_with_sigkill_recovers_running_replicas() {
    let mut rig = Rig::start(Duration::from_secs(30)).await;
    let config = rig.app_config("phoenix", "web", "v1", 3, "");
    rig.deploy_ok(&config);
    let before = rig.status(&config, &[]);
    let mut pids = BTreeMap::new();
    for id in container_ids(&before) {
        pids.insert(id.clone(), rig.task_pid(&id).await);
    }
    rig.get_pages("phoenix.test", 6).await;

    rig.haloyd.kill();
    rig.haloyd.start_again().await;

    let deadline = Instant::now() + Duration::from_secs(15);
    while !matches!(rig.get("phoenix.test", "/").await, Ok((200, _))) {
        assert!(
            Instant::now() < deadline,
            "routes did not come back within 15s after the restart:\n{}",
            rig.haloyd.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = rig
        .wait_for_status(&config, Duration::from_secs(15), "3 ready replicas", |s| {
            ready_replicas(s) == 3
        })
        .await;
    assert_eq!(after.deployment_id, before.deployment_id);
    assert_eq!(container_ids(&after), container_ids(&before), "{after:#?}");
    for replica in &after.replicas {
        assert_eq!(replica.restarts, 0, "{after:#?}");
        let pid = rig.task_pid(&replica.container_id).await;
        assert_eq!(
            Some(&pid),
            pids.get(&replica.container_id),
            "task of {} was restarted",
            replica.container_id
        );
    }
    let pages = rig.get_pages("phoenix.test", 30).await;
    assert_eq!(per_replica(&pages).len(), 3, "{pages:?}");

    // The rebuilt state is the real one: a rolling deploy replaces exactly these replicas.
    let load = Load::start(rig.haloyd.http_addr(), "phoenix.test", 50);
    let v2 = rig.app_config("phoenix", "web", "v2", 3, "");
    rig.deploy_ok(&v2);
    let report = load.finish().await;
    assert_no_failures(&report, "a rolling deploy after the restart", &rig);
    let latest = rig.status(&v2, &[]);
    assert_eq!(
        rig.containers().await,
        container_ids(&latest),
        "recovered replicas left behind"
    );
    let pages = rig.get_pages("phoenix.test", 30).await;
    assert!(pages.iter().all(|p| p.version == "v2"), "{pages:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_is_refused_and_the_app_keeps_serving() {
    let rig = Rig::start(Duration::from_secs(30)).await;
    let v1 = rig.app_config("strict", "web", "v1", 2, "");
    rig.deploy_ok(&v1);
    let before = rig.status(&v1, &[]);

    let unknown_key = rig.app_config("strict", "web", "v2", 2, "replica_count: 4\n");
    let zero = rig.app_config("strict", "web", "v2", 0, "");
    for bad in [&unknown_key, &zero] {
        let run = rig.haloy(bad, &["deploy"]);
        eprintln!("bad config {}:\n{}", bad.display(), run.both());
        assert_eq!(
            run.code(),
            Some(1),
            "bad config must exit 1:\n{}",
            run.both()
        );
        assert!(
            has_file_line_col(&run.stderr(), bad),
            "no `{}:LINE:COL` message:\n{}",
            bad.display(),
            run.both()
        );
    }

    // Bind mounts that hand the app the host, or haloyd itself, are refused by haloyd at
    // deploy, naming the volume and the server setting that would allow them.
    let state_dir = rig.haloyd.dir().join("state");
    let dangerous = [
        "/etc:/host-etc:ro".to_string(),
        "/proc:/host-proc:ro".to_string(),
        format!("{}:/haloy-state", state_dir.join("volumes").display()),
        format!("{}:/everything:ro", rig.haloyd.dir().display()),
        "/run/containerd/containerd.sock:/ctr.sock".to_string(),
        format!("{}:/ctr.sock", rig.containerd.socket().display()),
    ];
    for volume in &dangerous {
        let config = rig.app_config(
            "strict",
            "web",
            "v2",
            2,
            &format!("volumes:\n  - /srv/haloy-fine:/fine:ro\n  - {volume}\n"),
        );
        let run = rig.haloy(&config, &["deploy"]);
        eprintln!("bind of {volume}:\n{}", run.both());
        assert!(
            !run.output.status.success(),
            "{volume} accepted:\n{}",
            run.both()
        );
        let host = volume.split(':').next().unwrap_or_default();
        for expected in ["volumes[1]", host, "security.allowed_host_paths"] {
            assert!(run.both().contains(expected), "{expected}:\n{}", run.both());
        }
    }
    // haloyd said once at start-up which LSM profile replicas get (none on most test hosts).
    let log = rig.haloyd.log();
    let lsm_lines = log
        .lines()
        .filter(|l| l.contains("no LSM profile for replicas") || l.contains("AppArmor profile"))
        .count();
    assert_eq!(lsm_lines, 1, "one LSM start-up line expected:\n{log}");
    // `security.seccomp` takes `default` or `unconfined`; anything else is a file:line error.
    let bad_seccomp = rig.app_config("strict", "web", "v2", 2, "security:\n  seccomp: off\n");
    let run = rig.haloy(&bad_seccomp, &["deploy"]);
    assert_eq!(run.code(), Some(1), "{}", run.both());
    assert!(
        has_file_line_col(&run.stderr(), &bad_seccomp),
        "{}",
        run.both()
    );
    assert!(run.both().contains("security.seccomp"), "{}", run.both());

    // A deploy that cannot fit the host is refused before any replica is touched.
    let huge = rig.app_config("strict", "web", "v2", 2, "resources:\n  cpus: 1000\n");
    let run = rig.haloy(&huge, &["deploy"]);
    eprintln!("oversized deploy:\n{}", run.both());
    assert!(
        !run.output.status.success(),
        "1000 CPUs per replica must be refused:\n{}",
        run.both()
    );
    assert!(run.both().contains("Out of resources"), "{}", run.both());

    // The API refuses the same mistakes with 400 and needs the token.
    let api = rig.haloyd.api_addr();
    let token = Some(rig.haloyd.token());
    let app = haloy::config::load_deploy_config(Some(&v1))
        .expect("load the v1 config")
        .apps
        .remove(0);
    let mut request = serde_json::to_value(haloy::api::types::DeployRequest { app }).unwrap();
    let valid = request.to_string();
    request["app"]["replicas"] = 0.into();
    let mut etc_bind = serde_json::to_value(haloy::api::types::DeployRequest {
        app: haloy::config::load_deploy_config(Some(&v1))
            .expect("load the v1 config")
            .apps
            .remove(0),
    })
    .unwrap();
    etc_bind["app"]["volumes"] =
        serde_json::json!([{"kind": "bind", "host": "/etc", "container": "/e", "read_only": true}]);
    let calls = [
        ("no token", None, valid.clone(), 401),
        ("wrong token", Some("not-the-token"), valid, 401),
        ("bad JSON", token, "{\"app\": ".to_string(), 400),
        ("replicas 0", token, request.to_string(), 400),
        ("a bind of /etc", token, etc_bind.to_string(), 400),
    ];
    for (what, token, body, want) in calls {
        let (status, answer) = api_call(&api, "POST", "/v1/deploy", token, &body);
        eprintln!("API deploy with {what}: {status} {answer}");
        assert_eq!(status, want, "POST /v1/deploy with {what}: {answer}");
        let error: haloy::api::types::ApiError = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("{what}: error body is no ApiError ({e}): {answer}"));
        assert!(!error.error.is_empty(), "{what}: {answer}");
    }

    let after = rig.status(&v1, &[]);
    assert_eq!(after.deployment_id, before.deployment_id);
    assert_eq!(container_ids(&after), container_ids(&before));
    assert_eq!(rig.containers().await, container_ids(&before));
    let pages = rig.get_pages("strict.test", 10).await;
    assert!(pages.iter().all(|p| p.version == "v1"), "{pages:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_replica_leaves_rotation_at_once_and_is_restarted() {
    let rig = Rig::start(Duration::from_secs(30)).await;
    let config = rig.app_config("crashy", "web", "v1", 3, "");
    rig.deploy_ok(&config);
    let before = rig.status(&config, &[]);
    let victim = before.replicas[1].clone();
    let pid = rig.task_pid(&victim.container_id).await;

    let load = Load::start(rig.haloyd.http_addr(), "crashy.test", 50);
    tokio::time::sleep(Duration::from_millis(500)).await;
    kill_task(pid);
    let after = rig
        .wait_for_status(&config, Duration::from_secs(20), "replica restarted", |s| {
            restarted_once(s, 3, victim.replica)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = load.finish().await;
    eprintln!(
        "load while a replica was killed and restarted: {} ok, failures {:?}",
        report.ok, report.failures
    );
    assert!(
        report.failures.len() <= 1,
        "a killed replica must leave rotation at once (at most the in-flight request fails): {:#?}\n{}",
        report.failures,
        rig.haloyd.log_tail(30)
    );
    let restarted = after
        .replicas
        .iter()
        .find(|r| r.replica == victim.replica)
        .unwrap();
    assert_eq!(restarted.restarts, 1, "{after:#?}");
    assert_ne!(rig.task_pid(&restarted.container_id).await, pid);
    let pages = rig.get_pages("crashy.test", 30).await;
    assert_eq!(per_replica(&pages).len(), 3, "{pages:?}");
}

/// Issue 12: a replica SIGKILLed under keep-alive load costs no request. A request in flight
/// on it (idempotent, no body, no response byte yet) is sent once more to another ready
/// replica; new requests never reach it (a refused connect tries the next one). Ten kills in
/// rotation over the three replicas, each once the victim is back and two are ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_killed_ten_times_under_load_cost_no_request() {
    let rig = Rig::start(Duration::from_secs(30)).await;
    let config = rig.app_config("kill9", "web", "v1", 3, "");
    rig.deploy_ok(&config);
    // Requests that take 200 ms: a kill always finds some in flight on the victim.
    let loads: Vec<Load> = (0..6)
        .map(|_| Load::start_on(rig.haloyd.http_addr(), "kill9.test", "/cgi-bin/slow", 20))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A replica killed again and again is labelled crash-looping even while it serves again.
    let serving = |r: &haloy::api::types::ReplicaStatus, restarts: u32| {
        r.restarts == restarts
            && match r.state {
                ReplicaState::Ready => true,
                ReplicaState::CrashLooping => r
                    .last_health
                    .as_deref()
                    .is_some_and(|h| h.starts_with("ok")),
                _ => false,
            }
    };
    let mut kills = [0u32; 3];
    for kill in 0..10usize {
        let index = kill % 3;
        let status = rig
            .wait_for_status(
                &config,
                Duration::from_secs(90),
                "victim and one more serving",
                |s| {
                    let up = |r: &&haloy::api::types::ReplicaStatus| {
                        serving(r, kills[r.replica as usize])
                    };
                    s.replicas.iter().filter(up).count() >= 2
                        && s.replicas
                            .iter()
                            .filter(up)
                            .any(|r| r.replica as usize == index)
                },
            )
            .await;
        let victim = status
            .replicas
            .iter()
            .find(|r| r.replica as usize == index)
            .expect("victim listed");
        let pid = rig.task_pid(&victim.container_id).await;
        // Let the load reach it on kept-alive connections first.
        tokio::time::sleep(Duration::from_millis(150)).await;
        kill_task(pid);
        kills[index] += 1;
        // One replica down at a time: haloyd sees a task exit within milliseconds; the next
        // kill waits for the status to show it.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    rig.wait_for_status(&config, Duration::from_secs(120), "all three back", |s| {
        s.replicas
            .iter()
            .filter(|r| serving(r, kills[r.replica as usize]))
            .count()
            == 3
    })
    .await;
    let mut total = LoadReport::default();
    for load in loads {
        let report = load.finish().await;
        total.ok += report.ok;
        total.failures.extend(report.failures);
    }
    // What the proxy must never do is fail a request it could have sent elsewhere: every 502
    // must be one whose replica had started to answer when it died (`retry_safe=false`, a
    // half-written status line of busybox httpd), which no proxy may replay. The fixture
    // answers in one write, so even those are rare.
    let log = rig.haloyd.log_tail(usize::MAX);
    let replayable = log
        .lines()
        .filter(|l| l.contains("backend request failed") && l.contains("retry_safe=true"))
        .count();
    let half_answered = log
        .lines()
        .filter(|l| l.contains("backend request failed") && l.contains("retry_safe=false"))
        .count();
    let _ = writeln!(
        std::io::stderr(),
        "ten SIGKILLs of replicas: {} ok, {} failed; {half_answered} of them half-answered by the dying replica, {replayable} replayable",
        total.ok,
        total.failures.len()
    );
    assert_eq!(
        replayable,
        0,
        "a request that could have gone to another replica failed:\n{}",
        warnings(&log)
    );
    if total.failures.len() > half_answered.min(2) {
        assert_no_failures(&total, "ten SIGKILLs of replicas", &rig);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deploys_at_once_are_never_interleaved() {
    let rig = Arc::new(Rig::start(Duration::from_secs(30)).await);
    let v1 = rig.app_config("race", "web", "v1", 3, "");
    rig.deploy_ok(&v1);

    let load = Load::start(rig.haloyd.http_addr(), "race.test", 50);
    let v2 = rig.app_config("race", "web", "v2", 3, "");
    let v1_two = rig.app_config("race", "web", "v1", 2, "");
    let deploys: Vec<_> = [v2.clone(), v1_two.clone()]
        .into_iter()
        .map(|config| {
            let rig = rig.clone();
            tokio::task::spawn_blocking(move || rig.haloy(&config, &["deploy"]))
        })
        .collect();
    let mut runs = Vec::new();
    for deploy in deploys {
        runs.push(deploy.await.expect("deploy thread"));
    }
    let report = load.finish().await;
    assert_no_failures(&report, "two concurrent deploys", &rig);
    let succeeded = runs.iter().filter(|r| r.output.status.success()).count();
    assert!(
        succeeded >= 1,
        "neither deploy succeeded:\n{}\n{}",
        runs[0].both(),
        runs[1].both()
    );
    for run in runs.iter().filter(|r| !r.output.status.success()) {
        eprintln!("refused concurrent deploy:\n{}", run.both());
        let both = run.both();
        let holder = both
            .split("(deployment ")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .unwrap_or("");
        assert!(
            both.contains("already in progress") && holder.len() == 26,
            "a refused concurrent deploy names the deployment in progress:\n{both}"
        );
    }

    let status = rig.status(&v2, &[]);
    let want = if status.image.ends_with(":v2") { 3 } else { 2 };
    assert_eq!(ready_replicas(&status), want, "{status:#?}");
    assert_eq!(status.replicas.len(), want, "{status:#?}");
    assert_eq!(
        rig.containers().await,
        container_ids(&status),
        "leftover containers"
    );
    let pages = rig.get_pages("race.test", 30).await;
    let versions: BTreeSet<&str> = pages.iter().map(|p| p.version.as_str()).collect();
    assert_eq!(
        versions.len(),
        1,
        "one version answers after both deploys: {pages:?}"
    );
    assert_eq!(per_replica(&pages).len(), want, "{pages:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_deploy_scales_up_and_down_under_load() {
    let rig = Rig::start(Duration::from_secs(30)).await;
    let three = rig.app_config("scale", "web", "v1", 3, "");
    rig.deploy_ok(&three);

    let load = Load::start(rig.haloyd.http_addr(), "scale.test", 50);
    let five = rig.app_config("scale", "web", "v2", 5, "");
    rig.deploy_ok(&five);
    let up = rig.status(&five, &[]);
    let two = rig.app_config(
        "scale",
        "web",
        "v1",
        2,
        "resources:\n  memory: 64Mi\n  cpus: 0.5\n",
    );
    rig.deploy_ok(&two);
    let report = load.finish().await;
    assert_no_failures(&report, "scaling 3 → 5 → 2", &rig);

    assert_eq!(ready_replicas(&up), 5, "after scaling up: {up:#?}");
    let down = rig.status(&two, &[]);
    assert_eq!(down.replicas.len(), 2, "after scaling down: {down:#?}");
    assert_eq!(ready_replicas(&down), 2, "{down:#?}");
    assert_eq!(
        rig.containers().await,
        container_ids(&down),
        "surplus containers left"
    );
    let pages = rig.get_pages("scale.test", 20).await;
    assert!(pages.iter().all(|p| p.version == "v1"), "{pages:?}");
    assert_eq!(per_replica(&pages).len(), 2, "{pages:?}");

    // `resources` are applied to each task's cgroup.
    for replica in &down.replicas {
        let pid = rig.task_pid(&replica.container_id).await;
        let (memory, cpu) = cgroup_limits(pid);
        assert_eq!(memory, 64 << 20, "memory limit of {}", replica.container_id);
        assert_eq!(cpu, Some(0.5), "CPU quota of {}", replica.container_id);
    }
}

/// Memory limit in bytes and CPU quota (in CPUs) of a process's cgroup (v1 or v2).
fn cgroup_limits(pid: u32) -> (u64, Option<f64>) {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("read cgroup");
    let path_of = |controller: &str| {
        cgroups.lines().find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == controller)
                .then(|| path.to_string())
        })
    };
    let read = |path: String| {
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {path}: {e}"))
            .trim()
            .to_string()
    };
    if let Some(memory) = path_of("memory") {
        let cpu = path_of("cpu").expect("cpu cgroup");
        let limit = read(format!(
            "/sys/fs/cgroup/memory{memory}/memory.limit_in_bytes"
        ));
        let quota: f64 = read(format!("/sys/fs/cgroup/cpu{cpu}/cpu.cfs_quota_us"))
            .parse()
            .unwrap();
        let period: f64 = read(format!("/sys/fs/cgroup/cpu{cpu}/cpu.cfs_period_us"))
            .parse()
            .unwrap();
        let cpus = (quota > 0.0).then_some(quota / period);
        (limit.parse().unwrap(), cpus)
    } else {
        let unified = path_of("").expect("cgroup v2 path");
        let limit = read(format!("/sys/fs/cgroup{unified}/memory.max"));
        let cpu_max = read(format!("/sys/fs/cgroup{unified}/cpu.max"));
        let mut words = cpu_max.split_whitespace();
        let quota = words.next().unwrap_or("max");
        let period: f64 = words.next().unwrap_or("100000").parse().unwrap();
        let cpus = quota.parse::<f64>().ok().map(|q| q / period);
        (limit.parse().unwrap_or(u64::MAX), cpus)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_crashing_again_and_again_shows_as_crash_looping() {
    let rig = Rig::start(Duration::from_secs(30)).await;
    let config = rig.app_config(
        "loop",
        "crash-after",
        "v1",
        1,
        "env:\n  - name: CRASH_AFTER\n    value: \"2\"\n",
    );
    rig.deploy_ok(&config);
    let status = rig
        .wait_for_status(&config, Duration::from_secs(40), "crash_looping", |s| {
            s.replicas
                .iter()
                .any(|r| r.state == ReplicaState::CrashLooping)
        })
        .await;
    let looping = &status.replicas[0];
    eprintln!("crash-looping replica: {looping:?}");
    // Threshold: the third crash in the window; each crash before it was restarted once.
    assert!(
        looping.restarts >= 2,
        "crash_looping after fewer than 3 crashes: {status:#?}"
    );
}

/// Longer than a shim's retries to publish an event while containerd is away.
const SHIM_PUBLISH_GIVES_UP: Duration = Duration::from_secs(25);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_dies_while_containerd_is_down_is_restarted_once_it_is_back() {
    let mut rig = Rig::start(Duration::from_secs(30)).await;
    let config = rig.app_config("gap", "web", "v1", 2, "");
    rig.deploy_ok(&config);
    let before = rig.status(&config, &[]);
    let victim = before.replicas[0].clone();
    let pid = rig.task_pid(&victim.container_id).await;

    // Its exit event has nowhere to go: the shim retries publishing it for about 21 s
    // (containerd 1.6: after 1, 2, ... 6 s) and then drops it; containerd stays away longer.
    rig.containerd.kill();
    kill_task(pid);
    tokio::time::sleep(SHIM_PUBLISH_GIVES_UP).await;
    rig.containerd.start_again().await;
    let back = Instant::now();

    // The resync after the new subscription finds it; the periodic safety net is minutes
    // away. 2 s of crash backoff and the readiness gate are inside this bound.
    let after = rig
        .wait_for_status(
            &config,
            Duration::from_secs(10),
            "the replica that died during the gap restarted",
            |s| restarted_once(s, 2, victim.replica),
        )
        .await;
    eprintln!("restarted {:?} after containerd came back", back.elapsed());
    assert_eq!(after.deployment_id, before.deployment_id);
    assert_eq!(rig.containers().await, container_ids(&after));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_restart_keeps_replicas_and_crash_restarts_working() {
    let mut rig = Rig::start(Duration::from_secs(30)).await;
    let config = rig.app_config("steady", "web", "v1", 3, "");
    rig.deploy_ok(&config);
    let before = rig.status(&config, &[]);

    let load = Load::start(rig.haloyd.http_addr(), "steady.test", 50);
    rig.containerd.restart().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // haloyd must have resubscribed to task events: a crash after the restart is noticed.
    let victim = before.replicas[0].clone();
    let pid = rig.task_pid(&victim.container_id).await;
    kill_task(pid);
    let after = rig
        .wait_for_status(
            &config,
            Duration::from_secs(20),
            "replica restarted after containerd restart",
            |s| restarted_once(s, 3, victim.replica),
        )
        .await;
    let report = load.finish().await;
    eprintln!(
        "load across a containerd restart and a crash: {} ok, failures {:?}",
        report.ok, report.failures
    );
    assert!(
        report.failures.len() <= 1,
        "requests failed across the containerd restart: {:#?}\n{}",
        report.failures,
        rig.haloyd.log_tail(30)
    );
    assert_eq!(after.deployment_id, before.deployment_id);
    let untouched: BTreeSet<String> = container_ids(&before)
        .into_iter()
        .filter(|id| *id != victim.container_id)
        .collect();
    assert!(untouched.is_subset(&container_ids(&after)), "{after:#?}");
    assert_eq!(rig.containers().await, container_ids(&after));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haloyd_killed_during_a_rolling_deploy_recovers_to_one_consistent_app() {
    let mut rig = Rig::start(Duration::from_secs(30)).await;
    let v1 = rig.app_config("midway", "web", "v1", 3, "");
    rig.deploy_ok(&v1);
    let v2 = rig.app_config("midway", "web", "v2", 3, "min_ready_seconds: 2\n");
    let cli = {
        let config = v2.clone();
        let mut command = std::process::Command::new(harness::haloyd::haloy_binary());
        command
            .args(["deploy", "-c"])
            .arg(&config)
            .env("HALOY_API_TOKEN", rig.haloyd.token())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        command.spawn().expect("start haloy deploy")
    };
    // Let the rollout get half way: at least one new replica in rotation.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pages = rig.get_pages("midway.test", 3).await;
        if pages.iter().any(|p| p.version == "v2") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no v2 replica in rotation within 20s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rig.haloyd.kill();
    let mut cli = cli;
    let _ = cli.wait();
    rig.haloyd.start_again().await;

    // The interrupted rollout is undone: the last successful deployment (v1) has its three
    // replicas again and the half-rolled-out v2 replica is gone.
    let recovered = rig
        .wait_for_status(
            &v1,
            Duration::from_secs(30),
            "3 ready replicas of one deployment",
            |s| {
                let ulid = s.deployment_id.to_lowercase();
                s.replicas.len() == 3
                    && ready_replicas(s) == 3
                    && s.replicas.iter().all(|r| r.container_id.contains(&ulid))
            },
        )
        .await;
    assert!(recovered.image.ends_with(":v1"), "{recovered:#?}");
    assert_eq!(
        rig.containers().await,
        container_ids(&recovered),
        "containerd holds containers the recovered app does not know"
    );
    let pages = rig.get_pages("midway.test", 30).await;
    assert!(pages.iter().all(|p| p.version == "v1"), "{pages:?}");
    assert_eq!(per_replica(&pages).len(), 3, "{pages:?}");

    // A fresh deploy cleans up whatever the interrupted one left.
    let load = Load::start(rig.haloyd.http_addr(), "midway.test", 50);
    let v2_again = rig.app_config("midway", "web", "v2", 3, "");
    rig.deploy_ok(&v2_again);
    let report = load.finish().await;
    assert_no_failures(&report, "the deploy after an interrupted one", &rig);
    let last = rig.status(&v2_again, &[]);
    assert_eq!(ready_replicas(&last), 3, "{last:#?}");
    assert_eq!(
        rig.containers().await,
        container_ids(&last),
        "leftover containers"
    );
    let pages = rig.get_pages("midway.test", 30).await;
    assert!(pages.iter().all(|p| p.version == "v2"), "{pages:?}");
    assert_eq!(per_replica(&pages).len(), 3, "{pages:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_away_from_replicas_that_ignore_sigterm_kills_them_after_stop_timeout() {
    let rig = Rig::start(Duration::from_secs(30)).await;
    let stubborn = rig.app_config("stubborn", "ignore-sigterm", "v1", 2, "stop_timeout: 1\n");
    rig.deploy_ok(&stubborn);
    let before = rig.status(&stubborn, &[]);

    let load = Load::start(rig.haloyd.http_addr(), "stubborn.test", 50);
    let web = rig.app_config("stubborn", "web", "v2", 2, "");
    let started = Instant::now();
    rig.deploy_ok(&web);
    let took = started.elapsed();
    let report = load.finish().await;
    assert_no_failures(&report, "replacing SIGTERM-ignoring replicas", &rig);
    eprintln!("rolling away from 2 SIGTERM-ignoring replicas took {took:?}");

    let after = rig.status(&web, &[]);
    assert!(container_ids(&before).is_disjoint(&container_ids(&after)));
    assert_eq!(
        rig.containers().await,
        container_ids(&after),
        "old containers left"
    );
    let pages = rig.get_pages("stubborn.test", 10).await;
    assert!(
        pages
            .iter()
            .all(|p| p.fixture == "web" && p.version == "v2"),
        "{pages:?}"
    );
}

#[test]
fn iptables_rules_with_quoted_comments_split_into_words() {
    let rule = r#"-A POSTROUTING -s 10.249.1.2/32 -m comment --comment "name: \"haloy\" id: \"a-0\"" -j CNI-abc"#;
    assert_eq!(
        harness::haloyd::split_rule(rule),
        [
            "-A",
            "POSTROUTING",
            "-s",
            "10.249.1.2/32",
            "-m",
            "comment",
            "--comment",
            r#"name: "haloy" id: "a-0""#,
            "-j",
            "CNI-abc"
        ]
    );
}
