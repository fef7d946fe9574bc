//! `verify-health`: decide whether a stack is healthy, from HTTP(S) probes and
//! CloudWatch alarms; and manage the Route53 health checks of a record group.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand};
use switchyard::aws::{self, iam, AwsSettings};
use switchyard::cli::{exit, logging, output, parse_duration, Code, CommonArgs, Failure};
use switchyard::health::alarms::{AlarmGate, InsufficientData};
use switchyard::health::probe::{self, BodyRule, JsonCheck, ProbeSpec, StatusSet};
use switchyard::health::route53::{self as checks, CheckKind, CheckSpec};
use switchyard::health::targets::{self, UrlTemplate};
use switchyard::health::{HttpProbe, ProbePolicy, Verification};
use switchyard::hooks::HookEnv;
use switchyard::state::{Health, JournalEntry, Outcome, StateFile};

/// Decide whether a stack is healthy.
///
/// Probes every endpoint of a stack (from the state file, or given as URLs)
/// in rounds until each has passed or failed enough times in a row, checks a
/// quorum and latency limits, and watches CloudWatch alarms through a window.
/// Missing evidence is never a pass. The verdict goes into the state file,
/// where shift-weight reads it. Exit 0 healthy, 1 unhealthy or inconclusive.
#[derive(Debug, Parser)]
#[command(
    name = "verify-health",
    version,
    max_term_width = 100,
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    verify: VerifyArgs,

    #[command(flatten)]
    common: CommonArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Route53 health checks of a record group's members
    #[command(subcommand)]
    Route53(Route53Command),
}

#[derive(Debug, Subcommand)]
enum Route53Command {
    /// Create (once) a health check per member and associate it with the member's record set
    Ensure(EnsureArgs),
    /// Show each member's health as Route53's checkers report it (exit 1 if any is not healthy)
    Status(GroupArgs),
}

#[derive(Debug, ClapArgs)]
struct GroupArgs {
    /// Route53 hosted zone id
    #[arg(long, env = "SWITCHYARD_ZONE_ID", value_name = "ID")]
    zone_id: String,
    /// Record name of the group
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
}

#[derive(Debug, ClapArgs)]
struct EnsureArgs {
    #[command(flatten)]
    group: GroupArgs,
    /// A member and its endpoint: SET_ID=URL (TCP: SET_ID=HOST:PORT); repeatable
    #[arg(long = "member", required = true, value_name = "SET_ID=URL")]
    members: Vec<String>,
    /// Kind of check
    #[arg(long = "type", value_enum, default_value_t = CheckKind::Http)]
    kind: CheckKind,
    /// Seconds between checks by each Route53 checker: 10 or 30
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    request_interval: i32,
    /// Consecutive failed checks before a member is unhealthy (1-10)
    #[arg(long, default_value_t = 3, value_name = "N")]
    failure_threshold: i32,
    /// String the body must contain (http-str-match, https-str-match)
    #[arg(long, value_name = "TEXT")]
    search_string: Option<String>,
}

