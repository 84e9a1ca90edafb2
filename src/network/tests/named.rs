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

mod flow {
    //! `NetworkSet` end to end over fake plugins, namespaces and firewall.

    use super::super::*;
    use crate::network::{NetnsOps, PluginOutput};
    use serde_json::{json, Value};
    use std::sync::Mutex as StdMutex;

    /// Answers ADD with an address of the subnet in the config; records (command, bridge).
    #[derive(Default)]
    struct Plugins(StdMutex<Vec<(String, String)>>);

    #[async_trait]
    impl PluginExec for Plugins {
        async fn exec(
            &self,
            binary: &Path,
            env: &[(&'static str, String)],
            stdin: Vec<u8>,
        ) -> std::io::Result<PluginOutput> {
            let plugin = binary.file_name().unwrap().to_string_lossy().into_owned();
            let command = env
                .iter()
                .find(|(k, _)| *k == "CNI_COMMAND")
                .unwrap()
                .1
                .clone();
            let config: Value = serde_json::from_slice(&stdin).unwrap();
            let stdout = match (plugin.as_str(), command.as_str()) {
                ("bridge", "ADD") => {
                    let bridge = config["bridge"].as_str().unwrap().to_string();
                    self.0.lock().unwrap().push((command.clone(), bridge));
                    let subnet = config["ipam"]["ranges"][0][0]["subnet"].as_str().unwrap();
                    let address = subnet.replace(".0/24", ".2/24");
                    json!({"cniVersion": "1.0.0",
                        "interfaces": [{"name": "eth0", "sandbox": "/x"}],
                        "ips": [{"interface": 0, "address": address}]})
                    .to_string()
                }
                ("bridge", "DEL") => {
                    let bridge = config["bridge"].as_str().unwrap().to_string();
                    self.0.lock().unwrap().push((command.clone(), bridge));
                    String::new()
                }
                ("loopback", "ADD") => json!({"cniVersion": "1.0.0"}).to_string(),
                (_, "ADD") => config["prevResult"].to_string(),
                _ => String::new(),
            };
            Ok(PluginOutput {
                success: true,
                stdout: stdout.into_bytes(),
                stderr: vec![],
            })
        }
    }

    #[derive(Default)]
    struct Namespaces(StdMutex<HashSet<PathBuf>>);

    impl NetnsOps for Namespaces {
        fn create(&self, path: &Path) -> Result<(), NetworkError> {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"").unwrap();
            self.0.lock().unwrap().insert(path.to_path_buf());
            Ok(())
        }
        fn remove(&self, path: &Path) -> Result<(), NetworkError> {
            let _ = std::fs::remove_file(path);
            self.0.lock().unwrap().remove(path);
            Ok(())
        }
        fn is_netns(&self, path: &Path) -> bool {
            self.0.lock().unwrap().contains(path)
        }
    }

    /// Records the bridge lists made isolated and the bridges deleted.
    #[derive(Default)]
    struct Rules {
        isolated: StdMutex<Vec<Vec<String>>>,
        deleted: StdMutex<Vec<String>>,
    }

    #[async_trait]
    impl Firewall for Rules {
        async fn isolate(&self, _table: &str, bridges: &[String]) -> Result<(), NetworkError> {
            self.isolated.lock().unwrap().push(bridges.to_vec());
            Ok(())
        }
        async fn delete_bridge(&self, bridge: &str) -> Result<(), NetworkError> {
            self.deleted.lock().unwrap().push(bridge.to_string());
            Ok(())
        }
    }

    struct Host {
        dir: tempfile::TempDir,
        plugins: Arc<Plugins>,
        namespaces: Arc<Namespaces>,
        rules: Arc<Rules>,
    }

    impl Host {
        fn new() -> Host {
            let dir = tempfile::tempdir().unwrap();
            let plugins = dir.path().join("plugins");
            std::fs::create_dir_all(&plugins).unwrap();
            for p in ["bridge", "firewall", "loopback"] {
                std::fs::write(plugins.join(p), b"").unwrap();
            }
            Host {
                dir,
                plugins: Arc::default(),
                namespaces: Arc::default(),
                rules: Arc::default(),
            }
        }

