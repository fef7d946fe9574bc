//! `shift-weight`: move traffic between stacks or regions, step by step, with
//! health gates and automatic rollback.

use std::process::ExitCode;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgGroup, Parser, ValueEnum};
use switchyard::aws::{self, AwsSettings};
use switchyard::cli::{exit, logging, output, parse_duration, CommonArgs, Failure};
use switchyard::health::{Gate, GatePolicy};
use switchyard::state::StateFile;
use switchyard::traffic::plan::{self, Intent};
use switchyard::traffic::route53::Route53Router;
use switchyard::traffic::shift::{self, Options, Request};

/// Move traffic between stacks or regions, step by step, with health gates and rollback.
///
/// Each step is one atomic change at the router, waited on until it is in
/// effect and read back; then the gate URLs must answer healthy before the
/// next step. A failed gate restores the weights from before the shift (exit 4).
#[derive(Debug, Parser)]
#[command(name = "shift-weight", version, max_term_width = 100)]
#[command(group(ArgGroup::new("mode").required(true).args(["to", "weights", "rollback"])))]
struct Args {
    /// The router that splits the traffic
    #[arg(long, env = "SWITCHYARD_ROUTER", value_enum, default_value_t = RouterKind::Route53)]
    router: RouterKind,

    /// Route53 hosted zone id of the record group
    #[arg(long, env = "SWITCHYARD_ZONE_ID", value_name = "ID")]
    zone_id: String,

    /// Name of the weighted record group, e.g. app.example.com
    #[arg(long, env = "SWITCHYARD_RECORD_NAME", value_name = "NAME")]
    record_name: String,

    /// Record type of the group
    #[arg(
        long,
        env = "SWITCHYARD_RECORD_TYPE",
        default_value = "A",
        value_name = "TYPE"
    )]
    record_type: String,

    /// The member (SetIdentifier) that receives traffic; the others share the rest in proportion
    #[arg(long, env = "SWITCHYARD_TO", value_name = "SET_ID")]
    to: Option<String>,

    /// Percentages to move through, in order, e.g. 10,50,100
    #[arg(
        long,
        env = "SWITCHYARD_STEPS",
        value_delimiter = ',',
        conflicts_with = "weight",
        value_name = "PCT,.."
    )]
    steps: Vec<u32>,

    /// One percentage to set for --to
    #[arg(long, env = "SWITCHYARD_WEIGHT", value_name = "PCT")]
    weight: Option<u32>,

    /// Explicit shares for every member, summing to 100, e.g. us-east=50,us-west=30,do=20
    #[arg(
        long,
        env = "SWITCHYARD_WEIGHTS",
        value_delimiter = ',',
        value_name = "SET_ID=PCT,.."
    )]
    weights: Vec<String>,

    /// Restore the weights recorded before the last shift (also after it completed)
    #[arg(long)]
    rollback: bool,

    /// Wait between steps, after each step's gate passed
    #[arg(long, env = "SWITCHYARD_PAUSE", value_parser = parse_duration, default_value = "0s", value_name = "DURATION")]
    pause: Duration,

    /// Wait after a change is in sync before the gate [default: the record's TTL]
    #[arg(long, env = "SWITCHYARD_SETTLE", value_parser = parse_duration, value_name = "DURATION")]
    settle: Option<Duration>,

    /// URL that must answer 2xx or 3xx after every step, and before the first (repeatable)
    #[arg(
        long = "gate-url",
        env = "SWITCHYARD_GATE_URLS",
        value_delimiter = ',',
        value_name = "URL"
    )]
    gate_urls: Vec<String>,

    /// Healthy answers in a row each gate URL needs
    #[arg(
        long,
        env = "SWITCHYARD_GATE_SUCCESSES",
        default_value_t = 3,
        value_name = "N"
    )]
    gate_successes: u32,

    /// Failed answers in a row of one gate URL that fail the gate
    #[arg(
        long,
        env = "SWITCHYARD_GATE_FAILURES",
        default_value_t = 2,
        value_name = "N"
    )]
    gate_failures: u32,

    /// Time between gate probes
    #[arg(long, env = "SWITCHYARD_GATE_INTERVAL", value_parser = parse_duration, default_value = "2s", value_name = "DURATION")]
    gate_interval: Duration,

    /// Longest time a gate may take to decide (undecided fails)
    #[arg(long, env = "SWITCHYARD_GATE_TIMEOUT", value_parser = parse_duration, default_value = "2m", value_name = "DURATION")]
    gate_timeout: Duration,

    /// Time-out of one gate probe
    #[arg(long, env = "SWITCHYARD_PROBE_TIMEOUT", value_parser = parse_duration, default_value = "5s", value_name = "DURATION")]
    probe_timeout: Duration,

    /// Move traffic even to a stack whose last health verdict is missing, stale or not healthy
    #[arg(long, env = "SWITCHYARD_FORCE", value_parser = BoolishValueParser::new())]
    force: bool,

    /// When another deployment holds the lock, wait this long for it (with a heartbeat line) instead of exiting 5
    #[arg(long, env = "SWITCHYARD_LOCK_WAIT", value_parser = parse_duration, default_value = "0s", value_name = "DURATION")]
    lock_wait: Duration,

    /// Why this run holds the lock, shown to whoever finds it held (no secrets)
    #[arg(long, env = "SWITCHYARD_LOCK_MESSAGE", value_name = "TEXT")]
    lock_message: Option<String>,

    /// A healthy verdict older than this does not count
    #[arg(long, env = "SWITCHYARD_MAX_VERDICT_AGE", value_parser = parse_duration, default_value = "30m", value_name = "DURATION")]
    max_verdict_age: Duration,

    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RouterKind {
    /// Route53 weighted record sets
    Route53,
}

