//! The three listening sockets (proxy HTTP, proxy HTTPS, API). They come from `LISTEN_FDS` /
//! `LISTEN_FDNAMES` when systemd (or a predecessor haloyd) passed them: by name (`http`,
//! `https`, `api`) or, for other names (systemd names every fd of one socket unit alike, by
//! default after the unit), by their address matching the server config's. Any socket not
//! passed is bound from the config. A passed socket is checked before use: a listening TCP
//! socket of the address family the config expects.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    getsockname, getsockopt, sockopt, AddressFamily, SockType, SockaddrStorage,
};

/// The `FileDescriptorName=` of each socket in `haloyd.socket`.
pub const HTTP: &str = "http";
pub const HTTPS: &str = "https";
pub const API: &str = "api";

#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error(
        "cannot read the sockets passed by the service manager (LISTEN_FDS/LISTEN_FDNAMES): {0}"
    )]
    Environment(#[source] std::io::Error),
    #[error("passed socket fd {fd} (name `{name}`, address {addr}) matches none of proxy.http_listen, proxy.https_listen, api.listen in the server config; name it `http`, `https` or `api` (FileDescriptorName=) or listen on a configured address")]
    Unmatched {
        fd: RawFd,
        name: String,
        addr: String,
    },
    #[error("two passed sockets are named `{name}` (FileDescriptorName= in haloyd.socket)")]
    DuplicateName { name: String },
    #[error("passed socket `{name}` (fd {fd}) is not usable: {reason}")]
    Invalid {
        name: String,
        fd: RawFd,
        reason: String,
    },
    #[error("cannot listen on {addr} (server config `{key}`): {source}")]
    Bind {
        addr: SocketAddr,
        key: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Sockets passed to this process, by name, not yet checked.
#[derive(Debug, Default)]
pub struct Passed {
    fds: Vec<(String, OwnedFd)>,
    /// Passed under another name: matched to the config by address.
    unnamed: Vec<(String, OwnedFd)>,
}

impl Passed {
    /// Takes the sockets systemd or a predecessor passed and clears `LISTEN_*` so that no
    /// child (CNI plugins, a successor) mistakes them for its own.
    /// Changes the environment, so it is refused once a second thread exists.
    pub fn take_from_env() -> Result<Passed, ListenerError> {
        let fds = crate::sys::take_listen_fds().map_err(ListenerError::Environment)?;
        let mut passed = Passed::default();
        for (fd, name) in fds {
            passed.push(name, fd)?;
        }
        Ok(passed)
    }

    /// Adds one socket (tests build `Passed` by hand).
    pub fn push(&mut self, name: String, fd: OwnedFd) -> Result<(), ListenerError> {
        if ![HTTP, HTTPS, API].contains(&name.as_str()) {
            self.unnamed.push((name, fd));
            return Ok(());
        }
        if self.fds.iter().any(|(n, _)| *n == name) {
            return Err(ListenerError::DuplicateName { name });
        }
        self.fds.push((name, fd));
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.fds.is_empty() && self.unnamed.is_empty()
    }

    /// The socket named `name`, else an unnamed one listening on `addr`.
    fn take(&mut self, name: &str, addr: SocketAddr) -> Option<OwnedFd> {
        if let Some(at) = self.fds.iter().position(|(n, _)| n == name) {
            return Some(self.fds.swap_remove(at).1);
        }
        let at = self
            .unnamed
            .iter()
            .position(|(_, fd)| local_addr(fd) == Some(addr))?;
        Some(self.unnamed.swap_remove(at).1)
    }

    /// A passed socket no config key wanted is a setup mistake, not something to ignore.
    fn ensure_all_used(&self) -> Result<(), ListenerError> {
        match self.unnamed.first() {
            None => Ok(()),
            Some((name, fd)) => Err(ListenerError::Unmatched {
                fd: fd.as_raw_fd(),
                name: name.clone(),
                addr: local_addr(fd).map_or_else(|| "unknown".into(), |a| a.to_string()),
            }),
        }
    }
}

/// Where each listener came from, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Passed,
    Bound,
}

impl Origin {
    /// The word the log uses: `passed` (by systemd or a predecessor) or `bound` (by haloyd).
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Passed => "passed",
            Origin::Bound => "bound",
        }
    }
}

