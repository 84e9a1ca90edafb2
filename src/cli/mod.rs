//! The `haloy` command line (clap): deploy, status, logs, stop, rollback, targets,
//! validate-config, server, version, completion.
