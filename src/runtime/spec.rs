//! The OCI runtime spec of a replica, built like containerd/Docker do by default: args from
//! Entrypoint+Cmd, merged env, user from the image config (looked up in the image's
//! /etc/passwd and /etc/group), the standard mounts plus per-task /etc/hosts, /etc/resolv.conf
//! and /etc/hostname, Docker's default capabilities, masked/readonly paths, no_new_privileges,
//! containerd's default seccomp profile (unless the app opts out), the host's AppArmor profile
//! when there is one, an nofile rlimit, the task's netns, cgroup path and limits (pids
//! included), and the app's volumes (read-only ones recursively).
//!
//! Everything here is pure or touches only files under haloyd's state dir, so it is unit-tested
//! without containerd.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use super::seccomp::{default_profile, Host};
use super::{ImageConfig, Resources, SeccompMode, VolumeMount, VolumeSource};

/// type_url containerd expects for the spec inside a container record.
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Open-file limit of every task when the host allows it: enough for busy servers.
pub const NOFILE_LIMIT: u64 = 65536;
/// CFS period the CPU quota is expressed in (the kernel's and Docker's default).
const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("image has neither Entrypoint nor Cmd: nothing to run")]
    NoCommand,
    #[error("user {user:?} from the image config is not in the image's /etc/passwd")]
    UnknownUser { user: String },
    #[error("group {group:?} from the image config is not in the image's /etc/group")]
    UnknownGroup { group: String },
    #[error("volume target {target:?} must be an absolute path without '..'")]
    InvalidVolumeTarget { target: String },
    #[error("volume source {source_path:?} must be an absolute host path")]
    InvalidBindSource { source_path: PathBuf },
    #[error("volume name {name:?} may only use letters, digits, '-', '_' and '.'")]
    InvalidVolumeName { name: String },
    #[error("resources: {reason}")]
    InvalidResources { reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("building the OCI spec failed: {0}")]
    Build(#[from] oci_spec::OciSpecError),
    #[error("encoding the OCI spec failed: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Numeric identity the task process runs as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Per-task files bind-mounted into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFiles {
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    pub hostname: PathBuf,
}

/// A volume with its host directory decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedVolume {
    pub host_path: PathBuf,
    pub target: String,
    pub read_only: bool,
}

/// Everything a replica's spec is built from.
#[derive(Debug, Clone)]
pub struct SpecInput<'a> {
    pub hostname: &'a str,
    pub image: &'a ImageConfig,
    pub app_env: &'a [(String, String)],
    pub replica_id: &'a str,
    pub user: ResolvedUser,
    pub netns_path: &'a Path,
    pub cgroups_path: &'a str,
    pub resources: Resources,
    pub files: &'a TaskFiles,
    pub volumes: &'a [ResolvedVolume],
    /// RLIMIT_NOFILE (soft = hard); see `nofile_limit`.
    pub nofile: u64,
    pub seccomp: SeccompMode,
    /// `process.apparmorProfile`, when the host has one for containers.
    pub apparmor_profile: Option<&'a str>,
    /// `init: true`: this host binary (tini) is mounted read-only at `INIT_PATH` and runs as
    /// PID 1 in front of the app's args.
    pub init: Option<&'a Path>,
    /// Value of `SHIM_GROUP_ANNOTATION`: tasks with the same value share one runc v2 shim.
    /// None = a shim of its own (containerd's default).
    pub shim_group: Option<&'a str>,
}

/// The OCI annotation containerd's runc v2 shim (1.6: runtime/v2/runc/v2 StartShim) reads
/// from the bundle's config.json: tasks carrying the same value are served by one shim
/// process instead of one each.
pub const SHIM_GROUP_ANNOTATION: &str = "io.containerd.runc.v2.group";

/// Where the init binary appears inside a container (like Docker's /sbin/docker-init).
pub const INIT_PATH: &str = "/.haloy/init";

/// The args of the task: the image's, behind the init when there is one. tini as PID 1
/// forwards signals to the app and reaps orphaned children; `--` ends tini's own options.
pub fn task_args(image: &ImageConfig, init: bool) -> Result<Vec<String>, SpecError> {
    let args = process_args(image)?;
    if !init {
        return Ok(args);
    }
    let mut with_init = vec![INIT_PATH.to_string(), "--".to_string()];
    with_init.extend(args);
    Ok(with_init)
}

