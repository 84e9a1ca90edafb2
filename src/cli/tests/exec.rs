use std::ffi::OsString;

use super::*;

fn rewrite(args: &[&str]) -> Vec<String> {
    rewrite_tty_flag(args.iter().map(OsString::from))
        .into_iter()
        .map(|a| a.into_string().unwrap())
        .collect()
}

#[test]
fn t_after_exec_means_tty() {
    assert_eq!(
        rewrite(&["haloy", "exec", "-it", "--", "sh"]),
        ["haloy", "exec", "-i", "--tty", "--", "sh"]
    );
    assert_eq!(
        rewrite(&[
            "haloy",
            "exec",
            "-t",
            "--replica",
            "1",
            "--",
            "stty",
            "size"
        ]),
        [
            "haloy",
            "exec",
            "--tty",
            "--replica",
            "1",
            "--",
            "stty",
            "size"
        ]
    );
    assert_eq!(
        rewrite(&["haloy", "exec", "-ti", "sh"]),
        ["haloy", "exec", "-i", "--tty", "sh"]
    );
}

#[test]
fn t_elsewhere_stays_targets() {
    assert_eq!(
        rewrite(&["haloy", "-t", "prod", "exec", "--", "ls", "-t"]),
        ["haloy", "-t", "prod", "exec", "--", "ls", "-t"]
    );
    assert_eq!(
        rewrite(&["haloy", "logs", "-t", "exec"]),
        ["haloy", "logs", "-t", "exec"]
    );
    assert_eq!(
        rewrite(&["haloy", "deploy", "-t", "x"]),
        ["haloy", "deploy", "-t", "x"]
    );
    assert_eq!(
        rewrite(&["haloy", "exec", "-i", "--", "cat"]),
        ["haloy", "exec", "-i", "--", "cat"]
    );
}

#[test]
fn the_rewritten_line_parses() {
    use clap::Parser;
    let args = rewrite_tty_flag(
        [
            "haloy",
            "exec",
            "-it",
            "--timeout",
            "5s",
            "--",
            "sh",
            "-c",
            "exit 3",
        ]
        .iter()
        .map(OsString::from),
    );
    let cli = crate::cli::Cli::try_parse_from(args).unwrap();
    match cli.command {
        crate::cli::Command::Exec {
            interactive,
            tty,
            timeout,
            command,
            ..
        } => {
            assert!(interactive && tty);
            assert_eq!(timeout, Some(Duration::from_secs(5)));
            assert_eq!(command, ["sh", "-c", "exit 3"]);
        }
        other => panic!("parsed as {other:?}"),
    }
}
