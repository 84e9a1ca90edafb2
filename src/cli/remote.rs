//! Commands that talk to haloyd: deploy (targets of one server in turn, servers in parallel, with a line-per-step progress
//! view and a summary), status, logs, stop, rollback, rollback-targets and attach. Deploy,
//! rollback and stop only start a job on haloyd and then follow its events: cutting the CLI
//! short never cuts the job short, and `haloy attach ID` follows it again.

use super::hooks::{self, Hook};
use super::local::{print_table, select_apps, skip_protected};
use super::servers::{self, ClientConfig};
use super::{CliError, CommonArgs, RegistryCommand};
use crate::api::client::ApiClient;
use crate::api::types::*;
use crate::config::ResolvedApp;
use futures_util::future::join_all;
use std::path::Path;
use std::process::ExitCode;

/// One selected app and the client for its server.
struct Remote {
    app: ResolvedApp,
    client: ApiClient,
}

impl Remote {
    fn label(&self) -> &str {
        self.app.label()
    }

    /// Prints every line of `text` prefixed with `[label]` on stderr.
    fn eprint(&self, text: &str) {
        for line in text.lines() {
            eprintln!("[{}] {line}", self.label());
        }
    }

    /// Prints `error` as this target's failure and hands its text on for the summary.
    fn failed(&self, error: impl std::fmt::Display) -> String {
        let msg = error.to_string();
        self.eprint(&format!("error: {msg}"));
        msg
    }
}

fn connect_all(apps: Vec<ResolvedApp>) -> Result<Vec<Remote>, CliError> {
    let store = ClientConfig::load(&servers::client_config_path()?)?;
    apps.into_iter()
        .map(|app| {
            let server = match (&app.server, store.servers.len()) {
                (Some(s), _) => s.clone(),
                (None, 1) => store.servers.keys().next().cloned().unwrap_or_default(),
                (None, _) => {
                    return Err(CliError::Usage(format!(
                        "[{}] no `server` in the config and {}; add `server:` to haloy.yaml",
                        app.label(),
                        if store.servers.is_empty() {
                            "no server stored (`haloy server add <url> --token-stdin`)".to_string()
                        } else {
                            format!("{} servers stored, so none is implied", store.servers.len())
                        }
                    )))
                }
            };
            let url = servers::server_url(&server)?;
            servers::check_transport(&url, &store)
                .map_err(|e| CliError::Usage(format!("[{}] {e}", app.label())))?;
            let token = servers::token_for(app.api_token.as_ref(), &url, &store).ok_or_else(|| {
                CliError::Usage(format!(
                    "[{}] no API token for {url}: set `api_token` in haloy.yaml, export {}, or run `haloy server add {url} --token-stdin`",
                    app.label(),
                    servers::TOKEN_ENV
                ))
            })?;
            let client = ApiClient::new(&url, Some(token))?;
            Ok(Remote { app, client })
        })
        .collect()
}

/// Clients for `url`, or for the servers of haloy.yaml's targets (each once).
fn server_clients(common: &CommonArgs, url: Option<&str>) -> Result<Vec<ApiClient>, CliError> {
    let Some(url) = url else {
        let (_, apps) = select_apps(common, false)?;
        let mut clients: Vec<ApiClient> = Vec::new();
        for remote in connect_all(apps)? {
            if !clients.iter().any(|c| c.url() == remote.client.url()) {
                clients.push(remote.client);
            }
        }
        return Ok(clients);
    };
    let store = ClientConfig::load(&servers::client_config_path()?)?;
    let url = servers::server_url(url)?;
    servers::check_transport(&url, &store)?;
    let token = servers::token_for(None, &url, &store).ok_or_else(|| {
        CliError::Usage(format!(
            "no API token for {url}: export {} or run `haloy server add {url} --token-stdin`",
            servers::TOKEN_ENV
        ))
    })?;
    Ok(vec![ApiClient::new(&url, Some(token))?])
}

