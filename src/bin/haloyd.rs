//! `haloyd`, the daemon on each server; everything but the allocator is `haloy::daemon`.

#![forbid(unsafe_code)]

/// mimalloc: the proxy allocates and frees small buffers per request, where glibc's malloc
/// spends its time consolidating free lists (measured by integration-tests/bench/proxy.sh).
/// Here, not in the library, so that `haloy` and `haloy-logd` keep the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    haloy::daemon::main()
}
