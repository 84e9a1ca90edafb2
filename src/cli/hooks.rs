//! Deploy hooks (`global_pre_deploy`, `pre_deploy`, `post_deploy`, `global_post_deploy`): shell
//! commands run on the deploying machine, as Haloy runs them (haloydev/haloy
//! `internal/cmdexec/cmdexec.go` `RunCommand`, called from `internal/haloy/deploy.go`): each
//! through `$SHELL -c` (else `bash -c`, else `sh -c`), in the config file's folder, with the CLI's
//! own environment, its output going straight to the terminal. The first failing command stops
//! the list.

use std::path::{Path, PathBuf};
use std::process::Stdio;

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{field} hook failed: command `{command}` is empty; remove it from {field}")]
    Empty {
        field: &'static str,
        command: String,
    },
    #[error("{field} hook failed: `{command}` exited with {status} (run in {dir})")]
    Exited {
        field: &'static str,
        command: String,
        status: String,
        dir: PathBuf,
    },
    #[error("{field} hook failed: cannot run `{command}` with {shell}: {source}")]
    Spawn {
        field: &'static str,
        command: String,
        shell: String,
        source: std::io::Error,
    },
}

/// Which hook list runs; the name is the config key, used in messages as Haloy does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    GlobalPreDeploy,
    PreDeploy,
    PostDeploy,
    GlobalPostDeploy,
}

impl Hook {
    pub fn field(self) -> &'static str {
        match self {
            Hook::GlobalPreDeploy => "global_pre_deploy",
            Hook::PreDeploy => "pre_deploy",
            Hook::PostDeploy => "post_deploy",
            Hook::GlobalPostDeploy => "global_post_deploy",
        }
    }
}

/// Haloy's `getHooksWorkDir`: the folder of the config file (or the folder given with -c).
pub fn work_dir(config_file: &Path) -> PathBuf {
    if config_file.is_dir() {
        return config_file.to_path_buf();
    }
    config_file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Haloy's `findShell` on Unix: `$SHELL`, else `bash` on PATH, else `sh`.
pub fn shell() -> String {
    if let Some(shell) = std::env::var_os("SHELL").filter(|s| !s.is_empty()) {
        return shell.to_string_lossy().into_owned();
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join("bash").is_file()))
        .unwrap_or(false);
    if on_path { "bash" } else { "sh" }.to_string()
}

/// Runs every command of `hook` in order in `dir`; stops at the first that fails.
pub async fn run(hook: Hook, commands: &[String], dir: &Path) -> Result<(), HookError> {
    for command in commands {
        run_one(hook, command, dir).await?;
    }
    Ok(())
}

async fn run_one(hook: Hook, command: &str, dir: &Path) -> Result<(), HookError> {
    let field = hook.field();
    if command.trim().is_empty() {
        return Err(HookError::Empty {
            field,
            command: command.to_string(),
        });
    }
    let shell = shell();
    tracing::debug!(hook = field, command, dir = %dir.display(), "running hook");
    // Hooks are shell commands the user wrote for the deploying machine (see clippy.toml).
    #[allow(clippy::disallowed_methods)]
    let status = tokio::process::Command::new(&shell)
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .await
        .map_err(|source| HookError::Spawn {
            field,
            command: command.to_string(),
            shell: shell.clone(),
            source,
        })?;
    if status.success() {
        return Ok(());
    }
    Err(HookError::Exited {
        field,
        command: command.to_string(),
        status: status.to_string(),
        dir: dir.to_path_buf(),
    })
}

#[cfg(test)]
#[path = "tests/hooks.rs"]
mod tests;
