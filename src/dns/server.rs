//! The DNS server's sockets and loops: UDP and TCP on port 53 of each bridge gateway.
//!
//! Sockets are bound with IP_FREEBIND because the bridge gets its gateway address only when
//! CNI wires the first replica, and with SO_REUSEPORT so a successor haloyd binds them while
//! its predecessor still answers during a hand-over (both answer alike from their own state).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::query::{decide, server_failure, Decision};
use super::upstream::{forward_tcp, forward_udp, read_framed, write_framed};
use super::{Directory, DnsError, DnsSettings};
use crate::network::IpCidr;

/// Plain DNS over UDP carries at most this much unless the asker says more (EDNS, which the
/// relay passes on untouched; our own answers stay within it).
const UDP_ANSWER_LIMIT: usize = 512;
/// How long one upstream gets to answer before the next is asked.
const UPSTREAM_WAIT: Duration = Duration::from_secs(3);
/// Queries in flight at once (each holds a task and maybe an upstream socket); more are
/// dropped and the asker's resolver retries.
const MAX_IN_FLIGHT: usize = 512;
/// A TCP connection without a query for this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// The bound sockets, before the loops run: binding early lets haloyd decide, before any
/// replica starts, whether replicas get this server as their resolver.
pub struct BoundSockets {
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<std::net::TcpListener>,
}

impl BoundSockets {
    /// The bound UDP and TCP addresses, in `listen` order (ports resolved when 0 was asked).
    pub fn local_addrs(&self) -> std::io::Result<Vec<(SocketAddr, SocketAddr)>> {
        self.udp
            .iter()
            .zip(&self.tcp)
            .map(|(u, t)| Ok((u.local_addr()?, t.local_addr()?)))
            .collect()
    }
}

/// Binds UDP and TCP on every `settings.listen` address.
pub fn bind(settings: &DnsSettings) -> Result<BoundSockets, DnsError> {
    let mut bound = BoundSockets {
        udp: Vec::new(),
        tcp: Vec::new(),
    };
    for addr in &settings.listen {
        let udp =
            socket_for(*addr, Type::DGRAM, Protocol::UDP).map_err(|source| DnsError::Bind {
                addr: *addr,
                proto: "udp",
                source,
            })?;
        bound.udp.push(udp.into());
        let tcp = socket_for(*addr, Type::STREAM, Protocol::TCP)
            .and_then(|s| s.listen(128).map(|()| s))
            .map_err(|source| DnsError::Bind {
                addr: *addr,
                proto: "tcp",
                source,
            })?;
        bound.tcp.push(tcp.into());
    }
    Ok(bound)
}

fn socket_for(addr: SocketAddr, kind: Type, proto: Protocol) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), kind, Some(proto))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    match addr.ip() {
        IpAddr::V4(_) => socket.set_freebind_v4(true)?,
        IpAddr::V6(_) => socket.set_freebind_v6(true)?,
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Answers app names from `directory`, relays the rest to `upstream`.
pub struct DnsServer {
    directory: Arc<dyn Directory>,
    upstream: Arc<[SocketAddr]>,
    clients: Vec<IpCidr>,
    rotation: AtomicUsize,
    in_flight: Arc<Semaphore>,
}

impl DnsServer {
    pub fn new(directory: Arc<dyn Directory>, settings: &DnsSettings) -> Arc<Self> {
        Arc::new(DnsServer {
            directory,
            upstream: settings.upstream.clone().into(),
            clients: settings.clients.clone(),
            rotation: AtomicUsize::new(0),
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        })
    }

    /// Runs every socket's loop until `shutdown`.
    pub async fn serve(
        self: Arc<Self>,
        sockets: BoundSockets,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let mut loops = tokio::task::JoinSet::new();
        for socket in sockets.udp {
            let socket = Arc::new(UdpSocket::from_std(socket)?);
            loops.spawn(self.clone().serve_udp(socket, shutdown.clone()));
        }
        for listener in sockets.tcp {
            let listener = TcpListener::from_std(listener)?;
            loops.spawn(self.clone().serve_tcp(listener, shutdown.clone()));
        }
        while loops.join_next().await.is_some() {}
        Ok(())
    }

    fn decide(&self, query: &[u8], source: IpAddr, max_len: usize) -> Decision {
        if !self.may_ask(source) {
            return Decision::Ignore;
        }
        let rotation = self.rotation.fetch_add(1, Ordering::Relaxed);
        decide(query, source, self.directory.as_ref(), max_len, rotation)
    }

    fn may_ask(&self, source: IpAddr) -> bool {
        self.clients.is_empty() || self.clients.iter().any(|net| net.contains(source))
    }

    async fn serve_udp(self: Arc<Self>, socket: Arc<UdpSocket>, shutdown: CancellationToken) {
        let mut buf = vec![0u8; 65_535];
        loop {
            let received = tokio::select! {
                r = socket.recv_from(&mut buf) => r,
                () = shutdown.cancelled() => return,
            };
            let (n, peer) = match received {
                Ok(r) => r,
                Err(e) => {
                    // ICMP errors of earlier sends surface here; the socket stays usable.
                    tracing::debug!(error = %e, "dns: receive failed");
                    continue;
                }
            };
            let query = &buf[..n];
            match self.decide(query, peer.ip(), UDP_ANSWER_LIMIT) {
                Decision::Answer(reply) => {
                    let _ = socket.send_to(&reply, peer).await;
                }
                Decision::Forward => self.spawn_udp_forward(query.to_vec(), peer, &socket),
                Decision::Ignore => {}
            }
        }
    }

    fn spawn_udp_forward(&self, query: Vec<u8>, peer: SocketAddr, socket: &Arc<UdpSocket>) {
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            tracing::warn!(peer = %peer, "dns: too many queries in flight; dropping one");
            return;
        };
        let socket = socket.clone();
        let upstream = self.upstream.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let reply = match forward_udp(&query, &upstream, UPSTREAM_WAIT).await {
                Some(reply) => Some(reply),
                None => server_failure(&query),
            };
            if let Some(reply) = reply {
                let _ = socket.send_to(&reply, peer).await;
            }
        });
    }

    async fn serve_tcp(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        loop {
            let accepted = tokio::select! {
                r = listener.accept() => r,
                () = shutdown.cancelled() => return,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "dns: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
                continue;
            };
            let server = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                server.serve_tcp_connection(stream, peer.ip()).await;
            });
        }
    }

    async fn serve_tcp_connection(&self, mut stream: TcpStream, source: IpAddr) {
        loop {
            let Ok(Ok(query)) = tokio::time::timeout(TCP_IDLE, read_framed(&mut stream)).await
            else {
                return;
            };
            let reply = match self.decide(&query, source, usize::from(u16::MAX)) {
                Decision::Answer(reply) => reply,
                Decision::Forward => {
                    match forward_tcp(&query, &self.upstream, UPSTREAM_WAIT).await {
                        Some(reply) => reply,
                        None => match server_failure(&query) {
                            Some(reply) => reply,
                            None => return,
                        },
                    }
                }
                Decision::Ignore => return,
            };
            if write_framed(&mut stream, &reply).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
#[path = "tests/server.rs"]
mod tests;
