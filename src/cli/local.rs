//! Commands that need no server: `validate-config`, `targets`, `server add/list/delete`, and
//! the target selection (`-t`, `-a`) shared with the remote commands.

use super::servers::{self, ClientConfig};
use super::{CliError, CommonArgs, ServerCommand};
use crate::config::{
    load_deploy_config, DeployConfig, DeploymentStrategy, DomainSpec, EnvVar, ResolvedApp,
    SecretString,
};
use serde::Serialize;
use std::process::ExitCode;

/// Loads the config and picks the apps the command acts on. `require_choice` makes a file with
/// several targets demand `-t` or `-a` (deploys); otherwise all targets are taken.
pub fn select_apps(
    common: &CommonArgs,
    require_choice: bool,
) -> Result<(DeployConfig, Vec<ResolvedApp>), CliError> {
    let cfg = load_deploy_config(common.config.as_deref())?;
    let file = cfg.file.display().to_string();
    if !cfg.has_targets {
        if !common.targets.is_empty() {
            return Err(CliError::Usage(format!(
                "{file} has no `targets:`; drop -t/--targets"
            )));
        }
        let apps = cfg.apps.clone();
        return Ok((cfg, apps));
    }
    let keys: Vec<&str> = cfg
        .apps
        .iter()
        .filter_map(|a| a.target.as_deref())
        .collect();
    if !common.targets.is_empty() {
        let mut picked = Vec::new();
        for wanted in &common.targets {
            let Some(app) = cfg
                .apps
                .iter()
                .find(|a| a.target.as_deref() == Some(wanted))
            else {
                let mut msg = format!(
                    "target `{wanted}` is not in {file} (targets: {})",
                    keys.join(", ")
                );
                if let Some(s) = crate::config::decode::suggest(wanted, &keys) {
                    msg.push_str(&format!("; did you mean `{s}`?"));
                }
                return Err(CliError::Usage(msg));
            };
            if !picked.iter().any(|p: &ResolvedApp| p.target == app.target) {
                picked.push(app.clone());
            }
        }
        return Ok((cfg, picked));
    }
    if common.all || !require_choice || cfg.apps.len() == 1 {
        let apps = cfg.apps.clone();
        return Ok((cfg, apps));
    }
    Err(CliError::Usage(format!(
        "{file} has {} targets ({}); pick some with -t {} or use -a for all",
        keys.len(),
        keys.join(", "),
        keys.first().copied().unwrap_or("NAME")
    )))
}

/// Haloy's `--all` rule (internal/haloy/deploy.go): targets with `protected: true` (the
/// `database` preset sets it) are left out and named, unless `--include-protected`; picking
/// them with `-t` deploys them. `skip` is `--all` without `--include-protected`.
pub fn skip_protected(apps: Vec<ResolvedApp>, skip: bool) -> Result<Vec<ResolvedApp>, CliError> {
    if !skip {
        return Ok(apps);
    }
    let (protected, rest): (Vec<ResolvedApp>, Vec<ResolvedApp>) =
        apps.into_iter().partition(|a| a.protected);
    if !protected.is_empty() {
        let names: Vec<&str> = protected.iter().map(ResolvedApp::label).collect();
        eprintln!("warning: skipping protected targets: {}", names.join(", "));
        eprintln!(
            "warning: use --include-protected to deploy these, or --targets to deploy explicitly"
        );
    }
    if rest.is_empty() {
        return Err(CliError::Usage(
            "no targets to deploy (all targets are protected); add --include-protected or pick them with -t".into(),
        ));
    }
    Ok(rest)
}

#[derive(Serialize)]
struct ImageView<'a> {
    repository: &'a str,
    tag: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<&'a str>,
}

/// The `validate-config --json` object: exactly these keys, port as a string.
#[derive(Serialize)]
struct ValidateView<'a> {
    target: Option<&'a str>,
    name: &'a str,
    server: Option<&'a str>,
    image: ImageView<'a>,
    replicas: u32,
    port: String,
    health_check_path: &'a str,
    min_ready_seconds: u32,
    deployment_strategy: DeploymentStrategy,
    domains: &'a [DomainSpec],
    /// Values from secret providers hidden.
    env: Vec<EnvVar>,
}

