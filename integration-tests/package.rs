//! The Debian package on this machine: `packaging/build-deb.sh` builds the .deb from the
//! binaries this test run built, `apt-get install ./haloy_*.deb` installs it, and the test
//! checks files, modes, the generated token and config, man pages, completions, the declared
//! dependencies and `haloyd --version`; `apt-get remove` keeps config and data, `apt-get purge`
//! leaves nothing behind.
//!
//! The machine's own state is protected: an installed haloy package or an unpackaged
//! /usr/bin/haloy{,d} fails the test before anything changes, and so does a running haloyd;
//! an existing /etc/haloy, /var/lib/haloy or /run/haloy (e.g. from examples/local-demo) is
//! moved aside and put back afterwards, also when the test fails. Without systemd as PID 1 (CI) postinst enables the units for the next
//! boot but starts nothing, so no port is taken from later tests.

// Tests run cargo-deb, apt-get and dpkg (see clippy.toml).
#![allow(clippy::disallowed_methods)]

#[path = "harness/mod.rs"]
mod harness;

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// Where the package keeps config, data and run state; moved aside if present before the
/// test (run state only when no haloyd is running).
const OWN_DIRS: [&str; 3] = ["/etc/haloy", "/var/lib/haloy", "/run/haloy"];
/// Trees searched for anything named *haloy* the package left behind.
const SEARCHED: [&str; 4] = ["/etc", "/usr", "/lib", "/var/lib"];

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let output = run(program, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}):\n{text}",
        output.status
    );
    text
}

fn apt_get(args: &[&str]) -> String {
    // Another apt-get on the machine holds the lock for a while at most.
    let mut all = vec!["-o", "DPkg::Lock::Timeout=300", "-y"];
    all.extend_from_slice(args);
    run_ok("apt-get", &all)
}

fn package_installed() -> bool {
    let output = run("dpkg-query", &["-W", "-f=${Status}", "haloy"]);
    String::from_utf8_lossy(&output.stdout).contains("ok installed")
}

/// Purges the package if this test left it installed, and puts the machine's own
/// /etc/haloy and /var/lib/haloy back.
struct MachineGuard {
    moved: Vec<(PathBuf, PathBuf)>,
}

impl MachineGuard {
    fn take() -> MachineGuard {
        assert!(
            !package_installed(),
            "the haloy package is installed on this machine; this test installs and purges it: run `apt-get purge haloy` first if that is fine"
        );
        for bin in ["/usr/bin/haloy", "/usr/bin/haloyd"] {
            assert!(
                !Path::new(bin).exists(),
                "{bin} exists without the package; the test would remove it: move it away first"
            );
        }
        if Path::new("/run/haloy").exists() {
            // Left over from a haloyd that has stopped (e.g. examples/local-demo) is fine to
            // move aside; a running one would lose its namespaces.
            if let Some(pid) = running_haloyd() {
                panic!("/run/haloy is in use by haloyd (pid {pid}), and purge removes that dir; stop it first");
            }
        }
        let mut moved = Vec::new();
        for dir in OWN_DIRS.map(PathBuf::from) {
            if dir.exists() {
                let aside = PathBuf::from(format!(
                    "{}.package-test-{}",
                    dir.display(),
                    std::process::id()
                ));
                std::fs::rename(&dir, &aside).expect("move the machine's own dir aside");
                moved.push((dir, aside));
            }
        }
        MachineGuard { moved }
    }
}

impl Drop for MachineGuard {
    fn drop(&mut self) {
        if package_installed() {
            let _ = run(
                "apt-get",
                &["-o", "DPkg::Lock::Timeout=300", "-y", "purge", "haloy"],
            );
        }
        for (dir, aside) in &self.moved {
            let _ = std::fs::remove_dir_all(dir);
            if let Err(e) = std::fs::rename(aside, dir) {
                eprintln!(
                    "could not put {} back from {}: {e}",
                    dir.display(),
                    aside.display()
                );
            }
        }
    }
}

/// The PID of a running haloyd, if any.
fn running_haloyd() -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == "haloyd")
        })
}

