//! The live view of one replica inside haloyd: its container, its proxy backend, its phase
//! for `haloy status`, its health monitor and its restart history. Phases change under a
//! short std mutex that is never held across an await.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::api::types::ReplicaState;
use crate::health::MonitorHandle;
use crate::proxy::Backend;
use crate::runtime::ReplicaSpec;

/// What `haloy status` shows for a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Starting,
    WaitingHealth,
    WaitingMinReady,
    Ready,
    Draining,
    Exited,
    CrashLooping,
    Stopped,
}

impl Phase {
    pub fn wire_state(self) -> ReplicaState {
        match self {
            Phase::Starting | Phase::WaitingHealth => ReplicaState::Starting,
            Phase::WaitingMinReady => ReplicaState::WaitingMinReady,
            Phase::Ready => ReplicaState::Ready,
            Phase::Draining => ReplicaState::Draining,
            Phase::Exited => ReplicaState::Exited,
            Phase::CrashLooping => ReplicaState::CrashLooping,
            Phase::Stopped => ReplicaState::Stopped,
        }
    }
}

/// Crashes closer together than this count towards crash-looping.
const CRASH_WINDOW: Duration = Duration::from_secs(300);
const CRASH_LOOP_THRESHOLD: u32 = 3;
const MAX_RESTART_BACKOFF: Duration = Duration::from_secs(60);

pub struct LiveReplica {
    pub container_id: String,
    pub replica: u32,
    pub deployment_id: String,
    pub backend: Arc<Backend>,
    /// How to start it again after a crash.
    pub spec: ReplicaSpec,
    /// The app's `min_ready_seconds`, kept for restarts.
    pub min_ready: Duration,
    pub started_at: SystemTime,
    started_instant: Instant,
    phase: Mutex<Phase>,
    in_rotation: AtomicBool,
    /// Set before haloyd stops it on purpose, so the exit is not treated as a crash.
    expected_exit: AtomicBool,
    exited: AtomicBool,
    monitor: Mutex<Option<MonitorHandle>>,
    pub restarts: AtomicU32,
    recent_crashes: Mutex<Vec<Instant>>,
}

impl LiveReplica {
    pub fn new(
        container_id: String,
        spec: ReplicaSpec,
        min_ready: Duration,
        backend: Arc<Backend>,
        restarts: u32,
    ) -> Arc<Self> {
        Arc::new(Self {
            container_id,
            replica: spec.replica,
            deployment_id: spec.deployment_id.clone(),
            backend,
            spec,
            min_ready,
            started_at: SystemTime::now(),
            started_instant: Instant::now(),
            phase: Mutex::new(Phase::Starting),
            in_rotation: AtomicBool::new(false),
            expected_exit: AtomicBool::new(false),
            exited: AtomicBool::new(false),
            monitor: Mutex::new(None),
            restarts: AtomicU32::new(restarts),
            recent_crashes: Mutex::new(Vec::new()),
        })
    }

    pub fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_phase(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase;
    }

    pub fn in_rotation(&self) -> bool {
        self.in_rotation.load(Ordering::Acquire)
    }

    pub fn set_in_rotation(&self, value: bool) {
        self.in_rotation.store(value, Ordering::Release);
    }

    pub fn expect_exit(&self) {
        self.expected_exit.store(true, Ordering::Release);
    }

    pub fn exit_expected(&self) -> bool {
        self.expected_exit.load(Ordering::Acquire)
    }

    pub fn mark_exited(&self) {
        self.exited.store(true, Ordering::Release);
        self.backend.mark_down();
    }

    pub fn has_exited(&self) -> bool {
        self.exited.load(Ordering::Acquire)
    }

    pub fn started_instant(&self) -> Instant {
        self.started_instant
    }

    pub fn uptime(&self) -> Duration {
        self.started_instant.elapsed()
    }

    pub fn set_monitor(&self, monitor: MonitorHandle) {
        *self.monitor.lock().unwrap_or_else(|p| p.into_inner()) = Some(monitor);
    }

    /// Dropping the handle stops the monitor task.
    pub fn stop_monitor(&self) {
        self.monitor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    pub fn last_health(&self) -> Option<String> {
        self.monitor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|m| m.last_result())
            .map(|r| format!("{} {}", if r.ok { "ok" } else { "failing:" }, r.detail))
    }

    /// Records a crash and returns how long to wait before restarting, and whether the
    /// replica now counts as crash-looping.
    pub fn record_crash(&self, previous: &[Instant]) -> (Duration, bool) {
        let mut crashes = self
            .recent_crashes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        crashes.extend_from_slice(previous);
        crashes.push(Instant::now());
        crashes.retain(|t| t.elapsed() < CRASH_WINDOW);
        let count = crashes.len() as u32;
        let backoff = Duration::from_secs(1u64 << count.min(6)).min(MAX_RESTART_BACKOFF);
        (backoff, count >= CRASH_LOOP_THRESHOLD)
    }

    /// Takes over the crash history of the replica this one replaces (not a crash itself).
    pub fn inherit_crashes(&self, previous: &[Instant]) {
        let mut crashes = self
            .recent_crashes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        crashes.extend_from_slice(previous);
    }

    pub fn recent_crashes(&self) -> Vec<Instant> {
        self.recent_crashes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