#[derive(Debug, ClapArgs)]
#[allow(clippy::struct_excessive_bools)]
struct VerifyArgs {
    /// Stack to verify: a name in the state file (green), or a role (active, standby)
    #[arg(long, env = "SWITCHYARD_STACK", value_name = "NAME")]
    stack: Option<String>,
    /// URL or host[:port] to probe (repeatable); replaces the stack's endpoints from the state
    #[arg(
        long = "url",
        env = "SWITCHYARD_URLS",
        value_delimiter = ',',
        value_name = "URL"
    )]
    urls: Vec<String>,
    /// File of URLs or host[:port] endpoints, one per line
    #[arg(long, env = "SWITCHYARD_URLS_FILE", value_name = "FILE")]
    urls_file: Option<PathBuf>,
    /// Scheme for endpoints given as host[:port]
    #[arg(long, default_value = "http", value_parser = ["http", "https"])]
    scheme: String,
    /// Port for endpoints given without one
    #[arg(long, value_name = "PORT")]
    port: Option<u16>,
    /// Path for endpoints given without one
    #[arg(
        long,
        env = "SWITCHYARD_HEALTH_PATH",
        default_value = "/health",
        value_name = "PATH"
    )]
    path: String,

    /// HTTP method of a probe
    #[arg(long, default_value = "GET")]
    method: String,
    /// Request header 'Name: value' (repeatable)
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Request body
    #[arg(long, value_name = "TEXT")]
    body: Option<String>,
    /// Status codes that pass, e.g. 200-399 or 200,204
    #[arg(long, default_value = "200-399", value_name = "CODES")]
    expect_status: String,
    /// Regular expression the body must match
    #[arg(long, value_name = "REGEX")]
    body_regex: Option<String>,
    /// Regular expression the body must not match
    #[arg(long, value_name = "REGEX")]
    body_not_regex: Option<String>,
    /// JSON check 'POINTER OP VALUE', e.g. '/status == "ok"' or '/queue/depth < 100' (repeatable)
    #[arg(long = "json", value_name = "CHECK")]
    json_checks: Vec<String>,
    /// Time-out to connect
    #[arg(long, value_parser = parse_duration, default_value = "2s", value_name = "DURATION")]
    connect_timeout: Duration,
    /// Time-out of one probe, body included
    #[arg(long, value_parser = parse_duration, default_value = "5s", value_name = "DURATION")]
    probe_timeout: Duration,
    /// PEM file of certificate authorities to trust as well
    #[arg(long, env = "SWITCHYARD_CA_BUNDLE", value_name = "FILE")]
    ca_bundle: Option<PathBuf>,
    /// Accept any TLS certificate (only for endpoints you cannot give a CA for)
    #[arg(long)]
    insecure: bool,
    /// Host header to send
    #[arg(long, value_name = "HOST")]
    host_header: Option<String>,
    /// Resolve HOST:PORT to ADDRESS (keeps SNI and the certificate name), as curl's --resolve
    #[arg(long, value_name = "HOST:PORT:ADDRESS")]
    resolve: Vec<String>,
    /// Redirects to follow (0: a 3xx answer is judged as it is)
    #[arg(long, default_value_t = 0, value_name = "N")]
    max_redirects: usize,
    /// Bytes of body read at most
    #[arg(long, default_value_t = 65536, value_name = "BYTES")]
    max_body: usize,

    /// Wait before the first probe
    #[arg(long, value_parser = parse_duration, default_value = "0s", value_name = "DURATION")]
    initial_delay: Duration,
    /// Time between rounds of probes
    #[arg(long, env = "SWITCHYARD_INTERVAL", value_parser = parse_duration, default_value = "2s", value_name = "DURATION")]
    interval: Duration,
    /// Rounds of probes at most
    #[arg(
        long,
        env = "SWITCHYARD_ATTEMPTS",
        default_value_t = 10,
        value_name = "N"
    )]
    attempts: u32,
    /// Consecutive passing probes that make an endpoint healthy
    #[arg(
        long,
        env = "SWITCHYARD_SUCCESSES",
        default_value_t = 2,
        value_name = "N"
    )]
    successes: u32,
    /// Consecutive failing probes that make an endpoint unhealthy
    #[arg(
        long,
        env = "SWITCHYARD_FAILURES",
        default_value_t = 2,
        value_name = "N"
    )]
    failures: u32,
    /// Percentage of endpoints that must be healthy
    #[arg(
        long,
        env = "SWITCHYARD_QUORUM",
        default_value_t = 100.0,
        value_name = "PCT"
    )]
    quorum: f64,
    /// Limit on the 95th percentile probe latency
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    p95_limit: Option<Duration>,
    /// Limit on the slowest probe
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    max_latency: Option<Duration>,
    /// Probes in flight at once
    #[arg(
        long,
        env = "SWITCHYARD_CONCURRENCY",
        default_value_t = 256,
        value_name = "N"
    )]
    concurrency: usize,

    /// CloudWatch alarm that must stay OK (repeatable)
    #[arg(
        long = "alarm",
        env = "SWITCHYARD_ALARMS",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    alarms: Vec<String>,
    /// Every alarm whose name starts with this must stay OK (repeatable)
    #[arg(long = "alarm-prefix", value_name = "PREFIX")]
    alarm_prefixes: Vec<String>,
    /// How long the alarms must stay OK
    #[arg(long, value_parser = parse_duration, default_value = "0s", value_name = "DURATION")]
    alarm_window: Duration,
    /// Time between looks at the alarms within the window
    #[arg(long, value_parser = parse_duration, default_value = "10s", value_name = "DURATION")]
    alarm_interval: Duration,
    /// What an alarm in INSUFFICIENT_DATA counts as
    #[arg(long, value_enum, default_value_t = InsufficientData::Inconclusive)]
    insufficient_data: InsufficientData,

    /// Write a JUnit XML report (one test case per endpoint and alarm) here
    #[arg(long, env = "SWITCHYARD_JUNIT", value_name = "FILE")]
    junit: Option<PathBuf>,
}

