//! The crate's only unsafe code: thin, checked wrappers over the few libc/std calls that have
//! no safe form (inherited descriptors, poll, getrlimit, uname, the fork-exec fd placement,
//! mimalloc's collect, environment changes at start-up). Everything else is
//! `deny(unsafe_code)` (lib.rs); keep each block here small, with the reason it is sound
//! beside it.
#![allow(unsafe_code)]

use std::ffi::OsStr;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// True when `fd` is an open descriptor of this process.
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor table; any int is a valid argument.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Takes ownership of a descriptor another process passed to this one at start-up (the
/// shim's log pipes, a predecessor's ready pipe); `None` when it is not open. Callers use it
/// only for fd numbers named by their parent, which nothing else in this process owns.
pub fn take_inherited_fd(fd: RawFd) -> Option<OwnedFd> {
    if !fd_is_open(fd) {
        return None;
    }
    // SAFETY: the fd is open (checked above) and, by the contract above, owned by no one else.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `poll(2)`, waiting at most `timeout` (`None`: without limit), retried on EINTR (with the
/// full timeout again: callers recompute theirs from a deadline); returns how many entries
/// have events, 0 when the time ran out.
pub fn poll(fds: &mut [libc::pollfd], timeout: Option<std::time::Duration>) -> io::Result<usize> {
    let millis = timeout.map_or(-1, |t| {
        // Rounded up, so a short remainder does not turn into a busy loop of 0 ms polls.
        libc::c_int::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(libc::c_int::MAX)
    });
    loop {
        // SAFETY: `fds` is a valid, exclusively borrowed array of pollfd for the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis) };
        if let Ok(n) = usize::try_from(n) {
            return Ok(n);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Lets mimalloc, haloyd's allocator, return the calling thread's freed pages whose purge
/// delay has passed (and expired arena memory) to the OS. A no-op on threads that never
/// allocated through mimalloc, and so in binaries that use the system allocator.
pub fn release_freed_heap_memory() {
    // SAFETY: mi_collect takes no pointers and has no preconditions; it works on the calling
    // thread's own heap and returns early when that heap was never initialised.
    unsafe { libmimalloc_sys::mi_collect(false) }
}

/// The hard RLIMIT_NOFILE of this process, if getrlimit answers.
pub fn nofile_hard_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we pass.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    ok.then_some(limit.rlim_max)
}

/// The running kernel's release string ("6.1.0-18-amd64"), if uname answers.
pub fn kernel_release() -> Option<String> {
    // SAFETY: utsname is plain C data; all-zero is a valid value.
    let mut name: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname only writes into the struct we pass.
    if unsafe { libc::uname(&mut name) } != 0 {
        return None;
    }
    Some(
        name.release
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8 as char)
            .collect(),
    )
}

/// Makes the child of `command` receive `sources[..count]` as fds 3, 4, … (without CLOEXEC).
pub fn pass_fds<const N: usize>(
    command: &mut tokio::process::Command,
    sources: [RawFd; N],
    count: usize,
) {
    // SAFETY: the hook only calls fcntl and dup2 (async-signal-safe) on fds copied into fixed
    // arrays; it allocates nothing between fork and exec.
    unsafe {
        command.pre_exec(move || place_fds(&sources, count.min(N)));
    }
}

/// In the child between fork and exec: `sources[i]` becomes fd `3 + i`, without CLOEXEC.
/// Every source is first copied above the targets, so a source that is itself a target
/// number is not overwritten before it is moved.
fn place_fds<const N: usize>(sources: &[RawFd; N], count: usize) -> io::Result<()> {
    let sources = &sources[..count];
    let mut high = [-1; N];
    for (slot, fd) in high.iter_mut().zip(sources) {
        // SAFETY: plain fcntl on an fd number; failure is reported.
        let copy = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 64) };
        if copy < 0 {
            return Err(io::Error::last_os_error());
        }
        *slot = copy;
    }
    for (i, fd) in high.iter().take(sources.len()).enumerate() {
        // dup2 leaves the new fd without CLOEXEC: the successor inherits it.
        // SAFETY: as above.
        if unsafe { libc::dup2(*fd, 3 + i as RawFd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Changing the environment is only sound while no other thread can read it.
#[derive(Debug, thiserror::Error)]
#[error("the environment can only be changed while haloyd runs one thread (found {threads})")]
pub struct NotSingleThreaded {
    pub threads: usize,
}

/// Threads of this process, from /proc/self/task (0 if unreadable, which counts as many).
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

fn single_threaded() -> Result<(), NotSingleThreaded> {
    match thread_count() {
        1 => Ok(()),
        threads => Err(NotSingleThreaded { threads }),
    }
}

/// `std::env::set_var`, refused unless this process has a single thread.
pub fn set_env(key: &str, value: impl AsRef<OsStr>) -> Result<(), NotSingleThreaded> {
    single_threaded()?;
    // SAFETY: one thread (checked above): nothing reads the environment concurrently.
    unsafe { std::env::set_var(key, value) };
    Ok(())
}

/// `std::env::remove_var`, refused unless this process has a single thread.
pub fn remove_env(key: &str) -> Result<(), NotSingleThreaded> {
    single_threaded()?;
    // SAFETY: one thread (checked above).
    unsafe { std::env::remove_var(key) };
    Ok(())
}

/// The sockets systemd (or a predecessor) passed with their names; clears `LISTEN_*`.
/// Refused unless this process has a single thread.
pub fn take_listen_fds() -> io::Result<Vec<(OwnedFd, String)>> {
    single_threaded().map_err(io::Error::other)?;
    // SAFETY: one thread (checked above), so unsetting the variables races with nothing.
    let fds = unsafe { sd_notify::listen_fds_with_names_and_unset_env() }?;
    Ok(fds
        .map(|(fd, name)| {
            // SAFETY: systemd's protocol hands these fds to this process alone (LISTEN_PID
            // matched), and they are taken once: the variables are gone now.
            (unsafe { OwnedFd::from_raw_fd(fd) }, name)
        })
        .collect())
}

/// Rust ignores SIGPIPE; restores the default (die quietly), like other Unix tools.
pub fn restore_default_sigpipe() {
    // SAFETY: SIG_DFL is a valid disposition; no Rust handler is replaced.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Columns and rows of the terminal on `fd` (TIOCGWINSZ); None when it is no terminal.
pub fn terminal_size(fd: std::os::fd::BorrowedFd<'_>) -> Option<(u16, u16)> {
    use std::os::fd::AsRawFd;
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the pointer we pass, which lives on our
    // stack for the call; a bad or non-terminal fd only makes the call fail.
    let ok = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) } == 0;
    (ok && size.ws_col > 0 && size.ws_row > 0).then_some((size.ws_col, size.ws_row))
}

#[cfg(test)]
#[path = "tests/sys.rs"]
mod tests;
