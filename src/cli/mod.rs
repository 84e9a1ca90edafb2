//! The `haloy` command line (clap): deploy, status, logs, stop, rollback, attach, exec, tunnel,
//! targets, validate-config, server, version, completion.

pub mod build;
pub mod exec;
pub mod hooks;
pub mod images;
pub mod local;
pub mod remote;
pub mod servers;
pub mod tunnel;

use crate::api::client::ClientError;
use crate::config::ConfigError;
use clap::{Args, CommandFactory, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

const SERVER_HELP: &str = "\
Server addresses:
  `server:` in haloy.yaml (and the URL of `haloy server add`) may be
    - a URL (http://… or https://…), used as is;
    - an IP address or `localhost`, with an optional port: haloyd's plain-HTTP API,
      http://HOST:9922 unless a port is given;
    - any other host name, with an optional port: HTTPS through haloyd's api.domain,
      https://HOST[:PORT].
  The API token is taken from `api_token` in haloy.yaml, else HALOY_API_TOKEN, else the token
  stored with `haloy server add` for that URL.
  The token is root on the server: haloy refuses to send it over plain http:// to anything but
  a loopback address (use HTTPS through api.domain, or an SSH tunnel to haloyd's loopback API),
  unless the server was added with `--insecure-http` or HALOY_INSECURE_HTTP=1 is set.

Config files:
  haloy.yaml, haloy.yml, haloy.json or haloy.toml in the current folder, or -c PATH (a file or a
  folder). `from: {env: VAR}` reads the environment, then .env.<target>, .env.local and .env next
  to the config file.";

#[derive(Debug, Parser)]
#[command(
    name = "haloy",
    version,
    about = "Deploy web apps to plain Linux servers running haloyd",
    after_long_help = SERVER_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts.
#[derive(Debug, Clone, Args, Default)]
pub struct CommonArgs {
    /// Config file, or a folder holding haloy.yaml/yml/json/toml
    #[arg(short = 'c', long = "config", global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Targets to act on, comma separated
    #[arg(
        short = 't',
        long = "targets",
        global = true,
        value_delimiter = ',',
        value_name = "A,B"
    )]
    pub targets: Vec<String>,
    /// Act on every target
    #[arg(short = 'a', long = "all", global = true)]
    pub all: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Deploy the app (targets on different servers deploy in parallel)
    ///
    /// Hooks run on this machine, in the config file's folder, through $SHELL -c:
    /// `global_pre_deploy` once before any target, each target's `pre_deploy` before its deploy
    /// is sent (a failing one stops that target before anything reaches the server),
    /// `post_deploy` after the target's deploy succeeded, and `global_post_deploy` once after
    /// every target succeeded.
    #[command(after_long_help = SERVER_HELP)]
    Deploy {
        /// Upload the image from this OCI layout directory, OCI archive or `docker save` tar
        /// instead of having haloyd pull it (only the blobs the server lacks are sent)
        #[arg(long, value_name = "PATH")]
        image_from: Option<PathBuf>,
        /// Don't stream haloyd's deployment steps; print only each target's outcome
        #[arg(long)]
        no_logs: bool,
        /// With --all, also deploy targets marked `protected: true` (skipped otherwise)
        #[arg(long)]
        include_protected: bool,
    },
    /// Show the app's deployment and replicas
    Status {
        /// Print a JSON array with one status object per target
        #[arg(long)]
        json: bool,
    },
    /// Show the app's logs (first replica unless --all-containers)
    Logs {
        /// Merge the logs of all replicas, each line prefixed with `[replica N]`
        #[arg(long)]
        all_containers: bool,
        /// Logs of one container id
        #[arg(long, value_name = "ID", conflicts_with = "all_containers")]
        container: Option<String>,
        /// Lines of history to show first
        #[arg(long, default_value_t = 100, value_name = "N")]
        tail: u32,
        /// Print the history and exit instead of following new lines
        #[arg(long)]
        no_follow: bool,
        /// Only the log lines: no `[target]`/`[replica N]` prefixes (for piping)
        #[arg(long)]
        raw: bool,
    },
    /// Stop all replicas (the app then answers 503). Runs as a job on the server: stopping
    /// this command does not stop the job (`haloy attach JOB_ID` follows it again)
    Stop {
        /// Also delete the containers and their snapshots
        #[arg(long)]
        remove_containers: bool,
        /// Also delete named volumes (needs --remove-containers)
        #[arg(long, requires = "remove_containers")]
        remove_volumes: bool,
        /// haloyd server to talk to instead of the config's `server:` (URL or host[:port])
        #[arg(short = 's', long, value_name = "URL")]
        server: Option<String>,
    },
    /// Redeploy a previous deployment's config and image
    Rollback {
        /// A deployment id from `haloy rollback-targets`
        deployment_id: String,
    },
    /// List previous deployments that can be rolled back to
    RollbackTargets,
    /// Run a command in a replica: `haloy exec -- ls /app`, `haloy exec -it -- sh`. Exits
    /// with the command's exit status (124 after --timeout). After `exec`, `-t` means --tty;
    /// pick a target with --targets
    Exec {
        /// Replica index (0-based; see `haloy status`); the first running one by default
        #[arg(long, value_name = "N", conflicts_with = "all_containers")]
        replica: Option<u32>,
        /// Run the command in every running replica in turn (exit status: the highest)
        #[arg(long)]
        all_containers: bool,
        /// Pass stdin to the command
        #[arg(short = 'i', long)]
        interactive: bool,
        /// Allocate a terminal (with -i: an interactive shell)
        #[arg(long)]
        tty: bool,
        /// Kill the command after this long (e.g. 30s, 5m)
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        timeout: Option<std::time::Duration>,
        /// The command and its arguments
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            required = true,
            value_name = "CMD"
        )]
        command: Vec<String>,
    },
    /// Forward 127.0.0.1:LOCAL_PORT to a port of a replica (e.g. a `preset: database` app with
    /// no domain); one API connection per TCP connection; runs until Ctrl-C
    Tunnel {
        /// Local port (default: the remote port; 0 picks a free one)
        local_port: Option<u16>,
        /// The port inside the replica
        #[arg(long, value_name = "P")]
        remote_port: u16,
        /// Replica index (0-based); the first running one by default
        #[arg(long, value_name = "N")]
        replica: Option<u32>,
    },
    /// Remove old images of the app from its server (a dry run unless --yes)
    ///
    /// The images of the newest N successful deployments stay (the running one always does);
    /// older ones go, and with them the rollback targets that needed them.
    PruneImages {
        /// Deployment images to keep (default: the target's `image.history.count`, 1 for
        /// history strategies `registry` and `none`)
        #[arg(long, value_name = "N")]
        keep: Option<u32>,
        /// Remove them instead of only showing the plan
        #[arg(long)]
        yes: bool,
    },
    /// Follow a deploy, rollback or stop job until it ends (its id is printed when it starts
    /// and shown by `haloy status` as the last operation); exits non-zero if the job failed
    Attach {
        /// The job id (for deploys and rollbacks, the deployment id)
        job_id: String,
    },
    /// List the targets of the config file
    Targets,
    /// Check the config file and show what it resolves to
    ValidateConfig {
        /// Print the fully resolved config (secrets hidden)
        #[arg(long)]
        show_resolved_config: bool,
        /// Print a JSON array with one object per resolved target
        #[arg(long)]
        json: bool,
    },
    /// Manage stored haloyd servers and their API tokens
    #[command(after_long_help = SERVER_HELP)]
    Server {
        #[command(subcommand)]
        command: ServerCommand,
    },
    /// Write the app as manifests for another platform (today: Kubernetes)
    Export {
        #[command(subcommand)]
        format: ExportFormat,
    },
    /// Print the version
    Version,
    /// Print a shell completion script
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum ExportFormat {
    /// Kubernetes manifests with the same rollout semantics, one file per target
    ///
    /// rolling → Deployment with RollingUpdate maxSurge 1 / maxUnavailable 0, minReadySeconds
    /// and a readiness probe on health_check_path; replace → Recreate; `preset: database` →
    /// StatefulSet with one replica. Env values and registry credentials go into Secrets only.
    /// Settings Kubernetes cannot express are listed on stderr. Apply with
    /// `kubectl apply -f DIR` (or `haloy export kubernetes | kubectl apply -f -`).
    #[command(after_long_help = "Typed against the Kubernetes 1.33 API.")]
    Kubernetes {
        /// A folder to write one `<target>.yaml` per target into, or `-` for stdout
        #[arg(
            short = 'o',
            long = "output",
            value_name = "DIR|-",
            default_value = "-"
        )]
        output: String,
        /// Route domains with Gateway API HTTPRoutes on this Gateway (`NAME` or
        /// `NAMESPACE/NAME`) instead of an Ingress
        #[arg(long, value_name = "GATEWAY")]
        gateway: Option<String>,
        /// The Ingress class (the cluster's default class when not given)
        #[arg(long, value_name = "CLASS", conflicts_with = "gateway")]
        ingress_class: Option<String>,
        /// Write cert-manager Certificates issued by this ClusterIssuer (and the
        /// ClusterIssuer itself, for ACME, when acme_email is set)
        #[arg(long, value_name = "ISSUER")]
        cert_manager: Option<String>,
        /// metadata.namespace of every object (kubectl's namespace when not given)
        #[arg(short = 'n', long, value_name = "NAMESPACE")]
        namespace: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Store a server URL and its API token (in $XDG_CONFIG_HOME/haloy/client.yaml, mode 0600)
    ///
    /// The token is read from stdin with --token-stdin, else from HALOY_API_TOKEN, else from
    /// the TOKEN argument. Avoid the argument: command lines land in shell history and are
    /// visible to every local user in `ps`.
    Add {
        url: String,
        /// The API token (discouraged: visible in shell history and `ps`; use --token-stdin)
        #[arg(conflicts_with = "token_stdin")]
        token: Option<String>,
        /// Read the token from the first line of stdin (e.g. `haloy server add URL --token-stdin < token-file`)
        #[arg(long)]
        token_stdin: bool,
        /// Allow sending the token over plain http:// to this non-loopback server (anyone on
        /// the path can read it and gains root on the server); stored with the server
        #[arg(long)]
        insecure_http: bool,
    },
    /// List stored servers
    List,
    /// Follow haloyd's own log (or the proxy's access log) on the server
    Logs {
        /// The proxy's access log (one line per request) instead of haloyd's own log
        #[arg(long)]
        access_logs: bool,
        /// Only this app's access log lines
        #[arg(long, value_name = "APP", requires = "access_logs")]
        app: Option<String>,
        /// The server (default: the servers of haloy.yaml's targets)
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
    /// Print haloyd's version on the server
    Version {
        /// The server (default: the servers of haloy.yaml's targets)
        #[arg(long, value_name = "URL")]
        server: Option<String>,
    },
    /// Forget a stored server
    Delete { url: String },
    /// Registry logins kept by haloyd (0600 on the server); an app without `image.registry`
    /// pulls with the login of its image's registry
    Registry {
        #[command(subcommand)]
        command: RegistryCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Store a registry login on haloyd (the config's servers, or --server)
    Login {
        /// Registry host as in image references: ghcr.io, 127.0.0.1:5000, docker.io
        registry: String,
        #[arg(short = 'u', long)]
        username: String,
        /// Read the password or access token from the first line of stdin
        #[arg(long, conflicts_with = "password")]
        password_stdin: bool,
        /// The password (discouraged: visible in shell history and `ps`; use --password-stdin)
        #[arg(short = 'p', long)]
        password: Option<String>,
        /// haloyd server (URL or host[:port]) instead of the config's
        #[arg(short = 's', long, value_name = "URL")]
        server: Option<String>,
    },
    /// Remove a registry login from haloyd
    Logout {
        registry: String,
        #[arg(short = 's', long, value_name = "URL")]
        server: Option<String>,
    },
    /// List the registry logins haloyd keeps (registry and username, never the password)
    List {
        #[arg(short = 's', long, value_name = "URL")]
        server: Option<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Image(#[from] Box<images::ImageError>),
    #[error(transparent)]
    Hook(#[from] hooks::HookError),
    #[error("{0}")]
    Usage(String),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// Some targets failed; their errors were already printed.
    #[error("{failed} of {total} targets failed")]
    TargetsFailed { failed: usize, total: usize },
}

impl CliError {
    /// Lines for stderr: config problems bare (`FILE:LINE:COL: …`), others prefixed `error:`.
    pub fn report_lines(&self) -> Vec<String> {
        match self {
            CliError::Config(ConfigError::Invalid(p)) => {
                let mut lines = p.lines();
                let n = lines.len();
                lines.push(format!(
                    "error: the config has {n} problem{}",
                    if n == 1 { "" } else { "s" }
                ));
                lines
            }
            other => vec![format!("error: {other}")],
        }
    }
}

/// The `haloy` process: parses the command line and runs it on a small tokio runtime. Config
/// problems are printed one per line (`FILE:LINE:COL: KEY.PATH: …`); every failure exits 1.
/// A plain function so that the binary compiles none of the CLI's async code itself (rustc
/// builds async bodies in the crate that polls them: 40 s of each release build).
pub fn main() -> ExitCode {
    // Rust ignores SIGPIPE, which turns `haloy logs | head` into a panic on the next write;
    // die quietly like other Unix tools instead.
    crate::sys::restore_default_sigpipe();
    let cli = Cli::parse_from(exec::rewrite_tty_flag(std::env::args_os()));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            for line in e.report_lines() {
                eprintln!("{line}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let common = &cli.common;
    match &cli.command {
        Command::Deploy {
            image_from,
            no_logs,
            include_protected,
        } => {
            let options = remote::DeployOptions {
                image_from: image_from.clone(),
                no_logs: *no_logs,
                include_protected: *include_protected,
            };
            remote::deploy(common, options).await
        }
        Command::Status { json } => remote::status(common, *json).await,
        Command::Logs {
            all_containers,
            container,
            tail,
            no_follow,
            raw,
        } => {
            let query = crate::api::types::LogsQuery {
                tail: *tail,
                follow: !no_follow,
                all: *all_containers,
                container: container.clone(),
            };
            remote::logs(common, query, *raw).await
        }
        Command::Stop {
            remove_containers,
            remove_volumes,
            server,
        } => {
            let req = crate::api::types::StopRequest {
                remove_containers: *remove_containers,
                remove_volumes: *remove_volumes,
            };
            remote::stop(common, req, server.as_deref()).await
        }
        Command::Rollback { deployment_id } => remote::rollback(common, deployment_id).await,
        Command::RollbackTargets => remote::rollback_targets(common).await,
        Command::PruneImages { keep, yes } => remote::prune_images(common, *keep, *yes).await,
        Command::Attach { job_id } => remote::attach(common, job_id).await,
        Command::Exec {
            replica,
            all_containers,
            interactive,
            tty,
            timeout,
            command,
        } => {
            let options = exec::ExecOptions {
                replica: *replica,
                all_containers: *all_containers,
                interactive: *interactive,
                tty: *tty,
                timeout: *timeout,
                command: command.clone(),
            };
            exec::exec(common, options).await
        }
        Command::Tunnel {
            local_port,
            remote_port,
            replica,
        } => tunnel::tunnel(common, *local_port, *remote_port, *replica).await,
        Command::Targets => local::targets(common),
        Command::ValidateConfig {
            show_resolved_config,
            json,
        } => local::validate_config(common, *show_resolved_config, *json),
        Command::Server {
            command: ServerCommand::Registry { command },
        } => remote::server_registry(common, command).await,
        Command::Server {
            command:
                ServerCommand::Logs {
                    access_logs,
                    app,
                    server,
                },
        } => remote::server_logs(common, server.as_deref(), *access_logs, app.as_deref()).await,
        Command::Server {
            command: ServerCommand::Version { server },
        } => remote::server_version(common, server.as_deref()).await,
        Command::Server { command } => local::server(command),
        Command::Export { format } => match format {
            ExportFormat::Kubernetes {
                output,
                gateway,
                ingress_class,
                cert_manager,
                namespace,
            } => {
                let options = export_options(gateway, ingress_class, cert_manager, namespace);
                local::export_kubernetes(common, &options, output)
            }
        },
        Command::Version => {
            println!("haloy {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Completion { shell } => {
            let mut cmd = Cli::command();
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "haloy", &mut script);
            use std::io::Write;
            std::io::stdout()
                .write_all(&script)
                .map_err(|source| CliError::Io {
                    action: "write",
                    path: PathBuf::from("<stdout>"),
                    source,
                })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn export_options(
    gateway: &Option<String>,
    ingress_class: &Option<String>,
    cert_manager: &Option<String>,
    namespace: &Option<String>,
) -> crate::export::kubernetes::Options {
    use crate::export::kubernetes::{Options, Routing};
    let routing = match gateway {
        Some(g) => match g.split_once('/') {
            Some((ns, name)) => Routing::Gateway {
                name: name.to_string(),
                namespace: Some(ns.to_string()),
            },
            None => Routing::Gateway {
                name: g.clone(),
                namespace: None,
            },
        },
        None => Routing::Ingress {
            class: ingress_class.clone(),
        },
    };
    Options {
        routing,
        cert_manager_issuer: cert_manager.clone(),
        namespace: namespace.clone(),
    }
}

#[cfg(test)]
#[path = "tests/cli.rs"]
mod tests;