/// `NOFILE_LIMIT`, lowered to this process's hard limit: runc cannot raise a task above the
/// limit containerd runs with unless it has CAP_SYS_RESOURCE, and then task creation fails.
pub fn nofile_limit() -> u64 {
    crate::sys::nofile_hard_limit().map_or(1024, |max| NOFILE_LIMIT.min(max))
}

/// Docker's default capability set (also containerd's `defaultUnixCaps`).
pub fn default_capabilities() -> HashSet<Capability> {
    [
        Capability::Chown,
        Capability::DacOverride,
        Capability::Fsetid,
        Capability::Fowner,
        Capability::Mknod,
        Capability::NetRaw,
        Capability::Setgid,
        Capability::Setuid,
        Capability::Setfcap,
        Capability::Setpcap,
        Capability::NetBindService,
        Capability::SysChroot,
        Capability::Kill,
        Capability::AuditWrite,
    ]
    .into_iter()
    .collect()
}

/// containerd's and Docker's masked paths: host information a container must not read.
pub fn masked_paths() -> Vec<String> {
    [
        "/proc/acpi",
        "/proc/asound",
        "/proc/kcore",
        "/proc/keys",
        "/proc/latency_stats",
        "/proc/timer_list",
        "/proc/timer_stats",
        "/proc/sched_debug",
        "/proc/scsi",
        "/sys/firmware",
        "/sys/devices/virtual/powercap",
    ]
    .map(String::from)
    .to_vec()
}

pub fn readonly_paths() -> Vec<String> {
    [
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ]
    .map(String::from)
    .to_vec()
}

/// Docker's per-network-namespace defaults: non-root apps may bind ports below 1024 and use
/// ping sockets. Safe because every task has a network namespace of its own.
pub fn default_sysctls() -> std::collections::HashMap<String, String> {
    [
        ("net.ipv4.ip_unprivileged_port_start", "0"),
        ("net.ipv4.ping_group_range", "0 2147483647"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Entrypoint followed by Cmd, as Docker runs an image without overrides.
pub fn process_args(image: &ImageConfig) -> Result<Vec<String>, SpecError> {
    let args: Vec<String> = image.entrypoint.iter().chain(&image.cmd).cloned().collect();
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(args)
}

/// HOSTNAME, then the image env, then the app env, then HALOY_REPLICA_ID; a later key replaces
/// an earlier one in place. PATH gets Docker's default when nobody set it.
pub fn merge_env(
    hostname: &str,
    image_env: &[String],
    app_env: &[(String, String)],
    replica_id: &str,
) -> Vec<String> {
    let mut merged: Vec<(String, String)> = Vec::new();
    let mut set = |key: &str, value: &str| match merged.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value.to_string(),
        None => merged.push((key.to_string(), value.to_string())),
    };
    set("HOSTNAME", hostname);
    for entry in image_env {
        if let Some((key, value)) = entry.split_once('=') {
            set(key, value);
        }
    }
    for (key, value) in app_env {
        set(key, value);
    }
    set("HALOY_REPLICA_ID", replica_id);
    if !merged.iter().any(|(k, _)| k == "PATH") {
        if let Some((key, value)) = DEFAULT_PATH.split_once('=') {
            merged.insert(0, (key.to_string(), value.to_string()));
        }
    }
    merged
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

/// True when the image's `User` needs /etc/passwd or /etc/group to become numeric ids.
pub fn user_needs_lookup(user: Option<&str>) -> bool {
    let user = user.unwrap_or("").trim();
    if user.is_empty() {
        return false;
    }
    match user.split_once(':') {
        Some((u, g)) => u.parse::<u32>().is_err() || g.parse::<u32>().is_err(),
        // A numeric uid alone still needs passwd for its primary group.
        None => true,
    }
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    passwd.lines().filter_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some(PasswdEntry { name, uid, gid })
    })
}

/// (name, gid, members) of each /etc/group line.
fn group_entries(group: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    group.lines().filter_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        let gid = fields.next()?.parse().ok()?;
        let members = fields
            .next()
            .unwrap_or("")
            .split(',')
            .filter(|m| !m.is_empty())
            .collect();
        Some((name, gid, members))
    })
}

