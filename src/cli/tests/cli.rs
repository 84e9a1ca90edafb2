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