fn view(app: &ResolvedApp) -> ValidateView<'_> {
    ValidateView {
        target: app.target.as_deref(),
        name: &app.name,
        server: app.server.as_deref(),
        image: ImageView {
            repository: &app.image.repository,
            tag: &app.image.tag,
            digest: app.image.digest.as_deref(),
        },
        replicas: app.replicas,
        port: app.port.to_string(),
        health_check_path: &app.health_check_path,
        min_ready_seconds: app.min_ready_seconds,
        deployment_strategy: app.deployment_strategy,
        domains: &app.domains,
        env: hide_secret_env(&app.env, &app.secret_values),
    }
}

/// `text` with every value resolved from a secret provider replaced by `<hidden>` (also where
/// `${VAR}` interpolation copied one into another value).
pub fn hide_secrets(text: &str, secrets: &[SecretString]) -> String {
    secrets
        .iter()
        .map(SecretString::expose)
        .filter(|s| !s.is_empty())
        .fold(text.to_string(), |text, secret| {
            text.replace(secret, "<hidden>")
        })
}

fn hide_secret_env(env: &[EnvVar], secrets: &[SecretString]) -> Vec<EnvVar> {
    env.iter()
        .map(|e| EnvVar {
            name: e.name.clone(),
            value: hide_secrets(&e.value, secrets),
        })
        .collect()
}

/// A copy safe to print: registry passwords and values from secret providers replaced
/// (api_token is never serialized). Haloy prints secrets here in plain text; this does not.
fn redacted(app: &ResolvedApp) -> ResolvedApp {
    let mut app = app.clone();
    let secrets = std::mem::take(&mut app.secret_values);
    if let Some(reg) = app.image.registry.as_mut() {
        reg.password = SecretString::new("<hidden>");
        reg.username = hide_secrets(&reg.username, &secrets);
    }
    if let Some(build) = app.image.build_config.as_mut() {
        build.args = hide_secret_env(&build.args, &secrets);
    }
    app.env = hide_secret_env(&app.env, &secrets);
    app
}

