//! The command-line contract every step shares: the common flags, exit codes,
//! result output (text, JSON, GitHub Actions outputs and summary), logging and
//! progress lines.

pub mod args;
pub mod exit;
pub mod generate;
pub mod hooks;
pub mod logging;
pub mod output;
pub mod progress;
pub mod route;
pub mod signal;

pub use args::{parse_duration, CommonArgs, OutputFormat};
pub use exit::{Code, ExitStatus, Failure};
pub use output::StepReport;
