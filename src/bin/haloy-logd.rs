//! `haloy-logd`, the per-replica task log driver: containerd's shim starts one per task through
//! the `binary://` log URI haloyd writes (see `haloy::runtime::log_driver`). A binary of its
//! own so that each of these long-lived processes stays small: no async runtime, no CLI
//! parser, the system allocator (one arena: the driver is single-threaded on its hot path)
//! instead of haloyd's mimalloc, and only the driver's code mapped and relocated.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use haloy::runtime::log_driver;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if !log_driver::is_invocation(&args) {
        eprintln!(
            "haloy-logd is started by containerd's shim as a task's log driver \
             (`{} <config JSON>`), not by hand",
            log_driver::DRIVER_ARG
        );
        return ExitCode::from(2);
    }
    ExitCode::from(u8::try_from(log_driver::run(&args)).unwrap_or(1))
}