fn main() -> ExitCode {
    if let Some(code) = switchyard::cli::generate::intercept::<Args>() {
        return code;
    }
    let args = Args::parse();
    logging::init(args.common.verbose, args.common.quiet);
    let format = args.common.output;
    exit::report(run(&args), format, "shift-weight")
}

fn run(args: &Args) -> Result<(), Failure> {
    let (request, options) = settings(args)?;
    let rtype = record_type(&args.record_type)?;
    let state = StateFile::new(&args.common.state);
    let aws = AwsSettings {
        region: args.common.region.clone(),
        profile: args.common.profile.clone(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(exit::Code::Provider, e))?;
    runtime.block_on(async {
        let cancel = switchyard::cli::signal::cancel_on_signals();
        let config = aws::load(&aws).await;
        let router = match args.router {
            RouterKind::Route53 => Route53Router::new(
                aws_sdk_route53::Client::new(&config),
                &args.zone_id,
                &args.record_name,
                rtype,
            ),
        };
        let report = shift::run(&router, &state, request, &options, &cancel).await?;
        output::emit(args.common.output, &report);
        Ok(())
    })
}

/// Checks every flag before the first network call: bad input exits 2 with nothing changed.
fn settings(args: &Args) -> Result<(Request, Options), Failure> {
    let request = if args.rollback {
        Request::Rollback
    } else if let Some(to) = &args.to {
        let steps = match (args.weight, args.steps.is_empty()) {
            (Some(w), true) => plan::check_steps(&[w])?,
            (None, false) => plan::check_steps(&args.steps)?,
            _ => {
                return Err(Failure::usage(
                    "--to needs --steps (e.g. 10,50,100) or --weight (e.g. 50)",
                ))
            }
        };
        Request::Shift(Intent::To {
            member: to.clone(),
            steps,
        })
    } else {
        Request::Shift(Intent::Exact(plan::parse_weights(&args.weights)?))
    };
    if args.record_name.trim().is_empty() || args.zone_id.trim().is_empty() {
        return Err(Failure::usage(
            "--zone-id and --record-name must not be empty",
        ));
    }
    for url in &args.gate_urls {
        match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => {
                return Err(Failure::usage(format!(
                    "--gate-url {url:?} is not an http(s) URL"
                )))
            }
        }
    }
    if args.gate_successes == 0 || args.gate_failures == 0 {
        return Err(Failure::usage(
            "--gate-successes and --gate-failures must be at least 1",
        ));
    }
    let gate = if args.gate_urls.is_empty() {
        None
    } else {
        let policy = GatePolicy {
            successes: args.gate_successes,
            failures: args.gate_failures,
            interval: args.gate_interval,
            probe_timeout: args.probe_timeout,
            deadline: args.gate_timeout,
        };
        Some(
            Gate::new(args.gate_urls.clone(), policy)
                .map_err(|e| Failure::new(exit::Code::Usage, e))?,
        )
    };
    if args.common.timeout.is_zero() {
        return Err(Failure::usage("--timeout must be more than 0s"));
    }
    let options = Options {
        pause: args.pause,
        settle: args.settle,
        gate,
        force: args.force,
        max_verdict_age: args.max_verdict_age,
        dry_run: args.common.dry_run,
        timeout: args.common.timeout,
        lock_wait: args.lock_wait,
        lock_message: args.lock_message.clone(),
        hooks: args.common.hooks(),
    };
    Ok((request, options))
}