fn main() -> ExitCode {
    if let Some(code) = switchyard::cli::generate::intercept::<Args>() {
        return code;
    }
    let args = Args::parse();
    logging::init(args.common.verbose, args.common.quiet);
    let format = args.common.output;
    exit::report(run(&args), format, "verify-health")
}

fn run(args: &Args) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Code::Provider, e))?;
    if args.common.print_iam_policy {
        iam::print(&policy(args));
        return Ok(());
    }
    match &args.command {
        None => verify(args, &runtime),
        Some(Command::Route53(cmd)) => runtime.block_on(route53(cmd, &args.common)),
    }
}

/// The IAM policy these options need: HTTP probes need none.
fn policy(args: &Args) -> iam::Policy {
    match &args.command {
        None if args.verify.alarms.is_empty() && args.verify.alarm_prefixes.is_empty() => {
            iam::Policy::new()
        }
        None => switchyard::health::alarms::policy(),
        Some(Command::Route53(Route53Command::Ensure(a))) => checks::policy(&a.group.zone_id, true),
        Some(Command::Route53(Route53Command::Status(g))) => checks::policy(&g.zone_id, false),
    }
}

fn aws_settings(common: &CommonArgs) -> AwsSettings {
    AwsSettings {
        region: common.region.clone(),
        profile: common.profile.clone(),
    }
}

/// Checks every flag (and reads the state) before the first probe.
fn verify(args: &Args, runtime: &tokio::runtime::Runtime) -> Result<(), Failure> {
    let v = &args.verify;
    let state = StateFile::new(&args.common.state);
    let doc = state.load()?;
    let (stack, urls) = targets(v, &doc)?;
    let probe = HttpProbe::with_spec(probe_spec(v)?).map_err(|e| Failure::new(Code::Usage, e))?;
    let policy = probe_policy(v, args.common.timeout);
    policy.check().map_err(|e| Failure::new(Code::Usage, e))?;

    if args.common.dry_run {
        print_plan(v, stack.as_deref(), &urls);
        return Ok(());
    }

    runtime.block_on(async {
        let cancel = switchyard::wait::signal::cancel_on_signals();
        let alarms = if v.alarms.is_empty() && v.alarm_prefixes.is_empty() {
            None
        } else {
            let config = aws::load(&aws_settings(&args.common)).await;
            let gate = AlarmGate {
                names: v.alarms.clone(),
                prefixes: v.alarm_prefixes.clone(),
                window: v.alarm_window,
                interval: v.alarm_interval,
                insufficient: v.insufficient_data,
            };
            Some((aws_sdk_cloudwatch::Client::new(&config), gate))
        };
        let verification = Verification {
            stack: stack.clone(),
            urls,
            probe,
            policy,
            alarms,
        };
        let hooks = args.common.hooks();
        let mut env = HookEnv::new("verify-health", state.path(), &doc, false);
        env.set_opt("SWITCHYARD_STACK", stack.as_deref());
        hooks.run("pre-verify-health", &env).await?;
        let report = verification.run(&cancel).await?;
        if let Some(path) = &v.junit {
            std::fs::write(path, report.junit()).map_err(|e| {
                Failure::new(
                    Code::Provider,
                    anyhow_io(&e, &format!("cannot write --junit {}", path.display())),
                )
            })?;
        }
        if let Some(name) = &stack {
            // Re-read: another step may have written meanwhile; keep its data.
            let mut doc = state.load()?;
            doc.health.insert(name.clone(), report.to_verdict());
            let outcome = if report.verdict == Health::Healthy {
                Outcome::Ok
            } else {
                Outcome::Failed
            };
            doc.record(
                JournalEntry::new("verify-health", "verdict", outcome)
                    .detail(format!("{name}: {}", report.summary)),
            );
            state.save(&doc)?;
        }
        output::emit(args.common.output, &report);
        env.set(
            "SWITCHYARD_VERDICT",
            switchyard::health::report::word(report.verdict),
        );
        env.set(
            "SWITCHYARD_OUTCOME",
            if report.verdict == Health::Healthy {
                "ok"
            } else {
                "failed"
            },
        );
        hooks.run_after("post-verify-health", &env).await;
        match report.verdict {
            Health::Healthy => Ok(()),
            verdict => Err(Failure::new(
                Code::CheckFailed,
                std::io::Error::other(format!(
                    "{} is {}: {}",
                    stack.as_deref().unwrap_or("the target"),
                    switchyard::health::report::word(verdict),
                    report.summary
                )),
            )),
        }
    })
}

