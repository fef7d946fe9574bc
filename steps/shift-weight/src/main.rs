//! `shift-weight`: move traffic between stacks or regions, step by step, with
//! health gates and automatic rollback.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgGroup, Parser};
use switchyard::aws::{self, iam, AwsSettings};
use switchyard::cli::route::{Route, RouteArgs, RouterKind};
use switchyard::cli::{exit, logging, output, parse_duration, CommonArgs, Failure};
use switchyard::health::{Gate, GatePolicy};
use switchyard::state::StateFile;
use switchyard::traffic::alb::{AlbRouter, Target};
use switchyard::traffic::haproxy::{Endpoint, HaproxyRouter, Members, RuntimeApi};
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
    #[command(flatten)]
    route: RouteArgs,

    /// Target group stickiness duration to set on the forward action, e.g. 1h (--router alb)
    #[arg(long, env = "SWITCHYARD_STICKINESS", value_parser = parse_duration, value_name = "DURATION")]
    stickiness: Option<Duration>,

    /// A member and what it is, repeatable: for alb NAME=TARGET_GROUP_ARN_OR_NAME, for haproxy
    /// NAME=SERVER[,SERVER..]. Without it, alb members are the target group names and haproxy
    /// members the server names without a trailing number (blue1, blue2 -> blue). In
    /// SWITCHYARD_MEMBERS, separate members with `;`
    #[arg(
        long = "member",
        env = "SWITCHYARD_MEMBERS",
        value_delimiter = ';',
        value_name = "NAME=WHAT"
    )]
    members: Vec<String>,

    /// Longest wait for a stack going to 0 to finish its sessions before it is put in maint
    /// (--router haproxy)
    #[arg(long, env = "SWITCHYARD_DRAIN_TIMEOUT", value_parser = parse_duration, default_value = "60s", value_name = "DURATION")]
    drain_timeout: Duration,

    /// The member that receives traffic (Route53 SetIdentifier, ALB target group, HAProxy stack);
    /// the others share the rest in proportion
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

/// The checked router settings.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RouterSettings {
    Route53 {
        zone_id: String,
        name: String,
        rtype: aws_sdk_route53::types::RrType,
    },
    Alb {
        target: Target,
        members: BTreeMap<String, String>,
        stickiness: Option<Duration>,
    },
    Haproxy {
        endpoint: Endpoint,
        backend: String,
        members: Members,
        server_state_file: Option<PathBuf>,
        lock_file: PathBuf,
        drain_timeout: Duration,
    },
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
    let router = router_settings(args)?;
    if args.common.print_iam_policy {
        iam::print(&policy(&router));
        return Ok(());
    }
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
        let report = match router {
            RouterSettings::Route53 {
                zone_id,
                name,
                rtype,
            } => {
                let config = aws::load(&aws).await;
                let router = Route53Router::new(
                    aws_sdk_route53::Client::new(&config),
                    &zone_id,
                    &name,
                    rtype,
                );
                shift::run(&router, &state, request, &options, &cancel).await?
            }
            RouterSettings::Alb {
                target,
                members,
                stickiness,
            } => {
                let config = aws::load(&aws).await;
                let router = AlbRouter::new(
                    aws_sdk_elasticloadbalancingv2::Client::new(&config),
                    target,
                    members,
                    stickiness,
                );
                shift::run(&router, &state, request, &options, &cancel).await?
            }
            RouterSettings::Haproxy {
                endpoint,
                backend,
                members,
                server_state_file,
                lock_file,
                drain_timeout,
            } => {
                let api = RuntimeApi::new(endpoint, Duration::from_secs(10));
                let router =
                    HaproxyRouter::new(api, &backend, members, server_state_file, lock_file)
                        .with_drain_timeout(drain_timeout);
                shift::run(&router, &state, request, &options, &cancel).await?
            }
        };
        output::emit(args.common.output, &report);
        Ok(())
    })
}