/// Turns the image's `User` (`name`, `uid`, `name:group`, `uid:gid`, ...) into numeric ids the
/// way runc does: a numeric uid missing from passwd gets gid 0; supplementary groups come from
/// /etc/group membership.
pub fn resolve_user(
    user: Option<&str>,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ResolvedUser, SpecError> {
    let spec = user.unwrap_or("").trim();
    if spec.is_empty() {
        return Ok(ResolvedUser::default());
    }
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = passwd.unwrap_or("");
    let found = passwd_entries(passwd)
        .find(|e| e.name == user_part || user_part.parse() == Ok(e.uid))
        .map(|e| (e.name.to_string(), e.uid, e.gid));
    let (name, uid, primary_gid) = match (found, user_part.parse::<u32>()) {
        (Some(entry), _) => (Some(entry.0), entry.1, entry.2),
        (None, Ok(uid)) => (None, uid, 0),
        (None, Err(_)) => {
            return Err(SpecError::UnknownUser {
                user: user_part.to_string(),
            })
        }
    };
    let group = group.unwrap_or("");
    let gid = match group_part {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries(group)
                .find(|(n, _, _)| *n == g)
                .map(|(_, gid, _)| gid)
                .ok_or_else(|| SpecError::UnknownGroup {
                    group: g.to_string(),
                })?,
        },
    };
    let mut additional_gids: Vec<u32> = match &name {
        Some(name) if group_part.is_none() => group_entries(group)
            .filter(|(_, g, members)| *g != gid && members.contains(&name.as_str()))
            .map(|(_, g, _)| g)
            .collect(),
        _ => Vec::new(),
    };
    additional_gids.dedup();
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
    })
}

/// /etc/hosts of a task: loopback names plus its own address under its hostname.
pub fn hosts_file(hostname: &str, ip: Option<IpAddr>) -> String {
    let mut hosts = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    if let Some(ip) = ip {
        hosts.push_str(&format!("{ip}\t{hostname}\n"));
    }
    hosts
}

fn is_loopback_nameserver(line: &str) -> bool {
    let mut words = line.split_whitespace();
    if words.next() != Some("nameserver") {
        return false;
    }
    // "fe80::1%eth0" style zone ids do not parse; such servers are not loopback anyway.
    words
        .next()
        .and_then(|addr| addr.parse::<IpAddr>().ok())
        .is_some_and(|ip| ip.is_loopback())
}

/// The host's resolv.conf without loopback nameservers (those answer only in the host's
/// namespace). None when no usable nameserver is left.
pub fn task_resolv_conf(host_resolv: &str) -> Option<String> {
    let kept: Vec<&str> = host_resolv
        .lines()
        .filter(|line| !is_loopback_nameserver(line))
        .collect();
    let has_nameserver = kept
        .iter()
        .any(|l| l.split_whitespace().next() == Some("nameserver"));
    has_nameserver.then(|| {
        let mut text = kept.join("\n");
        text.push('\n');
        text
    })
}

/// Picks the resolv.conf content for tasks: the host's /etc/resolv.conf without loopback
/// servers, else systemd-resolved's upstream list, else the host's file unchanged.
pub fn choose_resolv_conf(candidates: &[(&Path, Option<String>)]) -> String {
    candidates
        .iter()
        .filter_map(|(_, text)| text.as_deref().and_then(task_resolv_conf))
        .next()
        .or_else(|| candidates.first().and_then(|(_, text)| text.clone()))
        .unwrap_or_default()
}

fn host_resolv_conf() -> String {
    let paths = [
        Path::new("/etc/resolv.conf"),
        Path::new("/run/systemd/resolve/resolv.conf"),
    ];
    let candidates: Vec<(&Path, Option<String>)> = paths
        .iter()
        .map(|p| (*p, std::fs::read_to_string(p).ok()))
        .collect();
    choose_resolv_conf(&candidates)
}

/// resolv.conf of a task whose resolver is haloyd's DNS server at `nameserver`: app names
/// are searched under `haloy.internal` first, then the host's own search domains; the host's
/// options stay.
pub fn resolv_conf_via(nameserver: IpAddr, host_resolv: &str) -> String {
    let mut search = vec![crate::dns::INTERNAL_ZONE.to_string()];
    let mut options = Vec::new();
    for line in host_resolv.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("search" | "domain") => search.extend(words.map(str::to_string)),
            Some("options") => options.push(line.trim().to_string()),
            _ => {}
        }
    }
    search.dedup();
    let mut text = format!("nameserver {nameserver}\nsearch {}\n", search.join(" "));
    for line in options {
        text.push_str(&line);
        text.push('\n');
    }
    text
}

