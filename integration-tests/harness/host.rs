//! Facts about the test host that every fixture needs: where a required binary is (or which
//! Debian package to install), and a loopback port nobody uses. Shared by the harness and by
//! pebble.rs, which test files also include on its own.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

/// Returns the absolute path of `binary`, or panics naming the Debian package to install.
pub fn require_binary(binary: &str, debian_package: &str) -> PathBuf {
    let candidates = [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ];
    for dir in candidates {
        let path = Path::new(dir).join(binary);
        if path.is_file() {
            return path;
        }
    }
    panic!(
        "`{binary}` not found: install the Debian package `{debian_package}` (apt-get install -y {debian_package})"
    );
}

/// Ports handed out below Linux's ephemeral range (32768-60999): an outgoing connection of
/// some other test can never take one between our probe and the daemon's bind, which is what
/// happens with ports picked by binding port 0.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// Ports this test process handed out already. Tests run in parallel: two of them probing
/// the same random port before either daemon binds it would both get it (seen in CI as a
/// haloyd failing with 'Address already in use' on its api.listen).
static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// A TCP port on 127.0.0.1 that is free right now and was not handed out before in this
/// process.
pub fn free_port() -> u16 {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..1000 {
        let port = rand::random_range(PORTS);
        if handed_out.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
    panic!("no free loopback port in {PORTS:?}")
}
