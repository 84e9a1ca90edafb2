use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use super::{decide, server_failure, Decision};
use crate::dns::{bridge_gateway, Directory, DEFAULT_NETWORK};

/// Apps: name → (network, ready addresses); replicas: address → network.
#[derive(Default)]
struct FakeDirectory {
    apps: HashMap<String, (String, Vec<IpAddr>)>,
    replicas: HashMap<IpAddr, String>,
}

impl FakeDirectory {
    fn app(mut self, name: &str, network: &str, ips: &[[u8; 4]]) -> Self {
        let ips: Vec<IpAddr> = ips.iter().map(|ip| IpAddr::from(*ip)).collect();
        for ip in &ips {
            self.replicas.insert(*ip, network.to_string());
        }
        self.apps
            .insert(name.to_string(), (network.to_string(), ips));
        self
    }
}

impl Directory for FakeDirectory {
    fn network_of(&self, ip: IpAddr) -> Option<String> {
        self.replicas.get(&ip).cloned()
    }

    fn addresses(&self, app: &str, network: &str) -> Option<Vec<IpAddr>> {
        let (on, ips) = self.apps.get(app)?;
        (on == network).then(|| ips.clone())
    }
}

fn query(name: &str, kind: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(4242)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    m.to_vec().unwrap()
}

fn host() -> IpAddr {
    IpAddr::from([10, 0, 0, 1])
}

fn reply(decision: Decision) -> Message {
    match decision {
        Decision::Answer(bytes) => Message::from_vec(&bytes).unwrap(),
        other => panic!("expected an answer, got {other:?}"),
    }
}

fn a_records(m: &Message) -> Vec<Ipv4Addr> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

fn db_and_web() -> FakeDirectory {
    FakeDirectory::default()
        .app("db", DEFAULT_NETWORK, &[[10, 0, 0, 5], [10, 0, 0, 6]])
        .app("web", DEFAULT_NETWORK, &[[10, 0, 0, 7]])
        .app("secret", "billing", &[[10, 0, 0, 9]])
        .app("stopped", DEFAULT_NETWORK, &[])
}

#[test]
fn app_names_answer_with_ready_replicas_in_both_forms() {
    let dir = db_and_web();
    let web = IpAddr::from([10, 0, 0, 7]);
    for name in ["db", "db.", "DB.haloy.internal", "db.haloy.internal."] {
        let m = reply(decide(&query(name, RecordType::A), web, &dir, 512, 0));
        assert_eq!(m.id(), 4242);
        assert_eq!(m.message_type(), MessageType::Response);
        assert_eq!(m.response_code(), ResponseCode::NoError, "{name}");
        let mut ips = a_records(&m);
        ips.sort();
        assert_eq!(
            ips,
            [Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(10, 0, 0, 6)],
            "{name}"
        );
        assert!(m.answers().iter().all(|r| r.ttl() == 0));
    }
}

#[test]
fn answers_rotate_between_queries() {
    let dir = db_and_web();
    let first = a_records(&reply(decide(
        &query("db", RecordType::A),
        host(),
        &dir,
        512,
        0,
    )));
    let second = a_records(&reply(decide(
        &query("db", RecordType::A),
        host(),
        &dir,
        512,
        1,
    )));
    assert_ne!(first[0], second[0]);
}

#[test]
fn an_app_without_ready_replicas_is_nxdomain() {
    let dir = db_and_web();
    for name in ["stopped", "stopped.haloy.internal"] {
        let m = reply(decide(&query(name, RecordType::A), host(), &dir, 512, 0));
        assert_eq!(m.response_code(), ResponseCode::NXDomain, "{name}");
        assert!(m.answers().is_empty());
    }
}

