use super::ports::{listening_inodes, processes_holding, Holder};
use super::*;
use std::net::SocketAddr;

const TCP_TABLE: &str = "\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:26C2 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0
   2: 0100007F:0050 0100007F:A1B2 01 00000000:00000000 00:00000000 00000000     0        0 999 1 0000000000000000 20 4 30 10 -1
";

#[test]
fn listening_sockets_are_found_by_port_and_state() {
    assert_eq!(listening_inodes(TCP_TABLE, 9922), vec![4242]);
    // The established connection on port 80 (state 01) is not a listener.
    assert_eq!(listening_inodes(TCP_TABLE, 80), vec![777]);
    assert!(listening_inodes(TCP_TABLE, 443).is_empty());
    assert!(listening_inodes("garbage\nnot a table", 80).is_empty());
}

#[test]
fn this_process_is_found_holding_its_own_listener() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let holders = super::ports::listeners_of(port);
    let me = std::process::id();
    assert!(
        holders.iter().any(|h| h.pid == me),
        "{holders:?} should include pid {me}"
    );
    assert!(processes_holding(Path::new("/nonexistent"), &[1]).is_empty());
}

fn addr() -> SocketAddr {
    "0.0.0.0:80".parse().unwrap()
}

fn holder(pid: u32, command: &str) -> Holder {
    Holder {
        pid,
        command: command.into(),
    }
}

#[test]
fn a_port_held_by_haloyd_or_systemd_socket_activation_is_fine() {
    let f = port_verdict("proxy.http_listen", addr(), &[holder(1, "systemd")]);
    assert_eq!(f.level, Level::Ok, "{f:?}");
    let f = port_verdict("proxy.http_listen", addr(), &[holder(1234, "haloyd")]);
    assert_eq!(f.level, Level::Ok, "{f:?}");
}

#[test]
fn a_port_held_by_another_program_names_it_and_the_config_key() {
    let f = port_verdict(
        "proxy.http_listen",
        addr(),
        &[holder(1234, "haloyd"), holder(77, "nginx")],
    );
    assert_eq!(f.level, Level::Fail);
    assert!(f.detail.contains("nginx (pid 77)"), "{}", f.detail);
    assert!(!f.detail.contains("haloyd"), "{}", f.detail);
    assert!(f.fix.unwrap().contains("proxy.http_listen"));
    let f = port_verdict("api.listen", addr(), &[]);
    assert_eq!(f.level, Level::Fail);
    assert!(f.detail.contains("another process"), "{}", f.detail);
}

#[test]
fn the_token_file_must_be_root_only_and_not_empty() {
    let path = Path::new("/etc/haloy/api-token");
    assert_eq!(token_verdict(path, 0o100600, 0, 65).level, Level::Ok);
    let f = token_verdict(path, 0o100644, 0, 65);
    assert_eq!(f.level, Level::Fail);
    assert!(f.detail.contains("0644"), "{}", f.detail);
    assert!(f.fix.unwrap().starts_with("chmod 600 /etc/haloy/api-token"));
    let f = token_verdict(path, 0o100600, 1000, 65);
    assert!(f.fix.unwrap().contains("chown root"));
    let f = token_verdict(path, 0o100600, 0, 0);
    assert!(f.fix.unwrap().contains("--new-token"));
}

#[test]
fn trusted_files_and_dirs_must_not_be_writable_by_others() {
    let path = Path::new("/var/lib/haloy");
    assert_eq!(
        not_writable_by_others("dirs", path, 0o40755, 0).level,
        Level::Ok
    );
    let f = not_writable_by_others("dirs", path, 0o40777, 0);
    assert_eq!(f.level, Level::Fail);
    assert_eq!(f.fix.as_deref(), Some("chmod go-w /var/lib/haloy"));
    let f = not_writable_by_others("dirs", path, 0o40700, 1000);
    assert_eq!(f.fix.as_deref(), Some("chown root: /var/lib/haloy"));
}

#[test]
fn the_built_in_conflist_needs_loopback_bridge_host_local_and_firewall() {
    let types = plugin_types(BUILT_IN_CONFLIST).unwrap();
    let types: Vec<&str> = types.iter().map(String::as_str).collect();
    assert_eq!(types, ["bridge", "firewall", "host-local", "loopback"]);
    assert!(plugin_types("{").is_err());
    assert!(plugin_types("{}").unwrap_err().contains("plugins"));
}

#[test]
fn missing_services_are_named() {
    let all: BTreeSet<String> = GRPC_SERVICES.iter().map(|s| s.to_string()).collect();
    assert_eq!(missing_services(&all).level, Level::Ok);
    let mut some = all.clone();
    some.remove("leases");
    let f = missing_services(&some);
    assert_eq!(f.level, Level::Fail);
    assert!(f.detail.ends_with("leases"), "{}", f.detail);
}

#[test]
fn executables_are_found_in_the_search_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("runc");
    std::fs::write(&exe, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o644)).unwrap();
    let dirs = [dir.path().to_path_buf()];
    assert_eq!(find_executable("runc", &dirs), None, "not executable yet");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(find_executable("runc", &dirs), Some(exe));
}

#[test]
fn the_report_lists_fixes_and_counts_failures() {
    let report = Report {
        findings: vec![
            Finding::ok("runc", "/usr/sbin/runc is executable"),
            Finding::warn("tini", "missing", "apt-get install tini"),
            Finding::fail("token", "mode 0644", "chmod 600 /etc/haloy/api-token"),
        ],
    };
    assert_eq!(report.failures(), 1);
    let text = report.render();
    assert!(text.contains("FAIL  token"), "{text}");
    assert!(
        text.contains("fix: chmod 600 /etc/haloy/api-token"),
        "{text}"
    );
    assert!(text.contains("warn  tini"), "{text}");
    assert!(text.ends_with("1 of 3 checks failed: fix them and run `haloyd verify` again\n"));
}