/// The stack (if one) and the URLs to probe: given URLs, a file of them, or
/// the stack's endpoints from the state.
fn targets(
    v: &VerifyArgs,
    doc: &switchyard::state::StateDocument,
) -> Result<(Option<String>, Vec<String>), Failure> {
    let template = UrlTemplate {
        scheme: v.scheme.clone(),
        port: v.port,
        path: v.path.clone(),
    };
    let mut endpoints = v.urls.clone();
    if let Some(file) = &v.urls_file {
        endpoints.extend(targets::read_urls_file(file).map_err(Failure::usage)?);
    }
    let stack = match &v.stack {
        Some(name) if endpoints.is_empty() => {
            let (found, from_state) =
                targets::stack_endpoints(doc, name).map_err(Failure::usage)?;
            endpoints = from_state;
            Some(found)
        }
        Some(name) => Some(name.clone()),
        None => None,
    };
    if endpoints.is_empty() && v.alarms.is_empty() && v.alarm_prefixes.is_empty() {
        return Err(Failure::usage(
            "nothing to verify: give --stack, --url, --urls-file, --alarm or --alarm-prefix",
        ));
    }
    let urls = endpoints
        .iter()
        .map(|e| targets::endpoint_url(e, &template))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::usage)?;
    Ok((stack, urls))
}

/// The probe policy the flags ask for.
fn probe_policy(v: &VerifyArgs, deadline: Duration) -> ProbePolicy {
    ProbePolicy {
        initial_delay: v.initial_delay,
        interval: v.interval,
        attempts: v.attempts,
        successes: v.successes,
        failures: v.failures,
        deadline,
        quorum: v.quorum,
        p95_limit: v.p95_limit,
        max_limit: v.max_latency,
        concurrency: v.concurrency,
    }
}

/// What a dry run would probe and watch.
fn print_plan(v: &VerifyArgs, stack: Option<&str>, urls: &[String]) {
    println!(
        "would probe {} endpoint(s){}",
        urls.len(),
        stack.map(|s| format!(" of stack {s}")).unwrap_or_default()
    );
    for u in urls {
        println!("  {u}");
    }
    for a in &v.alarms {
        println!(
            "would watch alarm {a} for {}",
            switchyard::wait::progress::short(v.alarm_window)
        );
    }
}

fn anyhow_io(e: &std::io::Error, context: &str) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{context}: {e}"))
}

fn probe_spec(v: &VerifyArgs) -> Result<ProbeSpec, Failure> {
    let usage = |e: probe::ProbeSpecError| Failure::new(Code::Usage, e);
    let mut body_rules = Vec::new();
    if let Some(re) = &v.body_regex {
        body_rules.push(BodyRule::new(re, true).map_err(usage)?);
    }
    if let Some(re) = &v.body_not_regex {
        body_rules.push(BodyRule::new(re, false).map_err(usage)?);
    }
    if let Some(path) = &v.ca_bundle {
        if !path.is_file() {
            return Err(Failure::usage(format!(
                "--ca-bundle {} is not a file",
                path.display()
            )));
        }
    }
    Ok(ProbeSpec {
        method: probe::parse_method(&v.method).map_err(usage)?,
        headers: v
            .headers
            .iter()
            .map(|h| probe::parse_header(h))
            .collect::<Result<_, _>>()
            .map_err(usage)?,
        body: v.body.clone(),
        expect: v.expect_status.parse::<StatusSet>().map_err(usage)?,
        body_rules,
        json_checks: v
            .json_checks
            .iter()
            .map(|j| j.parse::<JsonCheck>())
            .collect::<Result<_, _>>()
            .map_err(usage)?,
        connect_timeout: v.connect_timeout,
        timeout: v.probe_timeout,
        max_body: v.max_body,
        max_redirects: v.max_redirects,
        ca_bundle: v.ca_bundle.clone(),
        insecure: v.insecure,
        host_header: v.host_header.clone(),
        resolve: v
            .resolve
            .iter()
            .map(|r| probe::parse_resolve(r))
            .collect::<Result<_, _>>()
            .map_err(usage)?,
    })
}

fn record_type(text: &str) -> Result<aws_sdk_route53::types::RrType, Failure> {
    switchyard::aws::route53::parse_record_type(text).map_err(Failure::usage)
}

