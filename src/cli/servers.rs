//! Where the CLI sends requests and with which token: turning `server:` values into API URLs,
//! the stored `{servers: {url: token}}` file ($XDG_CONFIG_HOME/haloy/client.yaml, mode 0600), and
//! the token lookup order (api_token in haloy.yaml, then HALOY_API_TOKEN, then the stored token),
//! and the refusal to send a token over plain HTTP to a non-loopback server unless allowed.

use super::CliError;
use crate::config::SecretString;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Port of haloyd's plain-HTTP API.
pub const DEFAULT_API_PORT: u16 = 9922;
/// Environment variable holding an API token (for CI).
pub const TOKEN_ENV: &str = "HALOY_API_TOKEN";
/// Environment variable allowing plain http:// to any server (`1` or `true`).
pub const INSECURE_HTTP_ENV: &str = "HALOY_INSECURE_HTTP";

/// Turns a `server:` value into an API base URL:
/// a URL (`http://…`, `https://…`) is used as is; an IP address or `localhost`, with or without
/// a port, means haloyd's plain-HTTP API (`http://HOST:9922` by default); any other host name
/// means HTTPS through haloyd's `api.domain` (`https://HOST[:PORT]`).
pub fn server_url(server: &str) -> Result<String, CliError> {
    let s = server.trim().trim_end_matches('/');
    if s.starts_with("http://") || s.starts_with("https://") {
        return Ok(s.to_string());
    }
    if s.is_empty() || s.contains('/') || s.contains("://") {
        return Err(CliError::Usage(format!(
            "`{server}` is not a server address; write a host, host:port or http(s):// URL"
        )));
    }
    let (host, port) = split_host_port(s)?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let is_local = bare == "localhost" || bare.parse::<IpAddr>().is_ok();
    let host_part = if bare.contains(':') {
        format!("[{bare}]")
    } else {
        bare.to_string()
    };
    Ok(match (is_local, port) {
        (true, p) => format!("http://{host_part}:{}", p.unwrap_or(DEFAULT_API_PORT)),
        (false, Some(p)) => format!("https://{host_part}:{p}"),
        (false, None) => format!("https://{host_part}"),
    })
}

fn split_host_port(s: &str) -> Result<(&str, Option<u16>), CliError> {
    let bad_port = |p: &str| CliError::Usage(format!("invalid port `{p}` in server `{s}`"));
    if s.starts_with('[') {
        return match s.rsplit_once("]:") {
            Some((h, p)) => Ok((&s[..h.len() + 1], Some(p.parse().map_err(|_| bad_port(p))?))),
            None => Ok((s, None)),
        };
    }
    // A bare IPv6 address has several colons and no port.
    if s.matches(':').count() > 1 {
        return Ok((s, None));
    }
    match s.split_once(':') {
        Some((h, p)) => Ok((h, Some(p.parse().map_err(|_| bad_port(p))?))),
        None => Ok((s, None)),
    }
}

/// Format of client.yaml. Files written before the field existed have none and are format
/// 1; a newer one is refused (and so never overwritten by `haloy server add`).
pub const CLIENT_CONFIG_FORMAT: u32 = 1;

#[derive(Deserialize)]
struct FormatVersion {
    #[serde(default = "format_one")]
    format_version: u32,
}

fn format_one() -> u32 {
    1
}

/// client.yaml as written: the servers with the format.
#[derive(Serialize)]
struct ClientConfigFile<'a> {
    format_version: u32,
    #[serde(flatten)]
    config: &'a ClientConfig,
}

/// The stored servers and tokens.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ClientConfig {
    #[serde(default)]
    pub servers: BTreeMap<String, String>,
    /// Server URLs the user allowed plain http:// for (`server add --insecure-http`).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub insecure_http: BTreeSet<String>,
}

/// True when `url` is plain http:// to a host other than localhost or a loopback address:
/// the bearer token would cross the network readable by anyone on the path.
pub fn is_plain_http_to_remote(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback());
    !loopback
}

/// Refuses plain http:// to a non-loopback server unless the user allowed it for this URL
/// (`server add --insecure-http`) or for all (HALOY_INSECURE_HTTP). Runs before any connection.
pub fn check_transport(url: &str, store: &ClientConfig) -> Result<(), CliError> {
    if !is_plain_http_to_remote(url) || store.insecure_http.contains(url) || insecure_env() {
        return Ok(());
    }
    Err(CliError::Usage(format!(
        "refusing to send the API token over plain http:// to {url}: it is not a loopback address, and anyone on the path could read the token (root on that server). Use HTTPS (haloyd's api.domain), an SSH tunnel to haloyd's loopback API, or allow it explicitly with `haloy server add {url} --insecure-http --token-stdin` or {INSECURE_HTTP_ENV}=1"
    )))
}

fn insecure_env() -> bool {
    std::env::var(INSECURE_HTTP_ENV)
        .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

/// `$XDG_CONFIG_HOME/haloy/client.yaml`, or `~/.config/haloy/client.yaml`.
pub fn client_config_path() -> Result<PathBuf, CliError> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| dirs::home_dir().map(|h| h.join(".config")))
        .ok_or_else(|| {
            CliError::Usage("cannot find the config folder: set XDG_CONFIG_HOME or HOME".into())
        })?;
    Ok(base.join("haloy").join("client.yaml"))
}

impl ClientConfig {
    pub fn load(path: &Path) -> Result<ClientConfig, CliError> {
        match std::fs::read_to_string(path) {
            Ok(text) if text.trim().is_empty() => Ok(ClientConfig::default()),
            Ok(text) => {
                let invalid = |e: serde_yaml::Error| {
                    CliError::Usage(format!(
                        "{} is not a valid client config: {e}",
                        path.display()
                    ))
                };
                let version: FormatVersion = serde_yaml::from_str(&text).map_err(invalid)?;
                if version.format_version > CLIENT_CONFIG_FORMAT {
                    return Err(CliError::Usage(format!(
                        "{} has format_version {}, newer than the {CLIENT_CONFIG_FORMAT} this haloy understands; upgrade haloy (the file is left untouched)",
                        path.display(),
                        version.format_version
                    )));
                }
                serde_yaml::from_str(&text).map_err(invalid)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ClientConfig::default()),
            Err(source) => Err(CliError::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Writes atomically with mode 0600 (the file holds tokens).
    pub fn save(&self, path: &Path) -> Result<(), CliError> {
        let io_err = |action: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |source| CliError::Io {
                action,
                path: p,
                source,
            }
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err("create", dir))?;
        let file = ClientConfigFile {
            format_version: CLIENT_CONFIG_FORMAT,
            config: self,
        };
        let text = serde_yaml::to_string(&file)
            .map_err(|e| CliError::Usage(format!("cannot encode client config: {e}")))?;
        crate::files::write_atomic(path, text.as_bytes(), 0o600).map_err(io_err("write", path))
    }
}

/// Picks the token for `url`: the app's `api_token`, then HALOY_API_TOKEN, then the stored one.
pub fn token_for(
    app_token: Option<&SecretString>,
    url: &str,
    store: &ClientConfig,
) -> Option<SecretString> {
    if let Some(t) = app_token {
        return Some(t.clone());
    }
    if let Some(t) = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()) {
        return Some(SecretString::new(t));
    }
    store.servers.get(url).map(SecretString::new)
}

#[cfg(test)]
#[path = "tests/servers.rs"]
mod tests;
