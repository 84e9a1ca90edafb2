use super::*;
use std::net::TcpListener;

fn sh(script: &str) -> Handover {
    Handover::new(PathBuf::from("/bin/sh"), vec!["-c".into(), script.into()])
}

#[tokio::test]
async fn the_successor_gets_the_sockets_the_systemd_way_and_its_ready_is_awaited() {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind");
    // The child checks what it got, then says READY on the fd it was told.
    let script = r#"
        [ "$LISTEN_FDS" = 2 ] || exit 11
        [ "$LISTEN_FDNAMES" = "http:api" ] || exit 12
        [ "$HALOYD_HANDOVER_PARENT" = "$PPID" ] || exit 13
        [ -z "$LISTEN_PID" ] || exit 14
        [ "$HALOYD_READY_FD" = 5 ] || exit 15
        case "$(readlink /proc/$$/fd/3)" in socket:*) ;; *) exit 16;; esac
        case "$(readlink /proc/$$/fd/4)" in socket:*) ;; *) exit 17;; esac
        printf 'READY\n' >&5
        sleep 0.2
    "#;
    let fds = [(a.as_raw_fd(), "http"), (b.as_raw_fd(), "api")];
    let pid = sh(script)
        .start_successor(&fds, Duration::from_secs(10))
        .await
        .expect("the successor says READY");
    assert!(pid > 0);
}

#[tokio::test]
async fn a_successor_that_exits_before_ready_is_reported_with_its_status() {
    let err = sh("exit 3")
        .start_successor(&[], Duration::from_secs(10))
        .await
        .expect_err("exited");
    assert!(
        matches!(err, HandoverError::Exited { ref status, .. } if status.contains('3')),
        "{err}"
    );
}

#[tokio::test]
async fn a_silent_successor_is_stopped_at_the_timeout() {
    let started = std::time::Instant::now();
    let err = sh("exec sleep 30")
        .start_successor(&[], Duration::from_millis(300))
        .await
        .expect_err("never ready");
    assert!(matches!(err, HandoverError::NotReady { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_binary_that_does_not_exist_is_a_spawn_error() {
    let err = Handover::new(PathBuf::from("/nonexistent/haloyd"), vec![])
        .start_successor(&[], Duration::from_secs(1))
        .await
        .expect_err("no binary");
    assert!(err.to_string().contains("/nonexistent/haloyd"), "{err}");
}

#[tokio::test]
async fn each_socket_lands_on_its_own_number_whatever_order_they_are_given_in() {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind");
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("fds");
    let script = format!(
        "readlink /proc/$$/fd/3 /proc/$$/fd/4 > {}; printf 'READY\\n' >&5",
        out.display()
    );
    // The higher fd first: it must become 3, the lower one 4.
    let fds = [(b.as_raw_fd(), "http"), (a.as_raw_fd(), "api")];
    sh(&script)
        .start_successor(&fds, Duration::from_secs(10))
        .await
        .expect("ready");
    let inode = |fd: RawFd| std::fs::read_link(format!("/proc/self/fd/{fd}")).expect("link");
    let got = std::fs::read_to_string(&out).expect("child output");
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(
        lines,
        [
            inode(b.as_raw_fd()).to_str().unwrap(),
            inode(a.as_raw_fd()).to_str().unwrap()
        ]
    );
}

#[test]
fn the_successor_runs_the_path_haloyd_was_started_as() {
    let link = PathBuf::from("/usr/local/bin/haloyd");
    assert_eq!(own_path(Some(link.clone())).expect("absolute"), link);
    let relative = own_path(Some(PathBuf::from("target/debug/haloyd"))).expect("relative");
    assert_eq!(
        relative,
        std::env::current_dir()
            .expect("cwd")
            .join("target/debug/haloyd")
    );
    // Found through PATH: argv[0] names no file, the running executable is used.
    let bare = own_path(Some(PathBuf::from("haloyd"))).expect("bare name");
    assert_eq!(bare, std::env::current_exe().expect("exe"));
}
