//! Unit tests of `cli::hooks`: real shell commands in a temp folder.

use super::*;

fn commands(list: &[&str]) -> Vec<String> {
    list.iter().map(|c| c.to_string()).collect()
}

#[tokio::test]
async fn hooks_run_in_order_in_the_given_folder() {
    let dir = tempfile::tempdir().unwrap();
    let list = commands(&[
        "pwd > where.txt",
        "echo one >> order.txt",
        "echo two >> order.txt",
    ]);
    run(Hook::PreDeploy, &list, dir.path()).await.unwrap();
    let where_ = std::fs::read_to_string(dir.path().join("where.txt")).unwrap();
    assert_eq!(
        std::fs::canonicalize(where_.trim()).unwrap(),
        std::fs::canonicalize(dir.path()).unwrap()
    );
    let order = std::fs::read_to_string(dir.path().join("order.txt")).unwrap();
    assert_eq!(order, "one\ntwo\n");
}

#[tokio::test]
async fn a_failing_hook_stops_the_list_and_names_the_key_and_command() {
    let dir = tempfile::tempdir().unwrap();
    let list = commands(&["exit 3", "touch ran-after"]);
    let err = run(Hook::GlobalPreDeploy, &list, dir.path())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("global_pre_deploy hook failed"), "{msg}");
    assert!(msg.contains("`exit 3`") && msg.contains('3'), "{msg}");
    assert!(!dir.path().join("ran-after").exists());
}

#[tokio::test]
async fn an_empty_command_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = run(Hook::PostDeploy, &commands(&["  "]), dir.path())
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        HookError::Empty {
            field: "post_deploy",
            ..
        }
    ));
}

#[test]
fn the_work_dir_is_the_config_files_folder() {
    assert_eq!(
        work_dir(Path::new("/srv/app/haloy.yaml")),
        PathBuf::from("/srv/app")
    );
    assert_eq!(work_dir(Path::new("haloy.yaml")), PathBuf::from("."));
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(work_dir(dir.path()), dir.path());
}
