//! Deploy config (haloy.yaml/yml/json/toml, targets, env, .env files) and haloyd's server
//! config: parsing with positions, validation that reports every problem with file:line:column and
//! key path, and resolution into per-target `ResolvedApp`s.

pub mod decode;
pub mod deploy;
pub mod env;
pub mod limits;
pub mod resolved;
pub mod secrets;
pub mod server;
pub mod server_edit;
pub mod tree;
pub mod values;
pub mod yaml_hint;

pub use decode::{Problem, Problems};
pub use resolved::*;
pub use server::ServerConfig;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tree::Format;

/// File names looked for in a folder, in this order.
pub const CONFIG_FILE_NAMES: &[&str] = &["haloy.yaml", "haloy.yml", "haloy.json", "haloy.toml"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no haloy config in {dir} (looked for haloy.yaml, haloy.yml, haloy.json, haloy.toml); pass -c PATH")]
    NotFound { dir: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: unsupported config file type; use .yaml, .yml, .json or .toml")]
    UnsupportedType { path: PathBuf },
    /// One line per problem: `FILE:LINE:COL: KEY.PATH: what is wrong`.
    #[error("{0}")]
    Invalid(Problems),
}

impl ConfigError {
    /// The individual problem lines (a single line for I/O errors).
    pub fn lines(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid(p) => p.lines(),
            other => vec![other.to_string()],
        }
    }
}

/// A loaded deploy config: the file it came from and one resolved app per target.
#[derive(Debug, Clone)]
pub struct DeployConfig {
    pub file: PathBuf,
    /// True when the file has `targets:`.
    pub has_targets: bool,
    pub apps: Vec<ResolvedApp>,
}

/// Finds the config file: `path` may be a file or a folder; `None` means the current folder.
pub fn find_config_file(path: Option<&Path>) -> Result<PathBuf, ConfigError> {
    let path = path.unwrap_or(Path::new("."));
    if path.is_dir() {
        return CONFIG_FILE_NAMES
            .iter()
            .map(|n| path.join(n))
            .find(|p| p.is_file())
            .ok_or_else(|| ConfigError::NotFound {
                dir: path.to_path_buf(),
            });
    }
    if !path.exists() {
        return Err(ConfigError::Read {
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
        });
    }
    Ok(path.to_path_buf())
}

fn format_of(path: &Path) -> Result<Format, ConfigError> {
    path.extension()
        .and_then(|e| e.to_str())
        .and_then(Format::from_extension)
        .ok_or_else(|| ConfigError::UnsupportedType {
            path: path.to_path_buf(),
        })
}

/// Loads and resolves the deploy config with the process environment.
pub fn load_deploy_config(path: Option<&Path>) -> Result<DeployConfig, ConfigError> {
    let env: HashMap<String, String> = std::env::vars().collect();
    load_deploy_config_with_env(path, &env)
}

/// Like `load_deploy_config` with an explicit process environment (for tests).
pub fn load_deploy_config_with_env(
    path: Option<&Path>,
    process_env: &HashMap<String, String>,
) -> Result<DeployConfig, ConfigError> {
    let file = find_config_file(path)?;
    let format = format_of(&file)?;
    let text = std::fs::read_to_string(&file).map_err(|source| ConfigError::Read {
        path: file.clone(),
        source,
    })?;
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let label = file.display().to_string();
    let (apps, has_targets) = resolve_text(&text, format, &label, dir, process_env)?;
    Ok(DeployConfig {
        file,
        has_targets,
        apps,
    })
}

/// Parses and resolves config text. `label` names the file in messages; `.env` files are read
/// from `dir`.
pub fn resolve_text(
    text: &str,
    format: Format,
    label: &str,
    dir: &Path,
    process_env: &HashMap<String, String>,
) -> Result<(Vec<ResolvedApp>, bool), ConfigError> {
    let mut dec = decode::Decoder::new(label, format);
    let node = match tree::parse(format, text) {
        Ok(n) => n,
        Err(e) => {
            let hint = match format {
                Format::Yaml => yaml_hint::missing_colon(text, e.pos.line)
                    .map(|h| format!("; {h}"))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            dec.problem(e.pos, "", format!("syntax error: {}{hint}", e.message));
            return Err(ConfigError::Invalid(Problems(dec.problems)));
        }
    };
    let has_targets = match &node.value {
        tree::Value::Map(entries) => entries.iter().any(|e| e.key == "targets"),
        _ => false,
    };
    let apps = deploy::resolve_document(&mut dec, &node, dir, process_env);
    if dec.problems.is_empty() {
        Ok((apps, has_targets))
    } else {
        let mut problems = Problems(dec.problems);
        problems.normalize();
        Err(ConfigError::Invalid(problems))
    }
}

#[cfg(test)]
#[path = "tests/resolve.rs"]
mod tests;
