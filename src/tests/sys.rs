//! Unit tests of the checked unsafe wrappers.

use super::*;

#[test]
fn environment_changes_are_refused_once_other_threads_exist() {
    // The test harness runs tests on worker threads, and this one starts another for sure.
    let other = std::thread::spawn(|| std::thread::park_timeout(std::time::Duration::from_secs(1)));
    let err = set_env("HALOY_SYS_TEST", "1").expect_err("refused with threads");
    assert!(err.threads > 1, "{err}");
    assert!(std::env::var_os("HALOY_SYS_TEST").is_none());
    other.thread().unpark();
    other.join().expect("thread");
}

#[test]
fn wrappers_answer_on_linux() {
    assert!(fd_is_open(0) || fd_is_open(1) || fd_is_open(2));
    assert!(!fd_is_open(-1));
    assert!(take_inherited_fd(-1).is_none());
    assert!(nofile_hard_limit().is_some_and(|n| n > 0));
    assert!(kernel_release().is_some_and(|r| r.chars().next().is_some_and(|c| c.is_ascii_digit())));
}

#[test]
fn releasing_heap_memory_is_a_no_op_without_mimalloc_and_after_it() {
    // The test binary uses the system allocator: mimalloc's heap for this thread was never
    // initialised, which mi_collect must take in its stride (haloy and haloy-logd link it too).
    release_freed_heap_memory();
    let block = vec![0u8; 1 << 20];
    drop(block);
    release_freed_heap_memory();
}

#[test]
fn poll_times_out_with_nothing_ready() {
    let (read, _write) = nix::unistd::pipe().expect("pipe");
    let mut fds = [libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&read),
        events: libc::POLLIN,
        revents: 0,
    }];
    let ready = poll(&mut fds, Some(std::time::Duration::from_millis(1))).expect("poll");
    assert_eq!(ready, 0);
}
