//! The tracing spans deploy work runs in, so its events carry app, deployment and replica
//! without repeating them: one per job (deploy, rollback, stop, settling an interrupted
//! rollout) with `app` and `deployment_id`, one per replica inside it with `replica`, and
//! one per crash restart with all three (it runs outside any job).

use tracing::Span;

/// A job on `app`: its events carry `app` and `deployment_id` (the job id).
pub(crate) fn job(app: &str, deployment_id: &str) -> Span {
    tracing::info_span!("job", app = %app, deployment_id = %deployment_id)
}

/// One replica's steps inside a job span.
pub(crate) fn replica(index: u32) -> Span {
    tracing::info_span!("replica", replica = index)
}

/// A crash restart of `app`'s replica `index` of deployment `deployment_id`.
pub(crate) fn restart(app: &str, deployment_id: &str, index: u32) -> Span {
    tracing::info_span!("replica", app = %app, deployment_id = %deployment_id, replica = index)
}
