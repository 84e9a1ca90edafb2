//! Restarts and upgrades that clients never see (issue 12): a real haloyd on sockets the test
//! binds and passes the systemd way (through systemd's own `systemd-socket-activate`), a private containerd and registry, an app with 3
//! replicas, and a bounded load of keep-alive and new-connection clients on loopback during
//! (a) SIGTERM + restart, (b) SIGKILL + restart, (c) a hand-over upgrade (`haloyd upgrade`),
//! (d) an upgrade whose new daemon cannot start. Each: no connection error, no non-2xx, and
//! the longest gap between two successful responses printed. The sd_notify messages
//! (READY, STATUS, WATCHDOG, STOPPING) go to a datagram socket the test creates.

// Tests start real containerd, registries, Pebble and tools (see clippy.toml).
#![allow(clippy::disallowed_methods)]

#[path = "harness/mod.rs"]
mod harness;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use haloy::api::types::{AppStatus, ReplicaState};
use harness::haloyd::{CliRun, Haloyd, HaloydOptions};
use harness::{Containerd, Registry};

const HOST: &str = "steady.test";

/// Field order is drop order: haloyd first, containerd last.
struct Rig {
    haloyd: Haloyd,
    registry: Registry,
    _containerd: Containerd,
}

impl Rig {
    async fn start(env: Vec<(String, String)>) -> Rig {
        let containerd = Containerd::start().await;
        let registry = Registry::start().await;
        registry.push_fixtures().await;
        let options = HaloydOptions {
            insecure_registries: vec![registry.addr().to_string()],
            pass_sockets: true,
            drain_timeout: Some(Duration::from_secs(10)),
            env,
            ..HaloydOptions::default()
        };
        let haloyd = Haloyd::start(&containerd, options).await;
        Rig {
            haloyd,
            registry,
            _containerd: containerd,
        }
    }

    /// Deploys `steady` (3 replicas of the web fixture) and returns its config path.
    fn deploy_app(&self) -> PathBuf {
        let body = format!(
            "name: steady\nimage: {}\nreplicas: 3\nport: 8080\nhealth_check_path: /health\n\
             domains:\n  - domain: {HOST}\n",
            self.registry.fixture_ref("web", "v1")
        );
        let config = self.haloyd.write_app_config("steady", &body);
        let run = self.haloyd.cli(&config, &["deploy"]);
        assert!(
            run.output.status.success(),
            "deploy failed:\n{}\n--- haloyd log\n{}",
            run.both(),
            self.haloyd.log_tail(40)
        );
        config
    }

    fn status(&self, config: &Path) -> AppStatus {
        let run: CliRun = self.haloyd.cli(config, &["status", "--json"]);
        run.assert_ok();
        let mut list: Vec<AppStatus> = serde_json::from_str(&run.stdout())
            .unwrap_or_else(|e| panic!("status --json: {e}\n{}", run.stdout()));
        list.remove(0)
    }
}

fn containers(status: &AppStatus) -> BTreeSet<String> {
    status
        .replicas
        .iter()
        .map(|r| r.container_id.clone())
        .collect()
}

fn ready(status: &AppStatus) -> usize {
    status
        .replicas
        .iter()
        .filter(|r| r.state == ReplicaState::Ready)
        .count()
}

// ---------------------------------------------------------------------------------------
// Load: blocking clients on threads, so the test's own runtime never delays them.

/// What went wrong with one request.
struct Failure {
    /// Response bytes received before it failed.
    received: usize,
    what: String,
}

#[derive(Debug, Default)]
struct LoadReport {
    ok: usize,
    non_2xx: Vec<String>,
    errors: Vec<String>,
    /// A reused keep-alive connection closed (FIN or reset) before any byte of the answer:
    /// the request never reached a backend and was sent again on a new connection, as
    /// HTTP/1.1 clients do (RFC 9112 9.3.1). Not an error.
    clean_closes: usize,
    /// Of those, how many were a reset rather than a FIN (an unread request discarded).
    closes_by_reset: usize,
    /// A new connection failed before any byte of the answer and was tried once more
    /// (only allowed where haloyd is SIGKILLed mid-request).
    fresh_retries: usize,
    longest_gap: Duration,
}

struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<std::thread::JoinHandle<(LoadReport, Vec<Instant>)>>,
}

