//! Flags every step takes, flattened into each step's own arguments so that
//! every step spells them the same way. Each also reads a `SWITCHYARD_*`
//! variable, as CI systems set them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser};

use crate::aws::AwsSettings;
use crate::hooks::Hooks;
use crate::outcome::OutputFormat;
use crate::state::StateLocation;

/// A step's parsed command line: clap's struct, with the common flags in it.
pub trait StepArgs: Parser {
    /// The flags every step shares.
    fn common(&self) -> &CommonArgs;

    /// Parses the process's arguments; clap prints its own errors and exits 2.
    fn from_command_line() -> Self {
        Self::parse()
    }
}

/// The flags common to every step.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// State handed from step to step and kept between releases: a file, or s3://BUCKET/KEY
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_STATE",
        default_value = "switchyard-state.json",
        value_parser = parse_state,
        value_name = "FILE|s3://BUCKET/KEY"
    )]
    pub state: StateLocation,

    /// AWS region (default: AWS_REGION, the profile's region, else us-east-1)
    #[arg(long, global = true, env = "SWITCHYARD_REGION", value_name = "REGION")]
    pub region: Option<String>,

    /// AWS profile from the shared config files (credentials always come from the standard chain)
    #[arg(long, global = true, env = "SWITCHYARD_PROFILE", value_name = "NAME")]
    pub profile: Option<String>,

    /// Print every change the step would make, in order, and change nothing
    #[arg(long, global = true, env = "SWITCHYARD_DRY_RUN", value_parser = clap::builder::BoolishValueParser::new())]
    pub dry_run: bool,

    /// Result format on stdout
    #[arg(long, global = true, env = "SWITCHYARD_OUTPUT", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// More log detail on stderr (-v debug, -vv trace)
    #[arg(short, long, global = true, action = ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Less log detail on stderr (-q warnings only, -qq errors only)
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub quiet: u8,

    /// Deadline for the whole step, e.g. 90s, 15m, 1h
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_TIMEOUT",
        default_value = "30m",
        value_parser = parse_duration,
        value_name = "DURATION"
    )]
    pub timeout: Duration,

    /// Folder of hook executables (pre-<step>, post-<step>, on-rollback)
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_HOOKS_DIR",
        default_value = ".switchyard/hooks",
        value_name = "DIR"
    )]
    pub hooks_dir: PathBuf,

    /// Run no hooks
    #[arg(long, global = true, env = "SWITCHYARD_NO_HOOKS", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_hooks: bool,

    /// Longest time a hook may run before it is stopped
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_HOOK_TIMEOUT",
        default_value = "5m",
        value_parser = parse_duration,
        value_name = "DURATION"
    )]
    pub hook_timeout: Duration,

    /// Print the IAM policy these options need (JSON) and exit, calling nothing
    #[arg(long, global = true, env = "SWITCHYARD_PRINT_IAM_POLICY", value_parser = clap::builder::BoolishValueParser::new())]
    pub print_iam_policy: bool,
}

impl CommonArgs {
    /// The hooks these flags ask for.
    pub fn hooks(&self) -> Hooks {
        Hooks::new(&self.hooks_dir, !self.no_hooks, self.hook_timeout)
    }

    /// Where and as whom to call AWS.
    pub fn aws(&self) -> AwsSettings {
        AwsSettings {
            region: self.region.clone(),
            profile: self.profile.clone(),
        }
    }
}

/// Parses a duration such as `500ms`, `30s`, `5m`, `1h30m`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration; use e.g. 30s, 5m or 1h".to_owned());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("invalid duration {text:?} ({e}); use e.g. 30s, 5m or 1h"))
}

/// The flags of a step that takes a lock (shift-weight: the route's lease;
/// deploy-standby: the service's release lock).
#[derive(Debug, Clone, Args)]
pub struct LockArgs {
    /// When another run holds the lock, wait this long for it (with a heartbeat line) instead of exiting 5
    #[arg(long, global = true, env = "SWITCHYARD_LOCK_WAIT", value_parser = parse_duration, default_value = "0s", value_name = "DURATION")]
    pub lock_wait: Duration,

    /// Why this run holds the lock, shown to whoever finds it held (no secrets)
    #[arg(
        long,
        global = true,
        env = "SWITCHYARD_LOCK_MESSAGE",
        value_name = "TEXT"
    )]
    pub lock_message: Option<String>,
}

/// Reads `--state`: a file path or `s3://BUCKET/KEY`.
pub fn parse_state(value: &str) -> Result<StateLocation, String> {
    StateLocation::parse(value).map_err(|e| e.reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }
}
