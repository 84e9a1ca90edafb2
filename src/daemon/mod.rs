//! haloyd, the daemon on each server (its binary, src/bin/haloyd.rs, only picks the allocator
//! and calls [`main`]): `serve` wires config → runtime → proxy → deployer → API and runs until
//! SIGTERM, or hands over to a new binary on SIGUSR2 (`upgrade`); `init` prepares a fresh
//! server; `verify` checks one (`crate::verify`); the hidden log-driver mode is what
//! containerd's shim runs to keep each task's output, the hidden `dist-assets` writes the
//! package's man pages and completions.
//!
//! It lives in the library rather than the binary for build time: rustc compiles the bodies of
//! async fns (and everything they await) in whichever crate polls them, so a binary that
//! `block_on`s the daemon recompiled most of the library's async code (~100 s CPU of a release
//! build). Here the binaries only call a plain function.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::access_log::AccessLog;
use crate::api::server::{ApiLimits, ApiServer, ServerLogs};
use crate::api::tokens::Tokens;
use crate::config::server::{LogFormat, ServerConfig};
use crate::daemon_log::DaemonLog;
use crate::deploy::{DeploySettings, Deployer, HostPathPolicy};
use crate::dns;
use crate::health::MonitorSettings;
use crate::metrics::{CertificateSource, Exporter};
use crate::network::{CniSettings, NamedSettings};
use crate::proxy::{self, Proxy, Routes, TlsHooks};
use crate::runtime::apparmor::{self, LsmDecision};
use crate::runtime::task::TaskSettings;
use crate::runtime::{log_driver, ContainerdRuntime, Runtime, RuntimeConfig};
use crate::service::{self, Handover, Inherited, Listeners, Notifier, Origin};
use crate::state::StateStore;
use crate::tls::{
    AcmeSettings, CertificateManager, DomainSet, OperatorCertificate, TlsSettings,
    LETS_ENCRYPT_PRODUCTION, LETS_ENCRYPT_STAGING,
};

const DEFAULT_CONFIG: &str = "/etc/haloy/haloyd.yaml";

