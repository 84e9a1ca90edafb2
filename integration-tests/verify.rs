//! `haloyd verify` against a real private containerd, the Debian CNI plugins and runc: a
//! healthy setup passes every check (exit 0); a token readable by others, a proxy port taken
//! by another program and an absent containerd each fail with their fix (exit 1).

// Tests run haloyd and start containerd (see clippy.toml).
#![allow(clippy::disallowed_methods)]

#[path = "harness/mod.rs"]
mod harness;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use harness::{free_port, require_binary, Containerd};

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    token: PathBuf,
    http_port: u16,
}

/// A server config of private paths and free loopback ports, with a 0600 token.
fn setup(containerd_socket: &Path) -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let token = dir.path().join("api-token");
    std::fs::write(&token, "0123456789abcdef\n").expect("write token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let http_port = free_port();
    let cni_bin_dir = if Path::new("/usr/lib/cni/bridge").exists() {
        "/usr/lib/cni"
    } else {
        "/opt/cni/bin"
    };
    let config = dir.path().join("haloyd.yaml");
    let text = format!(
        "state_dir: {dir}/state\nrun_dir: {dir}/run\n\
         containerd:\n  address: {socket}\n  namespace: verify-test\n\
         proxy:\n  http_listen: 127.0.0.1:{http_port}\n  https_listen: 127.0.0.1:{https}\n\
         api:\n  listen: 127.0.0.1:{api}\n  token_file: {token}\n\
         network:\n  cni_bin_dir: {cni_bin_dir}\n",
        dir = dir.path().display(),
        socket = containerd_socket.display(),
        https = free_port(),
        api = free_port(),
        token = token.display(),
    );
    std::fs::write(&config, text).expect("write config");
    Setup {
        dir,
        config,
        token,
        http_port,
    }
}

fn verify(config: &Path) -> Output {
    Command::new(harness::haloyd::haloyd_binary())
        .args(["verify", "--config"])
        .arg(config)
        .output()
        .expect("run haloyd verify")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn a_healthy_server_passes_every_check() {
    require_binary("runc", "runc");
    require_binary("tini-static", "tini");
    let containerd = Containerd::start().await;
    let setup = setup(containerd.socket());
    let output = verify(&setup.config);
    let text = stdout(&output);
    eprintln!("{text}");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in [
        "answers: containerd",
        "containerd v1 services present",
        "runc ",
        "plugins bridge, firewall, host-local, loopback in",
        "(proxy.http_listen) is free",
        "(api.listen) is free",
        "api-token is root's, mode 0600",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert!(!text.contains("FAIL"), "{text}");
    assert!(text.trim_end().ends_with("checks passed"), "{text}");
    drop(setup.dir);
}

#[tokio::test]
async fn each_problem_fails_with_what_to_fix() {
    let containerd = Containerd::start().await;
    let setup = setup(containerd.socket());
    std::fs::set_permissions(&setup.token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    // Another program (this test) on the proxy's port.
    let _squatter = TcpListener::bind(("127.0.0.1", setup.http_port)).expect("bind");

    let output = verify(&setup.config);
    let text = stdout(&output);
    eprintln!("{text}");
    assert_eq!(output.status.code(), Some(1), "{text}");
    let token = setup.token.display().to_string();
    assert!(
        text.contains(&format!(
            "FAIL  token       {token} is readable or writable by others (mode 0644)"
        )),
        "{text}"
    );
    assert!(text.contains(&format!("fix: chmod 600 {token}")), "{text}");
    let me = format!("(pid {})", std::process::id());
    assert!(
        text.contains(&format!(
            "FAIL  port        127.0.0.1:{} (proxy.http_listen) is in use by",
            setup.http_port
        )) && text.contains(&me),
        "the port's holder is named: {text}"
    );
    assert!(
        text.contains("or change proxy.http_listen in the server config"),
        "{text}"
    );
    assert!(text.contains("2 of "), "{text}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("2 check(s) failed"));
}

#[tokio::test]
async fn no_containerd_fails_naming_the_socket() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("containerd.sock");
    let setup = setup(&socket);
    let output = verify(&setup.config);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    let first = text.lines().next().unwrap_or_default();
    assert!(first.starts_with("FAIL  containerd"), "{text}");
    assert!(first.contains(&socket.display().to_string()), "{text}");
    assert!(text.contains("fix: start containerd"), "{text}");
}