/// The daemon's listening sockets, non-blocking, ready for tokio.
#[derive(Debug)]
pub struct Listeners {
    pub http: std::net::TcpListener,
    pub https: std::net::TcpListener,
    pub api: std::net::TcpListener,
    pub origins: [Origin; 3],
}

impl Listeners {
    /// Passed sockets where there are, bound from the config otherwise.
    pub fn acquire(
        mut passed: Passed,
        http: SocketAddr,
        https: SocketAddr,
        api: SocketAddr,
    ) -> Result<Listeners, ListenerError> {
        let (http, o1) = one(&mut passed, HTTP, http, "proxy.http_listen")?;
        let (https, o2) = one(&mut passed, HTTPS, https, "proxy.https_listen")?;
        let (api, o3) = one(&mut passed, API, api, "api.listen")?;
        passed.ensure_all_used()?;
        Ok(Listeners {
            http,
            https,
            api,
            origins: [o1, o2, o3],
        })
    }

    /// (fd, name) of each socket, in the order a successor receives them.
    pub fn named_fds(&self) -> [(RawFd, &'static str); 3] {
        [
            (self.http.as_raw_fd(), HTTP),
            (self.https.as_raw_fd(), HTTPS),
            (self.api.as_raw_fd(), API),
        ]
    }
}

fn one(
    passed: &mut Passed,
    name: &str,
    addr: SocketAddr,
    key: &'static str,
) -> Result<(std::net::TcpListener, Origin), ListenerError> {
    if let Some(fd) = passed.take(name, addr) {
        return Ok((validate(name, fd, addr)?, Origin::Passed));
    }
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| ListenerError::Bind { addr, key, source })?;
    Ok((listener, Origin::Bound))
}

fn local_addr(fd: &OwnedFd) -> Option<SocketAddr> {
    let storage: SockaddrStorage = getsockname(fd.as_raw_fd()).ok()?;
    if let Some(v4) = storage.as_sockaddr_in() {
        return Some(SocketAddr::from(std::net::SocketAddrV4::from(*v4)));
    }
    storage
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::from(std::net::SocketAddrV6::from(*v6)))
}

/// A passed fd becomes a listener only if it is a listening TCP socket of `expected`'s
/// family; it is made non-blocking (systemd passes blocking sockets). A different address
/// than the config's is allowed (the socket unit owns the address) but logged.
pub fn validate(
    name: &str,
    fd: OwnedFd,
    expected: SocketAddr,
) -> Result<std::net::TcpListener, ListenerError> {
    let raw = fd.as_raw_fd();
    let invalid = |reason: String| ListenerError::Invalid {
        name: name.to_string(),
        fd: raw,
        reason,
    };
    let sock_type =
        getsockopt(&fd, sockopt::SockType).map_err(|e| invalid(format!("not a socket ({e})")))?;
    if sock_type != SockType::Stream {
        return Err(invalid(format!(
            "{sock_type:?} socket, expected a TCP stream"
        )));
    }
    let listening = getsockopt(&fd, sockopt::AcceptConn)
        .map_err(|e| invalid(format!("cannot tell whether it listens ({e})")))?;
    if !listening {
        return Err(invalid("the socket is not listening".into()));
    }
    let local: SockaddrStorage =
        getsockname(fd.as_raw_fd()).map_err(|e| invalid(format!("no local address ({e})")))?;
    let family = nix::sys::socket::SockaddrLike::family(&local);
    let wanted = if expected.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    if family != Some(wanted) {
        return Err(invalid(format!(
            "address family {family:?}, the server config's {expected} needs {wanted:?}"
        )));
    }
    let listener = std::net::TcpListener::from(fd);
    listener
        .set_nonblocking(true)
        .map_err(|e| invalid(format!("cannot make it non-blocking ({e})")))?;
    if let Ok(actual) = listener.local_addr() {
        if actual != expected {
            tracing::info!(socket = name, %actual, config = %expected, "passed socket listens elsewhere than the server config says; using the passed socket");
        }
    }
    Ok(listener)
}

#[cfg(test)]
#[path = "tests/listeners.rs"]
mod tests;
