//! Unit tests of `network::named` and `network::firewall` (the pure parts).

use super::*;
use crate::network::firewall::{ruleset, table_name};

fn cidr(text: &str) -> IpCidr {
    text.parse().unwrap()
}

fn base() -> CniSettings {
    CniSettings::default()
}

#[test]
fn bridge_names_are_short_stable_and_differ_per_name_and_haloyd() {
    let a = bridge_name("haloy0", "backend", 0);
    assert_eq!(a.len(), 15);
    assert!(a.starts_with("hl-"));
    assert_eq!(a, bridge_name("haloy0", "backend", 0));
    assert_ne!(a, bridge_name("haloy0", "frontend", 0));
    assert_ne!(a, bridge_name("hld0001", "backend", 0));
    assert_ne!(a, bridge_name("haloy0", "backend", 1));
    assert!(crate::network::check_bridge_name(&a).is_ok());
}

#[test]
fn the_pool_is_split_into_24s_in_order() {
    let subnets: Vec<String> = pool_subnets(&cidr("10.90.0.0/22"))
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        subnets,
        [
            "10.90.0.0/24",
            "10.90.1.0/24",
            "10.90.2.0/24",
            "10.90.3.0/24"
        ]
    );
    assert_eq!(pool_subnets(&cidr("10.90.7.9/24")).count(), 1);
    assert_eq!(pool_subnets(&cidr("10.90.0.0/25")).count(), 0);
    assert_eq!(pool_subnets(&cidr("fd00::/64")).count(), 0);
}

#[test]
fn allocation_takes_the_next_free_subnet_and_skips_the_default_one() {
    let mut registry = BTreeMap::new();
    let pool = cidr("10.89.0.0/23");
    let settings = CniSettings {
        subnet: "10.89.0.0/24".into(),
        ..base()
    };
    let first = allocate(&registry, "backend", &settings, &pool).unwrap();
    assert_eq!(
        first.subnet, "10.89.1.0/24",
        "the default subnet is not handed out"
    );
    registry.insert("backend".to_string(), first.clone());
    let err = allocate(&registry, "other", &settings, &pool).unwrap_err();
    assert!(
        err.to_string()
            .contains("no free /24 left in network.pool 10.89.0.0/23"),
        "{err}"
    );
}

#[test]
fn a_bridge_name_taken_by_another_network_is_not_given_twice() {
    let mut registry = BTreeMap::new();
    registry.insert(
        "x".to_string(),
        NetworkRecord {
            subnet: "10.90.0.0/24".into(),
            bridge: bridge_name("haloy0", "backend", 0),
        },
    );
    let record = allocate(&registry, "backend", &base(), &cidr("10.90.0.0/16")).unwrap();
    assert_eq!(record.subnet, "10.90.1.0/24");
    assert_eq!(record.bridge, bridge_name("haloy0", "backend", 1));
}

#[test]
fn the_registry_survives_a_restart_and_a_foreign_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("networks.json");
    assert!(read_registry(&path).unwrap().is_empty());
    let mut networks = BTreeMap::new();
    networks.insert(
        "backend".to_string(),
        NetworkRecord {
            subnet: "10.90.0.0/24".into(),
            bridge: "hl-0123456789ab".into(),
        },
    );
    write_registry(&path, &networks).unwrap();
    assert_eq!(read_registry(&path).unwrap(), networks);
    std::fs::write(&path, r#"{"format_version": 9, "networks": {}}"#).unwrap();
    let err = read_registry(&path).unwrap_err().to_string();
    assert!(
        err.contains("networks.json") && err.contains("format_version 9"),
        "{err}"
    );
}

#[test]
fn isolation_rules_drop_forwarding_between_different_bridges_only() {
    let bridges = vec!["haloy0".to_string(), "hl-a".to_string(), "hl-b".to_string()];
    let script = ruleset("haloy", &bridges);
    assert!(script.starts_with("table inet haloy\ndelete table inet haloy\n"));
    assert!(script.contains("type filter hook forward priority -1; policy accept;"));
    assert!(script.contains("iifname \"haloy0\" oifname { \"hl-a\", \"hl-b\" } drop"));
    assert!(script.contains("iifname \"hl-a\" oifname { \"haloy0\", \"hl-b\" } drop"));
    assert!(script.contains("iifname \"hl-b\" oifname { \"haloy0\", \"hl-a\" } drop"));
    // Nothing to keep apart: the table goes.
    assert_eq!(
        ruleset("haloy", &["haloy0".to_string()]),
        "table inet haloy\ndelete table inet haloy\n"
    );
}

#[test]
fn table_names_follow_the_default_bridge() {
    assert_eq!(table_name("haloy0"), "haloy");
    assert_eq!(table_name("hld00ab12"), "haloy_hld00ab12");
    assert_eq!(table_name("br-x.1"), "haloy_br_x_1");
}

#[test]
fn apps_without_network_or_with_haloys_default_name_stay_on_the_default_network() {
    assert!(is_default(None));
    assert!(is_default(Some("haloy")));
    assert!(!is_default(Some("backend")));
    assert_eq!(cni_network_name("backend"), "haloy-backend");
}
