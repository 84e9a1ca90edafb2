//! The host's resolvers and the relay to them. A loopback resolver (systemd-resolved's
//! 127.0.0.53, a local dnsmasq) is fine here: haloyd runs in the host's namespace, so it asks
//! on the replicas' behalf what they could not reach themselves.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::DnsError;

/// The host's resolver list.
const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

/// The `nameserver` lines of a resolv.conf as port-53 addresses, in order. Scoped IPv6
/// addresses (`fe80::1%eth0`) are skipped: their zone means nothing to a socket address here.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        .filter_map(|addr| addr.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The resolvers listed in the host's /etc/resolv.conf.
pub fn host_upstreams() -> Result<Vec<SocketAddr>, DnsError> {
    let path = Path::new(HOST_RESOLV_CONF);
    let text = std::fs::read_to_string(path).map_err(|e| DnsError::NoUpstream {
        reason: format!("cannot read {}: {e}", path.display()),
    })?;
    let found = upstreams_from_resolv_conf(&text);
    if found.is_empty() {
        return Err(DnsError::NoUpstream {
            reason: format!("{} lists no usable nameserver", path.display()),
        });
    }
    Ok(found)
}

/// Asks each upstream in turn over UDP; the first answer with the query's id wins.
pub async fn forward_udp(
    query: &[u8],
    upstreams: &[SocketAddr],
    wait: Duration,
) -> Option<Vec<u8>> {
    for upstream in upstreams {
        match tokio::time::timeout(wait, ask_udp(query, *upstream)).await {
            Ok(Ok(answer)) => return Some(answer),
            Ok(Err(e)) => {
                tracing::debug!(upstream = %upstream, error = %e, "upstream resolver failed")
            }
            Err(_) => tracing::debug!(upstream = %upstream, "upstream resolver timed out"),
        }
    }
    None
}

async fn ask_udp(query: &[u8], upstream: SocketAddr) -> std::io::Result<Vec<u8>> {
    let socket = UdpSocket::bind(unspecified_for(upstream)).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = socket.recv(&mut buf).await?;
        // A stray datagram (late answer to someone else) is not ours: keep waiting.
        if n >= 2 && query.len() >= 2 && buf[..2] == query[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

/// Asks each upstream in turn over TCP (for answers too long for UDP).
pub async fn forward_tcp(
    query: &[u8],
    upstreams: &[SocketAddr],
    wait: Duration,
) -> Option<Vec<u8>> {
    for upstream in upstreams {
        match tokio::time::timeout(wait, ask_tcp(query, *upstream)).await {
            Ok(Ok(answer)) => return Some(answer),
            Ok(Err(e)) => {
                tracing::debug!(upstream = %upstream, error = %e, "upstream resolver failed (tcp)")
            }
            Err(_) => tracing::debug!(upstream = %upstream, "upstream resolver timed out (tcp)"),
        }
    }
    None
}

async fn ask_tcp(query: &[u8], upstream: SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    write_framed(&mut stream, query).await?;
    read_framed(&mut stream).await
}

/// Reads one length-prefixed DNS message (RFC 1035 4.2.2).
pub(super) async fn read_framed<R: AsyncReadExt + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let len = r.read_u16().await?;
    let mut buf = vec![0u8; usize::from(len)];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

/// Writes one length-prefixed DNS message in one write.
pub(super) async fn write_framed<W: AsyncWriteExt + Unpin>(
    w: &mut W,
    message: &[u8],
) -> std::io::Result<()> {
    let len = u16::try_from(message.len()).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "DNS message over 64 KiB")
    })?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    w.write_all(&framed).await
}

fn unspecified_for(peer: SocketAddr) -> SocketAddr {
    match peer {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    }
}

#[cfg(test)]
#[path = "tests/upstream.rs"]
mod tests;
