//! Unit tests of `network::cni`.

use super::*;
use std::collections::HashSet;
use std::sync::Mutex;

/// Records calls and answers like the real plugins would.
#[derive(Default)]
struct FakeExec {
    calls: Mutex<Vec<(String, String, String, Value)>>,
    fail_plugin: Option<&'static str>,
}

#[async_trait]
impl PluginExec for FakeExec {
    async fn exec(
        &self,
        binary: &Path,
        env: &[(&'static str, String)],
        stdin: Vec<u8>,
    ) -> std::io::Result<PluginOutput> {
        let plugin = binary.file_name().unwrap().to_string_lossy().into_owned();
        let get = |k: &str| env.iter().find(|(key, _)| *key == k).unwrap().1.clone();
        let config: Value = serde_json::from_slice(&stdin).unwrap();
        self.calls.lock().unwrap().push((
            plugin.clone(),
            get("CNI_COMMAND"),
            get("CNI_NETNS"),
            config.clone(),
        ));
        if self.fail_plugin == Some(plugin.as_str()) && get("CNI_COMMAND") == "ADD" {
            return Ok(PluginOutput {
                success: false,
                stdout: br#"{"cniVersion":"1.0.0","code":7,"msg":"boom","details":"why"}"#.to_vec(),
                stderr: vec![],
            });
        }
        let stdout = match (plugin.as_str(), get("CNI_COMMAND").as_str()) {
                ("bridge", "ADD") => json!({"cniVersion":"1.0.0",
                    "interfaces":[{"name":"br"},{"name":"veth1"},{"name":"eth0","sandbox":get("CNI_NETNS")}],
                    "ips":[{"interface":2,"address":"10.9.0.5/24","gateway":"10.9.0.1"}]})
                .to_string(),
                ("loopback", "ADD") => {
                    json!({"cniVersion":"1.0.0","interfaces":[{"name":"lo"}]}).to_string()
                }
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

/// Tracks namespaces as a set of paths.
#[derive(Default)]
struct FakeNetns(Mutex<HashSet<PathBuf>>);

impl NetnsOps for FakeNetns {
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

fn settings(dir: &Path) -> CniSettings {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for p in ["bridge", "firewall", "loopback"] {
        std::fs::write(plugins.join(p), b"").unwrap();
    }
    CniSettings {
        plugin_dirs: vec![dir.join("missing"), plugins],
        network_name: "unit".into(),
        bridge: "hlunit0".into(),
        subnet: "10.9.0.0/24".into(),
        ipam_data_dir: dir.join("ipam"),
        netns_dir: dir.join("netns"),
        cache_dir: dir.join("cache"),
        conflist_template: None,
    }
}

fn network(dir: &Path, exec: Arc<FakeExec>) -> (CniNetwork, Arc<FakeNetns>) {
    let ns = Arc::new(FakeNetns::default());
    let net = CniNetwork::with_ops(settings(dir), ns.clone(), exec).unwrap();
    (net, ns)
}

#[test]
fn template_renders_settings_as_json_strings() {
    let s = CniSettings {
        ipam_data_dir: PathBuf::from("/tmp/we\"ird"),
        ..Default::default()
    };
    let list = render_conflist(CONFLIST_TEMPLATE, &s).unwrap();
    assert_eq!(list["name"], "haloy");
    assert_eq!(list["plugins"][0]["bridge"], "haloy0");
    assert_eq!(list["plugins"][0]["ipMasq"], true);
    assert_eq!(list["plugins"][0]["ipam"]["dataDir"], "/tmp/we\"ird");
    assert_eq!(
        list["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
        "10.89.0.0/16"
    );
}

#[test]
fn bad_settings_are_refused_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.bridge = "a-very-long-bridge-name".into();
    let err = CniNetwork::new(s).unwrap_err();
    assert!(err.to_string().contains("bridge"), "{err}");
    let mut s = settings(dir.path());
    s.subnet = "10.0.0.0".into();
    assert!(CniNetwork::new(s)
        .unwrap_err()
        .to_string()
        .contains("subnet"));
}

#[tokio::test]
async fn add_chains_prev_result_and_del_runs_in_reverse_with_cached_result() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Arc::new(FakeExec::default());
    let (net, ns) = network(dir.path(), exec.clone());
    let att = net.attach("t1").await.unwrap();
    assert_eq!(att.ip.to_string(), "10.9.0.5");
    assert_eq!(att.gateway.unwrap().to_string(), "10.9.0.1");
    assert_eq!(att.interface, "eth0");
    assert_eq!(att.netns_path, dir.path().join("netns/t1"));
    {
        let calls = exec.calls.lock().unwrap();
        let order: Vec<_> = calls.iter().map(|c| (c.0.as_str(), c.1.as_str())).collect();
        assert_eq!(
            order,
            [("loopback", "ADD"), ("bridge", "ADD"), ("firewall", "ADD")]
        );
        assert!(calls[1].3.get("prevResult").is_none());
        assert_eq!(calls[2].3["prevResult"]["ips"][0]["address"], "10.9.0.5/24");
        assert_eq!(calls[2].3["name"], "unit");
        assert_eq!(calls[2].3["cniVersion"], "1.0.0");
    }
    exec.calls.lock().unwrap().clear();
    net.detach("t1").await.unwrap();
    let calls = exec.calls.lock().unwrap();
    let order: Vec<_> = calls.iter().map(|c| (c.0.as_str(), c.1.as_str())).collect();
    assert_eq!(order, [("firewall", "DEL"), ("bridge", "DEL")]);
    for call in calls.iter() {
        assert_eq!(call.3["prevResult"]["ips"][0]["address"], "10.9.0.5/24");
        assert!(call.2.ends_with("netns/t1"));
    }
    assert!(ns.0.lock().unwrap().is_empty());
    assert!(!dir.path().join("cache/unit-t1.json").exists());
}

#[tokio::test]
async fn detach_of_unknown_id_succeeds_without_netns_argument() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Arc::new(FakeExec::default());
    let (net, _) = network(dir.path(), exec.clone());
    net.detach("gone").await.unwrap();
    net.detach("gone").await.unwrap();
    let calls = exec.calls.lock().unwrap();
    assert!(calls.iter().all(|c| c.1 == "DEL" && c.2.is_empty()));
    assert!(calls.iter().all(|c| c.3.get("prevResult").is_none()));
}

#[tokio::test]
async fn failed_add_is_rolled_back_and_reports_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Arc::new(FakeExec {
        fail_plugin: Some("firewall"),
        ..Default::default()
    });
    let (net, ns) = network(dir.path(), exec.clone());
    let err = net.attach("t2").await.unwrap_err();
    match &err {
        NetworkError::Plugin {
            plugin, code, msg, ..
        } => assert_eq!(
            (plugin.as_str(), *code, msg.as_str()),
            ("firewall", 7, "boom")
        ),
        other => panic!("unexpected {other:?}"),
    }
    assert!(ns.0.lock().unwrap().is_empty(), "netns left after rollback");
    let calls = exec.calls.lock().unwrap();
    let dels: Vec<_> = calls
        .iter()
        .filter(|c| c.1 == "DEL")
        .map(|c| c.0.as_str())
        .collect();
    assert_eq!(dels, ["firewall", "bridge"]);
}

#[tokio::test]
async fn connect_needs_the_namespace_first() {
    let dir = tempfile::tempdir().unwrap();
    let exec = Arc::new(FakeExec::default());
    let (net, _) = network(dir.path(), exec.clone());
    let err = net.connect("t4").await.unwrap_err();
    assert!(matches!(err, NetworkError::NoNamespace { .. }), "{err}");
    assert!(exec.calls.lock().unwrap().is_empty());
    let path = net.create_namespace("t4").await.unwrap();
    assert_eq!(path, dir.path().join("netns/t4"));
    assert_eq!(net.connect("t4").await.unwrap().ip.to_string(), "10.9.0.5");
}

#[tokio::test]
async fn missing_plugin_names_the_package() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    s.plugin_dirs = vec![dir.path().join("nothing")];
    let net = CniNetwork::with_ops(
        s,
        Arc::new(FakeNetns::default()),
        Arc::new(FakeExec::default()),
    )
    .unwrap();
    let err = net.attach("t3").await.unwrap_err();
    assert!(
        err.to_string().contains("containernetworking-plugins"),
        "{err}"
    );
}

#[test]
fn plugin_error_without_json_uses_stderr() {
    let call = Invocation {
        command: Command::Add,
        id: "x",
        netns: "",
        ifname: "eth0",
    };
    let out = PluginOutput {
        success: false,
        stdout: vec![],
        stderr: b"exec format error\n".to_vec(),
    };
    let err = plugin_error("bridge", &call, &out);
    assert!(
        err.to_string().ends_with("code 0: exec format error"),
        "{err}"
    );
}
