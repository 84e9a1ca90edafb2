//! Deploy progress: every step of a rollout becomes a `DeployEvent`, kept in memory per
//! deployment and broadcast to the SSE streams watching it. A watcher that connects late first
//! gets the events it missed, then the live ones, so `haloy deploy` never loses a step.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::Stream;
use tokio::sync::broadcast;

use crate::api::types::{DeployEvent, EventKind};

/// Finished deployments kept for late watchers; older ones are dropped first.
const KEEP_FINISHED: usize = 64;
const CHANNEL_CAPACITY: usize = 1024;

struct Progress {
    events: Vec<DeployEvent>,
    /// None once finished: the channel preallocates all CHANNEL_CAPACITY slots (~170 KiB),
    /// which the 64 kept finished jobs would otherwise hold for nothing.
    sender: Option<broadcast::Sender<DeployEvent>>,
    finished: bool,
}

#[derive(Default)]
pub struct ProgressHub {
    inner: Mutex<Hub>,
}

#[derive(Default)]
struct Hub {
    deployments: HashMap<String, Progress>,
    finished_order: Vec<String>,
}

/// The handle a rollout reports through.
#[derive(Clone)]
pub struct Reporter {
    hub: Arc<ProgressHub>,
    pub deployment_id: String,
    pub app: String,
}

impl ProgressHub {
    pub fn start(self: &Arc<Self>, deployment_id: &str, app: &str) -> Reporter {
        let (sender, _) = broadcast::channel(CHANNEL_CAPACITY);
        let mut hub = self.lock();
        hub.deployments.insert(
            deployment_id.to_string(),
            Progress {
                events: Vec::new(),
                sender: Some(sender),
                finished: false,
            },
        );
        Reporter {
            hub: self.clone(),
            deployment_id: deployment_id.to_string(),
            app: app.to_string(),
        }
    }

    /// A reporter for work outside any deploy (crash restarts): its steps only go to the log.
    pub fn detached(self: &Arc<Self>, app: &str) -> Reporter {
        Reporter {
            hub: self.clone(),
            deployment_id: String::from("-"),
            app: app.to_string(),
        }
    }

    /// Past events followed by live ones; the stream ends after the `finished` event.
    pub fn subscribe(
        &self,
        deployment_id: &str,
    ) -> Option<impl Stream<Item = DeployEvent> + Send + 'static> {
        let hub = self.lock();
        let progress = hub.deployments.get(deployment_id)?;
        let past = progress.events.clone();
        let live = progress
            .sender
            .as_ref()
            .filter(|_| !progress.finished)
            .map(broadcast::Sender::subscribe);
        drop(hub);
        let past_done = past.iter().any(|e| e.kind == EventKind::Finished);
        Some(futures_util::stream::unfold(
            (past.into_iter(), live, past_done),
            |(mut past, mut live, mut done)| async move {
                if let Some(event) = past.next() {
                    return Some((event, (past, live, done)));
                }
                if done {
                    return None;
                }
                let receiver = live.as_mut()?;
                loop {
                    match receiver.recv().await {
                        Ok(event) => {
                            done = event.kind == EventKind::Finished;
                            return Some((event, (past, live, done)));
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            },
        ))
    }

    fn publish(&self, event: DeployEvent) {
        let mut hub = self.lock();
        let id = event.deployment_id.clone();
        let finished = event.kind == EventKind::Finished;
        if let Some(progress) = hub.deployments.get_mut(&id) {
            progress.events.push(event.clone());
            progress.finished |= finished;
            if let Some(sender) = &progress.sender {
                // No receivers is normal: nobody may be watching.
                let _ = sender.send(event);
            }
            if progress.finished {
                // Watchers already subscribed keep the channel until they read `finished`.
                progress.sender = None;
            }
        }
        if finished {
            hub.finished_order.push(id);
            while hub.finished_order.len() > KEEP_FINISHED {
                let oldest = hub.finished_order.remove(0);
                hub.deployments.remove(&oldest);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Hub> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Reporter {
    pub fn step(&self, replica: Option<u32>, step: &str, message: impl Into<String>) {
        let message = message.into();
        // app and deployment_id come from the job's span (deploy::spans).
        tracing::info!(replica, step, "{message}");
        self.publish(
            EventKind::Step,
            replica,
            Some(step.to_string()),
            message,
            None,
        );
    }

    pub fn log(&self, replica: Option<u32>, message: impl Into<String>) {
        self.publish(EventKind::Log, replica, None, message.into(), None);
    }

    pub fn finished(&self, ok: bool, message: impl Into<String>) {
        let message = message.into();
        tracing::info!(ok, "deploy finished: {message}");
        self.publish(EventKind::Finished, None, None, message, Some(ok));
    }

    fn publish(
        &self,
        kind: EventKind,
        replica: Option<u32>,
        step: Option<String>,
        message: String,
        ok: Option<bool>,
    ) {
        self.hub.publish(DeployEvent {
            deployment_id: self.deployment_id.clone(),
            app: self.app.clone(),
            time: crate::timefmt::now_rfc3339(),
            kind,
            replica,
            step,
            message,
            ok,
        });
    }
}

#[cfg(test)]
#[path = "tests/progress.rs"]
mod tests;
