//! haloyd's own resource use, read from /proc/self at scrape time (no unsafe, no syscalls
//! beyond reading files).

/// One sample; `None` where /proc could not be read (e.g. not Linux, /proc not mounted).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ProcessSample {
    pub rss_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub threads: Option<u64>,
    pub tasks: Option<u64>,
}

pub(crate) fn sample() -> ProcessSample {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    ProcessSample {
        rss_bytes: status_field(&status, "VmRSS:").map(|kib| kib * 1024),
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| dir.count() as u64),
        threads: status_field(&status, "Threads:"),
        tasks: tokio::runtime::Handle::try_current()
            .ok()
            .map(|h| h.metrics().num_alive_tasks() as u64),
    }
}

/// The first number on the line of /proc/self/status starting with `key` (`VmRSS:  1234 kB`).
pub(crate) fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
