//! containerd's default seccomp profile (`contrib/seccomp/seccomp_default.go`, which is
//! Docker's too), ported rule for rule: an allowlist with EPERM as the default action, the
//! architecture-specific and kernel-version rules, the rules a capability in the bounding set
//! unlocks, and without CAP_SYS_ADMIN a `clone` that refuses every namespace flag
//! (CLONE_NEWUSER included) and a `clone3` that answers ENOSYS so libc falls back to `clone`.
//!
//! Syscall names this host's libseccomp does not know are skipped by runc, so the list may
//! name syscalls newer than the kernel.

use std::collections::HashSet;

use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

use super::spec::SpecError;

/// Syscalls every container may make (containerd's first rule).
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "getxattrat",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listmount",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lsm_get_self_attr",
    "lsm_list_modules",
    "lsm_set_self_attr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "map_shadow_stack",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "setxattrat",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statmount",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// `personality(2)` personas containerd allows: PER_LINUX, PER_LINUX32, UNAME26 and
/// combinations, and the 0xffffffff query.
const PERSONALITIES: &[u64] = &[0x0, 0x0008, 0x20000, 0x20008, 0xffff_ffff];

/// The namespace flags `clone` must not carry without CAP_SYS_ADMIN.
const CLONE_NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

/// Syscalls a capability in the bounding set unlocks, in containerd's order.
const CAPABILITY_RULES: &[(Capability, &[&str])] = &[
    (Capability::DacReadSearch, &["open_by_handle_at"]),
    (
        Capability::SysAdmin,
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    (Capability::SysBoot, &["reboot"]),
    (Capability::SysChroot, &["chroot"]),
    (
        Capability::SysModule,
        &["delete_module", "init_module", "finit_module"],
    ),
    (Capability::SysPacct, &["acct"]),
    (
        Capability::SysPtrace,
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
    ),
    (Capability::SysRawio, &["iopl", "ioperm"]),
    (
        Capability::SysTime,
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    (Capability::SysTtyConfig, &["vhangup"]),
    (
        Capability::SysNice,
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    (Capability::Syslog, &["syslog"]),
    (Capability::Bpf, &["bpf"]),
    (Capability::Perfmon, &["perf_event_open"]),
];

/// The host a profile is built for: `std::env::consts::ARCH` spelling, little-endian or not,
/// and the running kernel's (major, minor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host<'a> {
    pub arch: &'a str,
    pub little_endian: bool,
    pub kernel: (u32, u32),
}

impl Host<'static> {
    /// This machine.
    pub fn current() -> Host<'static> {
        Host {
            arch: std::env::consts::ARCH,
            little_endian: cfg!(target_endian = "little"),
            kernel: kernel_version(),
        }
    }
}

/// (major, minor) of the running kernel; (0, 0) when uname fails, which only drops the
/// kernel-conditional rule (the safe direction).
pub fn kernel_version() -> (u32, u32) {
    crate::sys::kernel_release().map_or((0, 0), |release| parse_kernel_release(&release))
}

/// "6.1.0-18-amd64" → (6, 1).
pub fn parse_kernel_release(release: &str) -> (u32, u32) {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    let minor = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (major, minor)
}

/// containerd's `arches()`: the native ABI and the compat ABIs a process may switch to.
pub fn architectures(host: &Host<'_>) -> Vec<Arch> {
    match (host.arch, host.little_endian) {
        ("x86_64", _) => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
        ("aarch64", _) => vec![Arch::ScmpArchArm, Arch::ScmpArchAarch64],
        ("mips64", false) => vec![
            Arch::ScmpArchMips,
            Arch::ScmpArchMips64,
            Arch::ScmpArchMips64n32,
        ],
        ("mips64", true) => vec![
            Arch::ScmpArchMipsel,
            Arch::ScmpArchMipsel64,
            Arch::ScmpArchMipsel64n32,
        ],
        ("s390x", _) => vec![Arch::ScmpArchS390, Arch::ScmpArchS390x],
        ("riscv64", _) => vec![Arch::ScmpArchRiscv64],
        ("loongarch64", _) => vec![Arch::ScmpArchLoongarch64],
        _ => Vec::new(),
    }
}