fn write_file(path: &Path, contents: &str) -> Result<(), SpecError> {
    std::fs::write(path, contents).map_err(|source| SpecError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes hosts, resolv.conf and hostname for one task into `dir` (created if needed).
/// `nameserver` is haloyd's DNS server when it runs; without it the task gets the host's
/// resolvers (minus loopback ones).
pub fn write_task_files(
    dir: &Path,
    hostname: &str,
    ip: Option<IpAddr>,
    nameserver: Option<IpAddr>,
) -> Result<TaskFiles, SpecError> {
    std::fs::create_dir_all(dir).map_err(|source| SpecError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let files = TaskFiles {
        hosts: dir.join("hosts"),
        resolv_conf: dir.join("resolv.conf"),
        hostname: dir.join("hostname"),
    };
    write_file(&files.hosts, &hosts_file(hostname, ip))?;
    let resolv = match nameserver {
        Some(ns) => resolv_conf_via(
            ns,
            &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        ),
        None => host_resolv_conf(),
    };
    write_file(&files.resolv_conf, &resolv)?;
    write_file(&files.hostname, &format!("{hostname}\n"))?;
    Ok(files)
}

fn valid_target(target: &str) -> bool {
    let path = Path::new(target);
    path.is_absolute() && !path.components().any(|c| c == Component::ParentDir)
}

fn valid_volume_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Decides each volume's host directory; named volumes live under
/// `<volumes_root>/<app>/<name>` and are created on first use.
pub fn resolve_volumes(
    volumes: &[VolumeMount],
    app: &str,
    volumes_root: &Path,
) -> Result<Vec<ResolvedVolume>, SpecError> {
    volumes
        .iter()
        .map(|volume| {
            if !valid_target(&volume.target) {
                return Err(SpecError::InvalidVolumeTarget {
                    target: volume.target.clone(),
                });
            }
            let host_path = match &volume.source {
                VolumeSource::Bind(path) if path.is_absolute() => path.clone(),
                VolumeSource::Bind(path) => {
                    return Err(SpecError::InvalidBindSource {
                        source_path: path.clone(),
                    })
                }
                VolumeSource::Named(name) if valid_volume_name(name) => {
                    let dir = volumes_root.join(app).join(name);
                    std::fs::create_dir_all(&dir).map_err(|source| SpecError::Io {
                        path: dir.clone(),
                        source,
                    })?;
                    dir
                }
                VolumeSource::Named(name) => {
                    return Err(SpecError::InvalidVolumeName { name: name.clone() })
                }
            };
            Ok(ResolvedVolume {
                host_path,
                target: volume.target.clone(),
                read_only: volume.read_only,
            })
        })
        .collect()
}

fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

/// Bind options of a volume. Read-only is recursive (`rro`, runc's mount_setattr with
/// AT_RECURSIVE, as Docker 25+): plain `ro` would leave every mount below the source (a
/// host's /proc, /sys, /dev/shm under a bound `/`) writable.
pub fn bind_options(read_only: bool) -> Vec<String> {
    let mode: &[&str] = if read_only { &["ro", "rro"] } else { &["rw"] };
    ["rbind", "rprivate"]
        .iter()
        .chain(mode)
        .map(|o| o.to_string())
        .collect()
}

fn bind_mount(source: &Path, destination: &str, read_only: bool) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(destination)
        .typ("bind")
        .source(source)
        .options(bind_options(read_only))
        .build()?)
}

/// The kernel file systems every container gets (containerd's defaults plus Docker's cgroup).
fn standard_mounts() -> Result<Vec<Mount>, SpecError> {
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        )?,
    ])
}

fn task_mounts(input: &SpecInput<'_>) -> Result<Vec<Mount>, SpecError> {
    let mut mounts = standard_mounts()?;
    mounts.push(bind_mount(&input.files.hosts, "/etc/hosts", false)?);
    mounts.push(bind_mount(
        &input.files.resolv_conf,
        "/etc/resolv.conf",
        false,
    )?);
    mounts.push(bind_mount(&input.files.hostname, "/etc/hostname", false)?);
    for volume in input.volumes {
        mounts.push(bind_mount(
            &volume.host_path,
            &volume.target,
            volume.read_only,
        )?);
    }
    if let Some(init) = input.init {
        mounts.push(bind_mount(init, INIT_PATH, true)?);
    }
    Ok(mounts)
}

