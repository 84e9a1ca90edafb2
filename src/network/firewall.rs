//! Packet isolation between haloy's bridges, and removing a named network's bridge.
//!
//! CNI has no standard isolation plugin, so haloyd owns one nftables table (family `inet`,
//! one per haloyd: `network.bridge` is in its name) with one base chain on the forward hook,
//! priority -1 (before the CNI firewall plugin's iptables-nft rules accept the task's
//! traffic; a drop in any base chain is final). Each bridge in use gets one rule dropping
//! what it forwards to any other haloy bridge; traffic to the host (haloyd's proxy, DNS on
//! the gateways) is input, not forward, and traffic to the outside leaves by another
//! interface, so both are untouched, as is the bridge plugin's masquerade. The whole table is
//! replaced in one `nft -f` transaction (`table` + `delete table` + the new table), which is
//! idempotent across restarts; with no named network in use the table is removed.

use std::process::Stdio;

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;

use super::NetworkError;

/// The host operations `NetworkSet` needs beyond CNI.
#[async_trait]
pub trait Firewall: Send + Sync {
    /// Makes `table` drop forwarding between any two of `bridges` (none: no table).
    async fn isolate(&self, table: &str, bridges: &[String]) -> Result<(), NetworkError>;
    /// Deletes a bridge device; succeeds when it does not exist.
    async fn delete_bridge(&self, bridge: &str) -> Result<(), NetworkError>;
}

/// `nft` and `ip` of the host.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostFirewall;

#[async_trait]
impl Firewall for HostFirewall {
    async fn isolate(&self, table: &str, bridges: &[String]) -> Result<(), NetworkError> {
        let script = ruleset(table, bridges);
        let output = match run("nft", &["-f", "-"], Some(script.as_bytes())).await {
            Ok(output) => output,
            // Without nft no table of ours can exist: nothing to remove. Hosts without named
            // networks keep working without the package.
            Err(NetworkError::ToolMissing { .. }) if bridges.len() < 2 => return Ok(()),
            Err(err) => return Err(err),
        };
        if output.status.success() {
            tracing::debug!(table, bridges = %bridges.join(","), "network isolation rules installed");
            Ok(())
        } else {
            Err(NetworkError::Firewall {
                action: "nft -f (isolation rules)".into(),
                reason: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            })
        }
    }

    async fn delete_bridge(&self, bridge: &str) -> Result<(), NetworkError> {
        let exists = tokio::fs::try_exists(format!("/sys/class/net/{bridge}"))
            .await
            .unwrap_or(false);
        if !exists {
            return Ok(());
        }
        let output = run("ip", &["link", "delete", bridge], None).await?;
        if output.status.success() {
            Ok(())
        } else {
            Err(NetworkError::Firewall {
                action: format!("ip link delete {bridge}"),
                reason: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            })
        }
    }
}

async fn run(
    program: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> Result<std::process::Output, NetworkError> {
    let exec_err = |source| NetworkError::Exec {
        path: program.into(),
        source,
    };
    // nftables and rtnetlink have no maintained Rust client here; the Debian tools are the
    // stable interface (see clippy.toml).
    #[allow(clippy::disallowed_methods)]
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                NetworkError::ToolMissing {
                    program: program.to_string(),
                    package: if program == "nft" {
                        "nftables"
                    } else {
                        "iproute2"
                    },
                }
            } else {
                exec_err(source)
            }
        })?;
    if let (Some(bytes), Some(mut input)) = (stdin, child.stdin.take()) {
        input.write_all(bytes).await.map_err(exec_err)?;
    }
    child.wait_with_output().await.map_err(exec_err)
}

/// The nft script replacing `table` (family inet) with rules isolating `bridges`.
pub fn ruleset(table: &str, bridges: &[String]) -> String {
    // Declaring the table first makes the delete succeed when it does not exist yet.
    let mut script = format!("table inet {table}\ndelete table inet {table}\n");
    if bridges.len() < 2 {
        return script;
    }
    script.push_str(&format!(
        "table inet {table} {{\n  chain isolate {{\n    type filter hook forward priority -1; policy accept;\n"
    ));
    for bridge in bridges {
        let others: Vec<String> = bridges
            .iter()
            .filter(|b| *b != bridge)
            .map(|b| format!("\"{b}\""))
            .collect();
        script.push_str(&format!(
            "    iifname \"{bridge}\" oifname {{ {} }} drop\n",
            others.join(", ")
        ));
    }
    script.push_str("  }\n}\n");
    script
}

/// The table name of the haloyd whose default bridge is `bridge`: `haloy` for `haloy0`,
/// `haloy_<bridge>` otherwise (letters, digits and `_` only, as nft names need).
pub fn table_name(bridge: &str) -> String {
    if bridge == "haloy0" {
        return "haloy".into();
    }
    let safe: String = bridge
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("haloy_{safe}")
}