/// The IAM policy of a shift through `router`: HAProxy needs none.
fn policy(router: &RouterSettings) -> iam::Policy {
    match router {
        RouterSettings::Route53 { zone_id, .. } => {
            switchyard::traffic::route53::policy(zone_id, true)
        }
        RouterSettings::Alb {
            target, members, ..
        } => switchyard::traffic::alb::policy(
            target,
            members.is_empty() || members.values().any(|m| !m.starts_with("arn:")),
        ),
        RouterSettings::Haproxy { .. } => iam::Policy::new(),
    }
}

/// Checks the flags of the chosen router (and that no other router's flags are given).
fn router_settings(args: &Args) -> Result<RouterSettings, Failure> {
    let route = &args.route;
    route.only_for(
        "--stickiness",
        args.stickiness.is_some(),
        &[RouterKind::Alb],
    )?;
    if route.router == RouterKind::Route53 && !args.members.is_empty() {
        return Err(Failure::usage(
            "--member is for --router alb or haproxy; Route53 members are the SetIdentifiers",
        ));
    }
    match route.route()? {
        Route::Route53 {
            zone_id,
            name,
            rtype,
        } => Ok(RouterSettings::Route53 {
            zone_id,
            name,
            rtype,
        }),
        Route::Alb { target } => alb_settings(args, target),
        Route::Haproxy {
            endpoint,
            backend,
            server_state_file,
            lock_file,
        } => {
            let members = if args.members.is_empty() {
                Members::ByName
            } else {
                Members::Explicit(parse_members(&args.members)?.into_iter().collect())
            };
            Ok(RouterSettings::Haproxy {
                endpoint,
                backend,
                members,
                server_state_file,
                lock_file,
                drain_timeout: args.drain_timeout,
            })
        }
    }
}

/// Checks the flags of --router alb beyond the route.
fn alb_settings(args: &Args, target: Target) -> Result<RouterSettings, Failure> {
    if let Some(d) = args.stickiness {
        if d < Duration::from_secs(1) || d > Duration::from_secs(604_800) {
            return Err(Failure::usage(
                "--stickiness must be between 1s and 7d (ALB's 1-604800 seconds)",
            ));
        }
    }
    let mut members = BTreeMap::new();
    for (name, what) in parse_members(&args.members)? {
        match what.as_slice() {
            [group] => {
                members.insert(name, group.clone());
            }
            _ => {
                return Err(Failure::usage(format!(
                    "--member {name}: an ALB member is one target group (ARN or name)"
                )))
            }
        }
    }
    Ok(RouterSettings::Alb {
        target,
        members,
        stickiness: args.stickiness,
    })
}

