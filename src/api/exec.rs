//! haloyd's side of `haloy exec` and `haloy tunnel`: both are `GET` requests that switch the
//! API connection (HTTP/1.1 Upgrade, bearer token checked first like every `/v1` call) to a
//! stream. An exec starts the process before answering 101 (so a bad replica index or a
//! missing executable is an ordinary JSON error), then speaks the frames of `api::stream`; a
//! tunnel connects to the chosen replica's IP and port before answering 101, then copies raw
//! bytes. Both are audited in haloyd's log: who (the API token, the peer address), app,
//! replica, command or port, and the exit status or byte counts; never env values.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tracing::{info, warn};

use super::server::{error, Body};
use super::stream::{
    parse_tunnel_query, write_frame, ExecParams, Frame, FrameCodec, EXEC_PARAMS_HEADER,
    EXEC_PROTOCOL, TIMEOUT_EXIT_STATUS, TUNNEL_PROTOCOL,
};
use crate::deploy::access::{AccessError, ReplicaTarget};
use crate::deploy::Deployer;
use crate::runtime::exec::{ExecControl, ExecProcess, ExecReader, ExecSpec};
use crate::runtime::RuntimeError;

/// The client's address, put into each request's extensions by the API listener.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The API connection's slot of `api.max_connections`, held by an upgraded exec or tunnel
/// session until it ends (the HTTP connection task finishes at the upgrade).
#[derive(Clone)]
pub struct ConnectionSlot(pub Arc<tokio::sync::OwnedSemaphorePermit>);

/// The slot of the connection `req` came on; None when the proxy serves the API.
fn connection_slot<B>(req: &Request<B>) -> Option<ConnectionSlot> {
    req.extensions().get::<ConnectionSlot>().cloned()
}

/// Who is acting, for the audit lines: one token exists, so the peer tells callers apart.
const PRINCIPAL: &str = "api-token";
/// How long a replica's port may take to accept a tunnel connection.
const TUNNEL_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// After the exit, output still in flight gets this long before the process is deleted.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);
const READ_CHUNK: usize = 32 * 1024;

fn peer_of<B>(req: &Request<B>) -> String {
    req.extensions()
        .get::<Peer>()
        .map(|p| p.0.to_string())
        .unwrap_or_else(|| "proxy".to_string())
}

/// Why a request cannot become an upgraded stream; None when it can.
fn upgrade_refusal<B>(req: &Request<B>, protocol: &str) -> Option<Response<Body>> {
    let asked = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(protocol));
    if !asked {
        return Some(error(
            StatusCode::BAD_REQUEST,
            &format!("this endpoint needs `Connection: Upgrade` and `Upgrade: {protocol}` (use the haloy CLI)"),
            vec![],
        ));
    }
    if req.extensions().get::<OnUpgrade>().is_none() {
        return Some(error(
            StatusCode::BAD_REQUEST,
            "this connection cannot be upgraded (HTTP/1.1 is needed)",
            vec![],
        ));
    }
    None
}

fn switching(protocol: &'static str) -> Response<Body> {
    let mut response = Response::new(Empty::<Bytes>::new().map_err(|e| match e {}).boxed_unsync());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(protocol));
    response
}

fn access_error(e: AccessError) -> Response<Body> {
    let status = match e {
        AccessError::NoRunningReplica(_) => StatusCode::CONFLICT,
        AccessError::UnknownApp(_) | AccessError::NoSuchReplica { .. } => StatusCode::NOT_FOUND,
    };
    error(status, &e.to_string(), vec![])
}

fn runtime_error(e: RuntimeError) -> Response<Body> {
    let status = match e {
        RuntimeError::Container { .. } => StatusCode::BAD_REQUEST,
        RuntimeError::ContainerNotFound { .. } => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, &e.to_string(), vec![])
}

