//! `secret_providers` and `from: {secret: PROVIDER:SOURCE:KEY}`, resolved on the deploying
//! machine as Haloy resolves them (haloydev/haloy internal/configloader/resolve_secrets.go,
//! provider_1password.go, provider_sops.go): each source is fetched once (`op item get ITEM
//! --vault VAULT --format json [--account ACCOUNT]`, or `sops decrypt --output-type FORMAT FILE`
//! with FILE relative to the config's folder) and its keys are looked up. Values are never
//! logged; the resolver remembers every value it handed out so that printed configs can hide
//! them.

use super::decode::{join, Decoder};
use super::tree::{Format, Node};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SecretError {
    #[error("found `from.secret: {reference}` but no `secret_providers` block is defined in the config; add one (onepassword or sops) or use `from: {{env: VAR}}`")]
    NoProviders { reference: String },
    #[error("invalid secret reference `{reference}`; expected `provider:source_name:key` (e.g. `onepassword:api-keys:password`)")]
    BadReference { reference: String },
    #[error("secret source `{source_name}` for provider `{provider}` is not defined in `secret_providers.{provider}`")]
    UnknownSource {
        provider: String,
        source_name: String,
    },
    #[error("unsupported secret provider `{provider}` (supported: onepassword, sops)")]
    UnknownProvider { provider: String },
    #[error("failed to fetch secrets for source `{source_name}`: {reason}")]
    Fetch { source_name: String, reason: String },
    #[error("key `{key}` not found in secret source `{source_name}`; available keys: {available}")]
    MissingKey {
        key: String,
        source_name: String,
        available: String,
    },
}

/// `secret_providers.onepassword.<name>`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OnePasswordSource {
    pub account: Option<String>,
    pub vault: String,
    pub item: String,
}

/// `secret_providers.sops.<name>`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SopsSource {
    pub file: String,
    /// yaml, json or dotenv; inferred from the file's extension when unset.
    pub format: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SecretProviders {
    pub onepassword: BTreeMap<String, OnePasswordSource>,
    pub sops: BTreeMap<String, SopsSource>,
}

/// Decodes the top-level `secret_providers` map; problems go to `dec`.
pub fn decode(dec: &mut Decoder, node: &Node, path: &str) -> SecretProviders {
    let mut providers = SecretProviders::default();
    for (kind, entry) in dec.map(node, path, &["onepassword", "sops"]) {
        let kind_path = join(path, &kind);
        for source in dec.free_map(&entry.value, &kind_path) {
            let source_path = join(&kind_path, &source.key);
            if kind == "onepassword" {
                if let Some(s) = decode_onepassword(dec, &source.value, &source_path) {
                    providers.onepassword.insert(source.key.clone(), s);
                }
            } else if let Some(s) = decode_sops(dec, &source.value, &source_path) {
                providers.sops.insert(source.key.clone(), s);
            }
        }
    }
    providers
}

fn decode_onepassword(dec: &mut Decoder, node: &Node, path: &str) -> Option<OnePasswordSource> {
    let mut source = OnePasswordSource::default();
    for (key, entry) in dec.map(node, path, &["account", "vault", "item"]) {
        let value = dec.string(&entry.value, &join(path, &key));
        match key.as_str() {
            "account" => source.account = value,
            "vault" => source.vault = value.unwrap_or_default(),
            _ => source.item = value.unwrap_or_default(),
        }
    }
    if source.vault.trim().is_empty() || source.item.trim().is_empty() {
        // Haloy's wording (provider_1password.go).
        dec.problem(
            node.pos,
            path,
            "1Password source requires `vault` and `item` to be set",
        );
        return None;
    }
    Some(source)
}

fn decode_sops(dec: &mut Decoder, node: &Node, path: &str) -> Option<SopsSource> {
    let mut source = SopsSource::default();
    for (key, entry) in dec.map(node, path, &["file", "format"]) {
        let value = dec.word(&entry.value, &join(path, &key));
        match key.as_str() {
            "file" => source.file = value.unwrap_or_default(),
            _ => source.format = value,
        }
    }
    if source.file.trim().is_empty() {
        dec.problem(node.pos, path, "sops source requires `file` to be set");
        return None;
    }
    if let Err(e) = sops_format(&source) {
        dec.problem(node.pos, path, e);
        return None;
    }
    Some(source)
}