fn linux_resources(resources: Resources) -> Result<oci_spec::runtime::LinuxResources, SpecError> {
    // Deny all devices; runc adds its standard allow-list (null, zero, tty, ...) itself.
    let deny_all = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()?;
    let mut builder = LinuxResourcesBuilder::default().devices(vec![deny_all]);
    if let Some(bytes) = resources.memory_bytes {
        let limit = i64::try_from(bytes).map_err(|_| SpecError::InvalidResources {
            reason: format!("memory limit {bytes} bytes is too large"),
        })?;
        builder = builder.memory(LinuxMemoryBuilder::default().limit(limit).build()?);
    }
    if let Some(cpus) = resources.cpus {
        if !(cpus.is_finite() && cpus > 0.0) {
            return Err(SpecError::InvalidResources {
                reason: format!("cpus must be a positive number, got {cpus}"),
            });
        }
        let quota = (cpus * CPU_PERIOD_US as f64).round() as i64;
        let cpu = LinuxCpuBuilder::default()
            .quota(quota.max(1000))
            .period(CPU_PERIOD_US)
            .build()?;
        builder = builder.cpu(cpu);
    }
    if let Some(pids) = resources.pids {
        let limit = i64::try_from(pids).ok().filter(|p| *p > 0).ok_or_else(|| {
            SpecError::InvalidResources {
                reason: format!("pids limit must be a positive number, got {pids}"),
            }
        })?;
        builder = builder.pids(LinuxPidsBuilder::default().limit(limit).build()?);
    }
    Ok(builder.build()?)
}

fn namespaces(netns_path: &Path) -> Result<Vec<oci_spec::runtime::LinuxNamespace>, SpecError> {
    let own = |typ| LinuxNamespaceBuilder::default().typ(typ).build();
    Ok(vec![
        own(LinuxNamespaceType::Pid)?,
        own(LinuxNamespaceType::Ipc)?,
        own(LinuxNamespaceType::Uts)?,
        own(LinuxNamespaceType::Mount)?,
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Network)
            .path(netns_path)
            .build()?,
    ])
}

/// The complete runtime spec of one replica.
pub fn build_spec(input: &SpecInput<'_>) -> Result<Spec, SpecError> {
    let caps = default_capabilities();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps.clone())
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()?;
    let user = UserBuilder::default()
        .uid(input.user.uid)
        .gid(input.user.gid)
        .additional_gids(input.user.additional_gids.clone())
        .build()?;
    let nofile = PosixRlimitBuilder::default()
        .typ(PosixRlimitType::RlimitNofile)
        .hard(input.nofile)
        .soft(input.nofile)
        .build()?;
    let cwd = input
        .image
        .working_dir
        .as_deref()
        .filter(|d| !d.is_empty())
        .unwrap_or("/");
    let seccomp = match input.seccomp {
        SeccompMode::Default => Some(default_profile(&caps, &Host::current())?),
        SeccompMode::Unconfined => None,
    };
    let mut process = ProcessBuilder::default()
        .terminal(false)
        .user(user)
        .args(task_args(input.image, input.init.is_some())?)
        .env(merge_env(
            input.hostname,
            &input.image.env,
            input.app_env,
            input.replica_id,
        ))
        .cwd(cwd)
        .capabilities(capabilities)
        .rlimits(vec![nofile])
        .no_new_privileges(true)
        .build()?;
    if let Some(profile) = input.apparmor_profile {
        process.set_apparmor_profile(Some(profile.to_string()));
    }
    let mut linux = LinuxBuilder::default()
        .sysctl(default_sysctls())
        .cgroups_path(input.cgroups_path)
        .resources(linux_resources(input.resources)?)
        .namespaces(namespaces(input.netns_path)?)
        .masked_paths(masked_paths())
        .readonly_paths(readonly_paths())
        .build()?;
    linux.set_seccomp(seccomp);
    let root = RootBuilder::default()
        .path("rootfs")
        .readonly(false)
        .build()?;
    let mut spec = SpecBuilder::default()
        .version("1.0.2")
        .hostname(input.hostname)
        .root(root)
        .process(process)
        .mounts(task_mounts(input)?)
        .linux(linux)
        .build()?;
    if let Some(group) = input.shim_group {
        let mut annotations = spec.annotations().clone().unwrap_or_default();
        annotations.insert(SHIM_GROUP_ANNOTATION.to_string(), group.to_string());
        spec.set_annotations(Some(annotations));
    }
    Ok(spec)
}

/// The spec as containerd stores it: JSON inside an Any.
pub fn spec_any(spec: &Spec) -> Result<prost_types::Any, SpecError> {
    Ok(prost_types::Any {
        type_url: SPEC_TYPE_URL.to_string(),
        value: serde_json::to_vec(spec)?,
    })
}

#[cfg(test)]
#[path = "tests/spec.rs"]
mod tests;
