//! Service-manager notifications (the `sd_notify` protocol over `NOTIFY_SOCKET`): READY=1
//! once routes are rebuilt and listeners serve, STATUS= lines, WATCHDOG=1 keep-alives,
//! STOPPING=1. Without `NOTIFY_SOCKET` every call is a no-op. A failed send is logged,
//! never fatal: the proxy keeps serving.

use std::time::Duration;

use sd_notify::NotifyState;

/// Sends to `NOTIFY_SOCKET`, when set.
#[derive(Debug, Clone, Copy)]
pub struct Notifier {
    enabled: bool,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        Notifier {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// READY=1 with this process as the main one: after a hand-over the successor is a
    /// child of the old daemon, and systemd must follow it (NotifyAccess=all).
    pub fn ready(&self, status: &str) {
        self.send(&[
            NotifyState::MainPid(std::process::id()),
            NotifyState::Status(status),
            NotifyState::Ready,
        ]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    pub fn stopping(&self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }

    fn send(&self, states: &[NotifyState]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
        }
    }
}

/// How often to send WATCHDOG=1: half of `WATCHDOG_USEC` (as sd_watchdog_enabled(3)
/// advises), when the service manager asked for keep-alives.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|d| !d.is_zero())
        .map(|d| d / 2)
}

/// The STATUS= line: apps, and replicas in rotation of all replicas.
pub fn status_line(apps: usize, ready: usize, replicas: usize) -> String {
    format!("serving: {apps} apps, {ready}/{replicas} replicas ready")
}