/// Every path under the searched trees whose name contains "haloy".
fn haloy_paths() -> BTreeSet<PathBuf> {
    let mut found = BTreeSet::new();
    for root in SEARCHED {
        collect_named(Path::new(root), &mut found, 0);
    }
    found
}

fn collect_named(dir: &Path, found: &mut BTreeSet<PathBuf>, depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if entry.file_name().to_string_lossy().contains("haloy") {
            found.insert(path.clone());
        }
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        // /var/lib/containerd and /usr/src-like trees hold nothing of the package's.
        if is_dir && depth < 8 && !path.starts_with("/var/lib/containerd") {
            collect_named(&path, found, depth + 1);
        }
    }
}

fn mode(path: &str) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .permissions()
        .mode()
        & 0o7777
}

fn gunzip(path: &str) -> String {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut text = String::new();
    flate2::read::GzDecoder::new(file)
        .read_to_string(&mut text)
        .unwrap_or_else(|e| panic!("{path} is not gzip: {e}"));
    text
}

/// A running process whose binary is `exe`.
fn running(exe: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| {
                    std::fs::read_link(format!("/proc/{pid}/exe"))
                        .is_ok_and(|p| p == Path::new(exe))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Builds the .deb from the dev binaries `cargo test` just built (no second build).
fn build_deb() -> PathBuf {
    let cargo_deb = Command::new("cargo").args(["deb", "--version"]).output();
    assert!(
        cargo_deb.is_ok_and(|o| o.status.success()),
        "cargo-deb is missing: run integration-tests/setup-debian.sh (it runs `cargo install cargo-deb --locked`)"
    );
    let haloyd = harness::haloyd::haloyd_binary();
    assert!(haloyd.exists(), "{} was not built", haloyd.display());
    let out = Command::new("bash")
        .arg(format!("{REPO}/packaging/build-deb.sh"))
        .args(["dev", "--fast"])
        .env("NO_BUILD", "1")
        .output()
        .expect("run packaging/build-deb.sh");
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success(),
        "build-deb.sh failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = PathBuf::from(stdout.lines().last().unwrap_or_default());
    let name = deb
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        name.starts_with(&format!("haloy_{version}")) && name.ends_with(".deb") && deb.exists(),
        "build-deb.sh's last line names the package haloy_<version>_<arch>.deb: {stdout}"
    );
    deb
}

fn check_installed_files() {
    for bin in ["/usr/bin/haloy", "/usr/bin/haloyd"] {
        assert_eq!(mode(bin), 0o755, "{bin}");
        assert_eq!(
            std::fs::metadata(bin).map(|m| m.uid()).ok(),
            Some(0),
            "{bin}"
        );
    }
    let version = run_ok("/usr/bin/haloyd", &["--version"]);
    assert_eq!(
        version.trim(),
        format!("haloyd {}", env!("CARGO_PKG_VERSION"))
    );

    assert_eq!(mode("/etc/haloy/haloyd.yaml"), 0o644);
    let config = haloy::config::server::ServerConfig::load(Path::new("/etc/haloy/haloyd.yaml"))
        .expect("the shipped config parses");
    assert_eq!(config.api.token_file, Path::new("/etc/haloy/api-token"));
    assert_eq!(config.state_dir, Path::new("/var/lib/haloy"));
    assert_eq!(
        mode("/etc/haloy/api-token"),
        0o600,
        "the token is root only"
    );
    let token = std::fs::read_to_string("/etc/haloy/api-token").expect("token");
    assert!(token.trim().len() == 64 && token.trim().chars().all(|c| c.is_ascii_hexdigit()));
    assert!(
        Path::new("/var/lib/haloy").is_dir(),
        "postinst's haloyd init made the state dir"
    );

    for unit in ["haloyd.service", "haloyd.socket"] {
        let installed = format!("/lib/systemd/system/{unit}");
        assert_eq!(mode(&installed), 0o644, "{installed}");
        assert_eq!(
            std::fs::read_to_string(&installed).ok(),
            std::fs::read_to_string(format!("{REPO}/systemd/{unit}")).ok(),
            "{installed} is the repository's unit"
        );
    }
    let service = std::fs::read_to_string("/lib/systemd/system/haloyd.service").unwrap_or_default();
    assert!(
        service.contains("ExecStart=/usr/bin/haloyd serve"),
        "the unit runs the packaged binary"
    );

    for page in ["haloy", "haloyd", "haloyd-verify", "haloy-deploy"] {
        let text = gunzip(&format!("/usr/share/man/man1/{page}.1.gz"));
        assert!(text.contains(".TH"), "{page}.1 is a man page");
    }
    assert!(gunzip("/usr/share/man/man1/haloyd-verify.1.gz").contains("fix"));
    for (path, marker) in [
        ("/usr/share/bash-completion/completions/haloy", "_haloy()"),
        ("/usr/share/bash-completion/completions/haloyd", "_haloyd()"),
        ("/usr/share/zsh/vendor-completions/_haloy", "#compdef haloy"),
        (
            "/usr/share/fish/vendor_completions.d/haloyd.fish",
            "complete -c haloyd",
        ),
    ] {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(text.contains(marker), "{path} lacks {marker:?}");
        assert_eq!(mode(path), 0o644, "{path}");
    }

    let depends = run_ok("dpkg-query", &["-W", "-f=${Depends}", "haloy"]);
    for dep in ["containerd", "runc", "containernetworking-plugins", "tini"] {
        assert!(depends.contains(dep), "Depends lacks {dep}: {depends}");
    }
    let recommends = run_ok("dpkg-query", &["-W", "-f=${Recommends}", "haloy"]);
    for dep in ["ca-certificates", "nftables"] {
        assert!(
            recommends.contains(dep),
            "Recommends lacks {dep}: {recommends}"
        );
    }
    let conffiles = run_ok("dpkg-query", &["-W", "-f=${Conffiles}", "haloy"]);
    assert!(conffiles.contains("/etc/haloy/haloyd.yaml"), "{conffiles}");
}

#[test]
fn the_deb_installs_removes_and_purges_cleanly() {
    let deb = build_deb();
    let guard = MachineGuard::take();
    let before = haloy_paths();
    let systemd_runs = Path::new("/run/systemd/system").is_dir();

    let install = apt_get(&["install", &deb.display().to_string()]);
    assert!(package_installed(), "{install}");
    assert!(
        install.contains("the API token is in /etc/haloy/api-token"),
        "postinst says where the token is:\n{install}"
    );
    check_installed_files();
    if systemd_runs {
        run_ok("systemctl", &["is-enabled", "haloyd.socket"]);
    } else {
        // Enabled for the next boot, but nothing started: ports stay free for later tests.
        assert!(
            Path::new("/etc/systemd/system/sockets.target.wants/haloyd.socket").exists(),
            "postinst enables haloyd.socket"
        );
        assert_eq!(
            running("/usr/bin/haloyd"),
            Vec::<u32>::new(),
            "no haloyd started without systemd"
        );
    }

    apt_get(&["remove", "haloy"]);
    assert!(!Path::new("/usr/bin/haloyd").exists());
    assert!(
        Path::new("/etc/haloy/api-token").exists(),
        "remove keeps the token"
    );
    assert!(
        Path::new("/var/lib/haloy").is_dir(),
        "remove keeps the data"
    );

    // As haloyd leaves it: the netns dir bind-mounted on itself; purge must still remove it.
    std::fs::create_dir_all("/run/haloy/netns").expect("create /run/haloy/netns");
    run_ok("mount", &["--bind", "/run/haloy/netns", "/run/haloy/netns"]);
    apt_get(&["purge", "haloy"]);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let left_mounted: Vec<&str> = mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| *point == "/run/haloy" || point.starts_with("/run/haloy/"))
        .collect();
    assert!(
        left_mounted.is_empty(),
        "purge left mounts under /run/haloy: {left_mounted:?}"
    );
    let left: Vec<PathBuf> = haloy_paths().difference(&before).cloned().collect();
    assert!(left.is_empty(), "purge left files behind: {left:?}");
    for dir in OWN_DIRS.iter().chain(&["/run/haloy"]) {
        assert!(!Path::new(dir).exists(), "purge removes {dir}");
    }
    drop(guard);
}
