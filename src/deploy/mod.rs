//! Rollouts: rolling and replace strategies, per-app deploy lock, rollback, stop, crash restarts
//! with backoff, and the reconciliation that rebuilds routes from containerd after a haloyd restart.
