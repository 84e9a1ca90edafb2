//! Checks the integration rig itself: a private containerd answers gRPC through
//! `haloy::runtime::client` (also across a restart), the registry serves the pushed fixtures
//! (anonymously and behind htpasswd), and each fixture's start script behaves as documented
//! (run under chroot from the unpacked layers, on a free loopback port).

// Tests start real containerd, registries, Pebble and tools (see clippy.toml).
#![allow(clippy::disallowed_methods)]

#[path = "harness/mod.rs"]
mod harness;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::images::OciImage;
use harness::registry::http_status;
use harness::{Containerd, Registry};

#[tokio::test]
async fn containerd_answers_version_through_runtime_client() {
    let containerd = Containerd::start().await;
    let client = containerd.client("harness-smoke").await;
    let version = client.server_version().await.expect("Version call");
    assert!(!version.is_empty());
    assert_eq!(client.namespace(), "harness-smoke");
}

#[tokio::test]
async fn runtime_client_reconnects_after_containerd_restart() {
    let mut containerd = Containerd::start().await;
    let client = containerd.client("harness-restart").await;
    client
        .server_version()
        .await
        .expect("Version before restart");

    containerd.kill();
    let err = client.server_version().await.unwrap_err();
    assert!(
        err.to_string()
            .contains(&containerd.socket().display().to_string()),
        "error names the socket: {err}"
    );

    containerd.start_again().await;
    client
        .server_version()
        .await
        .expect("the same client works again after containerd came back");
}

#[tokio::test]
async fn registry_serves_pushed_fixtures() {
    let registry = Registry::start().await;
    let pushed = registry.push_fixtures().await;
    assert_eq!(pushed.len(), harness::FIXTURES.len() + 1, "{pushed:?}");
    for (name, tag) in [
        ("web", "v1"),
        ("web", "v2"),
        ("chatty", "v1"),
        ("unhealthy", "v1"),
    ] {
        let path = format!("/v2/haloy-fixtures/{name}/manifests/{tag}");
        assert_eq!(http_status(registry.addr(), &path), Some(200), "{path}");
    }
}

#[tokio::test]
async fn htpasswd_registry_requires_credentials() {
    let registry = Registry::start_with_htpasswd("haloy", "s3cret").await;
    assert_eq!(http_status(registry.addr(), "/v2/"), Some(401));
    registry.push_fixtures().await;
}

/// A fixture running under chroot in its own process group (so its background httpd goes too).
struct ChrootFixture {
    child: Child,
    port: u16,
    _rootfs: tempfile::TempDir,
}

