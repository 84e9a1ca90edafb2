//! Task exit events: one long-lived Events.Subscribe stream (filtered to `/tasks/exit` in this
//! runtime's namespace) running in its own tokio task, decoded into `TaskExit` and broadcast.
//! The subscription is made again with backoff whenever the stream breaks (containerd restart).
//! Exits of a gap between two subscriptions are lost; so once each new subscription is in
//! place, a resync is announced and the caller compares with containerd's task list.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_client::events::TaskExit as TaskExitEvent;
use containerd_client::services::v1::SubscribeRequest;
use prost::Message;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use super::{Containerd, TaskExit};

const EXIT_TOPIC: &str = "/tasks/exit";
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// containerd answers a Subscribe call only with its first event, so there is no reply that
/// says the subscription is in place. The call went out before the Version call that finds
/// containerd serving; this margin lets its handler register before the resync is announced.
const SUBSCRIBE_SETTLE: Duration = Duration::from_millis(200);

/// Owns the subscription task; dropping it ends the subscription.
#[derive(Debug)]
pub struct ExitWatcher {
    handle: JoinHandle<()>,
}

impl Drop for ExitWatcher {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

impl ExitWatcher {
    /// Spawns the subscription loop; exits go to `sender` as they arrive, and `resyncs` is
    /// bumped each time a subscription is in place (exits before it may be missing).
    pub fn spawn(
        client: Containerd,
        sender: broadcast::Sender<TaskExit>,
        resyncs: watch::Sender<u64>,
    ) -> ExitWatcher {
        ExitWatcher {
            handle: tokio::spawn(watch_exits(client, sender, resyncs)),
        }
    }
}

/// The Subscribe filter: exit topic AND our namespace (comma = AND in containerd filters).
pub fn exit_filter(namespace: &str) -> String {
    format!("topic==\"{EXIT_TOPIC}\",namespace==\"{namespace}\"")
}

async fn watch_exits(
    client: Containerd,
    sender: broadcast::Sender<TaskExit>,
    resyncs: watch::Sender<u64>,
) {
    let mut backoff = BACKOFF_START;
    loop {
        let subscription = subscribe_once(&client, &sender);
        tokio::pin!(subscription);
        let outcome = tokio::select! {
            // Subscription first: its call goes out before the announcement's Version call.
            biased;
            outcome = &mut subscription => outcome,
            () = announce_when_subscribed(&client, &resyncs) => subscription.await,
        };
        match outcome {
            // At least one event came through: the connection was good, start backoff over.
            Ok(true) => backoff = BACKOFF_START,
            Ok(false) => {}
            Err(status) => tracing::warn!(
                socket = %client.socket().display(),
                error = %status.message(),
                retry_in = ?backoff,
                "containerd event subscription broke; subscribing again"
            ),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Bumps `resyncs` once containerd serves (the Subscribe call sent before is then being
/// handled). Never returns while containerd does not answer: the subscription's own failure
/// ends the wait then.
async fn announce_when_subscribed(client: &Containerd, resyncs: &watch::Sender<u64>) {
    let mut backoff = BACKOFF_START;
    while client.server_version().await.is_err() {
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    tokio::time::sleep(SUBSCRIBE_SETTLE).await;
    tracing::debug!("task exit subscription in place; announcing a resync");
    resyncs.send_modify(|generation| *generation += 1);
}

/// One subscription until the stream ends; returns whether any event was received.
async fn subscribe_once(
    client: &Containerd,
    sender: &broadcast::Sender<TaskExit>,
) -> Result<bool, tonic::Status> {
    let request = SubscribeRequest {
        filters: vec![exit_filter(client.namespace())],
    };
    // containerd answers the call only together with the first event, so this await can take
    // as long as it takes for some task to exit.
    let mut stream = client
        .events()
        .subscribe(client.request(request))
        .await?
        .into_inner();
    let mut received = false;
    while let Some(envelope) = stream.message().await? {
        received = true;
        let Some(any) = envelope.event else { continue };
        if let Some(exit) = decode_task_exit(&any.type_url, &any.value) {
            tracing::debug!(task_id = %exit.container_id, status = exit.exit_status, "task exited");
            // No receivers is fine: nobody is interested right now.
            let _ = sender.send(exit);
        }
    }
    Ok(received)
}

/// Decodes a TaskExit of the task's init process; exec'd processes and other types give None.
/// 1.6 sends the type_url without a prefix, others with `/` or `types.containerd.io/`.
pub fn decode_task_exit(type_url: &str, value: &[u8]) -> Option<TaskExit> {
    if !type_url.ends_with("containerd.events.TaskExit") {
        return None;
    }
    let event = TaskExitEvent::decode(value).ok()?;
    if !event.id.is_empty() && event.id != event.container_id {
        return None;
    }
    Some(TaskExit {
        container_id: event.container_id,
        exit_status: event.exit_status,
        exited_at: event
            .exited_at
            .map(timestamp_to_system_time)
            .unwrap_or_else(SystemTime::now),
    })
}

pub(crate) fn timestamp_to_system_time(ts: prost_types::Timestamp) -> SystemTime {
    let secs = u64::try_from(ts.seconds).unwrap_or(0);
    let nanos = u32::try_from(ts.nanos).unwrap_or(0);
    UNIX_EPOCH + Duration::new(secs, nanos)
}

#[cfg(test)]
#[path = "tests/events.rs"]
mod tests;
