//! CNI driver: renders cni/haloy.conflist, executes the plugin binaries per the CNI 1.0 spec
//! (ADD in order with prevResult chaining, DEL in reverse with the cached ADD result), and turns
//! the result into an `Attachment`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use super::netns::{HostNetns, NetnsOps};
use super::{validate_id, Attachment, CidrError, IpCidr, Network, NetworkError};

const CONFLIST_TEMPLATE: &str = include_str!("../../cni/haloy.conflist");
const CONTAINER_IFNAME: &str = "eth0";
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the plugins are and how the task network looks. Defaults match a production host.
#[derive(Debug, Clone)]
pub struct CniSettings {
    /// Searched in order for plugin binaries; all of them form CNI_PATH.
    pub plugin_dirs: Vec<PathBuf>,
    /// CNI network name (iptables comments and the IPAM lease subdirectory use it).
    pub network_name: String,
    /// Linux bridge name, at most 15 characters.
    pub bridge: String,
    /// IPv4 subnet in CIDR form, e.g. `10.89.0.0/16`.
    pub subnet: String,
    /// host-local lease files live under `<ipam_data_dir>/<network_name>/`.
    pub ipam_data_dir: PathBuf,
    /// One bind-mounted namespace file per task id.
    pub netns_dir: PathBuf,
    /// The ADD result per task id, needed as prevResult for DEL.
    pub cache_dir: PathBuf,
    /// A conflist to use instead of the built-in template (same placeholders).
    pub conflist_template: Option<PathBuf>,
}

impl Default for CniSettings {
    fn default() -> Self {
        // Everything under /run: a reboot wipes namespaces, leases and cached results together.
        CniSettings {
            plugin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
            network_name: "haloy".into(),
            bridge: "haloy0".into(),
            subnet: "10.89.0.0/16".into(),
            ipam_data_dir: PathBuf::from("/run/haloy/cni/ipam"),
            netns_dir: PathBuf::from("/run/haloy/netns"),
            cache_dir: PathBuf::from("/run/haloy/cni/results"),
            conflist_template: None,
        }
    }
}

impl CniSettings {
    fn validate(&self) -> Result<(), NetworkError> {
        // Backstop: haloyd's server config reports these with file:line before we get here.
        check_bridge_name(&self.bridge).map_err(|reason| NetworkError::InvalidSettings {
            key: "bridge",
            reason: format!("{:?} {reason}", self.bridge),
        })?;
        validate_subnet(&self.subnet)?;
        if self.network_name.is_empty() || self.network_name.contains('/') {
            return Err(NetworkError::InvalidSettings {
                key: "network_name",
                reason: format!("{:?} must be non-empty without '/'", self.network_name),
            });
        }
        if self.plugin_dirs.is_empty() {
            return Err(NetworkError::InvalidSettings {
                key: "plugin_dirs",
                reason: "at least one CNI plugin directory is needed".into(),
            });
        }
        Ok(())
    }

    fn cni_path(&self) -> String {
        let dirs: Vec<String> = self
            .plugin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        dirs.join(":")
    }
}

fn validate_subnet(subnet: &str) -> Result<(), NetworkError> {
    let invalid = |reason: &str| NetworkError::InvalidSettings {
        key: "subnet",
        reason: format!("{subnet:?}: {reason}"),
    };
    if !subnet.contains('/') {
        return Err(invalid("expected CIDR form like 10.89.0.0/16"));
    }
    let cidr: IpCidr = subnet.parse().map_err(|e| match e {
        CidrError::NotAnAddress(_) => invalid("not an IPv4 address"),
        CidrError::BadPrefix(_) => invalid("prefix length must be between 8 and 30"),
    })?;
    check_subnet(&cidr).map_err(|reason| invalid(&reason))
}

/// A Linux bridge name the bridge plugin accepts: 1-15 letters, digits, '-', '_' or '.'.
/// Shared with haloyd's server config, which reports a bad `network.bridge` with its position.
pub fn check_bridge_name(bridge: &str) -> Result<(), String> {
    let ok = !bridge.is_empty()
        && bridge.len() <= 15
        && bridge
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err("must be 1-15 letters, digits, '-', '_' or '.'".into())
    }
}

