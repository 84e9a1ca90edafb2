use super::*;
use std::net::{TcpListener, TcpStream, UdpSocket};

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("address")
}

fn owned<T: Into<OwnedFd>>(s: T) -> OwnedFd {
    s.into()
}

#[test]
fn a_listening_tcp_socket_is_taken_and_made_non_blocking() {
    let listener = TcpListener::bind(loopback()).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let taken = validate("http", owned(listener), addr).expect("valid");
    // Non-blocking: accept without a pending connection returns at once.
    let err = taken.accept().expect_err("nothing to accept");
    assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
}

#[test]
fn a_udp_socket_is_refused() {
    let udp = UdpSocket::bind(loopback()).expect("bind udp");
    let err = validate("http", owned(udp), loopback()).expect_err("udp refused");
    assert!(err.to_string().contains("expected a TCP stream"), "{err}");
}

#[test]
fn a_connected_socket_that_does_not_listen_is_refused() {
    let listener = TcpListener::bind(loopback()).expect("bind");
    let stream = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let err = validate("api", owned(stream), loopback()).expect_err("not listening");
    assert!(err.to_string().contains("not listening"), "{err}");
    assert!(err.to_string().contains("`api`"), "{err}");
}

#[test]
fn a_listener_of_the_other_address_family_is_refused() {
    let v6 = TcpListener::bind("[::1]:0").expect("bind ::1 (IPv6 loopback needed)");
    let err = validate("https", owned(v6), loopback()).expect_err("wrong family");
    assert!(err.to_string().contains("address family"), "{err}");
}

#[test]
fn a_file_is_refused() {
    let file = tempfile::tempfile().expect("temp file");
    let err = validate("http", owned(file), loopback()).expect_err("not a socket");
    assert!(err.to_string().contains("not a socket"), "{err}");
}

#[test]
fn a_duplicate_name_is_refused() {
    let mut passed = Passed::default();
    let b = TcpListener::bind(loopback()).expect("bind");
    let c = TcpListener::bind(loopback()).expect("bind");
    passed.push("http".into(), owned(b)).expect("first http");
    let err = passed
        .push("http".into(), owned(c))
        .expect_err("second http");
    assert!(matches!(err, ListenerError::DuplicateName { .. }), "{err}");
}

#[test]
fn sockets_of_one_unit_share_a_name_and_are_matched_by_address() {
    let sockets: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind(loopback()).expect("bind"))
        .collect();
    let addrs: Vec<SocketAddr> = sockets
        .iter()
        .map(|s| s.local_addr().expect("addr"))
        .collect();
    let mut passed = Passed::default();
    // systemd's order need not be the config's.
    for s in sockets.into_iter().rev() {
        passed.push("haloyd.socket".into(), owned(s)).expect("push");
    }
    let listeners = Listeners::acquire(passed, addrs[0], addrs[1], addrs[2]).expect("acquire");
    assert_eq!(listeners.origins, [Origin::Passed; 3]);
    assert_eq!(listeners.http.local_addr().expect("addr"), addrs[0]);
    assert_eq!(listeners.https.local_addr().expect("addr"), addrs[1]);
    assert_eq!(listeners.api.local_addr().expect("addr"), addrs[2]);
}

#[test]
fn a_passed_socket_nothing_wants_is_refused_with_its_address() {
    let stray = TcpListener::bind(loopback()).expect("bind");
    let stray_addr = stray.local_addr().expect("addr");
    let mut passed = Passed::default();
    passed.push("metrics".into(), owned(stray)).expect("push");
    let err = Listeners::acquire(passed, loopback(), loopback(), loopback())
        .expect_err("unmatched socket");
    let text = err.to_string();
    assert!(
        text.contains("`metrics`") && text.contains(&stray_addr.to_string()),
        "{text}"
    );
}

#[test]
fn passed_sockets_are_used_and_the_rest_is_bound() {
    let http = TcpListener::bind(loopback()).expect("bind");
    let http_addr = http.local_addr().expect("addr");
    let mut passed = Passed::default();
    passed.push("http".into(), owned(http)).expect("push");
    let listeners = Listeners::acquire(passed, http_addr, loopback(), loopback()).expect("acquire");
    assert_eq!(
        listeners.origins,
        [Origin::Passed, Origin::Bound, Origin::Bound]
    );
    assert_eq!(listeners.http.local_addr().expect("addr"), http_addr);
    let names: Vec<&str> = listeners.named_fds().iter().map(|(_, n)| *n).collect();
    assert_eq!(names, ["http", "https", "api"]);
}

#[test]
fn a_port_in_use_names_the_config_key() {
    let busy = TcpListener::bind(loopback()).expect("bind");
    let addr = busy.local_addr().expect("addr");
    let err = Listeners::acquire(Passed::default(), loopback(), loopback(), addr)
        .expect_err("port in use");
    assert!(err.to_string().contains("api.listen"), "{err}");
}
