//! Real CNI plugins and network namespaces: attach/detach through `CniNetwork` on a private
//! bridge and subnet, reach a listener inside each namespace from the host, and check that
//! teardown leaves no namespace file, IPAM lease, veth or NAT rule behind.

// Tests start real containerd, registries, Pebble and tools (see clippy.toml).
#![allow(clippy::disallowed_methods)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use haloy::network::{Attachment, CniNetwork, CniSettings, Network, NetworkError};
use nix::sched::{setns, CloneFlags};

const CNI_DIR: &str = "/usr/lib/cni";

fn require_tools() {
    for plugin in ["bridge", "host-local", "loopback", "firewall"] {
        let path = Path::new(CNI_DIR).join(plugin);
        assert!(
            path.is_file(),
            "{} missing: install the Debian package containernetworking-plugins",
            path.display()
        );
    }
    for (tool, package) in [
        ("/usr/sbin/ip", "iproute2"),
        ("/usr/sbin/iptables", "iptables"),
    ] {
        assert!(
            Path::new(tool).exists(),
            "{tool} missing: install the Debian package {package}"
        );
    }
}

/// Bridge, subnet and directories owned by one test; removed on drop even after a panic.
struct TestNet {
    network: Arc<CniNetwork>,
    ids: Vec<String>,
    dir: tempfile::TempDir,
}

impl TestNet {
    fn new(tag: &str) -> Self {
        require_tools();
        let dir = tempfile::tempdir().unwrap();
        let suffix: u32 = rand::random::<u32>() & 0xff_ffff;
        let settings = CniSettings {
            plugin_dirs: vec![PathBuf::from(CNI_DIR)],
            network_name: format!("hlt-{tag}-{suffix:06x}"),
            bridge: format!("hlt{suffix:06x}"),
            subnet: format!("10.250.{}.0/24", rand::random::<u8>()),
            ipam_data_dir: dir.path().join("ipam"),
            netns_dir: dir.path().join("netns"),
            cache_dir: dir.path().join("cache"),
            conflist_template: None,
        };
        TestNet {
            network: Arc::new(CniNetwork::new(settings).unwrap()),
            ids: Vec::new(),
            dir,
        }
    }

    fn settings(&self) -> &CniSettings {
        self.network.settings()
    }

    fn lease_files(&self) -> Vec<String> {
        let leases = self
            .settings()
            .ipam_data_dir
            .join(&self.settings().network_name);
        let Ok(entries) = std::fs::read_dir(leases) else {
            return Vec::new();
        };
        entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.parse::<IpAddr>().is_ok())
            .collect()
    }

    fn bridge_ports(&self) -> Vec<String> {
        let brif = Path::new("/sys/class/net")
            .join(&self.settings().bridge)
            .join("brif");
        std::fs::read_dir(brif)
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    fn nat_rules_mentioning_network(&self) -> Vec<String> {
        let out = std::process::Command::new("iptables")
            .args(["-w", "-t", "nat", "-S"])
            .output()
            .unwrap();
        let needle = format!("name: \\\"{}\\\"", self.settings().network_name);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains(&needle))
            .map(String::from)
            .collect()
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let network = Arc::clone(&self.network);
        let ids = std::mem::take(&mut self.ids);
        // A fresh runtime on its own thread: drop may run inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                for id in ids {
                    let _ = network.detach(&id).await;
                }
            });
        })
        .join();
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.settings().bridge])
            .stderr(std::process::Stdio::null())
            .status();
        // The netns directory was made a (shared) mount point of itself.
        let _ = nix::mount::umount2(
            &self.dir.path().join("netns"),
            nix::mount::MntFlags::MNT_DETACH,
        );
    }
}

/// Serves one connection inside the namespace, answering with `reply`; returns once listening.
fn serve_once_in_netns(netns: &Path, reply: String) -> std::thread::JoinHandle<()> {
    let ns_file = File::open(netns).unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        setns(&ns_file, CloneFlags::CLONE_NEWNET).unwrap();
        let listener = TcpListener::bind("0.0.0.0:8080").unwrap();
        ready_tx.send(()).unwrap();
        let (mut conn, _) = listener.accept().unwrap();
        conn.write_all(reply.as_bytes()).unwrap();
    });
    ready_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    handle
}