impl Load {
    /// `keep_alive` clients reusing their connection and `fresh` clients opening one per
    /// request, each with a short pause between requests.
    fn start(addr: String, keep_alive: usize, fresh: usize, retry_fresh: bool) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for i in 0..keep_alive + fresh {
            let stop = stop.clone();
            let addr = addr.clone();
            let reuse = i < keep_alive;
            workers.push(std::thread::spawn(move || {
                worker(&addr, reuse, retry_fresh, &stop)
            }));
        }
        Load { stop, workers }
    }

    fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = LoadReport::default();
        let mut times = Vec::new();
        for w in self.workers {
            let (report, mut t) = w.join().expect("load worker");
            total.ok += report.ok;
            total.non_2xx.extend(report.non_2xx);
            total.errors.extend(report.errors);
            total.clean_closes += report.clean_closes;
            total.closes_by_reset += report.closes_by_reset;
            total.fresh_retries += report.fresh_retries;
            times.append(&mut t);
        }
        times.sort();
        total.longest_gap = times
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default();
        total
    }
}

fn worker(
    addr: &str,
    reuse: bool,
    retry_fresh: bool,
    stop: &AtomicBool,
) -> (LoadReport, Vec<Instant>) {
    let mut report = LoadReport::default();
    let mut times = Vec::new();
    let mut conn: Option<TcpStream> = None;
    let started = Instant::now();
    // Bounded: a hung haloyd ends the test rather than the load running forever.
    while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(180) {
        let mut retried = false;
        loop {
            let reused = conn.is_some();
            let result = match conn.take() {
                Some(c) => exchange(c, reuse),
                None => connect(addr).and_then(|c| exchange(c, reuse)),
            };
            match result {
                Ok((status, keep)) => {
                    if (200..300).contains(&status) {
                        report.ok += 1;
                        times.push(Instant::now());
                    } else {
                        report.non_2xx.push(format!("HTTP {status}"));
                    }
                    conn = keep;
                }
                Err(f) if f.received == 0 && reused => {
                    report.clean_closes += 1;
                    if f.what.contains("reset") {
                        report.closes_by_reset += 1;
                    }
                    continue;
                }
                Err(f) if f.received == 0 && retry_fresh && !retried => {
                    report.fresh_retries += 1;
                    retried = true;
                    continue;
                }
                Err(f) => report.errors.push(format!(
                    "{} ({} bytes of the answer received, {} connection)",
                    f.what,
                    f.received,
                    if reused { "reused" } else { "new" }
                )),
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    (report, times)
}

fn connect(addr: &str) -> Result<TcpStream, Failure> {
    let fail = |what: String| Failure { received: 0, what };
    let sock: std::net::SocketAddr = addr.parse().map_err(|e| fail(format!("{e}")))?;
    let stream = TcpStream::connect_timeout(&sock, Duration::from_secs(5))
        .map_err(|e| fail(format!("connect: {e}")))?;
    // Long enough for a restart: connections wait in the backlog meanwhile.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// One `GET /` on `stream`; the status and the connection if it may be reused.
fn exchange(mut stream: TcpStream, keep_alive: bool) -> Result<(u16, Option<TcpStream>), Failure> {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let request = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: {connection}\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| Failure {
        received: 0,
        what: format!("write: {e}"),
    })?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(Failure {
                    received: buf.len(),
                    what: "closed before the end of the response head".into(),
                })
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => {
                return Err(Failure {
                    received: buf.len(),
                    what: format!("read: {e}"),
                })
            }
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let length: Option<usize> = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok());
    let close = head
        .lines()
        .any(|l| l.starts_with("connection:") && l.contains("close"));
    let Some(length) = length else {
        return Err(Failure {
            received: buf.len(),
            what: format!("no Content-Length in {head:?}"),
        });
    };
    while buf.len() < head_end + length {
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(Failure {
                    received: buf.len(),
                    what: "closed in the middle of the body".into(),
                })
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => {
                return Err(Failure {
                    received: buf.len(),
                    what: format!("body: {e}"),
                })
            }
        }
    }
    let keep = (keep_alive && !close).then_some(stream);
    Ok((status, keep))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn assert_clean(report: &LoadReport, during: &str, haloyd: &Haloyd, fresh_retries_allowed: bool) {
    // Uncaptured stderr: CI's log shows it on a pass too.
    let _ = writeln!(
        std::io::stderr(),
        "load during {during}: {} ok, {} non-2xx, {} connection errors, {} keep-alive closes \
         between requests (re-sent on a new connection; {} of them by reset), \
         {} new-connection retries; \
         longest gap between two successful responses: {:?}",
        report.ok,
        report.non_2xx.len(),
        report.errors.len(),
        report.clean_closes,
        report.closes_by_reset,
        report.fresh_retries,
        report.longest_gap
    );
    assert!(
        report.errors.is_empty() && report.non_2xx.is_empty(),
        "during {during}: errors {:#?}, non-2xx {:#?}\n--- haloyd log (tail)\n{}",
        report.errors,
        report.non_2xx,
        haloyd.log_tail(40)
    );
    if !fresh_retries_allowed {
        // Only a killed haloyd may drop a request it had taken; a draining one closes idle
        // keep-alive connections with a FIN (lingering), never a reset.
        assert_eq!(report.fresh_retries, 0, "during {during}");
        assert_eq!(report.closes_by_reset, 0, "during {during}");
    }
    assert!(
        report.ok > 100,
        "too little load during {during}: {report:?}"
    );
}

// ---------------------------------------------------------------------------------------
// sd_notify: a datagram socket in a temp dir stands in for systemd.

struct NotifySocket {
    _dir: tempfile::TempDir,
    path: PathBuf,
    messages: Arc<Mutex<Vec<(Instant, String)>>>,
    /// The answer to a GET sent the moment each READY=1 arrived.
    probes: Arc<Mutex<Vec<Option<u16>>>>,
    http_addr: Arc<Mutex<Option<String>>>,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = tempfile::Builder::new()
            .prefix("haloy-notify-")
            .tempdir()
            .expect("temp dir");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let probes = Arc::new(Mutex::new(Vec::new()));
        let http_addr: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        {
            let messages = messages.clone();
            let probes = probes.clone();
            let http_addr = http_addr.clone();
            // Ends when the test process does; reads only its own socket.
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = socket.recv(&mut buf) {
                    let text = String::from_utf8_lossy(&buf[..n]).to_string();
                    let is_ready = text.lines().any(|l| l == "READY=1");
                    messages.lock().unwrap().push((Instant::now(), text));
                    if is_ready {
                        let addr = http_addr.lock().unwrap().clone();
                        let status = addr.and_then(|a| {
                            connect(&a)
                                .ok()
                                .and_then(|c| exchange(c, false).ok())
                                .map(|r| r.0)
                        });
                        probes.lock().unwrap().push(status);
                    }
                }
            });
        }
        NotifySocket {
            _dir: dir,
            path,
            messages,
            probes,
            http_addr,
        }
    }

    fn all(&self) -> Vec<String> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// Messages containing `line` that arrived after `since`.
    fn count_since(&self, line: &str, since: Instant) -> usize {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, m)| *at > since && m.lines().any(|l| l == line))
            .count()
    }

    fn count(&self, line: &str) -> usize {
        self.all()
            .iter()
            .filter(|m| m.lines().any(|l| l == line))
            .count()
    }

    fn wait_for(&self, what: &str, timeout: Duration, done: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(&self.all()) {
            assert!(
                Instant::now() < deadline,
                "{what}: not seen within {timeout:?}; messages: {:#?}",
                self.all()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

// ---------------------------------------------------------------------------------------

/// (a) systemd's restart: the sockets stay with the "service manager" (the test), haloyd is
/// SIGTERMed, drains, exits, and a new one starts on the same fds. READY=1 comes only once
/// routes are rebuilt: a GET sent the moment it arrives is answered 200. WATCHDOG=1 and
/// STATUS= flow while it runs, STOPPING=1 when it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_on_passed_sockets_refuses_nothing() {
    let notify = NotifySocket::new();
    let env = vec![
        (
            "NOTIFY_SOCKET".to_string(),
            notify.path.display().to_string(),
        ),
        ("WATCHDOG_USEC".to_string(), "1000000".to_string()),
    ];
    let mut rig = Rig::start(env).await;
    *notify.http_addr.lock().unwrap() = Some(rig.haloyd.http_addr());
    let config = rig.deploy_app();
    let before = rig.status(&config);
    assert_eq!(ready(&before), 3, "{before:#?}");
    notify.wait_for("STATUS with 3/3 replicas", Duration::from_secs(10), |m| {
        m.iter()
            .any(|m| m.contains("STATUS=serving: 1 apps, 3/3 replicas ready"))
    });
    notify.wait_for("WATCHDOG=1 keep-alives", Duration::from_secs(5), |m| {
        m.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3
    });
    // A containerd that stops answering (SIGSTOP to the harness's own containerd) stops the
    // keep-alives; they resume once it answers again.
    let ctd = nix::unistd::Pid::from_raw(rig._containerd.pid().expect("containerd runs") as i32);
    nix::sys::signal::kill(ctd, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP containerd");
    let frozen = Instant::now();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let during = notify.count_since("WATCHDOG=1", frozen + Duration::from_millis(700));
    nix::sys::signal::kill(ctd, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT containerd");
    assert_eq!(
        during,
        0,
        "WATCHDOG=1 sent while containerd was stopped: {:#?}",
        notify.all()
    );
    let resumed = Instant::now();
    let deadline = resumed + Duration::from_secs(5);
    while notify.count_since("WATCHDOG=1", resumed) == 0 {
        assert!(
            Instant::now() < deadline,
            "no WATCHDOG=1 after containerd answered again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let load = Load::start(rig.haloyd.http_addr(), 2, 2, false);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let restarted = Instant::now();
    rig.haloyd.stop(Duration::from_secs(30));
    let stopped_in = restarted.elapsed();
    assert_eq!(notify.count("STOPPING=1"), 1, "{:#?}", notify.all());
    rig.haloyd.start_again().await;
    eprintln!(
        "haloyd drained and stopped in {stopped_in:?}; back after {:?}",
        restarted.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = load.finish();
    assert_clean(&report, "SIGTERM + restart", &rig.haloyd, false);

    notify.wait_for("a second READY=1", Duration::from_secs(5), |m| {
        m.iter()
            .filter(|m| m.lines().any(|l| l == "READY=1"))
            .count()
            == 2
    });
    let probes = notify.probes.lock().unwrap().clone();
    assert_eq!(
        probes.last().copied().flatten(),
        Some(200),
        "a GET sent when READY=1 arrived after the restart: {probes:?}"
    );
    let after = rig.status(&config);
    assert_eq!(
        containers(&after),
        containers(&before),
        "replicas were replaced"
    );
    assert!(after.replicas.iter().all(|r| r.restarts == 0), "{after:#?}");
}

/// (b) A crash: SIGKILL, then a new haloyd on the same fds. Requests in flight on the killed
/// process got no answer byte and are tried once more; none fails for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_on_passed_sockets_refuses_nothing() {
    let mut rig = Rig::start(Vec::new()).await;
    let config = rig.deploy_app();
    let before = rig.status(&config);

    let load = Load::start(rig.haloyd.http_addr(), 2, 2, true);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed = Instant::now();
    rig.haloyd.kill();
    rig.haloyd.start_again().await;
    eprintln!("haloyd back {:?} after SIGKILL", killed.elapsed());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = load.finish();
    assert_clean(&report, "SIGKILL + restart", &rig.haloyd, true);

    let after = rig.status(&config);
    assert_eq!(
        containers(&after),
        containers(&before),
        "replicas were replaced"
    );
}

/// (c) `haloyd upgrade`: the running daemon starts the binary at its path with its sockets,
/// the new one adopts the running replicas and says READY, the old one drains and exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_hands_over_without_refusing_a_connection() {
    let mut rig = Rig::start(Vec::new()).await;
    let config = rig.deploy_app();
    let before = rig.status(&config);
    let old = rig.haloyd.pid().expect("haloyd runs") as i32;
    assert_eq!(rig.haloyd.pid_file_pid(), Some(old));

    let load = Load::start(rig.haloyd.http_addr(), 2, 2, false);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    rig.haloyd.upgrade_to_successor();
    let exited = rig.haloyd.wait_exit(Duration::from_secs(30));
    assert!(
        exited.is_some_and(|s| s.success()),
        "the old haloyd did not drain and exit cleanly: {exited:?}\n{}",
        rig.haloyd.log_tail(40)
    );
    eprintln!(
        "hand-over done, old haloyd gone after {:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = load.finish();
    assert_clean(&report, "hand-over upgrade", &rig.haloyd, false);

    let log = rig.haloyd.log();
    assert!(
        log.contains("the new haloyd serves"),
        "{}",
        rig.haloyd.log_tail(40)
    );
    let after = rig.status(&config);
    assert_eq!(
        containers(&after),
        containers(&before),
        "replicas were replaced"
    );
    assert!(after.replicas.iter().all(|r| r.restarts == 0), "{after:#?}");
    assert_eq!(ready(&after), 3, "{after:#?}");
    // The new daemon owns deploys now.
    let run = rig.haloyd.cli(&config, &["deploy"]);
    assert!(
        run.output.status.success(),
        "deploy after the upgrade:\n{}",
        run.both()
    );
}

/// (c2) An upgraded connection (a WebSocket-style tunnel) open at the hand-over keeps working
/// while the old daemon drains, which waits for it (up to drain_timeout) before exiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_lets_an_open_tunnel_finish() {
    let mut rig = Rig::start(Vec::new()).await;
    let body = format!(
        "name: echo\nimage: {}\nreplicas: 1\nport: 8080\nhealth_check_path: /health\n\
         domains:\n  - domain: echo.test\n",
        rig.registry.fixture_ref("tunnel", "v1")
    );
    let config = rig.haloyd.write_app_config("echo", &body);
    let run = rig.haloyd.cli(&config, &["deploy"]);
    assert!(
        run.output.status.success(),
        "deploy:\n{}\n{}",
        run.both(),
        rig.haloyd.log_tail(30)
    );

    let mut tunnel = connect(&rig.haloyd.http_addr()).unwrap_or_else(|f| panic!("{}", f.what));
    tunnel
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: echo.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .expect("upgrade request");
    let head = read_until(&mut tunnel, b"\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    echo(&mut tunnel, "before");

    rig.haloyd.upgrade_to_successor();
    // The old daemon drains: it must not exit while the tunnel is open.
    assert!(
        rig.haloyd.wait_exit(Duration::from_secs(2)).is_none(),
        "the old haloyd exited with a tunnel open:\n{}",
        rig.haloyd.log_tail(20)
    );
    echo(&mut tunnel, "during the drain");
    drop(tunnel);
    let exited = rig.haloyd.wait_exit(Duration::from_secs(5));
    assert!(
        exited.is_some_and(|s| s.success()),
        "the old haloyd did not exit once the tunnel closed: {exited:?}\n{}",
        rig.haloyd.log_tail(20)
    );
}

fn read_until(stream: &mut TcpStream, end: &[u8]) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(end) {
        match stream.read(&mut byte) {
            Ok(1) => got.push(byte[0]),
            other => panic!("read {other:?} after {:?}", String::from_utf8_lossy(&got)),
        }
    }
    String::from_utf8_lossy(&got).to_string()
}

fn echo(stream: &mut TcpStream, text: &str) {
    let line = format!("{text}\n");
    stream
        .write_all(line.as_bytes())
        .expect("write into the tunnel");
    assert_eq!(read_until(stream, b"\n"), line, "echo through the tunnel");
}

/// (d) A new daemon that cannot start (here: its API token file is gone) leaves the old one
/// serving, with a clear log line, and deploys work again right after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_upgrade_leaves_the_old_daemon_serving() {
    let mut rig = Rig::start(Vec::new()).await;
    let config = rig.deploy_app();
    let old = rig.haloyd.pid().expect("haloyd runs") as i32;
    let token = rig.haloyd.dir().join("token");
    let moved = rig.haloyd.dir().join("token.away");
    std::fs::rename(&token, &moved).expect("move the token file away");

    let load = Load::start(rig.haloyd.http_addr(), 2, 2, false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let upgrade = rig.haloyd.upgrade_command();
    let stderr = String::from_utf8_lossy(&upgrade.stderr).to_string();
    assert!(
        !upgrade.status.success(),
        "haloyd upgrade succeeded: {upgrade:?}"
    );
    assert!(
        stderr.contains("keeps serving") && stderr.contains("exited before it was ready"),
        "haloyd upgrade does not say why: {stderr}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = load.finish();
    assert_clean(&report, "a failed upgrade", &rig.haloyd, false);
    std::fs::rename(&moved, &token).expect("put the token file back");

    assert_eq!(rig.haloyd.pid_file_pid(), Some(old));
    assert!(
        rig.haloyd.wait_exit(Duration::from_millis(10)).is_none(),
        "the old haloyd exited"
    );
    let log = rig.haloyd.log();
    let line = log
        .lines()
        .find(|l| l.contains("upgrade failed"))
        .expect("the failure line");
    assert!(line.contains("exited before it was ready"), "{line}");
    // Deploys were paused for the attempt and are resumed.
    let run = rig.haloyd.cli(&config, &["deploy"]);
    assert!(
        run.output.status.success(),
        "deploy after the failed upgrade:\n{}",
        run.both()
    );
}

/// The shipped units load in systemd's own parser without a warning: every key is known,
/// ExecStart/ExecReload name an executable (the built haloyd stands in for the installed
/// path), and the service's Sockets= names a real socket unit.
#[test]
fn shipped_systemd_units_pass_systemd_analyze_verify() {
    let analyze = harness::require_binary("systemd-analyze", "systemd");
    let dir = tempfile::tempdir().expect("temp dir");
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let haloyd = harness::haloyd::haloyd_binary();
    for name in ["haloyd.service", "haloyd.socket"] {
        let text = std::fs::read_to_string(units.join(name)).expect("read unit");
        let text = text.replace("/usr/bin/haloyd", &haloyd.display().to_string());
        std::fs::write(dir.path().join(name), text).expect("write unit");
    }
    let out = std::process::Command::new(analyze)
        .current_dir(dir.path())
        .args(["verify", "./haloyd.socket", "./haloyd.service"])
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}