#[test]
fn other_networks_are_invisible() {
    let dir = db_and_web();
    let web = IpAddr::from([10, 0, 0, 7]);
    // The qualified form never leaves the server; the bare one may be an outside name.
    let m = reply(decide(
        &query("secret.haloy.internal", RecordType::A),
        web,
        &dir,
        512,
        0,
    ));
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    assert_eq!(
        decide(&query("secret", RecordType::A), web, &dir, 512, 0),
        Decision::Forward
    );
    // From its own network it resolves, and the default network's apps do not.
    let billing_replica = IpAddr::from([10, 0, 0, 9]);
    let m = reply(decide(
        &query("secret", RecordType::A),
        billing_replica,
        &dir,
        512,
        0,
    ));
    assert_eq!(a_records(&m), [Ipv4Addr::new(10, 0, 0, 9)]);
    let m = reply(decide(
        &query("db.haloy.internal", RecordType::A),
        billing_replica,
        &dir,
        512,
        0,
    ));
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
}

#[test]
fn outside_names_are_forwarded() {
    let dir = db_and_web();
    for name in ["example.com", "db.example.com", "unknown"] {
        assert_eq!(
            decide(&query(name, RecordType::A), host(), &dir, 512, 0),
            Decision::Forward,
            "{name}"
        );
    }
}

#[test]
fn unknown_internal_names_are_nxdomain() {
    let dir = db_and_web();
    for name in [
        "haloy.internal",
        "a.b.haloy.internal",
        "nope.haloy.internal",
    ] {
        let m = reply(decide(&query(name, RecordType::A), host(), &dir, 512, 0));
        assert_eq!(m.response_code(), ResponseCode::NXDomain, "{name}");
    }
}

#[test]
fn other_record_types_of_an_app_are_empty_not_missing() {
    let dir = db_and_web();
    for kind in [RecordType::AAAA, RecordType::MX, RecordType::TXT] {
        let m = reply(decide(&query("db", kind), host(), &dir, 512, 0));
        assert_eq!(m.response_code(), ResponseCode::NoError, "{kind}");
        assert!(m.answers().is_empty(), "{kind}");
    }
}

#[test]
fn a_too_long_answer_is_truncated_for_udp() {
    let many: Vec<[u8; 4]> = (1..=60).map(|i| [10, 0, 1, i]).collect();
    let dir = FakeDirectory::default().app("big", DEFAULT_NETWORK, &many);
    let m = reply(decide(&query("big", RecordType::A), host(), &dir, 512, 0));
    assert!(m.truncated());
    assert!(m.answers().is_empty());
    let m = reply(decide(
        &query("big", RecordType::A),
        host(),
        &dir,
        65_535,
        0,
    ));
    assert!(!m.truncated());
    assert_eq!(a_records(&m).len(), 60);
}

#[test]
fn garbage_and_responses_are_ignored() {
    let dir = db_and_web();
    assert_eq!(
        decide(b"\x01\x02\x03", host(), &dir, 512, 0),
        Decision::Ignore
    );
    let mut response = Message::from_vec(&query("db", RecordType::A)).unwrap();
    response.set_message_type(MessageType::Response);
    assert_eq!(
        decide(&response.to_vec().unwrap(), host(), &dir, 512, 0),
        Decision::Ignore
    );
}

#[test]
fn server_failure_keeps_id_and_question() {
    let m =
        Message::from_vec(&server_failure(&query("example.com", RecordType::A)).unwrap()).unwrap();
    assert_eq!(m.id(), 4242);
    assert_eq!(m.response_code(), ResponseCode::ServFail);
    assert_eq!(m.queries().len(), 1);
    assert!(server_failure(b"xx").is_none());
}

#[test]
fn gateway_is_the_first_host_address() {
    assert_eq!(
        bridge_gateway(IpAddr::from([10, 89, 0, 0]), 16),
        Some(IpAddr::from([10, 89, 0, 1]))
    );
    assert_eq!(
        bridge_gateway(IpAddr::from([10, 249, 17, 99]), 24),
        Some(IpAddr::from([10, 249, 17, 1]))
    );
    assert_eq!(bridge_gateway(IpAddr::from([10, 0, 0, 0]), 31), None);
    assert_eq!(bridge_gateway("fd00::".parse().unwrap(), 64), None);
}
