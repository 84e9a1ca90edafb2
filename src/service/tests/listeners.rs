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
fn unknown_and_duplicate_names_are_refused() {
    let mut passed = Passed::default();
    let a = TcpListener::bind(loopback()).expect("bind");
    let err = passed
        .push("metrics".into(), owned(a))
        .expect_err("unknown name");
    assert!(err.to_string().contains("`metrics`"), "{err}");
    let b = TcpListener::bind(loopback()).expect("bind");
    let c = TcpListener::bind(loopback()).expect("bind");
    passed.push("http".into(), owned(b)).expect("first http");
    let err = passed
        .push("http".into(), owned(c))
        .expect_err("second http");
    assert!(matches!(err, ListenerError::DuplicateName { .. }), "{err}");
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