fn fetch(ip: IpAddr) -> String {
    let mut conn =
        std::net::TcpStream::connect_timeout(&(ip, 8080).into(), Duration::from_secs(5)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).unwrap();
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_tasks_get_distinct_reachable_ips_and_teardown_leaves_nothing() {
    let mut net = TestNet::new("three");
    let ids: Vec<String> = (1..=3).map(|i| format!("nettest-{i}")).collect();
    net.ids = ids.clone();

    let mut attachments: Vec<Attachment> = Vec::new();
    for id in &ids {
        attachments.push(net.network.attach(id).await.unwrap());
    }

    let ips: std::collections::HashSet<IpAddr> = attachments.iter().map(|a| a.ip).collect();
    assert_eq!(ips.len(), 3, "IPs not distinct: {attachments:?}");
    let prefix = net
        .settings()
        .subnet
        .rsplit_once(".0/")
        .unwrap()
        .0
        .to_string();
    for att in &attachments {
        assert!(att.ip.to_string().starts_with(&prefix), "{att:?}");
        assert_eq!(att.gateway.unwrap().to_string(), format!("{prefix}.1"));
        assert_eq!(att.interface, "eth0");
        assert!(att.netns_path.starts_with(&net.settings().netns_dir));
    }
    assert_eq!(net.lease_files().len(), 3);
    let veths = net.bridge_ports();
    assert_eq!(veths.len(), 3, "veths on bridge: {veths:?}");
    assert!(
        !net.nat_rules_mentioning_network().is_empty(),
        "ipMasq rules missing"
    );

    // A second attach of the same id must not silently create a second namespace.
    assert!(matches!(
        net.network.attach(&ids[0]).await,
        Err(NetworkError::AlreadyAttached { .. })
    ));

    for (id, att) in ids.iter().zip(&attachments) {
        let server = serve_once_in_netns(&att.netns_path, id.clone());
        let ip = att.ip;
        let body = tokio::task::spawn_blocking(move || fetch(ip))
            .await
            .unwrap();
        assert_eq!(&body, id);
        // The thread sits in the namespace; it must be gone before detach can free it.
        server.join().unwrap();
    }

    for id in &ids {
        net.network.detach(id).await.unwrap();
        net.network.detach(id).await.unwrap();
    }

    for att in &attachments {
        assert!(
            !att.netns_path.exists(),
            "{} left",
            att.netns_path.display()
        );
    }
    assert_eq!(net.lease_files(), Vec::<String>::new(), "IPAM leases left");
    for veth in &veths {
        assert!(
            !Path::new("/sys/class/net").join(veth).exists(),
            "veth {veth} left"
        );
    }
    assert_eq!(net.nat_rules_mentioning_network(), Vec::<String>::new());
    let cache_left: Vec<_> = std::fs::read_dir(&net.settings().cache_dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    assert!(cache_left.is_empty(), "cached results left: {cache_left:?}");
}

#[tokio::test]
async fn detach_of_never_attached_id_succeeds() {
    let net = TestNet::new("never");
    net.network.detach("never-attached").await.unwrap();
    net.network.detach("never-attached").await.unwrap();
}

#[tokio::test]
async fn missing_plugin_dir_fails_with_package_name() {
    let net = TestNet::new("noplug");
    let mut settings = net.settings().clone();
    settings.plugin_dirs = vec![net.dir.path().join("no-plugins-here")];
    let network = CniNetwork::new(settings).unwrap();
    let err = network.attach("noplug-1").await.unwrap_err();
    assert!(
        err.to_string().contains("containernetworking-plugins"),
        "{err}"
    );
    // The namespace created before the failure was rolled back.
    assert!(!network.netns_path("noplug-1").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_attaches_get_distinct_ips() {
    let mut net = TestNet::new("para");
    let ids: Vec<String> = (1..=5).map(|i| format!("para-{i}")).collect();
    net.ids = ids.clone();
    let attaches = ids.iter().map(|id| {
        let network = Arc::clone(&net.network);
        let id = id.clone();
        tokio::spawn(async move { network.attach(&id).await })
    });
    let mut ips = std::collections::HashSet::new();
    for attach in futures_util::future::join_all(attaches).await {
        ips.insert(attach.unwrap().unwrap().ip);
    }
    assert_eq!(ips.len(), 5, "{ips:?}");
    let detaches = ids.iter().map(|id| {
        let network = Arc::clone(&net.network);
        let id = id.clone();
        tokio::spawn(async move { network.detach(&id).await })
    });
    for detach in futures_util::future::join_all(detaches).await {
        detach.unwrap().unwrap();
    }
    assert!(net.lease_files().is_empty());
    assert!(net.bridge_ports().is_empty());
}
