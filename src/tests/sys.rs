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