        async fn open(&self) -> (NetworkSet, mpsc::UnboundedReceiver<IpAddr>) {
            let d = self.dir.path();
            let base = CniSettings {
                plugin_dirs: vec![d.join("plugins")],
                bridge: "hlunit0".into(),
                subnet: "10.9.0.0/24".into(),
                ipam_data_dir: d.join("ipam"),
                netns_dir: d.join("netns"),
                cache_dir: d.join("results"),
                ..CniSettings::default()
            };
            let named = NamedSettings {
                pool: "10.90.0.0/16".parse().unwrap(),
                registry_file: d.join("state/networks.json"),
                nft_table: "haloy_unit".into(),
            };
            let (tx, rx) = mpsc::unbounded_channel();
            let set = NetworkSet::open_with(
                base,
                named,
                Some(tx),
                self.namespaces.clone(),
                self.plugins.clone(),
                self.rules.clone(),
            )
            .await
            .unwrap();
            (set, rx)
        }
    }

    #[tokio::test]
    async fn a_named_network_is_readied_attached_isolated_and_removed_with_its_last_task() {
        let host = Host::new();
        let (set, mut gateways) = host.open().await;
        let backend = bridge_name("hlunit0", "backend", 0);

        let gateway = set.prepare(Some("backend")).await.unwrap();
        assert_eq!(gateway, Some("10.90.0.1".parse().unwrap()));
        assert_eq!(gateways.try_recv().ok(), gateway, "announced for DNS");
        assert_eq!(
            set.prepare(None).await.unwrap(),
            Some("10.9.0.1".parse().unwrap())
        );

        set.create_namespace("t1").await.unwrap();
        let attached = set.connect_to("t1", Some("backend")).await.unwrap();
        assert_eq!(attached.ip.to_string(), "10.90.0.2");
        set.create_namespace("t2").await.unwrap();
        let attached = set.connect_to("t2", None).await.unwrap();
        assert_eq!(attached.ip.to_string(), "10.9.0.2");
        assert_eq!(
            host.rules.isolated.lock().unwrap().last().unwrap(),
            &vec!["hlunit0".to_string(), backend.clone()]
        );

        // A restart finds the network in use again from the cached results.
        drop(set);
        let (set, mut gateways) = host.open().await;
        assert_eq!(
            gateways.try_recv().ok(),
            gateway,
            "announced again at start"
        );
        assert_eq!(
            host.rules.isolated.lock().unwrap().last().unwrap(),
            &vec!["hlunit0".to_string(), backend.clone()]
        );

        set.detach("t1").await.unwrap();
        set.detach("t2").await.unwrap();
        let plugin_calls = host.plugins.0.lock().unwrap().clone();
        assert_eq!(
            plugin_calls,
            [
                ("ADD".to_string(), backend.clone()),
                ("ADD".to_string(), "hlunit0".to_string()),
                ("DEL".to_string(), backend.clone()),
                ("DEL".to_string(), "hlunit0".to_string()),
            ]
        );
        assert_eq!(*host.rules.deleted.lock().unwrap(), vec![backend.clone()]);
        assert!(host
            .rules
            .isolated
            .lock()
            .unwrap()
            .last()
            .unwrap()
            .is_empty());
        assert!(!host.dir.path().join("ipam/haloy-backend").exists());
        assert!(!host.dir.path().join("results").join(&backend).exists());
        assert!(host.namespaces.0.lock().unwrap().is_empty());

        // The name keeps its subnet.
        let (set, _) = host.open().await;
        assert_eq!(set.prepare(Some("backend")).await.unwrap(), gateway);
        assert_eq!(
            set.prepare(Some("other")).await.unwrap(),
            Some("10.90.1.1".parse().unwrap())
        );
    }
}
