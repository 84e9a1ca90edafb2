//! Crash-safe persistence under state_dir: deployment history per app (resolved config + image
//! digest), the source for rollback targets.