#[derive(Parser)]
#[command(
    name = "haloyd",
    version,
    about = "haloy's server daemon: containerd + CNI + reverse proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve {
        /// Server config (YAML; every key optional).
        #[arg(long, short = 'c', default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Write a server config, create the data directories and a fresh API token.
    Init {
        /// Where to write the server config.
        #[arg(long, short = 'c', default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Directory for haloyd's state (history, certificates, logs, volumes).
        #[arg(long, default_value = "/var/lib/haloy")]
        state_dir: PathBuf,
        /// Replace an existing API token.
        #[arg(long)]
        new_token: bool,
    },
    /// Replace the API token without downtime: the new token is printed, and the running
    /// haloyd accepts the old one too until the new one is first used or --grace ends
    GenerateToken {
        #[arg(long, short = 'c', default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// How long the old token stays valid at most (0s: refused at once)
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        grace: Duration,
    },
    /// Hand the running daemon over to the haloyd binary now installed at its path, without
    /// refusing a connection (sends it SIGUSR2; see ARCHITECTURE.md "Restarts and upgrades").
    Upgrade {
        /// Server config of the running daemon (its `run_dir` holds the pid file).
        #[arg(long, short = 'c', default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// How long to wait for the new daemon to take over.
        #[arg(long, default_value = "90s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// Check that this server can run haloyd with this config: containerd answers with the v1
    /// services haloyd uses, runc and the CNI plugins are installed, the listen ports are free
    /// or held by haloyd, the config/state dirs and the token file are private. Prints what to
    /// fix for each problem; exits 1 if any check fails.
    Verify {
        /// Server config to check against.
        #[arg(long, short = 'c', default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Print the version.
    Version,
    /// Read or change the server config (as Haloy's `haloyd config get/set`)
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Write man pages, shell completions and the default server config into a directory
    /// (the Debian package's generated files; see packaging/build-deb.sh).
    #[command(hide = true)]
    DistAssets {
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print a config value
    ///
    /// Keys:
    ///   api-token   the API token (read from `api.token_file`)
    ///   api-domain  the domain the proxy serves the API on (`api.domain`)
    Get {
        key: String,
        /// Print only the value, without a newline (for scripts)
        #[arg(long)]
        raw: bool,
        #[arg(long, short = 'c', default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Change a config value in the file (comments and layout kept); restart haloyd or run
    /// `haloyd upgrade` for it to take effect
    ///
    /// Keys:
    ///   api-domain  the domain the proxy serves the API on (`api.domain`)
    Set {
        key: String,
        value: String,
        #[arg(long, short = 'c', default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

/// haloyd's whole process: the command line, then the chosen command; failures exit 1.
pub fn main() -> ExitCode {
    refuse_huge_pages();
    let args: Vec<String> = std::env::args().collect();
    if log_driver::is_invocation(&args) {
        return ExitCode::from(u8::try_from(log_driver::run(&args)).unwrap_or(1));
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve(&config),
        Command::Init {
            config,
            state_dir,
            new_token,
        } => init(&config, &state_dir, new_token),
        Command::Upgrade { config, timeout } => upgrade_command(&config, timeout),
        Command::Verify { config } => verify_command(&config),
        Command::GenerateToken { config, grace } => generate_token(&config, grace),
        Command::DistAssets { out } => dist_assets(&out),
        Command::Version => {
            println!("haloyd {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Config { command } => config_command(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("haloyd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// haloyd's heap is small and long-lived: transparent huge pages would make each touched 2 MiB
/// of mimalloc's arenas resident whole (22 of 45 MiB idle PSS with 3 x 3 replicas, measured by
/// integration-tests/bench/footprint.sh). mimalloc is built with `no_thp`; this also refuses
/// the pages kernels with THP "always" hand out unasked. Inherited by haloyd's children.
fn refuse_huge_pages() {
    if let Err(errno) = nix::sys::prctl::set_thp_disable(true) {
        // Only memory is at stake; tracing is not set up yet.
        eprintln!("haloyd: cannot opt out of transparent huge pages (prctl: {errno})");
    }
}

/// Log lines go to stderr (journald under systemd): JSON for log shippers, else text, coloured
/// only for a person at a terminal (a file or the journal would keep the escape codes).
fn init_tracing(format: LogFormat, tee: DaemonLog) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(tee);
    match format {
        LogFormat::Text => builder.with_ansi(colour_wanted()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

/// ANSI colours only when stderr is a terminal and NO_COLOR (https://no-color.org) is unset.
fn colour_wanted() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn serve(config_path: &Path) -> Result<()> {
    let config = ServerConfig::load(config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let daemon_log = DaemonLog::default();
    init_tracing(config.logs.format, daemon_log.clone());
    let handover = Handover::capture()?;
    // Before the async runtime starts: it changes the environment (refused with threads).
    let inherited = Inherited::take().context("cannot take the sockets passed to haloyd")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(release_memory_when_idle)
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(config, inherited, handover, daemon_log))
}

/// How often at most a worker thread going idle hands freed heap memory back.
const RELEASE_MEMORY_EVERY: Duration = Duration::from_secs(1);

/// Tokio's park hook: a worker about to idle returns the heap pages it freed to the OS, at most
/// once per `RELEASE_MEMORY_EVERY`. mimalloc returns a freed page only when the same thread
/// allocates or frees again after its purge delay, so an idle haloyd kept what its last deploys
/// freed: its anonymous memory idle with 3 x 3 replicas is 3.2 MiB with this, 5.0 without
/// (integration-tests/bench/footprint.sh). Under load a worker parks about once per ten
/// requests; the clock read is all this costs then.
fn release_memory_when_idle() {
    thread_local! {
        static LAST_RELEASE: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
    }
    let now = Instant::now();
    LAST_RELEASE.with(|last| {
        if last
            .get()
            .is_some_and(|at| now.duration_since(at) < RELEASE_MEMORY_EVERY)
        {
            return;
        }
        last.set(Some(now));
        crate::sys::release_freed_heap_memory();
    });
}

/// How long a successor may take from exec to READY (containerd recovery included).
const SUCCESSOR_READY_TIMEOUT: Duration = Duration::from_secs(60);

async fn run(
    config: ServerConfig,
    mut inherited: Inherited,
    handover: Handover,
    daemon_log: DaemonLog,
) -> Result<()> {
    let token = read_token(&config.api.token_file)?;
    for dir in [&config.state_dir, &config.run_dir] {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    let log_dir = log_dir(&config);
    log_driver::restrict_log_dir(&log_dir)
        .with_context(|| format!("cannot restrict the modes of {}", log_dir.display()))?;
    let dns = bind_dns(&config);
    let nameserver = dns.as_ref().map(|(gateway, _, _)| *gateway);
    let (gateways_tx, gateways_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut runtime_settings = runtime_config(&config, nameserver)?;
    runtime_settings.network_gateways = Some(gateways_tx);
    let containerd = Arc::new(
        ContainerdRuntime::connect(runtime_settings)
            .await
            .context("cannot use containerd")?,
    );
    let runtime: Arc<dyn Runtime> = containerd.clone();
    let tls = CertificateManager::new(tls_settings(&config)).context("cannot set up TLS")?;
    let routes = Routes::new();
    let hooks: Arc<dyn TlsHooks> = tls.clone();
    let state = StateStore::open(&config.state_dir)?;
    let deployer = Deployer::new(runtime, routes.clone(), state, deploy_settings(&config));
    let metrics = deployer.metrics();
    let access_log = AccessLog::start(config.access_log.target(), config.logs.format)
        .context("cannot start the access log")?;
    let proxy = Arc::new(Proxy::new_observed(
        proxy_config(&config)?,
        routes.clone(),
        Some(hooks),
        metrics.proxy(),
        Some(access_log.clone()),
    ));
    let dns_shutdown = CancellationToken::new();
    if let Some((_, sockets, settings)) = dns {
        let directory: Arc<dyn dns::Directory> = deployer.clone();
        let server = dns::DnsServer::new(directory, &settings);
        tokio::spawn(server.clone().serve(sockets, dns_shutdown.clone()));
        tokio::spawn(serve_dns_on_gateways(
            server,
            gateways_rx,
            dns_shutdown.clone(),
        ));
    }
    let metrics_listener = match config.metrics.listen {
        Some(addr) => Some(crate::metrics::server::bind(addr).await?),
        None => None,
    };

    // Take or bind every socket before recovering, so a port conflict fails fast and loudly.
    let listeners = Listeners::acquire(
        std::mem::take(&mut inherited.passed),
        config.proxy.http_listen,
        config.proxy.https_listen,
        config.api.listen,
    )?;
    let passed_fds = listeners.named_fds();
    let [http_origin, https_origin, api_origin] = listeners.origins.map(Origin::as_str);
    tracing::info!(
        http = http_origin,
        https = https_origin,
        api = api_origin,
        from_predecessor = inherited.from_predecessor(),
        "listening sockets"
    );
    let http = TcpListener::from_std(listeners.http).context("cannot use the http socket")?;
    let https = TcpListener::from_std(listeners.https).context("cannot use the https socket")?;
    let api_listener = TcpListener::from_std(listeners.api).context("cannot use the api socket")?;

    deployer
        .start()
        .await
        .context("cannot recover running apps from containerd")?;
    if let Some(domain) = &config.api.domain {
        route_api_domain(&routes, domain, config.api.listen);
    }
    install_bench_routes(&routes)?;

    let shutdown = CancellationToken::new();
    let (api_stop_tx, api_stop_rx) = tokio::sync::watch::channel(false);
    let api = ApiServer::new(
        deployer.clone(),
        token,
        Some(tls.clone()),
        ApiLimits {
            header_read_timeout: config.api.header_read_timeout,
            idle_timeout: config.api.idle_timeout,
            max_connections: config.api.max_connections as usize,
        },
        ServerLogs {
            daemon: Some(daemon_log),
            access: Some(access_log.clone()),
        },
    );
    api.enable_image_uploads(containerd.images().clone());
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(api.serve(api_listener, api_stop_rx));
    {
        let proxy = proxy.clone();
        let stop = shutdown.clone();
        tasks.spawn(async move { proxy.serve_http(http, stop.cancelled_owned()).await });
    }
    {
        let proxy = proxy.clone();
        let stop = shutdown.clone();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
        tasks.spawn(async move {
            proxy
                .serve_https(https, acceptor, stop.cancelled_owned())
                .await
        });
    }
    if let Some(listener) = metrics_listener {
        let certificates: Arc<dyn CertificateSource> = tls.clone();
        let exporter = Exporter::new(metrics, routes.clone(), Some(certificates));
        let stop = shutdown.clone();
        tasks.spawn(crate::metrics::server::serve(
            listener,
            exporter,
            stop.cancelled_owned(),
        ));
    }
    tls.spawn_renewal_task(shutdown.clone());
    if config.acme.enabled || !config.acme.certificates.is_empty() {
        tasks.spawn(follow_domains(
            deployer.clone(),
            tls.clone(),
            config.api.domain.clone(),
            shutdown.clone(),
            CertificatePolicy::from_config(&config),
        ));
    }
    // Routes are rebuilt and the accept loops run: from here connections are served.
    let notifier = Notifier::from_env();
    notifier.ready(&status_line(&deployer));
    inherited.signal_ready();
    let pid_file = pid_file(&config);
    if let Err(e) = write_file(
        &pid_file,
        format!("{}\n", std::process::id()).as_bytes(),
        0o644,
    ) {
        tracing::warn!(error = %e, "cannot write the pid file; `haloyd upgrade` will not find this daemon");
    }
    tokio::spawn(keep_alive(notifier, containerd, deployer.clone()));
    tracing::info!(
        api = %config.api.listen,
        http = %config.proxy.http_listen,
        https = %config.proxy.https_listen,
        "haloyd ready"
    );
    let mut signals = Signals::new();
    let handed_over = loop {
        match signals.next().await {
            Wanted::Stop => break false,
            Wanted::Upgrade => {
                let wait = config.deploy.timeout;
                match upgrade(&deployer, &handover, &passed_fds, wait).await {
                    Ok(pid) => {
                        tracing::info!(
                            successor = pid,
                            "the new haloyd serves; this one stops accepting and drains"
                        );
                        break true;
                    }
                    Err(e) => {
                        let error = format!("{e:#}");
                        tracing::error!(error = %error, "upgrade failed; this haloyd keeps serving");
                        // For `haloyd upgrade`, which waits for the outcome.
                        let _ = write_file(
                            &upgrade_failure_file(&config),
                            format!("{error}\n").as_bytes(),
                            0o644,
                        );
                    }
                }
            }
        }
    };
    if handed_over {
        notifier.status("handed over; draining");
    } else {
        tracing::info!("shutting down; replicas keep running under containerd");
        notifier.stopping("stopping; replicas keep running under containerd");
        remove_own_pid_file(&pid_file);
    }
    let drain_until = tokio::time::Instant::now() + config.proxy.drain_timeout;
    shutdown.cancel();
    let _ = api_stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    // Upgraded connections (WebSocket) outlive their client connection's task: they get
    // what is left of drain_timeout too, then end with the process.
    wait_for_tunnels(&routes, drain_until).await;
    dns_shutdown.cancel();
    access_log.close();
    tracing::info!(handed_over, "haloyd exits");
    Ok(())
}

/// Waits until no backend has an open tunnel, or `until`.
async fn wait_for_tunnels(routes: &Routes, until: tokio::time::Instant) {
    loop {
        let table = routes.load();
        let open: u64 = table
            .apps()
            .filter_map(|app| table.app(app))
            .flat_map(|route| &route.backends)
            .map(|backend| backend.stats().tunnels)
            .sum();
        if open == 0 {
            return;
        }
        if tokio::time::Instant::now() >= until {
            tracing::warn!(
                open,
                "drain_timeout reached; closing the tunnels still open"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts the successor and waits for its READY. Deploys, stops and crash restarts pause
/// first, so the two daemons sharing containerd never act on the same replicas; if the
/// successor fails they resume.
async fn upgrade(
    deployer: &Arc<Deployer>,
    handover: &Handover,
    fds: &[(RawFd, &'static str)],
    wait: Duration,
) -> Result<u32> {
    tracing::info!(path = %handover.path().display(), "upgrade requested: starting the binary at haloyd's path with its sockets");
    let pause = deployer.pause_for_handover(wait).await?;
    match handover.start_successor(fds, SUCCESSOR_READY_TIMEOUT).await {
        Ok(pid) => {
            // Kept paused until exit: the successor owns deploys and restarts now.
            std::mem::forget(pause);
            Ok(pid)
        }
        Err(e) => {
            pause.resume();
            Err(e.into())
        }
    }
}

/// STATUS= from the live view: apps, and replicas in rotation of all replicas.
fn status_line(deployer: &Deployer) -> String {
    let apps = deployer.status(None);
    let replicas: Vec<_> = apps.iter().flat_map(|a| &a.replicas).collect();
    let ready = replicas
        .iter()
        .filter(|r| r.state == crate::api::types::ReplicaState::Ready)
        .count();
    service::notify::status_line(apps.len(), ready, replicas.len())
}

/// WATCHDOG=1 every half `WATCHDOG_USEC`, only after containerd answered its Version call in
/// time: a stalled runtime (or containerd) stops the keep-alives and systemd restarts
/// haloyd. STATUS= follows the replica counts.
async fn keep_alive(
    notifier: Notifier,
    containerd: Arc<ContainerdRuntime>,
    deployer: Arc<Deployer>,
) {
    if !notifier.is_enabled() {
        return;
    }
    let watchdog = service::notify::watchdog_interval();
    let every = watchdog.unwrap_or(Duration::from_secs(5));
    let mut last_status = String::new();
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if watchdog.is_some() {
            match tokio::time::timeout(every, containerd.client().server_version()).await {
                Ok(Ok(_)) => notifier.watchdog(),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "containerd does not answer; no watchdog keep-alive")
                }
                Err(_) => {
                    tracing::warn!(timeout = ?every, "containerd's Version call timed out; no watchdog keep-alive")
                }
            }
        }
        let status = status_line(&deployer);
        if status != last_status {
            notifier.status(&status);
            last_status = status;
        }
    }
}

fn pid_file(config: &ServerConfig) -> PathBuf {
    config.run_dir.join("haloyd.pid")
}

/// Written by a daemon whose hand-over failed: why, for `haloyd upgrade` to print.
fn upgrade_failure_file(config: &ServerConfig) -> PathBuf {
    config.run_dir.join("upgrade-failed")
}

/// After a hand-over the successor has written its own pid there: only ours is removed.
fn remove_own_pid_file(path: &Path) {
    let ours = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        == Some(std::process::id());
    if ours {
        let _ = std::fs::remove_file(path);
    }
}

enum Wanted {
    Stop,
    Upgrade,
}

/// SIGTERM/SIGINT stop, SIGUSR2 upgrades.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    usr2: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        let watch = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(signal = name, error = %e, "cannot watch the signal");
                None
            }
        };
        Signals {
            term: watch(SignalKind::terminate(), "SIGTERM"),
            usr2: watch(SignalKind::user_defined2(), "SIGUSR2"),
        }
    }

    async fn next(&mut self) -> Wanted {
        async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = recv(&mut self.term) => Wanted::Stop,
            _ = tokio::signal::ctrl_c() => Wanted::Stop,
            _ = recv(&mut self.usr2) => Wanted::Upgrade,
        }
    }
}

/// `haloyd upgrade`: SIGUSR2 to the daemon named by the pid file, then wait until a new pid
/// is written there (the successor is ready) and the old process is gone.
fn upgrade_command(config_path: &Path, timeout: Duration) -> Result<()> {
    let config = ServerConfig::load(config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let path = pid_file(&config);
    let read_pid = || -> Option<i32> {
        std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
    };
    let old = read_pid().with_context(|| {
        format!(
            "no running haloyd: cannot read a pid from {} (server config `run_dir`)",
            path.display()
        )
    })?;
    let failure = upgrade_failure_file(&config);
    let _ = std::fs::remove_file(&failure);
    let old_pid = nix::unistd::Pid::from_raw(old);
    nix::sys::signal::kill(old_pid, nix::sys::signal::Signal::SIGUSR2)
        .with_context(|| format!("cannot signal haloyd (pid {old} from {})", path.display()))?;
    println!(
        "asked haloyd (pid {old}) to hand over to the haloyd binary now at the path it was started from"
    );
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Some(new) = read_pid().filter(|p| *p != old) {
            println!("the new haloyd (pid {new}) serves; the old one drains and exits");
            return Ok(());
        }
        if let Ok(why) = std::fs::read_to_string(&failure) {
            bail!(
                "the upgrade failed and the running haloyd (pid {old}) keeps serving: {}",
                why.trim()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("no new haloyd took over within {timeout:?}; the old one (pid {old}) keeps serving — see its log for why")
}

fn read_token(path: &Path) -> Result<Tokens> {
    if let Ok(token) = std::env::var("HALOY_API_TOKEN") {
        if !token.trim().is_empty() {
            return Ok(Tokens::fixed(token.trim().to_string()));
        }
    }
    Tokens::from_file(path).with_context(|| {
        format!(
            "cannot use the API token in {} (server config `api.token_file`); run `haloyd init` to create one",
            path.display()
        )
    })
}

/// `haloyd generate-token`: a new token in `api.token_file`; the running haloyd accepts the
/// old one too until the new one is first used or `grace` ends.
fn generate_token(config_path: &Path, grace: Duration) -> Result<()> {
    let config = ServerConfig::load(config_path)?;
    let file = &config.api.token_file;
    let token = fresh_token();
    crate::api::tokens::rotate(file, &token, grace)?;
    println!("{token}");
    eprintln!(
        "wrote a new API token to {}; the old one stays valid until the new one is first used{}",
        file.display(),
        if grace.is_zero() {
            " (no grace: it is refused from now on)".to_string()
        } else {
            format!(" or for {}", humantime::format_duration(grace))
        }
    );
    eprintln!("next, on each client: haloy server add <url> --token-stdin");
    Ok(())
}

/// Binds haloyd's DNS server on the bridge gateway before any replica starts, so replicas
/// are pointed at it only when it listens. Returns the gateway, the sockets and the upstream
/// resolvers; None (logged) when DNS is off or cannot listen: replicas then get the host's
/// resolvers and no app names.
fn bind_dns(config: &ServerConfig) -> Option<(IpAddr, dns::BoundSockets, dns::DnsSettings)> {
    if !config.dns.enabled {
        return None;
    }
    let Some(gateway) =
        dns::bridge_gateway(config.network.subnet.addr(), config.network.subnet.prefix())
    else {
        tracing::warn!(subnet = %config.network.subnet, "no gateway address in network.subnet; app names will not resolve");
        return None;
    };
    let upstream = if config.dns.upstream.is_empty() {
        dns::host_upstreams().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "names outside haloy will not resolve in replicas");
            Vec::new()
        })
    } else {
        config.dns.upstream.clone()
    };
    let settings = dns::DnsSettings {
        listen: vec![SocketAddr::new(gateway, 53)],
        upstream,
        clients: vec![config.network.subnet, config.network.pool],
    };
    match dns::bind(&settings) {
        Ok(sockets) => {
            let upstream_list: Vec<String> =
                settings.upstream.iter().map(|u| u.to_string()).collect();
            tracing::info!(listen = %settings.listen[0], upstream = %upstream_list.join(","), "dns for replicas");
            Some((gateway, sockets, settings))
        }
        Err(e) => {
            tracing::error!(error = %e, "replicas get the host's resolvers; app names will not resolve");
            None
        }
    }
}

/// Named networks' gateways as the runtime announces them (at start for those in the
/// registry, later for new ones): the DNS server answers there too, with the same scoping.
async fn serve_dns_on_gateways(
    server: Arc<dns::DnsServer>,
    mut gateways: tokio::sync::mpsc::UnboundedReceiver<IpAddr>,
    shutdown: CancellationToken,
) {
    while let Some(gateway) = gateways.recv().await {
        let listen = dns::DnsSettings {
            listen: vec![SocketAddr::new(gateway, 53)],
            upstream: Vec::new(),
            clients: Vec::new(),
        };
        match dns::bind(&listen) {
            Ok(sockets) => {
                tracing::info!(listen = %listen.listen[0], "dns for a named network");
                tokio::spawn(server.clone().serve(sockets, shutdown.clone()));
            }
            Err(e) => {
                tracing::error!(error = %e, "app names will not resolve on this named network")
            }
        }
    }
}

fn runtime_config(config: &ServerConfig, nameserver: Option<IpAddr>) -> Result<RuntimeConfig> {
    let mut runtime = RuntimeConfig::new(&config.containerd.address);
    runtime.namespace = config.containerd.namespace.clone();
    runtime.insecure_registries = config.registries.insecure.clone();
    runtime.tasks = TaskSettings {
        state_dir: config.state_dir.clone(),
        log_dir: log_dir(config),
        log_max_size: config.logs.max_size,
        log_max_files: config.logs.max_files,
        pids_limit: config.security.pids_limit,
        apparmor_profile: apparmor_profile(),
        nameserver,
        shim_grouping: config.containerd.shim,
        ..TaskSettings::default()
    };
    // Namespaces, IPAM leases and cached CNI results live under run_dir: a reboot wipes
    // them together with the tasks they belonged to.
    let run = &config.run_dir;
    runtime.network = CniSettings {
        plugin_dirs: vec![config.network.cni_bin_dir.clone()],
        bridge: config.network.bridge.clone(),
        subnet: config.network.subnet.to_string(),
        ipam_data_dir: run.join("cni/ipam"),
        netns_dir: run.join("netns"),
        cache_dir: run.join("cni/results"),
        conflist_template: Some(config.network.cni_conf_dir.join("haloy.conflist"))
            .filter(|p| p.is_file()),
        ..CniSettings::default()
    };
    runtime.named_networks = Some(NamedSettings {
        pool: config.network.pool,
        registry_file: config.state_dir.join("networks.json"),
        nft_table: crate::network::firewall_table_name(&config.network.bridge),
    });
    Ok(runtime)
}

/// Replica log files: `<state_dir>/logs`.
fn log_dir(config: &ServerConfig) -> PathBuf {
    config.state_dir.join("logs")
}

/// The AppArmor profile replicas run under; says once why there is none.
fn apparmor_profile() -> Option<String> {
    match apparmor::decide(Path::new("/sys")) {
        LsmDecision::AppArmor(profile) => {
            tracing::info!(%profile, "replicas run under the AppArmor profile");
            Some(profile)
        }
        LsmDecision::None(why) => {
            tracing::warn!("no LSM profile for replicas: {why}");
            None
        }
    }
}

fn proxy_config(config: &ServerConfig) -> Result<proxy::ProxyConfig> {
    let p = &config.proxy;
    Ok(proxy::ProxyConfig {
        header_read_timeout: p.header_read_timeout,
        idle_timeout: p.idle_timeout,
        backend_response_timeout: p.backend_response_timeout,
        max_header_bytes: usize::try_from(p.max_header_bytes).unwrap_or(usize::MAX),
        max_body_bytes: p.max_body_bytes,
        max_connections: p.max_connections as usize,
        drain_timeout: p.drain_timeout,
        trusted_proxies: p.trusted_proxies.clone(),
        https_port: p.https_listen.port(),
        ..proxy::ProxyConfig::default()
    })
}

fn tls_settings(config: &ServerConfig) -> TlsSettings {
    let mut settings = TlsSettings::new(&config.state_dir);
    settings.acme = AcmeSettings {
        directory_url: Some(config.acme.directory_url.clone()),
        staging: config.acme.staging,
        email: config.acme.email.clone(),
        ca_bundle: config.acme.ca_bundle.clone(),
    };
    settings.unknown_sni = config.acme.unknown_sni;
    settings.certificates = config
        .acme
        .certificates
        .iter()
        .map(|c| OperatorCertificate {
            domain: c.domain.clone(),
            cert_file: c.cert_file.clone(),
            key_file: c.key_file.clone(),
        })
        .collect();
    settings
}

fn deploy_settings(config: &ServerConfig) -> DeploySettings {
    DeploySettings {
        deploy_timeout: config.deploy.timeout,
        health_attempt_timeout: config.health_monitor.timeout,
        monitor: MonitorSettings {
            interval: config.health_monitor.interval,
            timeout: config.health_monitor.timeout,
            fall: config.health_monitor.fall,
            rise: config.health_monitor.rise,
        },
        drain_timeout: config.proxy.drain_timeout,
        volumes_dir: config.state_dir.join("volumes"),
        host_paths: HostPathPolicy::new(
            &[
                (config.state_dir.clone(), "haloyd's state dir"),
                (config.run_dir.clone(), "haloyd's run dir"),
                (config.api.token_file.clone(), "haloyd's API token"),
                (config.containerd.address.clone(), "the containerd socket"),
            ],
            config.security.allowed_host_paths.clone(),
        ),
        init_binary: std::path::PathBuf::from(crate::runtime::DEFAULT_INIT_BINARY),
    }
}

/// The API on `api.domain` is just another route: the proxy forwards it to the API listener.
fn route_api_domain(routes: &Routes, domain: &str, api: SocketAddr) {
    let backend = proxy::Backend::new("haloyd-api".into(), 0, api);
    backend.set_ready(true);
    let route = proxy::AppRoute {
        app: "haloyd-api".into(),
        domains: vec![proxy::DomainRoute {
            canonical: domain.to_string(),
            aliases: Vec::new(),
        }],
        backends: vec![backend],
    };
    if let Err(e) = routes.set_app(route) {
        tracing::error!(domain, error = %e, "cannot route the API domain");
    }
}

/// Benchmark-only static routes (integration-tests/bench/proxy.sh): see `proxy::bench_route`.
fn install_bench_routes(routes: &Routes) -> Result<()> {
    let Some(value) = std::env::var_os(proxy::bench_route::BENCH_ROUTES_ENV) else {
        return Ok(());
    };
    let value = value.to_string_lossy();
    let count = proxy::bench_route::install_bench_routes(routes, &value)?;
    tracing::warn!(
        routes = count,
        variable = proxy::bench_route::BENCH_ROUTES_ENV,
        "benchmark-only static routes installed; unset the variable outside benchmarks"
    );
    Ok(())
}

/// Keeps certificates in line with the deployed domains (and the API domain).
async fn follow_domains(
    deployer: Arc<Deployer>,
    tls: Arc<CertificateManager>,
    api_domain: Option<String>,
    shutdown: CancellationToken,
    policy: CertificatePolicy,
) {
    let mut changes = deployer.subscribe_changes();
    loop {
        let mut sets: Vec<DomainSet> = deployer
            .domain_sets()
            .into_iter()
            .map(|(canonical, aliases, acme_email)| DomainSet {
                canonical,
                aliases,
                acme_email,
            })
            .collect();
        if let Some(domain) = &api_domain {
            sets.push(DomainSet {
                canonical: domain.clone(),
                aliases: Vec::new(),
                acme_email: None,
            });
        }
        sets.retain(|set| policy.wants(&set.canonical));
        tls.ensure_certificates(&sets).await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
}

/// Which deployed domains get a certificate.
struct CertificatePolicy {
    acme: bool,
    public_ca: bool,
    operator_domains: Vec<String>,
}

impl CertificatePolicy {
    fn from_config(config: &ServerConfig) -> Self {
        let directory = config.acme.directory_url.as_str();
        CertificatePolicy {
            acme: config.acme.enabled,
            public_ca: [LETS_ENCRYPT_PRODUCTION, LETS_ENCRYPT_STAGING].contains(&directory),
            operator_domains: config
                .acme
                .certificates
                .iter()
                .map(|c| c.domain.clone())
                .collect(),
        }
    }

    fn wants(&self, domain: &str) -> bool {
        if self.operator_domains.iter().any(|d| d == domain) {
            return true;
        }
        if !self.acme {
            return false;
        }
        if self.public_ca && !publicly_issuable(domain) {
            tracing::debug!(
                domain,
                "special-use name: no certificate is requested from a public CA"
            );
            return false;
        }
        true
    }
}

/// A public CA can never validate special-use names (RFC 6761, RFC 8375) or IP literals;
/// asking would only send useless traffic and fill the status with errors.
fn publicly_issuable(domain: &str) -> bool {
    const SPECIAL: &[&str] = &[
        "localhost",
        "test",
        "invalid",
        "example",
        "local",
        "internal",
        "home.arpa",
    ];
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if domain.parse::<std::net::IpAddr>().is_ok() || !domain.contains('.') {
        return false;
    }
    !SPECIAL
        .iter()
        .any(|tld| domain == *tld || domain.ends_with(&format!(".{tld}")))
}

fn init(config_path: &Path, state_dir: &Path, new_token: bool) -> Result<()> {
    let token_file = config_path
        .parent()
        .unwrap_or_else(|| Path::new("/etc/haloy"))
        .join("api-token");
    for dir in [
        config_path.parent().unwrap_or(Path::new("/etc/haloy")),
        state_dir,
    ] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if !config_path.exists() {
        let text = default_config(state_dir, &token_file);
        write_file(config_path, text.as_bytes(), 0o644)?;
        println!("wrote {}", config_path.display());
    } else {
        println!("kept existing {}", config_path.display());
    }
    if new_token || !token_file.exists() {
        let token = fresh_token();
        write_file(&token_file, format!("{token}\n").as_bytes(), 0o600)?;
        println!("wrote a new API token to {}", token_file.display());
    }
    println!(
        "next: haloyd serve --config {}   then on your laptop, with the token from {} on stdin: haloy server add <url> --token-stdin",
        config_path.display(),
        token_file.display()
    );
    Ok(())
}

fn config_command(command: ConfigCommand) -> Result<()> {
    use crate::config::server_edit;
    match command {
        ConfigCommand::Get { key, raw, config } => {
            let value = server_edit::get(&config, &key)?;
            if raw {
                print!("{value}");
            } else if value.is_empty() {
                println!("{key} is not set in {}", config.display());
            } else {
                println!("{key}: {value}");
            }
        }
        ConfigCommand::Set { key, value, config } => {
            let stored = server_edit::set(&config, &key, &value)?;
            println!(
                "{key} set to {stored} in {}; restart haloyd (or run `haloyd upgrade`) for it to take effect",
                config.display()
            );
        }
    }
    Ok(())
}

/// The server config `haloyd init` writes (and the Debian package ships): the paths, then
/// every other key commented out with its default.
fn default_config(state_dir: &Path, token_file: &Path) -> String {
    format!(
        "state_dir: {state}\napi:\n  token_file: {token}\n\n{template}",
        state = state_dir.display(),
        token = token_file.display(),
        template = crate::config::server::TEMPLATE_YAML
    )
}

fn verify_command(config_path: &Path) -> Result<()> {
    let config = ServerConfig::load(config_path).map_err(|e| {
        anyhow::anyhow!("{e}\nfix: run `haloyd init`, or pass the server config with --config")
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let report = runtime.block_on(crate::verify::run(&config, config_path));
    print!("{}", report.render());
    match report.failures() {
        0 => Ok(()),
        n => bail!("{n} check(s) failed (see the fix lines above)"),
    }
}

/// Man pages (gzipped, one per command and subcommand), bash/zsh/fish completions for both
/// binaries, and the default server config: generated from the code so they never go stale.
fn dist_assets(out: &Path) -> Result<()> {
    use clap::CommandFactory;
    let commands = [Cli::command(), crate::cli::Cli::command()];
    let man_dir = out.join("man");
    std::fs::create_dir_all(&man_dir)
        .with_context(|| format!("cannot create {}", man_dir.display()))?;
    for command in &commands {
        clap_mangen::generate_to(command.clone(), &man_dir)
            .with_context(|| format!("cannot write man pages to {}", man_dir.display()))?;
        write_completions(command.clone(), &out.join("completions"))?;
    }
    gzip_each(&man_dir)?;
    let config = default_config(
        Path::new("/var/lib/haloy"),
        Path::new("/etc/haloy/api-token"),
    );
    write_file(&out.join("haloyd.yaml"), config.as_bytes(), 0o644)?;
    println!(
        "wrote man pages, completions and haloyd.yaml to {}",
        out.display()
    );
    Ok(())
}

fn write_completions(mut command: clap::Command, dir: &Path) -> Result<()> {
    use clap_complete::Shell;
    let name = command.get_name().to_string();
    for (shell, file) in [
        (Shell::Bash, name.clone()),
        (Shell::Zsh, format!("_{name}")),
        (Shell::Fish, format!("{name}.fish")),
    ] {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut command, &name, &mut script);
        let shell_dir = dir.join(shell.to_string());
        std::fs::create_dir_all(&shell_dir)
            .with_context(|| format!("cannot create {}", shell_dir.display()))?;
        write_file(&shell_dir.join(file), &script, 0o644)?;
    }
    Ok(())
}

/// Debian keeps man pages gzipped (`-n`-style: no name or time in the header, so the package
/// is reproducible).
fn gzip_each(dir: &Path) -> Result<()> {
    use std::io::Write;
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "gz") {
            continue;
        }
        let page =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&page)?;
        let mut gz_name = path.clone().into_os_string();
        gz_name.push(".gz");
        write_file(Path::new(&gz_name), &encoder.finish()?, 0o644)?;
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    }
    Ok(())
}

fn fresh_token() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    crate::files::write_atomic(path, contents, mode)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
#[path = "tests/daemon.rs"]
mod tests;