/// Haloy's `normalizeSOPSFormat`: the given format, else the file extension's.
pub fn sops_format(source: &SopsSource) -> Result<&'static str, String> {
    if let Some(format) = &source.format {
        return match format.trim().to_ascii_lowercase().as_str() {
            "yaml" => Ok("yaml"),
            "json" => Ok("json"),
            "dotenv" => Ok("dotenv"),
            "binary" => {
                Err("format `binary` is not supported for key-based secret resolution".into())
            }
            other => Err(format!(
                "unsupported sops format `{other}` (supported: yaml, json, dotenv)"
            )),
        };
    }
    let ext = Path::new(&source.file)
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "yaml" | "yml" => Ok("yaml"),
        "json" => Ok("json"),
        "env" | "dotenv" => Ok("dotenv"),
        _ => Err(format!(
            "could not infer the sops format from the file extension `.{ext}`; set `format` to one of: yaml, json, dotenv"
        )),
    }
}

/// A source's keys and values, or why fetching it failed.
type Fetched = Result<HashMap<String, String>, String>;

/// The programs run for each provider: `op` and `sops` on PATH unless a test says otherwise.
#[derive(Debug, Clone)]
pub struct Programs {
    pub op: PathBuf,
    pub sops: PathBuf,
}

impl Default for Programs {
    fn default() -> Self {
        Programs {
            op: PathBuf::from("op"),
            sops: PathBuf::from("sops"),
        }
    }
}

/// Resolves `from.secret` references of one config, fetching each source once.
#[derive(Debug)]
pub struct SecretResolver {
    providers: SecretProviders,
    /// The config file's folder: relative sops files are taken from there.
    dir: PathBuf,
    programs: Programs,
    fetched: Mutex<HashMap<String, Fetched>>,
    revealed: Mutex<Vec<String>>,
}

impl SecretResolver {
    pub fn new(providers: SecretProviders, dir: &Path, programs: Programs) -> SecretResolver {
        SecretResolver {
            providers,
            dir: dir.to_path_buf(),
            programs,
            fetched: Mutex::new(HashMap::new()),
            revealed: Mutex::new(Vec::new()),
        }
    }

    /// The value of `provider:source:key`.
    pub fn resolve(&self, reference: &str) -> Result<String, SecretError> {
        let bad = || SecretError::BadReference {
            reference: reference.to_string(),
        };
        let (provider, rest) = reference.split_once(':').ok_or_else(bad)?;
        let (source_name, key) = rest.split_once(':').ok_or_else(bad)?;
        let group = format!("{provider}:{source_name}");
        let values = {
            let mut fetched = self
                .fetched
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if !fetched.contains_key(&group) {
                let result = self.fetch(provider, source_name)?;
                fetched.insert(group.clone(), result);
            }
            fetched.get(&group).cloned()
        };
        let values = match values {
            Some(Ok(values)) => values,
            Some(Err(reason)) => {
                return Err(SecretError::Fetch {
                    source_name: source_name.to_string(),
                    reason,
                })
            }
            None => {
                return Err(SecretError::Fetch {
                    source_name: source_name.to_string(),
                    reason: "the source was not fetched".into(),
                })
            }
        };
        let Some(value) = values.get(key) else {
            let mut available: Vec<&str> = values.keys().map(String::as_str).collect();
            available.sort_unstable();
            return Err(SecretError::MissingKey {
                key: key.to_string(),
                source_name: source_name.to_string(),
                available: available.join(", "),
            });
        };
        self.revealed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(value.clone());
        Ok(value.clone())
    }

    /// Every value handed out so far (for hiding them in printed configs).
    pub fn revealed(&self) -> Vec<String> {
        self.revealed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Runs the provider for one source; a run that fails is kept as its error so that every
    /// reference to the source reports it without running the program again.
    fn fetch(&self, provider: &str, source_name: &str) -> Result<Fetched, SecretError> {
        tracing::debug!(provider, source = source_name, "fetching secrets");
        match provider {
            "onepassword" => {
                let source = self.providers.onepassword.get(source_name).ok_or_else(|| {
                    SecretError::UnknownSource {
                        provider: provider.into(),
                        source_name: source_name.into(),
                    }
                })?;
                Ok(fetch_onepassword(&self.programs.op, source))
            }
            "sops" => {
                let source = self.providers.sops.get(source_name).ok_or_else(|| {
                    SecretError::UnknownSource {
                        provider: provider.into(),
                        source_name: source_name.into(),
                    }
                })?;
                Ok(fetch_sops(&self.programs.sops, source, &self.dir))
            }
            _ => Err(SecretError::UnknownProvider {
                provider: provider.into(),
            }),
        }
    }
}

/// `op item get ITEM --vault VAULT --format json [--account ACCOUNT]`, fields by label.
fn fetch_onepassword(op: &Path, source: &OnePasswordSource) -> Fetched {
    let mut args = vec![
        "item".to_string(),
        "get".into(),
        source.item.clone(),
        "--vault".into(),
        source.vault.clone(),
        "--format".into(),
        "json".into(),
    ];
    if let Some(account) = source.account.as_ref().filter(|a| !a.is_empty()) {
        args.push("--account".into());
        args.push(account.clone());
    }
    let output = run_program(op, &args)?;
    parse_onepassword_item(&output)
}

/// The fields of `op item get --format json`: label → value.
pub fn parse_onepassword_item(json: &str) -> Result<HashMap<String, String>, String> {
    #[derive(serde::Deserialize)]
    struct Field {
        #[serde(default)]
        label: String,
        #[serde(default)]
        value: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(default)]
        fields: Vec<Field>,
    }
    let item: Item = serde_json::from_str(json)
        .map_err(|e| format!("failed to parse JSON output from 1Password CLI: {e}"))?;
    Ok(item
        .fields
        .into_iter()
        .map(|f| (f.label, f.value.unwrap_or_default()))
        .collect())
}

