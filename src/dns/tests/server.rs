//! The server's loops on loopback sockets: app names answered over UDP and TCP, other names
//! relayed to an upstream the test runs, SERVFAIL when no upstream answers.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

use super::super::upstream::{read_framed, write_framed};
use super::{bind, DnsServer};
use crate::config::server::IpCidr;
use crate::dns::{Directory, DnsSettings};

struct OneApp;

impl Directory for OneApp {
    fn network_of(&self, _ip: IpAddr) -> Option<String> {
        None
    }
    fn addresses(&self, app: &str, network: &str) -> Option<Vec<IpAddr>> {
        (app == "db" && network == "haloy").then(|| vec![IpAddr::from([10, 0, 0, 5])])
    }
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

/// An upstream that answers every query with its own id and a NOERROR, no records.
async fn echo_upstream() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut r = Message::new();
            r.set_id(q.id())
                .set_message_type(MessageType::Response)
                .add_queries(q.queries().iter().cloned());
            let _ = socket.send_to(&r.to_vec().unwrap(), peer).await;
        }
    });
    addr
}

async fn start(upstream: Vec<SocketAddr>) -> (SocketAddr, SocketAddr, CancellationToken) {
    start_for(upstream, vec!["127.0.0.0/8".parse::<IpCidr>().unwrap()]).await
}

async fn start_for(
    upstream: Vec<SocketAddr>,
    clients: Vec<IpCidr>,
) -> (SocketAddr, SocketAddr, CancellationToken) {
    let settings = DnsSettings {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        upstream,
        clients,
    };
    let sockets = bind(&settings).unwrap();
    let (udp, tcp) = sockets.local_addrs().unwrap()[0];
    let stop = CancellationToken::new();
    let server = DnsServer::new(Arc::new(OneApp), &settings);
    tokio::spawn(server.serve(sockets, stop.clone()));
    (udp, tcp, stop)
}

async fn ask_udp(server: SocketAddr, q: &[u8]) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(q, server).await.unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = tokio::time::timeout(Duration::from_secs(10), socket.recv_from(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

#[tokio::test]
async fn udp_and_tcp_answer_app_names_and_relay_the_rest() {
    let upstream = echo_upstream().await;
    let (udp, tcp, stop) = start(vec![upstream]).await;

    let m = ask_udp(udp, &query(7, "db.haloy.internal")).await;
    assert_eq!(m.id(), 7);
    assert!(
        matches!(m.answers()[0].data(), RData::A(a) if a.0 == std::net::Ipv4Addr::new(10, 0, 0, 5))
    );

    let m = ask_udp(udp, &query(8, "example.org")).await;
    assert_eq!((m.id(), m.response_code()), (8, ResponseCode::NoError));
    assert!(m.answers().is_empty(), "the upstream's answer, relayed");

    // Two queries on one TCP connection; the second is the upstream's (over TCP it has
    // none, so SERVFAIL comes back rather than silence).
    let mut stream = TcpStream::connect(tcp).await.unwrap();
    write_framed(&mut stream, &query(9, "db")).await.unwrap();
    let m = Message::from_vec(&read_framed(&mut stream).await.unwrap()).unwrap();
    assert_eq!(m.id(), 9);
    assert_eq!(m.answers().len(), 1);
    write_framed(&mut stream, &query(10, "example.org"))
        .await
        .unwrap();
    let m = Message::from_vec(&read_framed(&mut stream).await.unwrap()).unwrap();
    assert_eq!((m.id(), m.response_code()), (10, ResponseCode::ServFail));
    stop.cancel();
}

#[tokio::test]
async fn no_upstream_answer_is_servfail() {
    // A bound socket that never answers stands for a dead resolver.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (udp, _, stop) = start(vec![silent.local_addr().unwrap()]).await;
    let m = ask_udp(udp, &query(11, "example.org")).await;
    assert_eq!((m.id(), m.response_code()), (11, ResponseCode::ServFail));
    stop.cancel();
}

#[tokio::test]
async fn askers_outside_the_client_networks_get_nothing() {
    let (udp, tcp, stop) =
        start_for(Vec::new(), vec!["10.89.0.0/16".parse::<IpCidr>().unwrap()]).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&query(12, "db"), udp).await.unwrap();
    let mut buf = [0u8; 512];
    // Silence, not an error answer: a stranger gets nothing to amplify.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), socket.recv_from(&mut buf))
            .await
            .is_err()
    );
    let mut stream = TcpStream::connect(tcp).await.unwrap();
    write_framed(&mut stream, &query(13, "db")).await.unwrap();
    assert!(
        read_framed(&mut stream).await.is_err(),
        "closed without answer"
    );
    stop.cancel();
}