fn record_type(text: &str) -> Result<aws_sdk_route53::types::RrType, Failure> {
    switchyard::aws::route53::parse_record_type(text).map_err(Failure::usage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn help_is_the_documented_contract() {
        let help = Args::command()
            .term_width(100)
            .render_long_help()
            .to_string();
        insta::assert_snapshot!("shift-weight-help", help);
    }

    #[test]
    fn args_are_consistent() {
        Args::command().debug_assert();
    }

    fn parse(extra: &[&str]) -> Result<(Request, Options), String> {
        let mut command_line = vec![
            "shift-weight",
            "--zone-id",
            "Z1",
            "--record-name",
            "app.example.com",
        ];
        command_line.extend_from_slice(extra);
        let args = Args::try_parse_from(command_line).map_err(|e| e.kind().to_string())?;
        settings(&args).map_err(|f| format!("{}: {}", f.code.number(), f.error))
    }

    #[test]
    fn bad_input_is_refused_with_exit_2() {
        assert_eq!(
            parse(&["--to", "green"]).unwrap_err(),
            "2: --to needs --steps (e.g. 10,50,100) or --weight (e.g. 50)"
        );
        assert_eq!(
            parse(&["--to", "green", "--steps", "50,10"]).unwrap_err(),
            "2: steps must be strictly ascending; 10 is not greater than 50"
        );
        assert_eq!(
            parse(&["--to", "green", "--weight", "101"]).unwrap_err(),
            "2: step 101 is outside 0-100"
        );
        assert_eq!(
            parse(&["--weights", "a=50,b=40"]).unwrap_err(),
            "2: weights must sum to 100; these sum to 90"
        );
        assert_eq!(
            parse(&["--to", "g", "--weight", "5", "--gate-url", "ftp://x"]).unwrap_err(),
            "2: --gate-url \"ftp://x\" is not an http(s) URL"
        );
        assert!(parse(&["--to", "g", "--rollback"]).is_err());
        assert!(parse(&[]).is_err());
        assert!(record_type("AAAA").is_ok());
        assert!(record_type("BOGUS").is_err());
    }

    #[test]
    fn good_input_makes_a_plan() {
        let (request, options) =
            parse(&["--to", "green", "--steps", "10,50,100", "--pause", "1m"]).unwrap();
        assert_eq!(
            request,
            Request::Shift(Intent::To {
                member: "green".into(),
                steps: vec![10, 50, 100]
            })
        );
        assert_eq!(options.pause, Duration::from_secs(60));
        assert!(options.gate.is_none());
        let (request, _) = parse(&["--rollback"]).unwrap();
        assert_eq!(request, Request::Rollback);
    }
}