/// `GET /v1/apps/{app}/exec` with the [`ExecParams`] header.
pub(super) async fn exec<B>(
    deployer: &Arc<Deployer>,
    mut req: Request<B>,
    app: &str,
) -> Response<Body> {
    if let Some(response) = upgrade_refusal(&req, EXEC_PROTOCOL) {
        return response;
    }
    let params = match req
        .headers()
        .get(EXEC_PARAMS_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(ExecParams::from_header)
    {
        Some(Ok(params)) => params,
        Some(Err(message)) => return error(StatusCode::BAD_REQUEST, &message, vec![]),
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("missing `{EXEC_PARAMS_HEADER}` header"),
                vec![],
            )
        }
    };
    if params.command.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "no command given (haloy exec -- CMD ...)",
            vec![],
        );
    }
    let target = match deployer.replica_target(app, params.replica) {
        Ok(target) => target,
        Err(e) => return access_error(e),
    };
    let spec = ExecSpec {
        args: params.command.clone(),
        tty: params.tty,
        stdin: params.stdin,
        console_size: params.tty.then_some((params.cols, params.rows)),
    };
    let audit = Audit {
        peer: peer_of(&req),
        target,
        command: params.command.join(" "),
        tty: params.tty,
    };
    let process = match deployer
        .runtime
        .exec(&audit.target.container_id, &spec)
        .await
    {
        Ok(process) => process,
        Err(e) => {
            warn!(principal = PRINCIPAL, peer = %audit.peer, app = %audit.target.app, replica = audit.target.replica, command = %audit.command, error = %e, "exec refused");
            return runtime_error(e);
        }
    };
    info!(principal = PRINCIPAL, peer = %audit.peer, app = %audit.target.app, replica = audit.target.replica, task_id = %audit.target.container_id, exec_id = %process.exec_id, command = %audit.command, tty = audit.tty, "exec started");
    let on_upgrade = hyper::upgrade::on(&mut req);
    let timeout = params.timeout_secs.map(Duration::from_secs);
    let slot = connection_slot(&req);
    tokio::spawn(async move {
        let _slot = slot;
        let started = Instant::now();
        let control = process.control.clone();
        let end = match on_upgrade.await {
            Ok(upgraded) => run_session(upgraded, process, timeout).await,
            Err(e) => {
                warn!(peer = %audit.peer, error = %e, "exec: the connection was not upgraded; killing the process");
                drop(process);
                abandon(control.as_ref()).await;
                SessionEnd::default()
            }
        };
        info!(principal = PRINCIPAL, peer = %audit.peer, app = %audit.target.app, replica = audit.target.replica, task_id = %audit.target.container_id, command = %audit.command, exit_code = end.status.map(tracing::field::display), timed_out = end.timed_out, client_left = end.client_left, duration = ?started.elapsed(), "exec finished");
    });
    switching(EXEC_PROTOCOL)
}

/// What the audit lines say about an exec.
struct Audit {
    peer: String,
    target: ReplicaTarget,
    command: String,
    tty: bool,
}

#[derive(Debug, Default)]
struct SessionEnd {
    status: Option<u32>,
    timed_out: bool,
    client_left: bool,
}

/// Kills and forgets a process nobody will read.
async fn abandon(control: &dyn ExecControl) {
    if let Err(e) = control.kill().await {
        warn!(error = %e, "exec: cannot kill the process");
    }
    let _ = control.wait().await;
    if let Err(e) = control.remove().await {
        warn!(error = %e, "exec: cannot remove the process");
    }
}

/// Copies one output stream into frames until EOF or until the client is gone.
async fn pump(mut reader: ExecReader, frames: mpsc::Sender<Frame>, wrap: fn(Bytes) -> Frame) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if frames
                    .send(wrap(Bytes::copy_from_slice(&buf[..n])))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Feeds stdin frames to the process in their own task, so a process that does not read its
/// stdin never stops resizes, the timeout or the exit from being handled.
fn spawn_stdin(process: &mut ExecProcess) -> Option<mpsc::Sender<Option<Bytes>>> {
    let mut writer = process.stdin.take()?;
    let control = process.control.clone();
    let (tx, mut rx) = mpsc::channel::<Option<Bytes>>(64);
    tokio::spawn(async move {
        // None is the client's end of input; a closed channel is the session's end.
        let end_of_input = loop {
            match rx.recv().await {
                Some(Some(data)) => {
                    if writer.write_all(&data).await.is_err() {
                        return;
                    }
                }
                Some(None) => break true,
                None => break false,
            }
        };
        // Everything is in the FIFO; once our end and the shim's are closed the process
        // reads what is left, then EOF.
        drop(writer);
        if !end_of_input {
            return;
        }
        if let Err(e) = control.close_stdin().await {
            warn!(error = %e, "exec: cannot close the process's stdin");
        }
    });
    Some(tx)
}

