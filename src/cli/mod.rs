//! The `haloy` command line (clap): deploy, status, logs, stop, rollback, attach, targets,
//! validate-config, server, version, completion.

pub mod local;
pub mod remote;
pub mod servers;

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
    #[command(after_long_help = SERVER_HELP)]
    Deploy,
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
    },
    /// Redeploy a previous deployment's config and image
    Rollback {
        /// A deployment id from `haloy rollback-targets`
        deployment_id: String,
    },
    /// List previous deployments that can be rolled back to
    RollbackTargets,
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
    /// Print the version
    Version,
    /// Print a shell completion script
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
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
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Client(#[from] ClientError),
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

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> Result<ExitCode, CliError> {
    let common = &cli.common;
    match &cli.command {
        Command::Deploy => remote::deploy(common).await,
        Command::Status { json } => remote::status(common, *json).await,
        Command::Logs {
            all_containers,
            container,
            tail,
            no_follow,
        } => {
            let query = crate::api::types::LogsQuery {
                tail: *tail,
                follow: !no_follow,
                all: *all_containers,
                container: container.clone(),
            };
            remote::logs(common, query).await
        }
        Command::Stop {
            remove_containers,
            remove_volumes,
        } => {
            let req = crate::api::types::StopRequest {
                remove_containers: *remove_containers,
                remove_volumes: *remove_volumes,
            };
            remote::stop(common, req).await
        }
        Command::Rollback { deployment_id } => remote::rollback(common, deployment_id).await,
        Command::RollbackTargets => remote::rollback_targets(common).await,
        Command::Attach { job_id } => remote::attach(common, job_id).await,
        Command::Targets => local::targets(common),
        Command::ValidateConfig {
            show_resolved_config,
            json,
        } => local::validate_config(common, *show_resolved_config, *json),
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

#[cfg(test)]
#[path = "tests/cli.rs"]
mod tests;
