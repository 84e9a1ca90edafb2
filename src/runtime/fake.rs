//! An in-memory `Runtime` for tests of the deploy logic without root or containerd. Each
//! started replica is a tiny HTTP server on its own loopback address (127.x.y.z, the spec's
//! port), so the real health checks and proxy backends run against it unchanged. What a
//! replica does is scripted per image reference ([`Behaviour`]); exits go out on the same
//! broadcast channel the containerd runtime uses.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use super::{
    ImageInfo, ImageRequest, LogStream, LogStreamKind, ReplicaInfo, ReplicaSpec, Runtime,
    RuntimeError, StartedReplica, TaskExit, TaskLogLine, TaskStatus,
};

/// What a fake replica does once started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers 200 on every path and stays up.
    Healthy,
    /// Answers 500 on every path and stays up: never passes a readiness gate.
    NeverHealthy,
    /// Answers 200, then its task exits after this long with this status.
    ExitAfter(Duration, u32),
    /// `start_replica` itself fails (e.g. the image's entrypoint is missing).
    FailStart,
}

struct FakeReplica {
    info: ReplicaInfo,
    /// The replica's HTTP server; aborted when its task exits.
    server: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct State {
    replicas: BTreeMap<String, FakeReplica>,
    /// Behaviour by image reference; `Healthy` when absent.
    behaviours: HashMap<String, Behaviour>,
    starts: u32,
    stops: u32,
}

/// The fake runtime; cheap to share behind `Arc<dyn Runtime>`.
pub struct FakeRuntime {
    state: Arc<Mutex<State>>,
    exits: broadcast::Sender<TaskExit>,
    resyncs: watch::Sender<u64>,
    /// Second octet of this runtime's loopback addresses: runtimes (and test processes) do
    /// not share addresses, so a spec's port can be bound by every replica.
    octet: u8,
    next: AtomicU32,
}

static RUNTIMES: AtomicU32 = AtomicU32::new(0);

impl Default for FakeRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeRuntime {
    pub fn new() -> FakeRuntime {
        let n = RUNTIMES.fetch_add(1, Ordering::Relaxed) + std::process::id();
        FakeRuntime {
            state: Arc::default(),
            exits: broadcast::channel(256).0,
            resyncs: watch::Sender::new(0),
            octet: 10 + (n % 240) as u8,
            next: AtomicU32::new(1),
        }
    }

    /// Replicas of images named `reference` behave like this from their next start on.
    pub fn script(&self, reference: &str, behaviour: Behaviour) {
        self.lock()
            .behaviours
            .insert(reference.to_string(), behaviour);
    }

    /// The replica's task exits now with `status`, as a crash would (no-op if not running).
    pub fn crash(&self, container_id: &str, status: u32) {
        exit(&self.state, &self.exits, container_id, status);
    }

    /// The replica's task exits while nobody hears it, as during a containerd restart: its
    /// state changes, no exit event is sent.
    pub fn crash_unheard(&self, container_id: &str, status: u32) {
        let lost = broadcast::channel(1).0;
        exit(&self.state, &lost, container_id, status);
    }

    /// The exit stream was made again: exits may have been missed.
    pub fn resync(&self) {
        self.resyncs.send_modify(|generation| *generation += 1);
    }

    /// Containers that exist (running or not), by id.
    pub fn containers(&self) -> Vec<ReplicaInfo> {
        self.lock()
            .replicas
            .values()
            .map(|r| r.info.clone())
            .collect()
    }

    /// Ids of the running containers.
    pub fn running(&self) -> Vec<String> {
        self.lock()
            .replicas
            .values()
            .filter(|r| r.info.state == TaskStatus::Running)
            .map(|r| r.info.container_id.clone())
            .collect()
    }