async fn run_session(
    upgraded: Upgraded,
    mut process: ExecProcess,
    timeout: Option<Duration>,
) -> SessionEnd {
    let (read_half, write_half) = tokio::io::split(TokioIo::new(upgraded));
    let mut incoming = FramedRead::new(read_half, FrameCodec);
    let (frames, mut outgoing) = mpsc::channel::<Frame>(64);
    let writer = tokio::spawn(async move {
        let mut sink = write_half;
        while let Some(frame) = outgoing.recv().await {
            if write_frame(&mut sink, frame).await.is_err() {
                return;
            }
        }
        let _ = sink.shutdown().await;
    });
    let mut pumps = vec![tokio::spawn(pump(
        std::mem::replace(&mut process.stdout, Box::pin(tokio::io::empty())),
        frames.clone(),
        Frame::Stdout,
    ))];
    if let Some(stderr) = process.stderr.take() {
        pumps.push(tokio::spawn(pump(stderr, frames.clone(), Frame::Stderr)));
    }
    let mut stdin = spawn_stdin(&mut process);
    let control = process.control.clone();
    let mut end = SessionEnd::default();
    let deadline = async {
        match timeout {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let wait = control.wait();
    tokio::pin!(wait);
    let waited = loop {
        tokio::select! {
            status = &mut wait => break status,
            _ = &mut deadline, if !end.timed_out => {
                end.timed_out = true;
                if let Err(e) = control.kill().await {
                    warn!(error = %e, "exec: cannot kill the process after its timeout");
                }
            }
            frame = incoming.next(), if !end.client_left => match frame {
                Some(Ok(Frame::Stdin(data))) => {
                    if let Some(tx) = &stdin {
                        if tx.send(Some(data)).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Some(Ok(Frame::StdinEof)) => {
                    if let Some(tx) = stdin.take() {
                        let _ = tx.send(None).await;
                    }
                }
                Some(Ok(Frame::Resize { cols, rows })) => {
                    if let Err(e) = control.resize(cols, rows).await {
                        warn!(error = %e, "exec: resize failed");
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    // Nobody reads the output any more: the process goes with the client.
                    end.client_left = true;
                    stdin = None;
                    if let Err(e) = control.kill().await {
                        warn!(error = %e, "exec: cannot kill the process after the client left");
                    }
                }
            }
        }
    };
    drop(stdin);
    // The shim closes its ends when the process's output ends, at the latest on delete.
    let mut pumps = futures_util::future::join_all(pumps);
    let drained = tokio::time::timeout(OUTPUT_GRACE, &mut pumps).await.is_ok();
    if let Err(e) = control.remove().await {
        warn!(error = %e, "exec: cannot remove the finished process");
    }
    if !drained {
        let _ = tokio::time::timeout(OUTPUT_GRACE, pumps).await;
    }
    let status = match waited {
        Ok(status) if end.timed_out => {
            let _ = frames
                .send(Frame::Error(format!(
                    "the command ran longer than its timeout ({}s) and was killed (exit status {status})",
                    timeout.map(|t| t.as_secs()).unwrap_or_default()
                )))
                .await;
            TIMEOUT_EXIT_STATUS
        }
        Ok(status) => status,
        Err(e) => {
            let _ = frames
                .send(Frame::Error(format!("cannot get the exit status: {e}")))
                .await;
            255
        }
    };
    end.status = Some(status);
    let _ = frames.send(Frame::Exit(status)).await;
    drop(frames);
    let _ = tokio::time::timeout(OUTPUT_GRACE, writer).await;
    end
}

/// `GET /v1/apps/{app}/tunnel?port=P[&replica=N]`.
pub(super) async fn tunnel<B>(
    deployer: &Arc<Deployer>,
    mut req: Request<B>,
    app: &str,
    query: &str,
) -> Response<Body> {
    if let Some(response) = upgrade_refusal(&req, TUNNEL_PROTOCOL) {
        return response;
    }
    let (port, replica) = match parse_tunnel_query(query) {
        Ok(parsed) => parsed,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message, vec![]),
    };
    let target = match deployer.replica_target(app, replica) {
        Ok(target) => target,
        Err(e) => return access_error(e),
    };
    let peer = peer_of(&req);
    // Only the chosen replica's own address: the client names a port, never a host.
    let addr = SocketAddr::new(target.ip, port);
    let upstream = match tokio::time::timeout(TUNNEL_CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            return error(
                StatusCode::BAD_GATEWAY,
                &format!("replica {} of `{app}` ({addr}) refused the tunnel: {e}; is something listening on port {port} in the replica?", target.replica),
                vec![],
            )
        }
        Err(_) => {
            return error(
                StatusCode::GATEWAY_TIMEOUT,
                &format!("replica {} of `{app}` ({addr}) did not accept within {TUNNEL_CONNECT_TIMEOUT:?}", target.replica),
                vec![],
            )
        }
    };
    let _ = upstream.set_nodelay(true);
    info!(principal = PRINCIPAL, %peer, app = %target.app, replica = target.replica, task_id = %target.container_id, port, "tunnel opened");
    let on_upgrade = hyper::upgrade::on(&mut req);
    let slot = connection_slot(&req);
    tokio::spawn(async move {
        let _slot = slot;
        let mut upstream = upstream;
        let (sent, received) = match on_upgrade.await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                tokio::io::copy_bidirectional(&mut client, &mut upstream)
                    .await
                    .unwrap_or((0, 0))
            }
            Err(e) => {
                warn!(%peer, error = %e, "tunnel: the connection was not upgraded");
                (0, 0)
            }
        };
        info!(principal = PRINCIPAL, %peer, app = %target.app, replica = target.replica, port, bytes_to_replica = sent, bytes_from_replica = received, "tunnel closed");
    });
    switching(TUNNEL_PROTOCOL)
}
