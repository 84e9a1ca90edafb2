use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;

use super::{forward_udp, upstreams_from_resolv_conf};

#[test]
fn nameservers_are_read_in_order_loopback_included() {
    let text = "# generated\nsearch corp.example\nnameserver 127.0.0.53\nnameserver 192.0.2.1\n\
                nameserver fe80::1%eth0\nnameserver 2001:db8::1\noptions edns0\nnameserver bogus\n";
    let found = upstreams_from_resolv_conf(text);
    let want: Vec<SocketAddr> = ["127.0.0.53:53", "192.0.2.1:53", "[2001:db8::1]:53"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(found, want);
}

#[tokio::test]
async fn a_dead_upstream_is_passed_over_and_only_matching_ids_count() {
    // The live upstream first sends a stray datagram with another id, then the answer.
    let live = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let live_addr = live.local_addr().unwrap();
    // Nobody listens on the dead one: its ICMP error ends that attempt at once.
    let dead = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        let (n, peer) = live.recv_from(&mut buf).await.unwrap();
        live.send_to(b"\x99\x99stray", peer).await.unwrap();
        let mut answer = buf[..n].to_vec();
        answer.extend_from_slice(b"-answer");
        live.send_to(&answer, peer).await.unwrap();
    });
    let query = b"\x12\x34query".to_vec();
    let got = forward_udp(&query, &[dead, live_addr], Duration::from_secs(5))
        .await
        .expect("an answer from the live upstream");
    assert_eq!(got, b"\x12\x34query-answer");
}