    /// How many replicas were started and stopped so far.
    pub fn counts(&self) -> (u32, u32) {
        let state = self.lock();
        (state.starts, state.stops)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ip(&self, n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(
            127,
            self.octet,
            (n >> 8) as u8,
            (n & 0xff) as u8,
        ))
    }
}

fn exit(
    state: &Mutex<State>,
    exits: &broadcast::Sender<TaskExit>,
    container_id: &str,
    status: u32,
) {
    {
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(replica) = state.replicas.get_mut(container_id) else {
            return;
        };
        if replica.info.state != TaskStatus::Running {
            return;
        }
        replica.info.state = TaskStatus::Stopped;
        replica.info.pid = None;
        replica.info.exit_code = Some(status);
        if let Some(server) = replica.server.take() {
            server.abort();
        }
    }
    // No receiver is fine: nobody watches exits in that test.
    let _ = exits.send(TaskExit {
        container_id: container_id.to_string(),
        exit_status: status,
        exited_at: SystemTime::now(),
    });
}

/// Answers every request with `status` and closes the connection.
async fn serve(listener: TcpListener, status: &'static str) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let mut head = Vec::new();
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let response =
                format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

fn not_found(container_id: &str) -> RuntimeError {
    RuntimeError::ContainerNotFound {
        container_id: container_id.to_string(),
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    async fn ensure_image(&self, req: &ImageRequest) -> Result<ImageInfo, RuntimeError> {
        Ok(ImageInfo {
            name: req.reference.clone(),
            digest: format!("sha256:fake-{}", req.reference),
            config: Default::default(),
            chain_id: format!("chain-{}", req.reference),
        })
    }

    async fn start_replica(&self, spec: &ReplicaSpec) -> Result<StartedReplica, RuntimeError> {
        let behaviour = self
            .lock()
            .behaviours
            .get(&spec.image.name)
            .copied()
            .unwrap_or(Behaviour::Healthy);
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let container_id =
            if spec.labels.get(super::labels::NAMING).map(String::as_str) == Some("static") {
                spec.app.clone()
            } else {
                format!("{}-{}-{}", spec.app, spec.replica, n)
            };
        if behaviour == Behaviour::FailStart {
            return Err(RuntimeError::Container {
                container_id,
                reason: "scripted start failure".into(),
            });
        }
        let ip = self.ip(n);
        let listener = TcpListener::bind(SocketAddr::new(ip, spec.port))
            .await
            .map_err(|e| RuntimeError::Network {
                container_id: container_id.clone(),
                reason: format!("fake replica cannot listen on {ip}:{}: {e}", spec.port),
            })?;
        let status = match behaviour {
            Behaviour::NeverHealthy => "500 Internal Server Error",
            _ => "200 OK",
        };
        let mut labels = spec.labels.clone();
        labels.insert(super::labels::APP.into(), spec.app.clone());
        let started = StartedReplica {
            container_id: container_id.clone(),
            replica: spec.replica,
            ip,
            pid: 1000 + n,
        };
        let info = ReplicaInfo {
            container_id: container_id.clone(),
            app: spec.app.clone(),
            deployment_id: spec.deployment_id.clone(),
            replica: spec.replica,
            ip: Some(ip),
            port: spec.port,
            labels,
            state: TaskStatus::Running,
            pid: Some(1000 + n),
            exit_code: None,
        };
        {
            let mut state = self.lock();
            state.starts += 1;
            state.replicas.insert(
                container_id.clone(),
                FakeReplica {
                    info: info.clone(),
                    server: Some(tokio::spawn(serve(listener, status))),
                },
            );
        }
        if let Behaviour::ExitAfter(after, code) = behaviour {
            let state = self.state.clone();
            let exits = self.exits.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                exit(&state, &exits, &container_id, code);
            });
        }
        Ok(started)
    }

    async fn stop_replica(&self, container_id: &str, _: Duration) -> Result<(), RuntimeError> {
        if !self.lock().replicas.contains_key(container_id) {
            return Err(not_found(container_id));
        }
        self.lock().stops += 1;
        // 143: what a task that honours SIGTERM exits with.
        exit(&self.state, &self.exits, container_id, 143);
        Ok(())
    }

    async fn remove_replica(&self, container_id: &str) -> Result<(), RuntimeError> {
        if let Some(mut replica) = self.lock().replicas.remove(container_id) {
            if let Some(server) = replica.server.take() {
                server.abort();
            }
        }
        Ok(())
    }

    async fn list_replicas(&self, app: Option<&str>) -> Result<Vec<ReplicaInfo>, RuntimeError> {
        Ok(self
            .lock()
            .replicas
            .values()
            .filter(|r| app.is_none_or(|a| a == r.info.app))
            .map(|r| r.info.clone())
            .collect())
    }

    fn subscribe_exits(&self) -> broadcast::Receiver<TaskExit> {
        self.exits.subscribe()
    }

    fn subscribe_resyncs(&self) -> watch::Receiver<u64> {
        self.resyncs.subscribe()
    }

    async fn logs(
        &self,
        container_id: &str,
        _tail: Option<usize>,
        _follow: bool,
    ) -> Result<LogStream, RuntimeError> {
        if !self.lock().replicas.contains_key(container_id) {
            return Err(not_found(container_id));
        }
        let line = TaskLogLine {
            time: SystemTime::now(),
            stream: LogStreamKind::Stdout,
            line: format!("fake replica {container_id}"),
        };
        Ok(Box::pin(futures_util::stream::iter([Ok(line)])))
    }

    async fn remove_unused_images(&self, _: &str, _: &[String]) -> Result<(), RuntimeError> {
        Ok(())
    }
}