/// `sops decrypt --output-type FORMAT FILE`, flattened to `a.b.0` keys.
fn fetch_sops(sops: &Path, source: &SopsSource, dir: &Path) -> Fetched {
    let stage =
        |stage: &str, e: String| format!("provider=sops stage={stage} path={}: {e}", source.file);
    let format = sops_format(source).map_err(|e| stage("validate", e))?;
    let file = if Path::new(&source.file).is_absolute() {
        PathBuf::from(&source.file)
    } else {
        dir.join(&source.file)
    };
    let args = vec![
        "decrypt".to_string(),
        "--output-type".into(),
        format.to_string(),
        file.to_string_lossy().into_owned(),
    ];
    let plaintext = run_program(sops, &args).map_err(|e| stage("decrypt", e))?;
    parse_sops_plaintext(format, &plaintext).map_err(|e| stage("parse", e))
}

/// Haloy's `parseSOPSPlaintext`: dotenv lines, or YAML/JSON flattened with dotted keys.
pub fn parse_sops_plaintext(format: &str, text: &str) -> Result<HashMap<String, String>, String> {
    let data: serde_json::Value = match format {
        "dotenv" => {
            let mut dec = Decoder::new("sops output", Format::Yaml);
            let vars = super::env::parse_dotenv(text, "sops output", &mut dec);
            if let Some(p) = dec.problems.first() {
                return Err(format!("line {}: {}", p.pos.line, p.message));
            }
            return Ok(vars);
        }
        "yaml" => serde_yaml::from_str(text).map_err(|e| e.to_string())?,
        "json" => serde_json::from_str(text).map_err(|e| e.to_string())?,
        other => return Err(format!("unsupported sops format `{other}`")),
    };
    let mut out = HashMap::new();
    flatten(&data, &mut Vec::new(), &mut out)?;
    Ok(out)
}

fn flatten(
    value: &serde_json::Value,
    path: &mut Vec<String>,
    out: &mut HashMap<String, String>,
) -> Result<(), String> {
    use serde_json::Value;
    let mut descend = |key: String, child: &Value, out: &mut HashMap<String, String>| {
        path.push(key);
        let result = flatten(child, path, out);
        path.pop();
        result
    };
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for key in keys {
                if key.contains('.') {
                    return Err(format!(
                        "object key `{key}` contains `.` which is not supported"
                    ));
                }
                descend(key.clone(), &map[key], out)?;
            }
            Ok(())
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                descend(i.to_string(), item, out)?;
            }
            Ok(())
        }
        scalar => {
            if path.is_empty() {
                return Err(
                    "top-level scalar values are not supported; expected object or array".into(),
                );
            }
            let key = path.join(".");
            if out.contains_key(&key) {
                return Err(format!("flattened key collision at `{key}`"));
            }
            let text = match scalar {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.insert(key, text);
            Ok(())
        }
    }
}

/// Runs a provider's CLI without a shell and returns its trimmed stdout (Haloy's
/// `RunCLICommand`); its stderr goes into the error, never its stdout (the secrets).
fn run_program(program: &Path, args: &[String]) -> Result<String, String> {
    let name = program.display().to_string();
    // The secret providers' own CLIs are how Haloy reads secrets (see clippy.toml).
    #[allow(clippy::disallowed_methods)]
    let mut command = std::process::Command::new(program);
    // stdin stays the terminal's: `op` may ask to unlock.
    command.args(args).stdin(std::process::Stdio::inherit());
    let output = command.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("command not found: `{name}`. Is it installed and in your PATH?")
        } else {
            format!("failed to execute `{name}`: {e}")
        }
    })?;
    if !output.status.success() {
        return Err(format!(
            "command `{name}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    String::from_utf8(output.stdout)
        .map(|s| s.trim().to_string())
        .map_err(|_| format!("`{name}` printed something that is not UTF-8"))
}

#[cfg(test)]
#[path = "tests/secrets.rs"]
mod tests;