pub fn validate_config(
    common: &CommonArgs,
    show_resolved: bool,
    json: bool,
) -> Result<ExitCode, CliError> {
    let (cfg, apps) = select_apps(common, false)?;
    if json {
        let views: Vec<ValidateView<'_>> = apps.iter().map(view).collect();
        let text = serde_json::to_string_pretty(&views)
            .map_err(|e| CliError::Usage(format!("cannot encode JSON: {e}")))?;
        println!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    if show_resolved {
        let safe: Vec<ResolvedApp> = apps.iter().map(redacted).collect();
        let text = serde_yaml::to_string(&safe)
            .map_err(|e| CliError::Usage(format!("cannot encode YAML: {e}")))?;
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let labels: Vec<&str> = apps.iter().map(ResolvedApp::label).collect();
    println!(
        "{} is valid ({} app{}: {})",
        cfg.file.display(),
        apps.len(),
        if apps.len() == 1 { "" } else { "s" },
        labels.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

pub fn targets(common: &CommonArgs) -> Result<ExitCode, CliError> {
    let cfg = load_deploy_config(common.config.as_deref())?;
    if !cfg.has_targets {
        let name = cfg.apps.first().map_or("", |a| a.name.as_str());
        println!(
            "{} has no targets; it deploys one app: {name}",
            cfg.file.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 5]> = cfg
        .apps
        .iter()
        .map(|a| {
            [
                a.label().to_string(),
                a.name.clone(),
                a.server.clone().unwrap_or_else(|| "-".into()),
                a.replicas.to_string(),
                a.domains
                    .iter()
                    .map(|d| d.domain.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ]
        })
        .collect();
    print_table(&["TARGET", "NAME", "SERVER", "REPLICAS", "DOMAINS"], &rows);
    Ok(ExitCode::SUCCESS)
}

/// Prints left-aligned columns.
pub fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == N {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// The token for `server add`: the first line of stdin, else HALOY_API_TOKEN, else the
/// argument (with a warning: argv is in shell history and `ps`).
fn token_to_store(argument: Option<&str>, from_stdin: bool) -> Result<String, CliError> {
    let token = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|source| CliError::Io {
                action: "read the token from",
                path: std::path::PathBuf::from("<stdin>"),
                source,
            })?;
        line
    } else if let Some(t) = argument {
        eprintln!("warning: a token on the command line lands in shell history and is visible in `ps`; prefer --token-stdin or {}", servers::TOKEN_ENV);
        t.to_string()
    } else {
        std::env::var(servers::TOKEN_ENV).map_err(|_| {
            CliError::Usage(format!(
                "no token given: pipe it with --token-stdin (e.g. `--token-stdin < token-file`) or set {}",
                servers::TOKEN_ENV
            ))
        })?
    };
    let token = token.trim();
    if token.is_empty() {
        return Err(CliError::Usage("the token must not be empty".into()));
    }
    Ok(token.to_string())
}

pub fn server(command: &ServerCommand) -> Result<ExitCode, CliError> {
    let path = servers::client_config_path()?;
    let mut store = ClientConfig::load(&path)?;
    match command {
        ServerCommand::Add {
            url,
            token,
            token_stdin,
            insecure_http,
        } => {
            let url = servers::server_url(url)?;
            if servers::is_plain_http_to_remote(&url) && !insecure_http {
                return Err(CliError::Usage(format!(
                    "{url} is plain http:// to a non-loopback address: the token would cross the network readable by anyone on the path. Use HTTPS (haloyd's api.domain) or an SSH tunnel, or pass --insecure-http to allow it for this server"
                )));
            }
            let token = token_to_store(token.as_deref(), *token_stdin)?;
            store.servers.insert(url.clone(), token);
            if *insecure_http {
                store.insecure_http.insert(url.clone());
            } else {
                store.insecure_http.remove(&url);
            }
            store.save(&path)?;
            println!("stored {url} in {}", path.display());
        }
        ServerCommand::List => {
            if store.servers.is_empty() {
                println!("no servers stored (add one with `haloy server add <url> --token-stdin`)");
            }
            for url in store.servers.keys() {
                println!("{url}");
            }
        }
        // Talks to haloyd: `cli::run` sends it to `remote::server_registry`.
        ServerCommand::Registry { .. } => {
            return Err(CliError::Usage(
                "`server registry` talks to haloyd; it is not a local command".into(),
            ))
        }
        ServerCommand::Delete { url } => {
            let normalized = servers::server_url(url)?;
            let removed = store
                .servers
                .remove(&normalized)
                .or_else(|| store.servers.remove(url));
            store.insecure_http.remove(&normalized);
            store.insecure_http.remove(url);
            if removed.is_none() {
                return Err(CliError::Usage(format!(
                    "{normalized} is not stored in {}",
                    path.display()
                )));
            }
            store.save(&path)?;
            println!("removed {normalized}");
        }
        // These talk to haloyd: `cli::run` sends them to `remote`.
        ServerCommand::Logs { .. } | ServerCommand::Version { .. } => {
            return Err(CliError::Usage(
                "`server logs` and `server version` need a server connection".into(),
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `haloy export kubernetes`: every selected target to manifests, notes on stderr.
pub fn export_kubernetes(
    common: &CommonArgs,
    options: &crate::export::kubernetes::Options,
    output: &str,
) -> Result<ExitCode, CliError> {
    use crate::export::kubernetes::export;
    let (_, apps) = select_apps(common, false)?;
    let mut stdout = String::new();
    for app in &apps {
        let manifests = export(app, options).map_err(|e| CliError::Usage(e.to_string()))?;
        for note in &manifests.notes {
            eprintln!("note: {}: {note}", app.label());
        }
        let yaml = manifests
            .to_yaml()
            .map_err(|e| CliError::Usage(e.to_string()))?;
        if output == "-" {
            stdout.push_str(&yaml);
            continue;
        }
        let dir = std::path::Path::new(output);
        std::fs::create_dir_all(dir).map_err(|source| CliError::Io {
            action: "create",
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(format!("{}.yaml", app.label()));
        // The file holds Secrets: readable by its owner only.
        crate::files::write_atomic(&path, yaml.as_bytes(), 0o600).map_err(|source| {
            CliError::Io {
                action: "write",
                path: path.clone(),
                source,
            }
        })?;
        eprintln!("wrote {}", path.display());
    }
    print!("{stdout}");
    Ok(ExitCode::SUCCESS)
}