/// Parses `--member NAME=A[,B..]`: every name once, never empty.
fn parse_members(pairs: &[String]) -> Result<Vec<(String, Vec<String>)>, Failure> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for pair in pairs.iter().filter(|p| !p.trim().is_empty()) {
        let bad = || {
            Failure::usage(format!(
                "--member {pair:?}: expected NAME=WHAT, e.g. blue=blue1,blue2 or green=arn:aws:elasticloadbalancing:..."
            ))
        };
        let (name, what) = pair.split_once('=').ok_or_else(bad)?;
        let name = name.trim();
        let what: Vec<String> = what
            .split(',')
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect();
        if name.is_empty() || what.is_empty() {
            return Err(bad());
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(Failure::usage(format!("--member {name} is given twice")));
        }
        out.push((name.to_owned(), what));
    }
    Ok(out)
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
    }

    fn routed(extra: &[&str]) -> Result<RouterSettings, String> {
        let mut command_line = vec!["shift-weight", "--to", "green", "--weight", "10"];
        command_line.extend_from_slice(extra);
        let args = Args::try_parse_from(command_line).map_err(|e| e.kind().to_string())?;
        router_settings(&args).map_err(|f| format!("{}: {}", f.code.number(), f.error))
    }

    const LISTENER: &str = "arn:aws:elasticloadbalancing:us-east-1:1:listener/app/lb/1/2";

    #[test]
    fn alb_takes_its_own_flags() {
        assert_eq!(
            routed(&["--router", "alb"]).unwrap_err(),
            "2: --router alb needs --listener-arn or --rule-arn"
        );
        assert_eq!(
            routed(&["--router", "alb", "--listener-arn", "arn:aws:x"]).unwrap_err(),
            "2: --listener-arn \"arn:aws:x\" is not a listener ARN (arn:aws:elasticloadbalancing:...:listener/...)"
        );
        assert_eq!(
            routed(&[
                "--router",
                "alb",
                "--listener-arn",
                LISTENER,
                "--zone-id",
                "Z1"
            ])
            .unwrap_err(),
            "2: --zone-id is for --router route53, not --router alb"
        );
        assert_eq!(
            routed(&[
                "--router",
                "alb",
                "--listener-arn",
                LISTENER,
                "--stickiness",
                "8d"
            ])
            .unwrap_err(),
            "2: --stickiness must be between 1s and 7d (ALB's 1-604800 seconds)"
        );
        assert_eq!(
            routed(&[
                "--router",
                "alb",
                "--listener-arn",
                LISTENER,
                "--member",
                "blue=a,b"
            ])
            .unwrap_err(),
            "2: --member blue: an ALB member is one target group (ARN or name)"
        );
        let Ok(RouterSettings::Alb {
            target,
            members,
            stickiness,
        }) = routed(&[
            "--router",
            "alb",
            "--listener-arn",
            LISTENER,
            "--member",
            "blue=tg-blue;green=tg-green",
            "--stickiness",
            "1h",
        ])
        else {
            panic!("alb settings")
        };
        assert_eq!(target, Target::Listener(LISTENER.into()));
        assert_eq!(members.len(), 2);
        assert_eq!(stickiness, Some(Duration::from_secs(3600)));
    }

    #[test]
    fn haproxy_and_route53_take_their_own_flags() {
        assert_eq!(
            routed(&["--router", "haproxy", "--backend", "app"]).unwrap_err(),
            "2: --router haproxy needs --haproxy-socket and --backend"
        );
        assert!(routed(&[
            "--router",
            "haproxy",
            "--backend",
            "app",
            "--haproxy-socket",
            "tcp:127.0.0.1:9999"
        ])
        .unwrap_err()
        .contains("give --server-state-file or --lock-file"));
        assert_eq!(
            routed(&[
                "--router",
                "haproxy",
                "--backend",
                "app",
                "--haproxy-socket",
                "/s",
                "--member",
                "blue=b1",
                "--member",
                "blue=b2"
            ])
            .unwrap_err(),
            "2: --member blue is given twice"
        );
        assert!(routed(&[
            "--router",
            "haproxy",
            "--backend",
            "app",
            "--haproxy-socket",
            "/s",
            "--member",
            "blue"
        ])
        .unwrap_err()
        .starts_with("2: --member \"blue\": expected NAME=WHAT"));
        let Ok(RouterSettings::Haproxy {
            members, lock_file, ..
        }) = routed(&[
            "--router",
            "haproxy",
            "--backend",
            "app",
            "--haproxy-socket",
            "/run/h.sock",
            "--member",
            "blue=b1,b2",
            "--server-state-file",
            "/var/lib/haproxy/state",
        ])
        else {
            panic!("haproxy settings")
        };
        assert_eq!(
            members,
            Members::Explicit([("blue".to_owned(), vec!["b1".to_owned(), "b2".to_owned()])].into())
        );
        assert_eq!(
            lock_file,
            PathBuf::from("/var/lib/haproxy/state.switchyard-lock")
        );

        assert_eq!(
            routed(&[]).unwrap_err(),
            "2: --router route53 needs --zone-id and --record-name (not empty)"
        );
        assert_eq!(
            routed(&[
                "--zone-id",
                "Z",
                "--record-name",
                "a.example.com",
                "--backend",
                "app"
            ])
            .unwrap_err(),
            "2: --backend is for --router haproxy, not --router route53"
        );
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
