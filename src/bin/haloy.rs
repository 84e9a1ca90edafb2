//! `haloy`, the CLI; everything is `haloy::cli`.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    haloy::cli::main()
}
