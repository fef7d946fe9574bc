//! The runner every executable uses. A step's `main` is one call,
//! `switchyard::step::main::<Command>()`, and the runner does what every
//! step does the same way:
//!
//! 1. answers `--generate bash|zsh|fish|man` (before the flags are checked);
//! 2. parses the flags (clap; a usage error exits 2) and starts logging;
//! 3. checks them into the command's typed settings ([`Command::settings`]):
//!    bad input exits 2 before any call or change;
//! 4. prints the IAM policy and stops, with `--print-iam-policy`;
//! 5. starts the async runtime and the SIGINT/SIGTERM cancellation, and runs
//!    the command ([`Command::run`]) with a [`Step`]: the state file, AWS
//!    settings, deadline, cancellation and hooks. The command calls
//!    [`StepHooks::before_change`] where it has decided and not yet changed
//!    anything; that is where `pre-<step>` runs;
//! 6. records the report in the state ([`Command::record`]);
//! 7. emits the report or the failure through the one reporter
//!    ([`crate::outcome::report::emit`]);
//! 8. runs `post-<step>` or `on-rollback`;
//! 9. exits with the code.

pub mod logging;

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::aws::{iam, AwsSettings};
use crate::cli::{CommonArgs, StepArgs};
use crate::hooks::{HookEnv, StepEnd, StepHooks};
use crate::outcome::report::{self, StepReport};
use crate::outcome::{Code, Failure};
use crate::state::{StateFile, StateLocation};

/// One executable's command: its flags, how they are checked, and what it does.
pub trait Command {
    /// The executable's name, as hooks (`pre-<STEP>`), the journal and the
    /// JSON envelope spell it.
    const STEP: &'static str;
    /// Whether the command works many endpoints at once, on every core.
    const MULTI_THREAD: bool = false;
    /// The flags, as clap parses them (`crate::cli`).
    type Args: StepArgs;
    /// The checked flags: everything `run` needs, typed.
    type Settings;
    /// What `run` reports.
    type Report: StepReport;

    /// Checks the flags, before any network call or change: an error here
    /// exits 2 (or the failure's code) with nothing changed.
    fn settings(args: Self::Args) -> Result<Self::Settings, Failure>;

    /// The IAM policy these settings need (`--print-iam-policy`).
    fn policy(settings: &Self::Settings) -> iam::Policy;

    /// Does the work.
    fn run(
        settings: Self::Settings,
        step: &mut Step,
    ) -> impl Future<Output = Result<Self::Report, Failure>>;

    /// Records the report in the state, when the command's result belongs
    /// there as a whole (a verdict). Commands that change things journal
    /// each change as they make it instead, and record nothing here.
    fn record(
        report: &Self::Report,
        state: &StateFile,
    ) -> impl Future<Output = Result<(), Failure>> {
        let _ = (report, state);
        async { Ok(()) }
    }
}

/// What a running command gets from the runner.
#[derive(Debug)]
pub struct Step {
    /// The state file (`--state`).
    pub state: StateFile,
    /// Where and as whom to call AWS (`--region`, `--profile`).
    pub aws: AwsSettings,
    /// Plan only: change nothing (`--dry-run`).
    pub dry_run: bool,
    /// The whole step's time limit (`--timeout`).
    pub timeout: Duration,
    /// When the step must be done: its start plus `--timeout`.
    pub deadline: Instant,
    /// Cancelled on the first SIGINT or SIGTERM.
    pub cancel: CancellationToken,
    /// The step's hooks.
    pub hooks: StepHooks,
}

impl Step {
    /// The step `name` as `common` asks for it. Call it within the runtime:
    /// it starts listening for signals.
    pub fn new(name: &'static str, common: &CommonArgs) -> Self {
        let mut base = HookEnv::default();
        base.set("SWITCHYARD_STEP", name);
        base.set("SWITCHYARD_STATE_FILE", &common.state.to_string());
        base.set("SWITCHYARD_ACTOR", &crate::state::journal::actor());
        base.set("SWITCHYARD_DRY_RUN", if common.dry_run { "1" } else { "0" });
        Self {
            state: StateFile::at(common.state.clone(), common.aws()),
            aws: common.aws(),
            dry_run: common.dry_run,
            timeout: common.timeout,
            deadline: Instant::now() + common.timeout,
            cancel: crate::wait::signal::cancel_on_signals(),
            hooks: StepHooks::new(common.hooks(), name, base, common.dry_run),
        }
    }
}

/// What reading and writing the state needs: nothing for a file; for an S3
/// object, getting and putting that object only, and listing its bucket:
/// without s3:ListBucket, S3 answers a read of a missing object (a service's
/// first release, a free lock) with 403 instead of 404. (Terraform's S3
/// backend asks for the same.)
pub fn state_policy(state: &StateLocation) -> iam::Policy {
    let mut policy = iam::Policy::new();
    if let (Some(arn), StateLocation::S3 { bucket, .. }) = (state.arn(), state) {
        policy.allow("State", &["s3:GetObject", "s3:PutObject"], [arn]);
        policy.allow(
            "StateBucket",
            &["s3:ListBucket"],
            [format!("arn:aws:s3:::{bucket}")],
        );
    }
    policy
}

/// Runs the executable of command `C` and returns its exit code.
pub fn main<C: Command>() -> ExitCode {
    if let Some(code) = crate::cli::generate::intercept::<C::Args>() {
        return code;
    }
    let args = C::Args::from_command_line();
    let common = args.common().clone();
    logging::init(common.verbose, common.quiet);
    let settings = if common.timeout.is_zero() {
        Err(Failure::usage("--timeout must be more than 0s"))
    } else {
        C::settings(args)
    };
    let settings = match settings {
        Ok(s) => s,
        Err(failure) => {
            return report::emit::<C::Report>(common.output, C::STEP, None, Some(&failure))
        }
    };
    if common.print_iam_policy {
        // The policy document itself, not an envelope: it is made to be
        // handed to IAM as it is (`aws iam put-role-policy --policy-document`).
        let mut policy = C::policy(&settings);
        policy.merge(&state_policy(&common.state));
        if policy.is_empty() {
            tracing::info!("these options make no AWS call: no permission is needed");
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&policy.to_json()).unwrap_or_default()
        );
        return ExitCode::SUCCESS;
    }
    let mut builder = if C::MULTI_THREAD {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            let failure = Failure::new(Code::Provider, e);
            return report::emit::<C::Report>(common.output, C::STEP, None, Some(&failure));
        }
    };
    runtime.block_on(async {
        let mut step = Step::new(C::STEP, &common);
        let (report, mut failure) = match C::run(settings, &mut step).await {
            Ok(report) => {
                let failure = report.failure();
                (Some(report), failure)
            }
            Err(failure) => (None, Some(failure)),
        };
        if let (Some(report), false) = (&report, step.dry_run) {
            if let Err(e) = C::record(report, &step.state).await {
                failure.get_or_insert(e);
            }
        }
        let code = report::emit(common.output, C::STEP, report.as_ref(), failure.as_ref());
        let mut vars = HookEnv::default();
        for (name, value) in report.iter().flat_map(StepReport::hook_vars) {
            vars.set(name, &value);
        }
        let end = match &failure {
            None => StepEnd::Done,
            Some(f) if f.code == Code::RolledBack => {
                vars.set("SWITCHYARD_REASON", &f.error.to_string());
                StepEnd::RolledBack
            }
            Some(f) if f.code == Code::CheckFailed && report.is_some() => StepEnd::CheckFailed,
            Some(_) => StepEnd::Stopped,
        };
        step.hooks.after(end, &vars).await;
        code
    })
}
