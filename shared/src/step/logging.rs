//! Logs go to stderr, so that stdout carries only the step's result.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Starts logging at the level -v/-q ask for. `SWITCHYARD_LOG` (a tracing
/// filter such as `debug,aws_smithy_runtime=trace`) overrides it.
pub fn init(verbose: u8, quiet: u8) {
    let level = match (verbose, quiet) {
        (0, 0) => "info",
        (1, _) => "debug",
        (v, _) if v >= 2 => "trace",
        (_, 1) => "warn",
        _ => "error",
    };
    let default = if verbose >= 2 {
        level.to_owned()
    } else {
        // The SDK's own chatter is noise at the levels CI logs at.
        format!("{level},aws_config=warn,aws_smithy_runtime=warn,aws_runtime=warn,hyper=warn,rustls=warn")
    };
    let filter = std::env::var("SWITCHYARD_LOG")
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