impl ChrootFixture {
    fn start(name: &str, env: &[(&str, &str)]) -> ChrootFixture {
        let image = OciImage::fixture(name, "v7");
        let rootfs = tempfile::tempdir().unwrap();
        for layer in &image.layers {
            tar::Archive::new(layer.tar.as_slice())
                .unpack(rootfs.path())
                .unwrap();
        }
        make_dev_null(rootfs.path());
        let config: serde_json::Value = serde_json::from_slice(&image.config.data).unwrap();
        let port = harness::free_port();
        let mut command = Command::new("chroot");
        command
            .arg(rootfs.path())
            .args(["/bin/sh", "-c", "cd /app && exec sh /app/start.sh"])
            .env_clear()
            .env("PORT", port.to_string())
            .env("HALOY_REPLICA_ID", "3")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        for entry in config["config"]["Env"].as_array().unwrap() {
            let (key, value) = entry.as_str().unwrap().split_once('=').unwrap();
            command.env(key, value);
        }
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().expect("chroot (coreutils)");
        ChrootFixture {
            child,
            port,
            _rootfs: rootfs,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn wait_for_status(&self, path: &str, want: u16, within: Duration) -> Option<u16> {
        let deadline = Instant::now() + within;
        let mut last = None;
        while Instant::now() < deadline {
            last = http_status(&self.addr(), path);
            if last == Some(want) {
                return last;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        last
    }

    fn get(&self, path: &str) -> String {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(self.addr()).unwrap();
        write!(stream, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
        let mut body = String::new();
        stream.read_to_string(&mut body).unwrap();
        body
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for ChrootFixture {
    fn drop(&mut self) {
        // The group was created for this child alone (process_group(0) above).
        let group = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// A container runtime provides /dev; under plain chroot the shell needs at least /dev/null.
fn make_dev_null(rootfs: &Path) {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    let mode = Mode::from_bits_truncate(0o666);
    mknod(
        &rootfs.join("dev/null"),
        SFlag::S_IFCHR,
        mode,
        makedev(1, 3),
    )
    .expect("mknod /dev/null");
}

fn require_chroot() {
    assert!(
        Path::new("/usr/sbin/chroot").exists(),
        "chroot missing: install the Debian package `coreutils`"
    );
}

#[test]
fn web_fixture_serves_health_and_version_page_and_stops_on_sigterm() {
    require_chroot();
    let mut web = ChrootFixture::start("web", &[]);
    assert_eq!(
        web.wait_for_status("/health", 200, Duration::from_secs(10)),
        Some(200)
    );
    let page = web.get("/");
    assert!(page.contains("version: v7"), "{page}");
    assert!(page.contains("replica: 3"), "{page}");
    assert!(page.contains("hostname: "), "{page}");
    web.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        web.wait_exit(Duration::from_secs(5)).is_some(),
        "web exits on SIGTERM"
    );
}

#[test]
fn unhealthy_fixture_answers_500() {
    require_chroot();
    let unhealthy = ChrootFixture::start("unhealthy", &[]);
    assert_eq!(
        unhealthy.wait_for_status("/health", 500, Duration::from_secs(10)),
        Some(500)
    );
    // Repeated checks keep getting 500 (persistent server).
    for _ in 0..3 {
        assert_eq!(http_status(&unhealthy.addr(), "/health"), Some(500));
    }
}

#[test]
fn slow_start_fixture_becomes_healthy_after_delay() {
    require_chroot();
    let slow = ChrootFixture::start("slow-start", &[("SLOW_START", "2")]);
    assert_eq!(
        slow.wait_for_status("/", 200, Duration::from_secs(10)),
        Some(200)
    );
    assert_eq!(
        http_status(&slow.addr(), "/health"),
        Some(404),
        "not healthy yet"
    );
    assert_eq!(
        slow.wait_for_status("/health", 200, Duration::from_secs(10)),
        Some(200)
    );
}

#[test]
fn crash_after_fixture_exits_with_status_3() {
    require_chroot();
    let mut crash = ChrootFixture::start("crash-after", &[("CRASH_AFTER", "1")]);
    assert_eq!(
        crash.wait_for_status("/health", 200, Duration::from_secs(10)),
        Some(200)
    );
    let status = crash
        .wait_exit(Duration::from_secs(10))
        .expect("crash-after exits");
    assert_eq!(status.code(), Some(3));
}

#[test]
fn ignore_sigterm_fixture_survives_sigterm() {
    require_chroot();
    let mut stubborn = ChrootFixture::start("ignore-sigterm", &[]);
    assert_eq!(
        stubborn.wait_for_status("/health", 200, Duration::from_secs(10)),
        Some(200)
    );
    stubborn.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        stubborn.wait_exit(Duration::from_secs(2)).is_none(),
        "still running after SIGTERM"
    );
}

#[test]
fn chatty_fixture_writes_numbered_lines_to_both_streams() {
    use std::io::{BufRead, BufReader};
    require_chroot();
    let mut chatty = ChrootFixture::start("chatty", &[("CHATTY_INTERVAL", "0.01")]);
    let stdout = BufReader::new(chatty.child.stdout.take().unwrap());
    let stderr = BufReader::new(chatty.child.stderr.take().unwrap());
    let out: Vec<String> = stdout.lines().take(3).map(|l| l.unwrap()).collect();
    let err: Vec<String> = stderr.lines().take(3).map(|l| l.unwrap()).collect();
    assert_eq!(out, ["line 1 stdout", "line 3 stdout", "line 5 stdout"]);
    assert_eq!(err, ["line 2 stderr", "line 4 stderr", "line 6 stderr"]);
}
