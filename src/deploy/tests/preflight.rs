//! Unit tests of `deploy::preflight`.

use super::*;

#[test]
fn reads_mem_available() {
    let meminfo = "MemTotal: 100 kB\nMemFree: 10 kB\nMemAvailable:   2048 kB\n";
    assert_eq!(parse_mem_available(meminfo), Some(2048 * 1024));
}

#[test]
fn formats_sizes() {
    assert_eq!(human_bytes(512 * 1024 * 1024), "512 MiB");
    assert_eq!(human_bytes(5 * 512 * 1024 * 1024), "2.5 GiB");
}
