//! Resource preflight: a deploy whose replicas cannot fit the host's free memory or CPUs is
//! refused before anything is started, with a message that says what is missing (the user
//! docs' "Out of resources"). Limits themselves are applied per task by the runtime.

use crate::config::ResolvedApp;

/// Refuses `app` when `replicas × resources` exceeds what the host can give. Memory already
/// reserved by the app's running replicas counts as available: a deploy replaces them.
pub(crate) fn check_resources(app: &ResolvedApp, reserved_by_app: u64) -> Result<(), String> {
    let Some(resources) = app.resources.as_ref() else {
        return Ok(());
    };
    let replicas = u64::from(app.replicas);
    if let Some(memory) = resources.memory_bytes {
        let needed = memory.saturating_mul(replicas);
        if let Some(available) = mem_available() {
            let available = available.saturating_add(reserved_by_app);
            if needed > available {
                return Err(format!(
                    "Out of resources: {} replicas × {} = {} of memory needed, {} available on this server; reduce replicas or add RAM",
                    app.replicas,
                    human_bytes(memory),
                    human_bytes(needed),
                    human_bytes(available)
                ));
            }
        }
    }
    if let Some(cpus) = resources.cpus {
        let needed = cpus * app.replicas as f64;
        let host = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        if needed > host {
            return Err(format!(
                "Out of resources: {} replicas × {cpus} CPU = {needed} CPUs needed, this server has {host}; reduce replicas or add CPUs",
                app.replicas
            ));
        }
    }
    Ok(())
}

fn mem_available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&meminfo)
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn human_bytes(bytes: u64) -> String {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    const MIB: f64 = 1024.0 * 1024.0;
    let b = bytes as f64;
    if b >= GIB {
        format!("{:.1} GiB", b / GIB)
    } else {
        format!("{:.0} MiB", b / MIB)
    }
}

#[cfg(test)]
#[path = "tests/preflight.rs"]
mod tests;