/// `haloy server version`: haloyd's version on each server.
pub async fn server_version(
    common: &CommonArgs,
    server: Option<&str>,
) -> Result<ExitCode, CliError> {
    let clients = server_clients(common, server)?;
    let results = join_all(clients.iter().map(ApiClient::version)).await;
    let mut failed = 0;
    for (client, result) in clients.iter().zip(results) {
        match result {
            Ok(v) => println!("{} haloyd {}", client.url(), v.version),
            Err(e) => {
                failed += 1;
                eprintln!("[{}] error: {e}", client.url());
            }
        }
    }
    outcome(failed, clients.len())
}

/// `haloy server logs`: follows haloyd's log or the access log until interrupted; lines are
/// prefixed with the server when there are several.
pub async fn server_logs(
    common: &CommonArgs,
    server: Option<&str>,
    access: bool,
    app: Option<&str>,
) -> Result<ExitCode, CliError> {
    let clients = server_clients(common, server)?;
    let many = clients.len() > 1;
    let followed = clients.iter().map(|client| async move {
        let mut stream = match client.server_logs(access, app).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("[{}] error: {e}", client.url());
                return false;
            }
        };
        loop {
            match stream.next::<String>().await {
                Ok(Some(line)) if many => println!("[{}] {line}", client.url()),
                Ok(Some(line)) => println!("{line}"),
                Ok(None) => return true,
                Err(e) => {
                    eprintln!("[{}] error: {e}", client.url());
                    return false;
                }
            }
        }
    });
    let results = join_all(followed).await;
    outcome(results.iter().filter(|ok| !**ok).count(), clients.len())
}

/// Success, or the number of failed targets as an error.
fn outcome(failed: usize, total: usize) -> Result<ExitCode, CliError> {
    if failed == 0 {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(CliError::TargetsFailed { failed, total })
    }
}

/// `haloy deploy` flags beyond the common ones.
#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    /// Upload the image from this OCI layout, OCI archive or `docker save` tar.
    pub image_from: Option<std::path::PathBuf>,
    /// Follow each job without printing its steps (only the outcome).
    pub no_logs: bool,
    /// With `--all`, keep `protected` targets.
    pub include_protected: bool,
}

/// Haloy's order (internal/haloy/deploy.go): protected targets dropped from `--all`, then
/// `global_pre_deploy`, then per target `pre_deploy` → deploy → `post_deploy`, and
/// `global_post_deploy` once every target succeeded.
pub async fn deploy(common: &CommonArgs, options: DeployOptions) -> Result<ExitCode, CliError> {
    let (cfg, apps) = select_apps(common, true)?;
    let apps = skip_protected(apps, common.all && !options.include_protected)?;
    let mut remotes = connect_all(apps)?;
    let dir = hooks::work_dir(&cfg.file);
    // Global hooks are top-level keys: every resolved target carries the same lists.
    let (global_pre, global_post) = remotes
        .first()
        .map(|r| {
            (
                r.app.global_pre_deploy.clone(),
                r.app.global_post_deploy.clone(),
            )
        })
        .unwrap_or_default();
    hooks::run(Hook::GlobalPreDeploy, &global_pre, &dir).await?;
    // Images are built and uploaded after the global pre-deploy hooks, as in Haloy (a hook
    // may produce what the build copies).
    let supplied = remotes
        .iter_mut()
        .map(|Remote { app, client }| (app, &*client))
        .collect();
    super::images::supply_all(&cfg.file, options.image_from.as_deref(), supplied)
        .await
        .map_err(Box::new)?;
    let results = per_server_in_order(
        &remotes,
        |r| r.client.url(),
        |r| deploy_one(r, options.no_logs, &dir),
        |r| r.failed("not deployed: an earlier target on the same server failed"),
    )
    .await;
    print_summary(&remotes, &results);
    let failed = results.iter().filter(|r| r.is_err()).count();
    if failed == 0 {
        hooks::run(Hook::GlobalPostDeploy, &global_post, &dir).await?;
    }
    outcome(failed, results.len())
}

