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
fn deploy_takes_no_logs_and_include_protected() {
    let cli =
        Cli::try_parse_from(["haloy", "deploy", "-a", "--include-protected", "--no-logs"]).unwrap();
    assert!(cli.common.all);
    assert!(matches!(
        cli.command,
        Command::Deploy {
            no_logs: true,
            include_protected: true,
            image_from: None,
        }
    ));
}

fn app_from(yaml: &str) -> Vec<crate::config::ResolvedApp> {
    let env = std::collections::HashMap::new();
    let (apps, _) = crate::config::resolve_text(
        yaml,
        crate::config::tree::Format::Yaml,
        "haloy.yaml",
        std::path::Path::new("."),
        &env,
    )
    .unwrap();
    apps
}

#[test]
fn deploy_all_skips_protected_targets_unless_included() {
    let apps = app_from(
        "image: nginx\ntargets:\n  web: {}\n  db: {preset: database, image: postgres:17}\n  prod: {protected: true}\n",
    );
    let labels = |apps: &[crate::config::ResolvedApp]| -> Vec<String> {
        apps.iter().map(|a| a.label().to_string()).collect()
    };
    let kept = local::skip_protected(apps.clone(), true).unwrap();
    assert_eq!(labels(&kept), ["web"]);
    let all = local::skip_protected(apps, false).unwrap();
    assert_eq!(labels(&all), ["web", "db", "prod"]);
    let only_db = app_from("targets:\n  db: {preset: database, image: postgres:17}\n");
    let err = local::skip_protected(only_db, true).unwrap_err();
    assert!(err.to_string().contains("--include-protected"), "{err}");
}

#[test]
fn logs_raw_and_stop_server_parse() {
    let cli = Cli::try_parse_from(["haloy", "logs", "--raw", "--no-follow"]).unwrap();
    assert!(matches!(cli.command, Command::Logs { raw: true, .. }));
    let cli = Cli::try_parse_from(["haloy", "stop", "-s", "https://h.example.com"]).unwrap();
    match cli.command {
        Command::Stop { server, .. } => {
            assert_eq!(server.as_deref(), Some("https://h.example.com"))
        }
        _ => panic!(),
    }
}

#[test]
fn prune_images_is_a_dry_run_unless_yes() {
    let cli = Cli::try_parse_from(["haloy", "prune-images", "--keep", "2"]).unwrap();
    assert!(matches!(
        cli.command,
        Command::PruneImages {
            keep: Some(2),
            yes: false
        }
    ));
    let cli = Cli::try_parse_from(["haloy", "prune-images", "--yes"]).unwrap();
    assert!(matches!(
        cli.command,
        Command::PruneImages {
            keep: None,
            yes: true
        }
    ));
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
