//! Who listens on a TCP port, from /proc: the socket inodes in LISTEN state in
//! /proc/net/tcp{,6}, then the processes holding those inodes among their fds.

use std::fmt;
use std::path::Path;

/// A process listening on a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub command: String,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (pid {})", self.command, self.pid)
    }
}

/// TCP state LISTEN in /proc/net/tcp.
const LISTEN: &str = "0A";

/// Processes with a listening socket on `port` (any address). Empty when /proc says nothing,
/// e.g. the holder is in another network namespace.
pub fn listeners_of(port: u16) -> Vec<Holder> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            inodes.extend(listening_inodes(&text, port));
        }
    }
    if inodes.is_empty() {
        return Vec::new();
    }
    processes_holding(Path::new("/proc"), &inodes)
}

/// Socket inodes in LISTEN state on `port`, from the text of /proc/net/tcp or tcp6.
pub fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let state = fields.get(3)?;
            let inode = fields.get(9)?;
            let (_, hex_port) = local.rsplit_once(':')?;
            let listening = *state == LISTEN && u16::from_str_radix(hex_port, 16).ok()? == port;
            listening.then(|| inode.parse().ok()).flatten()
        })
        .filter(|inode| *inode != 0)
        .collect()
}

/// Processes under `proc_root` with an fd pointing at one of `inodes`.
pub fn processes_holding(proc_root: &Path, inodes: &[u64]) -> Vec<Holder> {
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut holders: Vec<Holder> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| holds_any(&proc_root.join(pid.to_string()), &wanted))
        .map(|pid| Holder {
            pid,
            command: std::fs::read_to_string(proc_root.join(pid.to_string()).join("comm"))
                .map(|c| c.trim().to_string())
                .unwrap_or_else(|_| "?".into()),
        })
        .collect();
    holders.sort_by_key(|h| h.pid);
    holders
}

fn holds_any(process: &Path, wanted: &[String]) -> bool {
    let Ok(fds) = std::fs::read_dir(process.join("fd")) else {
        return false;
    };
    fds.filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .any(|target| wanted.iter().any(|w| target.as_os_str() == w.as_str()))
}
