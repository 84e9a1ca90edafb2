//! Unit tests of `cli`.

use super::*;

#[test]
fn clap_definition_is_valid() {
    Cli::command().debug_assert();
}

#[test]
fn common_flags_work_after_the_command() {
    let cli = Cli::try_parse_from(["haloy", "deploy", "-t", "a,b", "-c", "x.yaml"]).unwrap();
    assert_eq!(cli.common.targets, ["a", "b"]);
    assert_eq!(cli.common.config, Some(PathBuf::from("x.yaml")));
    assert!(Cli::try_parse_from(["haloy", "stop", "--remove-volumes"]).is_err());
    let cli = Cli::try_parse_from(["haloy", "logs"]).unwrap();
    match cli.command {
        Command::Logs {
            tail, no_follow, ..
        } => assert_eq!((tail, no_follow), (100, false)),
        _ => panic!(),
    }
}

#[test]
fn server_logs_takes_access_logs_app_and_server() {
    let cli = Cli::try_parse_from([
        "haloy",
        "server",
        "logs",
        "--access-logs",
        "--app",
        "web",
        "--server",
        "http://127.0.0.1:9922",
    ])
    .unwrap();
    match cli.command {
        Command::Server {
            command:
                ServerCommand::Logs {
                    access_logs,
                    app,
                    server,
                },
        } => {
            assert!(access_logs);
            assert_eq!(app.as_deref(), Some("web"));
            assert_eq!(server.as_deref(), Some("http://127.0.0.1:9922"));
        }
        other => panic!("{other:?}"),
    }
    // `--app` filters access log lines only.
    assert!(Cli::try_parse_from(["haloy", "server", "logs", "--app", "web"]).is_err());
    assert!(Cli::try_parse_from(["haloy", "server", "version"]).is_ok());
}
