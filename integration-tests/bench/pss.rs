//! Memory and resource readings shared by the footprint and churn benchmarks: PSS from
//! `/proc/<pid>/smaps_rollup` (shared pages divided among the processes mapping them, so sums
//! over processes add up), the process table, and counts of what a leaking runtime leaves
//! behind (fds, threads, mounts, links, files).
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// One running process: pid, parent pid and its argv.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub args: Vec<String>,
}

impl Proc {
    /// True when any argument equals `arg`.
    pub fn has_arg(&self, arg: &str) -> bool {
        self.args.iter().any(|a| a == arg)
    }

    /// File name of argv[0], e.g. `containerd-shim-runc-v2`.
    pub fn program(&self) -> &str {
        self.args
            .first()
            .map(|a| a.rsplit('/').next().unwrap_or(a))
            .unwrap_or("")
    }
}

/// Every process readable now (kernel threads have no argv and are left out).
pub fn processes() -> Vec<Proc> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(read_proc)
        .collect()
}

fn read_proc(pid: u32) -> Option<Proc> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if cmdline.is_empty() {
        return None;
    }
    let args = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so split after the last ')'.
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let ppid = after_comm.split_whitespace().nth(1)?.parse().ok()?;
    Some(Proc { pid, ppid, args })
}

/// PSS of a process in KiB (0 when it is gone).
pub fn pss_kib(pid: u32) -> u64 {
    rollup_field(pid, "Pss:")
}

/// RSS of a process in KiB (0 when it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    rollup_field(pid, "Rss:")
}

fn rollup_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Sum of PSS over `pids` in KiB.
pub fn pss_sum(pids: &[u32]) -> u64 {
    pids.iter().map(|&pid| pss_kib(pid)).sum()
}

/// A PSS reading in KiB split by what backs it: `anon` is the process's own memory (heap,
/// stacks, shared memory; `Pss_Anon` + `Pss_Shmem`), the rest (`Pss_File`) is mapped files,
/// mostly the program's own code and data, clean page cache the kernel can drop and read again.
/// How much of a binary stays mapped depends on the kernel (fault-around, page-cache folio
/// sizes) more than on the program, so the split tells a change in a program from a change in
/// the machine.
#[derive(Debug, Default, Clone, Copy)]
pub struct Pss {
    pub total: u64,
    pub anon: u64,
}

impl Pss {
    /// The file-backed part.
    pub fn file(&self) -> u64 {
        self.total.saturating_sub(self.anon)
    }
}

impl std::ops::Add for Pss {
    type Output = Pss;
    fn add(self, other: Pss) -> Pss {
        Pss {
            total: self.total + other.total,
            anon: self.anon + other.anon,
        }
    }
}

/// PSS of a process split into anonymous and file-backed (zero when it is gone).
pub fn pss_split(pid: u32) -> Pss {
    Pss {
        total: pss_kib(pid),
        anon: rollup_field(pid, "Pss_Anon:") + rollup_field(pid, "Pss_Shmem:"),
    }
}

/// Sum of `pss_split` over `pids`.
pub fn pss_split_sum(pids: &[u32]) -> Pss {
    pids.iter()
        .map(|&pid| pss_split(pid))
        .fold(Pss::default(), |a, b| a + b)
}

/// Shim processes serving the containerd at `socket` (`-address <socket>` on their argv).
pub fn shims_of(procs: &[Proc], socket: &Path) -> Vec<u32> {
    let socket = socket.to_string_lossy();
    procs
        .iter()
        .filter(|p| p.program().starts_with("containerd-shim") && p.has_arg(&socket))
        .map(|p| p.pid)
        .collect()
}

/// Children of `parents` (e.g. the log drivers the shims started) whose argv has `arg`.
pub fn children_with_arg(procs: &[Proc], parents: &[u32], arg: &str) -> Vec<u32> {
    procs
        .iter()
        .filter(|p| parents.contains(&p.ppid) && p.has_arg(arg))
        .map(|p| p.pid)
        .collect()
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    count_entries(Path::new(&format!("/proc/{pid}/fd")))
}

/// Threads of a process.
pub fn threads(pid: u32) -> usize {
    count_entries(Path::new(&format!("/proc/{pid}/task")))
}

/// Entries of a directory (0 when it does not exist).
pub fn count_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Mount points at or below `dir`.
pub fn mounts_under(dir: &Path) -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|text| {
            text.lines()
                .filter_map(|line| line.split(' ').nth(4))
                .filter(|point| Path::new(point).starts_with(dir))
                .count()
        })
        .unwrap_or(0)
}

/// veth interfaces enslaved to `bridge` (the host ends of the replicas' links).
pub fn veths_on(bridge: &str) -> usize {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "master", bridge, "type", "veth"])
        .output();
    match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).lines().count(),
        _ => 0,
    }
}

/// Resident KiB of each mapping of `pid`'s own executable, by permissions (`r--p`, `r-xp`,
/// ...) with the mapping's size: how much of the program's code and constants stay mapped.
pub fn binary_mappings(pid: u32) -> Vec<(String, u64, u64)> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut mappings: Vec<(String, u64, u64)> = Vec::new();
    let mut current: Option<usize> = None;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let is_header = fields
            .first()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'));
        if is_header {
            current = None;
            if fields.len() >= 6 && Path::new(fields[5]) == exe {
                mappings.push((fields[1].to_string(), 0, 0));
                current = Some(mappings.len() - 1);
            }
            continue;
        }
        let (Some(i), [key, value, ..]) = (current, fields.as_slice()) else {
            continue;
        };
        let kib: u64 = value.parse().unwrap_or(0);
        match *key {
            "Size:" => mappings[i].1 = kib,
            "Rss:" => mappings[i].2 = kib,
            _ => {}
        }
    }
    mappings
}

/// KiB as MiB with one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}