/// Runs `run` on every item: items of one server one after another in their order, a failure
/// skipping the rest of that server (`skipped` gives their error), servers in parallel.
/// This is Haloy's order (internal/haloy/deploy.go, `configloader.TargetsByServer` then one
/// errgroup goroutine per server deploying its targets in a loop that stops at the first
/// error: "deployments to the same server are serialized ... targets that are on different
/// servers are run in parallel"). Unlike Haloy's errgroup, a failure on one server does not
/// cancel the others: their jobs run on haloyd to the end anyway. Results are in item order.
pub(crate) async fn per_server_in_order<'a, T, R, E, Fut>(
    items: &'a [T],
    server_of: impl Fn(&'a T) -> String,
    run: impl Fn(&'a T) -> Fut,
    skipped: impl Fn(&'a T) -> E,
) -> Vec<Result<R, E>>
where
    Fut: std::future::Future<Output = Result<R, E>>,
{
    let mut servers: Vec<(String, Vec<usize>)> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let server = server_of(item);
        match servers.iter_mut().find(|(s, _)| *s == server) {
            Some((_, indexes)) => indexes.push(index),
            None => servers.push((server, vec![index])),
        }
    }
    let run = &run;
    let skipped = &skipped;
    let per_server = servers.into_iter().map(|(_, indexes)| async move {
        let mut results = Vec::with_capacity(indexes.len());
        let mut failed = false;
        for index in indexes {
            let item = &items[index];
            let result = if failed {
                Err(skipped(item))
            } else {
                run(item).await
            };
            failed |= result.is_err();
            results.push((index, result));
        }
        results
    });
    let mut all: Vec<(usize, Result<R, E>)> =
        join_all(per_server).await.into_iter().flatten().collect();
    all.sort_by_key(|(index, _)| *index);
    all.into_iter().map(|(_, result)| result).collect()
}

/// One target: its `pre_deploy` hooks (a failure sends nothing), the deploy job, then its
/// `post_deploy` hooks once the job succeeded. Haloy runs `post_deploy` after the log stream
/// ends whatever the outcome; here a failed deploy skips it (a post hook that e.g. announces a
/// release must not run for one that did not happen).
async fn deploy_one(r: &Remote, no_logs: bool, dir: &Path) -> Result<String, String> {
    hooks::run(Hook::PreDeploy, &r.app.pre_deploy, dir)
        .await
        .map_err(|e| r.failed(e))?;
    let app = &r.app;
    println!(
        "[{}] deploying {} ({}, {} replica{}, {}) to {}",
        r.label(),
        app.name,
        app.image.reference(),
        app.replicas,
        if app.replicas == 1 { "" } else { "s" },
        serde_json::to_value(app.deployment_strategy)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        r.client.url()
    );
    let accepted = r.client.deploy(app).await.map_err(|e| r.failed(e))?;
    println!("[{}] deployment {}", r.label(), accepted.deployment_id);
    let done = follow_job(r, &accepted.deployment_id, "deployment", no_logs).await?;
    hooks::run(Hook::PostDeploy, &r.app.post_deploy, dir)
        .await
        .map_err(|e| r.failed(e))?;
    Ok(done)
}

/// Prints the progress events of a job until it finishes; `noun` names it ("deployment").
/// `quiet` prints only the outcome (`deploy --no-logs`).
async fn follow_job(r: &Remote, id: &str, noun: &str, quiet: bool) -> Result<String, String> {
    // Deployments keep their older path, which haloyd releases without jobs also serve.
    let stream = if noun == "deployment" {
        r.client.deploy_events(id).await
    } else {
        r.client.job_events(id).await
    };
    let mut stream = stream.map_err(|e| r.failed(e))?;
    loop {
        match stream.next::<DeployEvent>().await {
            Ok(Some(ev)) => {
                if !quiet || ev.kind == EventKind::Finished {
                    print_event(r.label(), noun, &ev);
                }
                if ev.kind == EventKind::Finished {
                    return if ev.ok == Some(true) {
                        Ok(format!("{noun} {id}"))
                    } else {
                        Err(ev.message)
                    };
                }
            }
            Ok(None) => {
                return Err(r.failed(format!(
                    "haloyd at {} closed the progress stream of {id} before it finished; see `haloy status`",
                    r.client.url()
                )))
            }
            Err(e) => return Err(r.failed(e)),
        }
    }
}

fn print_event(label: &str, noun: &str, ev: &DeployEvent) {
    let replica = ev
        .replica
        .map(|n| format!("replica {n}: "))
        .unwrap_or_default();
    match ev.kind {
        EventKind::Step => {
            let step = ev.step.as_deref().unwrap_or("step").replace('_', " ");
            if ev.message.is_empty() {
                println!("[{label}] {replica}{step}");
            } else {
                println!("[{label}] {replica}{step}: {}", ev.message);
            }
        }
        EventKind::Log => {
            for line in ev.message.lines() {
                println!("[{label}] {replica}{line}");
            }
        }
        EventKind::Finished => {
            let word = if ev.ok == Some(true) {
                "succeeded"
            } else {
                "FAILED"
            };
            let mut lines = ev.message.lines();
            println!(
                "[{label}] {noun} {word}: {}",
                lines.next().unwrap_or_default()
            );
            for line in lines {
                println!("[{label}]   {line}");
            }
        }
    }
}

fn print_summary(remotes: &[Remote], results: &[Result<String, String>]) {
    println!();
    println!("Summary:");
    for (r, res) in remotes.iter().zip(results) {
        match res {
            Ok(job) => println!("  {:<16} ok      {job} on {}", r.label(), r.client.url()),
            Err(e) => println!(
                "  {:<16} FAILED  {}",
                r.label(),
                e.lines().next().unwrap_or_default()
            ),
        }
    }
}

pub async fn status(common: &CommonArgs, json: bool) -> Result<ExitCode, CliError> {
    let (_, apps) = select_apps(common, false)?;
    let remotes = connect_all(apps)?;
    let results = join_all(remotes.iter().map(|r| r.client.app(&r.app.name))).await;
    let mut statuses = Vec::new();
    let mut failed = 0;
    for (r, res) in remotes.iter().zip(results) {
        match res {
            Ok(s) => statuses.push((r, s)),
            Err(e) => {
                failed += 1;
                let msg = if e.status() == Some(404) {
                    format!("app `{}` is not deployed on {}", r.app.name, r.client.url())
                } else {
                    e.to_string()
                };
                r.eprint(&format!("error: {msg}"));
            }
        }
    }
    if json {
        let list: Vec<&AppStatus> = statuses.iter().map(|(_, s)| s).collect();
        let text = serde_json::to_string_pretty(&list)
            .map_err(|e| CliError::Usage(format!("cannot encode JSON: {e}")))?;
        println!("{text}");
    } else {
        for (i, (r, s)) in statuses.iter().enumerate() {
            if i > 0 {
                println!();
            }
            print_status(r, s);
        }
    }
    outcome(failed, remotes.len())
}

fn print_status(r: &Remote, s: &AppStatus) {
    let target = r
        .app
        .target
        .as_deref()
        .map(|t| format!(" (target {t})"))
        .unwrap_or_default();
    println!("app {}{target} on {}", s.name, r.client.url());
    println!("  deployment  {}", s.deployment_id);
    match &s.digest {
        Some(d) => println!("  image       {} ({d})", s.image),
        None => println!("  image       {}", s.image),
    }
    println!("  strategy    {}", s.strategy);
    if let Some(op) = &s.last_operation {
        let outcome = match (&op.finished_at, &op.message) {
            (Some(at), Some(message)) => format!(" at {at}: {message}"),
            (Some(at), None) => format!(" at {at}"),
            (None, _) => format!(
                " since {} (`haloy attach {}` follows it)",
                op.started_at, op.job_id
            ),
        };
        println!(
            "  last op     {} {} {}{outcome}",
            op.kind, op.job_id, op.state
        );
    }
    let domains = if s.domains.is_empty() {
        "-".to_string()
    } else {
        s.domains.join(", ")
    };
    println!("  domains     {domains}");
    for cert in &s.certificates {
        let state = match (&cert.expires, &cert.last_error) {
            (_, Some(error)) => format!(
                "failing: {error} (next try {})",
                cert.next_retry.as_deref().unwrap_or("soon")
            ),
            (Some(expires), None) => format!("valid until {expires}"),
            (None, None) => "being obtained".to_string(),
        };
        println!("  https       {}: {state}", cert.domain);
    }
    let rows: Vec<[String; 9]> = s
        .replicas
        .iter()
        .map(|rep| {
            [
                rep.replica.to_string(),
                rep.state.label().to_string(),
                rep.ip.clone().unwrap_or_else(|| "-".into()),
                human_duration(rep.uptime_seconds),
                rep.restarts.to_string(),
                rep.requests.to_string(),
                rep.errors.to_string(),
                rep.container_id.clone(),
                rep.last_health.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print_table(
        &[
            "  REPLICA",
            "STATE",
            "IP",
            "UPTIME",
            "RESTARTS",
            "REQUESTS",
            "ERRORS",
            "CONTAINER",
            "HEALTH",
        ],
        &rows
            .into_iter()
            .map(|mut row| {
                row[0] = format!("  {}", row[0]);
                row
            })
            .collect::<Vec<_>>(),
    );
}

/// `3d4h`, `2h5m`, `3m12s`, `45s`.
pub fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// `raw` (Haloy's `logs --raw`) prints the lines alone, without target or replica prefixes.
pub async fn logs(common: &CommonArgs, query: LogsQuery, raw: bool) -> Result<ExitCode, CliError> {
    let (_, apps) = select_apps(common, true)?;
    let remotes = connect_all(apps)?;
    let many = remotes.len() > 1 && !raw;
    let results = join_all(remotes.iter().map(|r| logs_one(r, &query, many, raw))).await;
    let failed = results.iter().filter(|ok| !**ok).count();
    outcome(failed, remotes.len())
}

async fn logs_one(r: &Remote, query: &LogsQuery, prefix_target: bool, raw: bool) -> bool {
    let mut stream = match r.client.logs(&r.app.name, query).await {
        Ok(s) => s,
        Err(e) => {
            r.eprint(&format!("error: {e}"));
            return false;
        }
    };
    let target = if prefix_target {
        format!("[{}] ", r.label())
    } else {
        String::new()
    };
    loop {
        match stream.next::<LogLine>().await {
            Ok(Some(line)) => {
                let replica = if query.all && !raw {
                    format!("[replica {}] ", line.replica)
                } else {
                    String::new()
                };
                match line.stream {
                    LogStreamKind::Stdout => println!("{target}{replica}{}", line.line),
                    LogStreamKind::Stderr => eprintln!("{target}{replica}{}", line.line),
                }
            }
            Ok(None) => return true,
            Err(e) => {
                r.eprint(&format!("error: {e}"));
                return false;
            }
        }
    }
}

/// `server` (Haloy's `stop --server`) replaces the config's `server:` of every selected target.
pub async fn stop(
    common: &CommonArgs,
    req: StopRequest,
    server: Option<&str>,
) -> Result<ExitCode, CliError> {
    let (_, mut apps) = select_apps(common, true)?;
    if let Some(server) = server {
        for app in &mut apps {
            app.server = Some(server.to_string());
        }
    }
    let remotes = connect_all(apps)?;
    let noun = if req.remove_containers {
        "remove"
    } else {
        "stop"
    };
    let req = &req;
    let results = join_all(remotes.iter().map(|r| async move {
        let accepted = r
            .client
            .stop(&r.app.name, req)
            .await
            .map_err(|e| r.failed(e))?;
        println!(
            "[{}] {noun} job {} for {} on {} (runs to the end even if this command is interrupted)",
            r.label(),
            accepted.job_id,
            r.app.name,
            r.client.url()
        );
        follow_job(r, &accepted.job_id, noun, false).await
    }))
    .await;
    print_summary(&remotes, &results);
    outcome(results.iter().filter(|r| r.is_err()).count(), results.len())
}

/// Follows a running or finished job (from `haloy status`, or printed when it started) until
/// it ends; the exit status is the job's outcome.
pub async fn attach(common: &CommonArgs, job_id: &str) -> Result<ExitCode, CliError> {
    let (_, apps) = select_apps(common, true)?;
    let remotes = connect_all(apps)?;
    let results = join_all(remotes.iter().map(|r| follow_job(r, job_id, "job", false))).await;
    print_summary(&remotes, &results);
    outcome(results.iter().filter(|r| r.is_err()).count(), results.len())
}

pub async fn rollback_targets(common: &CommonArgs) -> Result<ExitCode, CliError> {
    let (_, apps) = select_apps(common, true)?;
    let remotes = connect_all(apps)?;
    let results = join_all(
        remotes
            .iter()
            .map(|r| r.client.rollback_targets(&r.app.name)),
    )
    .await;
    let mut failed = 0;
    for (r, res) in remotes.iter().zip(results) {
        match res {
            Ok(list) => {
                println!("[{}] {} on {}", r.label(), r.app.name, r.client.url());
                let rows: Vec<[String; 5]> = list
                    .iter()
                    .map(|d| {
                        [
                            d.deployment_id.clone(),
                            d.created_at.clone(),
                            d.image.clone(),
                            d.replicas.to_string(),
                            if d.current {
                                "current".into()
                            } else {
                                String::new()
                            },
                        ]
                    })
                    .collect();
                print_table(&["DEPLOYMENT", "CREATED", "IMAGE", "REPLICAS", ""], &rows);
            }
            Err(e) => {
                failed += 1;
                r.eprint(&format!("error: {e}"));
            }
        }
    }
    outcome(failed, remotes.len())
}

/// Haloy's `prune-images`: per target, the plan (or what was removed with `yes`).
pub async fn prune_images(
    common: &CommonArgs,
    keep: Option<u32>,
    yes: bool,
) -> Result<ExitCode, CliError> {
    let (_, apps) = select_apps(common, true)?;
    let remotes = connect_all(apps)?;
    let results = join_all(remotes.iter().map(|r| {
        let request = PruneImagesRequest {
            keep: keep.unwrap_or(r.app.image_history_count() as u32),
            apply: yes,
        };
        async move { r.client.prune_images(&r.app.name, &request).await }
    }))
    .await;
    let mut failed = 0;
    for (r, res) in remotes.iter().zip(results) {
        match res {
            Ok(plan) => print_prune_plan(r, &plan),
            Err(e) => {
                failed += 1;
                r.eprint(&format!("error: {e}"));
            }
        }
    }
    if !yes && failed == 0 {
        println!("dry run: nothing was removed; run again with --yes to remove the images marked `remove`");
    }
    outcome(failed, remotes.len())
}

fn print_prune_plan(r: &Remote, plan: &PruneImagesResponse) {
    println!(
        "[{}] {} on {}: keeping the newest {} deployment image{}",
        r.label(),
        r.app.name,
        r.client.url(),
        plan.keep,
        if plan.keep == 1 { "" } else { "s" }
    );
    let rows: Vec<[String; 3]> = plan
        .images
        .iter()
        .map(|i| {
            let action = match (i.action.as_str(), plan.applied) {
                ("remove", true) => "removed",
                (action, _) => action,
            };
            [
                action.to_string(),
                i.image.clone(),
                i.deployment_ids.join(","),
            ]
        })
        .collect();
    print_table(&["ACTION", "IMAGE", "DEPLOYMENTS"], &rows);
}

pub async fn rollback(common: &CommonArgs, deployment_id: &str) -> Result<ExitCode, CliError> {
    let (_, apps) = select_apps(common, true)?;
    let remotes = connect_all(apps)?;
    let results = join_all(remotes.iter().map(|r| async move {
        println!(
            "[{}] rolling {} back to {deployment_id}",
            r.label(),
            r.app.name
        );
        let accepted = r
            .client
            .rollback(&r.app.name, deployment_id)
            .await
            .map_err(|e| r.failed(e))?;
        println!("[{}] deployment {}", r.label(), accepted.deployment_id);
        follow_job(r, &accepted.deployment_id, "deployment", false).await
    }))
    .await;
    print_summary(&remotes, &results);
    outcome(results.iter().filter(|r| r.is_err()).count(), results.len())
}

/// The one selected app and a client for its server (`haloy exec`, `haloy tunnel`).
pub(super) fn connect_one(
    common: &CommonArgs,
    command: &str,
) -> Result<(ResolvedApp, ApiClient), CliError> {
    let (_, apps) = select_apps(common, true)?;
    if apps.len() != 1 {
        return Err(CliError::Usage(format!(
            "`haloy {command}` works on one target; pick it with --targets NAME"
        )));
    }
    let remote = connect_all(apps)?
        .pop()
        .ok_or_else(|| CliError::Usage(format!("`haloy {command}` needs a target")))?;
    Ok((remote.app, remote.client))
}

/// The haloyd clients `server registry` talks to: `--server`, else each distinct server of the
/// config's targets (Haloy's `server registry` takes the same choice).
fn registry_clients(common: &CommonArgs, server: Option<&str>) -> Result<Vec<ApiClient>, CliError> {
    if let Some(server) = server {
        let store = ClientConfig::load(&servers::client_config_path()?)?;
        let url = servers::server_url(server)?;
        servers::check_transport(&url, &store)?;
        let token = servers::token_for(None, &url, &store).ok_or_else(|| {
            CliError::Usage(format!(
                "no API token for {url}: export {} or run `haloy server add {url} --token-stdin`",
                servers::TOKEN_ENV
            ))
        })?;
        return Ok(vec![ApiClient::new(&url, Some(token))?]);
    }
    let (_, apps) = select_apps(common, false)?;
    let mut clients: Vec<ApiClient> = Vec::new();
    for remote in connect_all(apps)? {
        if !clients.iter().any(|c| c.url() == remote.client.url()) {
            clients.push(remote.client);
        }
    }
    Ok(clients)
}

/// `haloy server registry login/logout/list`.
pub async fn server_registry(
    common: &CommonArgs,
    command: &RegistryCommand,
) -> Result<ExitCode, CliError> {
    match command {
        RegistryCommand::Login {
            registry,
            username,
            password_stdin,
            password,
            server,
        } => {
            let password = registry_password(*password_stdin, password.as_deref())?;
            let request = RegistryLoginRequest {
                server: registry.clone(),
                username: username.clone(),
                password,
            };
            for client in registry_clients(common, server.as_deref())? {
                let stored = client.registry_login(&request).await?;
                println!(
                    "{}: login for {} ({}) stored",
                    client.url(),
                    stored.server,
                    stored.username
                );
            }
        }
        RegistryCommand::Logout { registry, server } => {
            for client in registry_clients(common, server.as_deref())? {
                client.registry_logout(registry).await?;
                println!("{}: login for {registry} removed", client.url());
            }
        }
        RegistryCommand::List { server } => {
            for client in registry_clients(common, server.as_deref())? {
                let list = client.registries().await?;
                println!("{}", client.url());
                let rows: Vec<[String; 2]> =
                    list.into_iter().map(|e| [e.server, e.username]).collect();
                print_table(&["REGISTRY", "USERNAME"], &rows);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The password from stdin's first line (`--password-stdin`) or `-p`.
fn registry_password(
    from_stdin: bool,
    argument: Option<&str>,
) -> Result<crate::config::SecretString, CliError> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map_err(|source| CliError::Io {
                action: "read the password from",
                path: std::path::PathBuf::from("<stdin>"),
                source,
            })?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        argument.unwrap_or_default().to_string()
    };
    if password.is_empty() {
        return Err(CliError::Usage(
            "no registry password: pipe it in with --password-stdin".into(),
        ));
    }
    Ok(crate::config::SecretString::new(password))
}

#[cfg(test)]
#[path = "tests/remote.rs"]
mod tests;
