//! Server-side jobs: every mutating operation (deploy, rollback, stop, remove) runs in its own
//! task under the app's lock, reports through the progress hub under its job id, and records
//! its outcome as the app's last operation (live for `haloy status`, and in the history file so
//! it survives a restart). The API request only starts a job, so a client that goes away never
//! cuts one short.

use tokio::sync::OwnedMutexGuard;

use super::{AppEntry, DeployError, Deployer, Reporter};
use crate::api::types::OperationSummary;
use crate::config::ResolvedApp;
use crate::state::{OperationKind, OperationRecord, OperationState};

impl Deployer {
    /// Records `id` as the app's running operation.
    pub(crate) fn job_started(&self, entry: &AppEntry, id: &str, kind: OperationKind) {
        self.save_operation(
            entry,
            OperationRecord {
                id: id.to_string(),
                kind,
                state: OperationState::Running,
                started_at: crate::timefmt::now_rfc3339(),
                finished_at: None,
                message: None,
            },
        );
    }

    /// Ends a job: its outcome is recorded first, then the app's lock is released, and only
    /// then do watchers get `finished`, so a client that reacts to it sees the outcome in
    /// `haloy status` and can start the next operation at once.
    pub(crate) fn job_finished(
        &self,
        entry: &AppEntry,
        guard: OwnedMutexGuard<()>,
        reporter: &Reporter,
        ok: bool,
        message: String,
    ) {
        let started = entry.live_lock().last_operation.clone();
        if let Some(mut op) = started.filter(|op| op.id == reporter.deployment_id) {
            op.state = if ok {
                OperationState::Succeeded
            } else {
                OperationState::Failed
            };
            op.finished_at = Some(crate::timefmt::now_rfc3339());
            op.message = Some(message.clone());
            self.save_operation(entry, op);
        }
        entry.release_deploy(guard);
        reporter.finished(ok, message);
    }

    fn save_operation(&self, entry: &AppEntry, op: OperationRecord) {
        entry.live_lock().last_operation = Some(op.clone());
        if let Err(e) = self.state.set_last_operation(&entry.name, op) {
            tracing::error!(app = %entry.name, error = %e, "cannot record the app's last operation");
        }
    }

    /// `init: true` needs the init binary on this server; say so before anything changes.
    pub(crate) fn check_init(&self, app: &ResolvedApp) -> Result<(), DeployError> {
        if !app.init {
            return Ok(());
        }
        check_init_binary(&self.settings.init_binary).map_err(|problem| {
            DeployError::InvalidConfig {
                problems: vec![problem],
            }
        })
    }
}

/// The init binary must be a regular executable file on the server.
pub(crate) fn check_init_binary(path: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(_) => Err(format!(
            "init: true needs an executable init binary at {} on the server; it is not an executable file",
            path.display()
        )),
        Err(e) => Err(format!(
            "init: true needs an init binary at {} on the server ({e}); install it (Debian: apt-get install tini) or set `init: false`",
            path.display()
        )),
    }
}

/// The wire form of a recorded operation.
pub(crate) fn summary(op: &OperationRecord) -> OperationSummary {
    OperationSummary {
        job_id: op.id.clone(),
        kind: match op.kind {
            OperationKind::Deploy => "deploy",
            OperationKind::Rollback => "rollback",
            OperationKind::Stop => "stop",
            OperationKind::Remove => "remove",
        }
        .to_string(),
        state: match op.state {
            OperationState::Running => "running",
            OperationState::Succeeded => "succeeded",
            OperationState::Failed => "failed",
        }
        .to_string(),
        started_at: op.started_at.clone(),
        finished_at: op.finished_at.clone(),
        message: op.message.clone(),
    }
}

#[cfg(test)]
#[path = "tests/jobs.rs"]
mod tests;