/// A bridge subnet host-local can hand out: IPv4, prefix 8 to 30. Shared with haloyd's server
/// config (`network.subnet`).
pub fn check_subnet(subnet: &IpCidr) -> Result<(), String> {
    if !subnet.addr().is_ipv4() {
        return Err("not an IPv4 address".into());
    }
    if !(8..=30).contains(&subnet.prefix()) {
        return Err("prefix length must be between 8 and 30".into());
    }
    Ok(())
}

/// What a plugin run produced.
#[derive(Debug, Clone)]
pub struct PluginOutput {
    pub success: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Executes one plugin binary with extra environment and a config on stdin.
#[async_trait]
pub trait PluginExec: Send + Sync {
    async fn exec(
        &self,
        binary: &Path,
        env: &[(&'static str, String)],
        stdin: Vec<u8>,
    ) -> std::io::Result<PluginOutput>;
}

/// Runs plugins as child processes (inheriting PATH: the plugins call iptables).
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessPluginExec;

#[async_trait]
impl PluginExec for ProcessPluginExec {
    async fn exec(
        &self,
        binary: &Path,
        env: &[(&'static str, String)],
        stdin: Vec<u8>,
    ) -> std::io::Result<PluginOutput> {
        // Running the CNI plugin binaries is what CNI is (see clippy.toml).
        #[allow(clippy::disallowed_methods)]
        let mut child = tokio::process::Command::new(binary)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        if let Some(mut input) = child.stdin.take() {
            input.write_all(&stdin).await?;
            // Dropping closes stdin: the plugin reads until EOF.
        }
        let out = child.wait_with_output().await?;
        Ok(PluginOutput {
            success: out.status.success(),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
}

/// The CNI error object a failing plugin prints on stdout.
#[derive(Debug, Deserialize)]
struct CniErrorBody {
    #[serde(default)]
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

#[derive(Debug, Deserialize)]
struct CniResult {
    #[serde(default)]
    interfaces: Vec<CniInterface>,
    #[serde(default)]
    ips: Vec<CniIp>,
}

#[derive(Debug, Deserialize)]
struct CniInterface {
    name: String,
    #[serde(default)]
    sandbox: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CniIp {
    address: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    interface: Option<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Command {
    Add,
    Del,
}

impl Command {
    fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
        }
    }
}

/// One plugin invocation: which config, for which task, in which namespace.
struct Invocation<'a> {
    command: Command,
    id: &'a str,
    netns: &'a str,
    ifname: &'a str,
}

/// The real `Network`: netns per task + the conflist's plugins.
pub struct CniNetwork {
    settings: CniSettings,
    name: String,
    cni_version: String,
    plugins: Vec<Value>,
    netns: Arc<dyn NetnsOps>,
    exec: Arc<dyn PluginExec>,
}

impl std::fmt::Debug for CniNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CniNetwork")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl CniNetwork {
    /// Host namespaces and real plugin processes.
    pub fn new(settings: CniSettings) -> Result<Self, NetworkError> {
        Self::with_ops(settings, Arc::new(HostNetns), Arc::new(ProcessPluginExec))
    }

    /// Same logic with other syscall/exec implementations (unit tests use fakes).
    pub fn with_ops(
        settings: CniSettings,
        netns: Arc<dyn NetnsOps>,
        exec: Arc<dyn PluginExec>,
    ) -> Result<Self, NetworkError> {
        settings.validate()?;
        let template = match &settings.conflist_template {
            Some(path) => std::fs::read_to_string(path).map_err(|source| NetworkError::State {
                path: path.clone(),
                source,
            })?,
            None => CONFLIST_TEMPLATE.to_string(),
        };
        let conflist = render_conflist(&template, &settings)?;
        let field = |key: &str| conflist.get(key).and_then(Value::as_str).map(String::from);
        let (Some(name), Some(cni_version)) = (field("name"), field("cniVersion")) else {
            return Err(invalid_template(
                "needs \"name\" and \"cniVersion\" strings",
            ));
        };
        let plugins = match conflist.get("plugins").and_then(Value::as_array) {
            Some(list) if !list.is_empty() => list.clone(),
            _ => return Err(invalid_template("needs a non-empty \"plugins\" array")),
        };
        if plugins
            .iter()
            .any(|p| p.get("type").and_then(Value::as_str).is_none())
        {
            return Err(invalid_template("every plugin needs a \"type\" string"));
        }
        Ok(CniNetwork {
            settings,
            name,
            cni_version,
            plugins,
            netns,
            exec,
        })
    }

    pub fn settings(&self) -> &CniSettings {
        &self.settings
    }

    /// Where the namespace of task `id` is pinned.
    pub fn netns_path(&self, id: &str) -> PathBuf {
        self.settings.netns_dir.join(id)
    }

    fn cache_path(&self, id: &str) -> PathBuf {
        self.settings
            .cache_dir
            .join(format!("{}-{id}.json", self.name))
    }

    fn find_plugin(&self, plugin: &str) -> Result<PathBuf, NetworkError> {
        self.settings
            .plugin_dirs
            .iter()
            .map(|dir| dir.join(plugin))
            .find(|path| path.is_file())
            .ok_or_else(|| NetworkError::PluginNotFound {
                plugin: plugin.to_string(),
                dirs: self.settings.cni_path(),
            })
    }

    /// Runs one plugin and returns its stdout parsed as JSON (Null when it printed nothing).
    async fn invoke(
        &self,
        plugin_type: &str,
        config: &Value,
        call: &Invocation<'_>,
    ) -> Result<Value, NetworkError> {
        let binary = self.find_plugin(plugin_type)?;
        let env = [
            ("CNI_COMMAND", call.command.as_str().to_string()),
            ("CNI_CONTAINERID", call.id.to_string()),
            ("CNI_NETNS", call.netns.to_string()),
            ("CNI_IFNAME", call.ifname.to_string()),
            ("CNI_PATH", self.settings.cni_path()),
        ];
        let stdin = serde_json::to_vec(config).map_err(|e| bad_result(plugin_type, call.id, e))?;
        tracing::debug!(
            plugin = plugin_type,
            command = call.command.as_str(),
            task_id = call.id,
            "running CNI plugin"
        );
        let run = self.exec.exec(&binary, &env, stdin);
        let output = tokio::time::timeout(PLUGIN_TIMEOUT, run)
            .await
            .map_err(|_| NetworkError::Timeout {
                plugin: plugin_type.to_string(),
                command: call.command.as_str(),
                id: call.id.to_string(),
                seconds: PLUGIN_TIMEOUT.as_secs(),
            })?
            .map_err(|source| NetworkError::Exec {
                path: binary.clone(),
                source,
            })?;
        if !output.success {
            return Err(plugin_error(plugin_type, call, &output));
        }
        if output.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&output.stdout).map_err(|e| bad_result(plugin_type, call.id, e))
    }

    /// The config one plugin of the list gets: its own object plus name, version, prevResult.
    fn plugin_config(&self, plugin: &Value, prev_result: Option<&Value>) -> Value {
        let mut config = plugin.clone();
        if let Some(obj) = config.as_object_mut() {
            obj.insert("name".into(), Value::String(self.name.clone()));
            obj.insert("cniVersion".into(), Value::String(self.cni_version.clone()));
            match prev_result {
                Some(prev) if !prev.is_null() => {
                    obj.insert("prevResult".into(), prev.clone());
                }
                _ => {
                    obj.remove("prevResult");
                }
            }
        }
        config
    }

    async fn add_loopback(&self, id: &str, netns: &str) -> Result<(), NetworkError> {
        let config =
            json!({"cniVersion": self.cni_version, "name": "loopback", "type": "loopback"});
        let call = Invocation {
            command: Command::Add,
            id,
            netns,
            ifname: "lo",
        };
        self.invoke("loopback", &config, &call).await.map(|_| ())
    }

    /// ADD through the whole list; returns the final result.
    async fn add_list(&self, id: &str, netns: &str) -> Result<Value, NetworkError> {
        let call = Invocation {
            command: Command::Add,
            id,
            netns,
            ifname: CONTAINER_IFNAME,
        };
        let mut prev: Option<Value> = None;
        for plugin in &self.plugins {
            let plugin_type = plugin_type(plugin);
            let config = self.plugin_config(plugin, prev.as_ref());
            let result = self.invoke(plugin_type, &config, &call).await?;
            if result.is_null() {
                return Err(bad_result(plugin_type, id, "ADD printed no result"));
            }
            prev = Some(result);
        }
        prev.ok_or_else(|| bad_result("conflist", id, "no plugin ran"))
    }

    /// DEL through the list in reverse, each plugin given the cached ADD result.
    async fn del_list(
        &self,
        id: &str,
        netns: &str,
        cached: Option<&Value>,
    ) -> Result<(), NetworkError> {
        let call = Invocation {
            command: Command::Del,
            id,
            netns,
            ifname: CONTAINER_IFNAME,
        };
        for plugin in self.plugins.iter().rev() {
            let config = self.plugin_config(plugin, cached);
            self.invoke(plugin_type(plugin), &config, &call).await?;
        }
        Ok(())
    }

    async fn create_netns(&self, path: &Path) -> Result<(), NetworkError> {
        let ops = Arc::clone(&self.netns);
        let path = path.to_path_buf();
        run_blocking(move || ops.create(&path)).await
    }

    async fn remove_netns(&self, path: &Path) -> Result<(), NetworkError> {
        let ops = Arc::clone(&self.netns);
        let path = path.to_path_buf();
        run_blocking(move || ops.remove(&path)).await
    }

    async fn is_netns(&self, path: &Path) -> bool {
        let ops = Arc::clone(&self.netns);
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || ops.is_netns(&path))
            .await
            .unwrap_or(false)
    }

    async fn read_cached_result(&self, id: &str) -> Result<Option<Value>, NetworkError> {
        let path = self.cache_path(id);
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(NetworkError::State { path, source }),
        }
    }

    async fn write_cached_result(&self, id: &str, result: &Value) -> Result<(), NetworkError> {
        let path = self.cache_path(id);
        let state_err = |source| NetworkError::State {
            path: path.clone(),
            source,
        };
        tokio::fs::create_dir_all(&self.settings.cache_dir)
            .await
            .map_err(state_err)?;
        let bytes = serde_json::to_vec(result).map_err(|e| state_err(e.into()))?;
        tokio::fs::write(&path, bytes).await.map_err(state_err)
    }

    async fn remove_cached_result(&self, id: &str) -> Result<(), NetworkError> {
        let path = self.cache_path(id);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(NetworkError::State { path, source }),
        }
    }

    /// Everything after the namespace exists; on error the caller rolls back.
    async fn add_all(&self, id: &str, netns: &Path) -> Result<Attachment, NetworkError> {
        let netns_str = netns.to_string_lossy();
        // `lo` and `eth0` are independent: bring both up at once (one plugin exec less latency).
        let (loopback, list) = tokio::join!(
            self.add_loopback(id, &netns_str),
            self.add_list(id, &netns_str)
        );
        loopback?;
        let result = list?;
        self.write_cached_result(id, &result).await?;
        attachment_from_result(&result, id, netns)
    }
}

#[async_trait]
impl Network for CniNetwork {
    async fn create_namespace(&self, id: &str) -> Result<PathBuf, NetworkError> {
        validate_id(id)?;
        let netns = self.netns_path(id);
        if tokio::fs::try_exists(&netns).await.unwrap_or(false) {
            return Err(NetworkError::AlreadyAttached {
                id: id.to_string(),
                path: netns,
            });
        }
        self.create_netns(&netns).await?;
        Ok(netns)
    }

    async fn connect(&self, id: &str) -> Result<Attachment, NetworkError> {
        validate_id(id)?;
        let netns = self.netns_path(id);
        if !self.is_netns(&netns).await {
            return Err(NetworkError::NoNamespace {
                id: id.to_string(),
                path: netns,
            });
        }
        match self.add_all(id, &netns).await {
            Ok(attachment) => {
                tracing::info!(task_id = id, ip = %attachment.ip, "task network attached");
                Ok(attachment)
            }
            Err(err) => {
                // Undo half an ADD so the id can be attached again; report the original error.
                if let Err(undo) = self.detach(id).await {
                    // The namespace goes anyway so the id can be retried; a later detach
                    // (empty CNI_NETNS) still releases what DEL could not.
                    tracing::warn!(task_id = id, error = %undo, "CNI DEL after failed ADD failed");
                    let _ = self.remove_netns(&netns).await;
                }
                Err(err)
            }
        }
    }

    async fn detach(&self, id: &str) -> Result<(), NetworkError> {
        validate_id(id)?;
        let netns = self.netns_path(id);
        let cached = self.read_cached_result(id).await?;
        // A file that is no longer a namespace (crash, reboot) must not reach the plugins:
        // with an empty CNI_NETNS they still release the IPAM lease and firewall rules.
        let netns_arg = if self.is_netns(&netns).await {
            netns.to_string_lossy().into_owned()
        } else {
            String::new()
        };
        self.del_list(id, &netns_arg, cached.as_ref()).await?;
        self.remove_cached_result(id).await?;
        self.remove_netns(&netns).await?;
        tracing::info!(task_id = id, "task network detached");
        Ok(())
    }
}

async fn run_blocking<F>(f: F) -> Result<(), NetworkError>
where
    F: FnOnce() -> Result<(), NetworkError> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|join| {
        Err(NetworkError::Netns {
            path: PathBuf::new(),
            action: "blocking namespace task",
            source: std::io::Error::other(join.to_string()),
        })
    })
}

fn plugin_type(plugin: &Value) -> &str {
    plugin.get("type").and_then(Value::as_str).unwrap_or("")
}

fn invalid_template(reason: &str) -> NetworkError {
    NetworkError::InvalidSettings {
        key: "conflist_template",
        reason: reason.to_string(),
    }
}

fn bad_result(plugin: &str, id: &str, reason: impl std::fmt::Display) -> NetworkError {
    NetworkError::BadResult {
        plugin: plugin.to_string(),
        id: id.to_string(),
        reason: reason.to_string(),
    }
}

/// Fills the placeholders with JSON-escaped values and parses the result.
fn render_conflist(template: &str, settings: &CniSettings) -> Result<Value, NetworkError> {
    let replacements = [
        ("network_name", settings.network_name.clone()),
        ("bridge", settings.bridge.clone()),
        ("subnet", settings.subnet.clone()),
        (
            "ipam_data_dir",
            settings.ipam_data_dir.to_string_lossy().into_owned(),
        ),
    ];
    let mut text = template.to_string();
    for (key, value) in replacements {
        let quoted = Value::String(value).to_string();
        text = text.replace(&format!("\"{{{{{key}}}}}\""), &quoted);
    }
    serde_json::from_str(&text).map_err(|e| invalid_template(&format!("not valid JSON: {e}")))
}

fn plugin_error(plugin: &str, call: &Invocation<'_>, output: &PluginOutput) -> NetworkError {
    let (code, msg, details) = match serde_json::from_slice::<CniErrorBody>(&output.stdout) {
        Ok(body) if !body.msg.is_empty() => (body.code, body.msg, body.details),
        _ => {
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
            let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
            let msg = if stderr.is_empty() { stdout } else { stderr };
            (0, msg, String::new())
        }
    };
    NetworkError::Plugin {
        plugin: plugin.to_string(),
        command: call.command.as_str(),
        id: call.id.to_string(),
        code,
        msg,
        details,
    }
}

/// Picks the first IPv4 address on the container's interface.
fn attachment_from_result(
    result: &Value,
    id: &str,
    netns: &Path,
) -> Result<Attachment, NetworkError> {
    let parsed: CniResult =
        serde_json::from_value(result.clone()).map_err(|e| bad_result("conflist", id, e))?;
    let in_sandbox = |ip: &CniIp| match ip.interface.and_then(|i| parsed.interfaces.get(i)) {
        Some(iface) => iface.sandbox.as_deref().is_some_and(|s| !s.is_empty()),
        None => true,
    };
    let chosen = parsed
        .ips
        .iter()
        .filter(|ip| in_sandbox(ip))
        .find_map(|ip| {
            let addr = ip
                .address
                .split('/')
                .next()?
                .parse::<std::net::IpAddr>()
                .ok()?;
            addr.is_ipv4().then_some((ip, addr))
        })
        .ok_or_else(|| {
            bad_result(
                "conflist",
                id,
                "the result has no IPv4 address for the task",
            )
        })?;
    let (ip, addr) = chosen;
    let interface = ip
        .interface
        .and_then(|i| parsed.interfaces.get(i))
        .map(|iface| iface.name.clone())
        .unwrap_or_else(|| CONTAINER_IFNAME.to_string());
    Ok(Attachment {
        netns_path: netns.to_path_buf(),
        ip: addr,
        gateway: ip.gateway.as_deref().and_then(|g| g.parse().ok()),
        interface,
    })
}

#[cfg(test)]
#[path = "tests/cni.rs"]
mod tests;
