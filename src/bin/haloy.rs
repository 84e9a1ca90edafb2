//! `haloy`, the CLI: parses the command line and runs it on a small tokio runtime. Config
//! problems are printed one per line (`FILE:LINE:COL: KEY.PATH: …`); every failure exits 1.

#![forbid(unsafe_code)]

use clap::Parser;
use haloy::cli::{run, Cli};
use std::process::ExitCode;

fn main() -> ExitCode {
    restore_default_sigpipe();
    let cli = Cli::parse_from(haloy::cli::exec::rewrite_tty_flag(std::env::args_os()));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            for line in e.report_lines() {
                eprintln!("{line}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Rust ignores SIGPIPE, which turns `haloy logs | head` into a panic on the next write; die
/// quietly like other Unix tools instead.
fn restore_default_sigpipe() {
    haloy::sys::restore_default_sigpipe();
}
