fn main() {
    // --- log driver dispatch: the containerd shim starts haloyd as a task's log driver
    // (`binary://` log URI, see runtime::log_driver). Keep this first and separate. ---
    let args: Vec<String> = std::env::args().collect();
    if haloy::runtime::log_driver::is_invocation(&args) {
        std::process::exit(haloy::runtime::log_driver::run(&args));
    }
    // --- end of log driver dispatch ---
}