/// Syscalls only some architectures have (containerd's "include by arch").
fn arch_syscalls(host: &Host<'_>) -> &'static [&'static str] {
    match (host.arch, host.little_endian) {
        ("powerpc64", true) => &["sync_file_range2", "swapcontext"],
        ("arm" | "aarch64", _) => &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ],
        ("x86_64", _) => &["arch_prctl", "modify_ldt"],
        ("x86", _) => &["modify_ldt"],
        ("s390x", _) => &[
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
            "s390_runtime_instr",
        ],
        ("riscv64", _) => &["riscv_flush_icache", "riscv_hwprobe"],
        _ => &[],
    }
}

fn rule(
    names: &[&str],
    action: LinuxSeccompAction,
    args: Vec<LinuxSeccompArg>,
) -> Result<LinuxSyscall, SpecError> {
    let mut builder = LinuxSyscallBuilder::default()
        .names(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .action(action);
    if !args.is_empty() {
        builder = builder.args(args);
    }
    Ok(builder.build()?)
}

fn allow(names: &[&str]) -> Result<LinuxSyscall, SpecError> {
    rule(names, LinuxSeccompAction::ScmpActAllow, Vec::new())
}

/// Allows `name` when argument `index` compares to `value` with `op` (and `value_two`).
fn allow_if(
    name: &str,
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: Option<u64>,
) -> Result<LinuxSyscall, SpecError> {
    let mut arg = LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value);
    if let Some(two) = value_two {
        arg = arg.value_two(two);
    }
    rule(
        &[name],
        LinuxSeccompAction::ScmpActAllow,
        vec![arg.build()?],
    )
}

/// `socket(2)` for every address family but AF_ALG and AF_VSOCK. Three single-condition
/// rules, as containerd explains: repeated conditions on one argument would be ORed by runc.
fn socket_rules() -> Result<Vec<LinuxSyscall>, SpecError> {
    let alg = libc::AF_ALG as u64;
    let vsock = libc::AF_VSOCK as u64;
    Ok(vec![
        allow_if("socket", 0, LinuxSeccompOperator::ScmpCmpLt, alg, None)?,
        allow_if("socket", 0, LinuxSeccompOperator::ScmpCmpEq, alg + 1, None)?,
        allow_if("socket", 0, LinuxSeccompOperator::ScmpCmpGt, vsock, None)?,
    ])
}

/// `clone` without namespace flags (the flags are argument 1 on s390x), and `clone3` refused
/// with ENOSYS: its flags sit in memory seccomp cannot read, and ENOSYS makes libc use `clone`.
fn unprivileged_clone_rules(host: &Host<'_>) -> Result<Vec<LinuxSyscall>, SpecError> {
    let flags_arg = if host.arch == "s390x" { 1 } else { 0 };
    let clone = allow_if(
        "clone",
        flags_arg,
        LinuxSeccompOperator::ScmpCmpMaskedEq,
        CLONE_NAMESPACE_FLAGS,
        Some(0),
    )?;
    let mut clone3 = rule(&["clone3"], LinuxSeccompAction::ScmpActErrno, Vec::new())?;
    clone3.set_errno_ret(Some(libc::ENOSYS as u32));
    Ok(vec![clone, clone3])
}

/// The default profile for a process with `bounding` capabilities on `host`.
pub fn default_profile(
    bounding: &HashSet<Capability>,
    host: &Host<'_>,
) -> Result<LinuxSeccomp, SpecError> {
    let mut syscalls = vec![allow(ALLOWED)?];
    syscalls.extend(socket_rules()?);
    for persona in PERSONALITIES {
        syscalls.push(allow_if(
            "personality",
            0,
            LinuxSeccompOperator::ScmpCmpEq,
            *persona,
            None,
        )?);
    }
    if host.kernel >= (4, 8) {
        syscalls.push(allow(&["process_vm_readv", "process_vm_writev", "ptrace"])?);
    }
    let by_arch = arch_syscalls(host);
    if !by_arch.is_empty() {
        syscalls.push(allow(by_arch)?);
    }
    // A fixed order (not the set's) keeps the spec identical from one deploy to the next.
    for (capability, names) in CAPABILITY_RULES {
        if bounding.contains(capability) {
            syscalls.push(allow(names)?);
        }
    }
    if !bounding.contains(&Capability::SysAdmin) {
        syscalls.extend(unprivileged_clone_rules(host)?);
    }
    Ok(LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .architectures(architectures(host))
        .syscalls(syscalls)
        .build()?)
}

#[cfg(test)]
#[path = "tests/seccomp.rs"]
mod tests;