async fn route53(cmd: &Route53Command, common: &CommonArgs) -> Result<(), Failure> {
    match cmd {
        Route53Command::Ensure(a) => {
            let spec = CheckSpec {
                kind: a.kind,
                request_interval: a.request_interval,
                failure_threshold: a.failure_threshold,
                search_string: a.search_string.clone(),
            };
            spec.check()?;
            let members = a
                .members
                .iter()
                .map(|m| checks::parse_member(m, &spec))
                .collect::<Result<Vec<_>, _>>()?;
            let rtype = record_type(&a.group.record_type)?;
            if common.dry_run {
                for m in &members {
                    println!(
                        "would ensure a {:?} health check of {}:{}{} for {} and associate it with its record set",
                        a.kind, m.host, m.port, m.path, m.set_id
                    );
                }
                return Ok(());
            }
            let cancel = switchyard::wait::signal::cancel_on_signals();
            let config = aws::load(&aws_settings(common)).await;
            let client = aws_sdk_route53::Client::new(&config);
            let deadline = tokio::time::Instant::now() + common.timeout;
            let group = checks::RecordGroup {
                zone_id: a.group.zone_id.clone(),
                name: a.group.record_name.clone(),
                rtype,
            };
            let report =
                checks::ensure(&client, &group, &members, &spec, deadline, &cancel).await?;
            let state = StateFile::new(&common.state);
            let mut doc = state.load()?;
            let mut entry =
                JournalEntry::new("verify-health", "route53-health-checks", Outcome::Ok).detail(
                    format!(
                        "{}: {}",
                        report.route,
                        report
                            .checks
                            .iter()
                            .map(|c| format!("{}={}", c.set_id, c.health_check_id))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
            for c in report.checks.iter().filter(|c| c.created || c.associated) {
                entry = entry.change(switchyard::state::Change {
                    resource: format!("{}#{}", report.route, c.set_id),
                    before: c.replaced.clone().map(Into::into),
                    after: Some(c.health_check_id.clone().into()),
                    reference: report.change.clone(),
                });
            }
            doc.record(entry);
            state.save(&doc)?;
            output::emit(common.output, &report);
            Ok(())
        }
        Route53Command::Status(g) => {
            let rtype = record_type(&g.record_type)?;
            let config = aws::load(&aws_settings(common)).await;
            let client = aws_sdk_route53::Client::new(&config);
            let group = checks::RecordGroup {
                zone_id: g.zone_id.clone(),
                name: g.record_name.clone(),
                rtype,
            };
            let report = checks::status(&client, &group).await?;
            output::emit(common.output, &report);
            let unhealthy: Vec<&str> = report
                .members
                .iter()
                .filter(|m| m.verdict != Health::Healthy)
                .map(|m| m.set_id.as_str())
                .collect();
            if unhealthy.is_empty() {
                Ok(())
            } else {
                Err(Failure::new(
                    Code::CheckFailed,
                    std::io::Error::other(format!(
                        "not healthy in Route53's view: {}",
                        unhealthy.join(", ")
                    )),
                ))
            }
        }
    }
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
        insta::assert_snapshot!("verify-health-help", help);
    }

    #[test]
    fn args_are_consistent() {
        Args::command().debug_assert();
    }

    fn spec(extra: &[&str]) -> Result<ProbeSpec, String> {
        let mut line = vec!["verify-health", "--url", "http://127.0.0.1:1/"];
        line.extend_from_slice(extra);
        let args = Args::try_parse_from(line).map_err(|e| e.to_string())?;
        probe_spec(&args.verify).map_err(|f| format!("{}: {}", f.code.number(), f.error))
    }

    #[test]
    fn probe_flags_are_checked() {
        assert!(spec(&["--expect-status", "200,204", "--json", "/status == ok"]).is_ok());
        assert!(spec(&["--expect-status", "2xx"])
            .unwrap_err()
            .starts_with("2: invalid status set"));
        assert!(spec(&["--body-regex", "("])
            .unwrap_err()
            .starts_with("2: invalid regular expression"));
        assert!(spec(&["--json", "status"])
            .unwrap_err()
            .starts_with("2: invalid JSON check"));
        assert!(spec(&["--header", "nocolon"])
            .unwrap_err()
            .starts_with("2: invalid header"));
        assert!(spec(&["--ca-bundle", "/nonexistent.pem"])
            .unwrap_err()
            .contains("is not a file"));
    }
}
