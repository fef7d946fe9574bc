//! `verify-health`: decide whether a stack is healthy, from HTTP(S) probes
//! (of its endpoints, or through its load balancer), its target groups'
//! health and CloudWatch alarms ([`crate::health::Verification`]); and
//! manage the Route53 health checks of a record group
//! ([`crate::health::route53`]).

use aws_sdk_route53::types::RrType;

use crate::aws::{self, iam};
use crate::cli::verify_health::{
    Command as Sub, EnsureArgs, GroupArgs, Route53Command, VerifyArgs, VerifyHealthArgs,
};
use crate::health::alarms::AlarmGate;
use crate::health::load_balancer::{self, Request};
use crate::health::probe::{self, BodyRule, JsonCheck, ProbeSpec, StatusSet};
use crate::health::report::HealthReport;
use crate::health::route53::{self as checks, CheckSpec, EnsureReport, StatusReport};
use crate::health::target_health::{TargetGate, Via};
use crate::health::targets::{self, UrlTemplate};
use crate::health::{HttpProbe, ProbePolicy, Verification};
use crate::outcome::report::Plan;
use crate::outcome::{Code, Failure};
use crate::state::{steps, Stack, StateDocument, StateFile};
use crate::step::{Command, Step};
use crate::wait::progress::short;

/// The `verify-health` command.
#[derive(Debug)]
pub struct VerifyHealth;

/// The checked flags of each mode.
#[derive(Debug)]
pub enum Settings {
    /// Probe and watch a stack.
    Verify(Box<Verify>),
    /// Create (once) and associate the Route53 health checks of a group.
    Ensure {
        group: checks::RecordGroup,
        members: Vec<checks::Member>,
        spec: CheckSpec,
    },
    /// Read the Route53 health of a group's members.
    Status(checks::RecordGroup),
}

/// The checked flags of a verification; the endpoints come from the state at run time.
#[derive(Debug)]
pub struct Verify {
    args: VerifyArgs,
    probe: HttpProbe,
    policy: ProbePolicy,
}

crate::step_reports! {
    /// What each mode reports.
    pub enum Report {
        /// A verification's verdict and evidence.
        Verdict(HealthReport),
        /// A dry run's plan.
        Plan(Plan),
        /// The Route53 health checks ensured.
        Ensured(EnsureReport),
        /// The Route53 health of a group.
        Status(StatusReport),
    }
}

impl Command for VerifyHealth {
    const STEP: &'static str = steps::VERIFY_HEALTH;
    // Thousands of probes at once: every core.
    const MULTI_THREAD: bool = true;
    type Args = VerifyHealthArgs;
    type Settings = Settings;
    type Report = Report;

    fn settings(args: VerifyHealthArgs) -> Result<Settings, Failure> {
        match args.command {
            None => {
                let v = args.verify;
                check_via(&v)?;
                let probe = HttpProbe::with_spec(probe_spec(&v)?)
                    .map_err(|e| Failure::new(Code::Usage, e))?;
                let policy = probe_policy(&v, args.common.timeout);
                policy.check().map_err(|e| Failure::new(Code::Usage, e))?;
                Ok(Settings::Verify(Box::new(Verify {
                    args: v,
                    probe,
                    policy,
                })))
            }
            Some(Sub::Route53(Route53Command::Ensure(a))) => ensure_settings(&a),
            Some(Sub::Route53(Route53Command::Status(g))) => Ok(Settings::Status(group(&g)?)),
        }
    }

    fn policy(settings: &Settings) -> iam::Policy {
        match settings {
            Settings::Verify(v) => {
                let mut policy = iam::Policy::new();
                if !(v.args.alarms.is_empty() && v.args.alarm_prefixes.is_empty()) {
                    policy.merge(&crate::health::alarms::policy(
                        &v.args.alarms,
                        &v.args.alarm_prefixes,
                    ));
                }
                match v.args.via {
                    Via::Probes => return policy,
                    Via::TargetHealth => {
                        policy.allow(
                            "TargetHealth",
                            &["elasticloadbalancing:DescribeTargetHealth"],
                            ["*"],
                        );
                    }
                    Via::LoadBalancer => {
                        policy.allow(
                            "LoadBalancerRoutes",
                            &[
                                "elasticloadbalancing:DescribeTargetGroups",
                                "elasticloadbalancing:DescribeLoadBalancers",
                                "elasticloadbalancing:DescribeListeners",
                                "elasticloadbalancing:DescribeRules",
                            ],
                            ["*"],
                        );
                    }
                }
                if v.args.target_groups.is_empty() {
                    policy.allow(
                        "StackGroups",
                        &["autoscaling:DescribeAutoScalingGroups"],
                        ["*"],
                    );
                }
                policy
            }
            Settings::Ensure { group, .. } => checks::policy(group, true),
            Settings::Status(group) => checks::policy(group, false),
        }
    }

    async fn run(settings: Settings, step: &mut Step) -> Result<Report, Failure> {
        match settings {
            Settings::Verify(v) => verify(*v, step).await,
            Settings::Ensure {
                group,
                members,
                spec,
            } => {
                let client = aws_sdk_route53::Client::new(&aws::load(&step.aws).await);
                if step.dry_run {
                    let mut lines: Vec<String> = members
                        .iter()
                        .map(|m| {
                            format!(
                                "would ensure a {:?} health check of {}:{}{} for {} and associate it with its record set",
                                spec.kind, m.host, m.port, m.path, m.set_id
                            )
                        })
                        .collect();
                    for (set_id, old, ours) in
                        checks::would_replace(&client, &group, &members, &spec).await?
                    {
                        lines.push(if ours {
                            format!("would delete health check {old}, which {set_id} would no longer use")
                        } else {
                            format!("would keep health check {old}, which {set_id} would no longer use: switchyard did not create it")
                        });
                    }
                    return Ok(Plan::dry_run(lines).into());
                }
                let report = checks::ensure(
                    &client,
                    &group,
                    &members,
                    &spec,
                    step.deadline,
                    &step.cancel,
                )
                .await?;
                Ok(report.into())
            }
            Settings::Status(group) => {
                let client = aws_sdk_route53::Client::new(&aws::load(&step.aws).await);
                Ok(checks::status(&client, &group).await?.into())
            }
        }
    }

    async fn record(report: &Report, state: &StateFile) -> Result<(), Failure> {
        match report {
            Report::Verdict(verdict) => verdict.record(state).await?,
            Report::Ensured(ensured) => ensured.record(state).await?,
            Report::Plan(_) | Report::Status(_) => {}
        }
        Ok(())
    }
}

/// Reads the endpoints (from the state, unless given; with `--via
/// load-balancer`, the URL of the load balancer's route to the stack), probes
/// them and watches the alarms or the target health. The verdict is the
/// report: an unhealthy one exits 1.
async fn verify(v: Verify, step: &mut Step) -> Result<Report, Failure> {
    let Verify {
        args,
        mut probe,
        policy,
    } = v;
    let doc = step.state.load().await?;
    let (stack, mut urls) = match args.via {
        Via::Probes => endpoints(&args, &doc)?,
        Via::TargetHealth | Via::LoadBalancer => (args.stack.clone(), Vec::new()),
    };
    let found = match (&args.via, &args.stack) {
        (Via::Probes, _) | (_, None) => None,
        (_, Some(name)) => Some(targets::find_stack(&doc, name).map_err(Failure::usage)?),
    };
    let stack = found.as_ref().map(|(n, _)| n.clone()).or(stack);
    let found = found.as_ref().map(|(_, s)| s);
    let route = if args.via == Via::LoadBalancer {
        let route = probe_route(&args, found, step).await?;
        urls.push(load_balancer::url(&route, &args.path));
        if route.host_header != probe.spec().host_header {
            probe = HttpProbe::with_spec(ProbeSpec {
                host_header: route.host_header.clone(),
                ..probe.spec().clone()
            })
            .map_err(|e| Failure::new(Code::Usage, e))?;
        }
        Some(route)
    } else {
        None
    };
    if step.dry_run {
        let mut lines = plan(&args, stack.as_deref(), &urls);
        match (&args.via, &route) {
            (Via::TargetHealth, _) => lines.insert(0, target_plan(&args, found)),
            (Via::LoadBalancer, Some(r)) => lines.insert(
                0,
                format!(
                    "read the stack's target groups' load balancers, listeners and rules; would probe through {}",
                    load_balancer::describe(r)
                ),
            ),
            _ => {}
        }
        return Ok(Plan::dry_run(lines).into());
    }
    let target_gate = if args.via == Via::TargetHealth {
        Some(target_gate(&args, found, step).await?)
    } else {
        None
    };
    let alarms = if args.alarms.is_empty() && args.alarm_prefixes.is_empty() {
        None
    } else {
        let config = aws::load(&step.aws).await;
        let gate = AlarmGate {
            names: args.alarms.clone(),
            prefixes: args.alarm_prefixes.clone(),
            window: args.alarm_window,
            interval: args.alarm_interval,
            insufficient: args.insufficient_data,
        };
        Some((aws_sdk_cloudwatch::Client::new(&config), gate))
    };
    let verification = Verification {
        stack: stack.clone(),
        via: args.via,
        route,
        urls,
        probe,
        policy,
        alarms,
        targets: target_gate,
    };
    let mut env = doc.hook_env();
    env.set_opt("SWITCHYARD_STACK", stack.as_deref());
    step.hooks.before_change(&env).await?;
    let report = verification.run(&step.cancel).await?;
    if let Some(path) = &args.junit {
        std::fs::write(path, report.junit()).map_err(|e| {
            Failure::new(
                Code::Provider,
                std::io::Error::new(
                    e.kind(),
                    format!("cannot write --junit {}: {e}", path.display()),
                ),
            )
        })?;
    }
    Ok(report.into())
}

/// `--via target-health` and `--via load-balancer` need a stack or target
/// groups, and take no URL: the first probes nothing, the second finds its own.
fn check_via(v: &VerifyArgs) -> Result<(), Failure> {
    if v.listener_port.is_some() && v.via != Via::LoadBalancer {
        return Err(Failure::usage("--listener-port is for --via load-balancer"));
    }
    match v.via {
        Via::TargetHealth | Via::LoadBalancer => {
            let via = v.via.as_str();
            if !v.urls.is_empty() || v.urls_file.is_some() {
                return Err(Failure::usage(if v.via == Via::TargetHealth {
                    "--via target-health judges by the target groups and probes nothing: drop --url/--urls-file, or use --via probes"
                } else {
                    "--via load-balancer probes the URL of the load balancer's route to the stack: drop --url/--urls-file, or use --via probes"
                }));
            }
            if v.stack.is_none() && v.target_groups.is_empty() {
                return Err(Failure::usage(format!(
                    "--via {via} needs --stack (its instances and groups come from the state) or --target-group"
                )));
            }
            for arn in &v.target_groups {
                if !arn.starts_with("arn:") || !arn.contains(":targetgroup/") {
                    return Err(Failure::usage(format!(
                        "--target-group {arn:?} is not a target group ARN (arn:aws:elasticloadbalancing:REGION:ACCOUNT:targetgroup/NAME/ID)"
                    )));
                }
            }
            Ok(())
        }
        Via::Probes if !v.target_groups.is_empty() => Err(Failure::usage(
            "--target-group is for --via target-health or --via load-balancer",
        )),
        Via::Probes => Ok(()),
    }
}

/// What `--via target-health` would read, for a dry run.
fn target_plan(v: &VerifyArgs, stack: Option<&Stack>) -> String {
    let instances = stack.map_or(0, |s| instance_ids(s).len());
    if v.target_groups.is_empty() {
        format!(
            "would read the target health of the stack's Auto Scaling groups' target groups ({instances} instance(s) in the state)"
        )
    } else {
        format!(
            "would read the target health of {} ({instances} instance(s) in the state)",
            v.target_groups.join(", ")
        )
    }
}

/// The instance ids a stack's state entry names.
fn instance_ids(stack: &Stack) -> Vec<String> {
    stack
        .ids
        .iter()
        .filter(|id| id.starts_with("i-"))
        .cloned()
        .collect()
}

/// What `--via target-health` reads: the stack's target groups, judged on
/// the stack's instances.
async fn target_gate(
    v: &VerifyArgs,
    stack: Option<&Stack>,
    step: &Step,
) -> Result<(aws_sdk_elasticloadbalancingv2::Client, TargetGate), Failure> {
    let config = aws::load(&step.aws).await;
    let groups = stack_groups(v, stack, &config).await?;
    Ok((
        aws_sdk_elasticloadbalancingv2::Client::new(&config),
        TargetGate {
            groups,
            instances: stack.map(instance_ids).unwrap_or_default(),
            quorum: v.quorum,
            interval: v.interval,
            attempts: v.attempts,
        },
    ))
}

/// The way into the load balancer that reaches only the stack's target
/// groups (`--via load-balancer`); none, or several without
/// `--listener-port` to pick one, is a usage error.
async fn probe_route(
    v: &VerifyArgs,
    stack: Option<&Stack>,
    step: &Step,
) -> Result<crate::state::ProbeRoute, Failure> {
    let config = aws::load(&step.aws).await;
    let groups = stack_groups(v, stack, &config).await?;
    let request = Request {
        // As the URL will have it.
        path: if v.path.starts_with('/') {
            v.path.clone()
        } else {
            format!("/{}", v.path)
        },
        method: v.method.to_ascii_uppercase(),
        host: v.host_header.clone(),
    };
    let client = aws_sdk_elasticloadbalancingv2::Client::new(&config);
    let routes = load_balancer::find(&client, &groups, &request)
        .await
        .map_err(|e| Failure::new(Code::Provider, e))?;
    load_balancer::choose(&routes, &groups, v.listener_port).map_err(Failure::usage)
}

/// The stack's target groups: the given ones, or those of the stack's Auto
/// Scaling groups in the state (one call per group).
async fn stack_groups(
    v: &VerifyArgs,
    stack: Option<&Stack>,
    config: &aws_config::SdkConfig,
) -> Result<Vec<String>, Failure> {
    let mut groups = v.target_groups.clone();
    if groups.is_empty() {
        let names: Vec<&String> = stack
            .map(|s| {
                s.regions
                    .values()
                    .filter_map(|r| r.group.as_ref())
                    .collect()
            })
            .unwrap_or_default();
        if names.is_empty() {
            return Err(Failure::usage(
                "the state names no Auto Scaling group for the stack; pass --target-group",
            ));
        }
        let client = aws_sdk_autoscaling::Client::new(config);
        for name in names {
            let found = crate::aws::autoscaling::describe_group(&client, name)
                .await
                .map_err(|e| Failure::new(Code::Provider, e))?;
            if let Some(g) = found {
                groups.extend(g.target_groups);
            }
        }
        if groups.is_empty() {
            return Err(Failure::usage(
                "the stack's Auto Scaling groups have no target groups; pass --target-group, or use --via probes",
            ));
        }
    }
    Ok(groups)
}

/// The stack (if one) and the URLs to probe: given URLs, a file of them, or
/// the stack's endpoints from the state.
fn endpoints(
    v: &VerifyArgs,
    doc: &StateDocument,
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
fn probe_policy(v: &VerifyArgs, deadline: std::time::Duration) -> ProbePolicy {
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
fn plan(v: &VerifyArgs, stack: Option<&str>, urls: &[String]) -> Vec<String> {
    let mut lines = vec![format!(
        "would probe {} endpoint(s){}",
        urls.len(),
        stack.map(|s| format!(" of stack {s}")).unwrap_or_default()
    )];
    lines.extend(urls.iter().map(|u| format!("  {u}")));
    lines.extend(
        v.alarms
            .iter()
            .map(|a| format!("would watch alarm {a} for {}", short(v.alarm_window))),
    );
    lines
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

/// The record group the flags name.
fn group(g: &GroupArgs) -> Result<checks::RecordGroup, Failure> {
    let rtype: RrType =
        crate::aws::route53::parse_record_type(&g.record_type).map_err(Failure::usage)?;
    Ok(checks::RecordGroup {
        zone_id: g.zone_id.clone(),
        name: g.record_name.clone(),
        rtype,
    })
}

fn ensure_settings(a: &EnsureArgs) -> Result<Settings, Failure> {
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
    Ok(Settings::Ensure {
        group: group(&a.group)?,
        members,
        spec,
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn spec(extra: &[&str]) -> Result<ProbeSpec, String> {
        let mut line = vec!["verify-health", "--url", "http://127.0.0.1:1/"];
        line.extend_from_slice(extra);
        let args = VerifyHealthArgs::try_parse_from(line).map_err(|e| e.to_string())?;
        probe_spec(&args.verify).map_err(|f| format!("{}: {}", f.code.number(), f.error))
    }

    fn settings_of(line: &[&str]) -> Result<Settings, String> {
        let mut all = vec!["verify-health"];
        all.extend_from_slice(line);
        let args = VerifyHealthArgs::try_parse_from(all).map_err(|e| e.to_string())?;
        VerifyHealth::settings(args).map_err(|f| format!("{}: {}", f.code.number(), f.error))
    }

    #[test]
    fn via_load_balancer_takes_no_url_and_reads_only_elb_descriptions() {
        let err =
            settings_of(&["--via", "load-balancer", "--url", "http://127.0.0.1:1/"]).unwrap_err();
        assert!(
            err.starts_with("2: --via load-balancer probes the URL of the load balancer's route"),
            "{err}"
        );
        let err = settings_of(&["--via", "load-balancer"]).unwrap_err();
        assert!(err.contains("needs --stack"), "{err}");
        let err = settings_of(&["--stack", "green", "--listener-port", "8443"]).unwrap_err();
        assert_eq!(err, "2: --listener-port is for --via load-balancer");

        let settings = settings_of(&["--stack", "green", "--via", "load-balancer"]).unwrap();
        let policy = VerifyHealth::policy(&settings);
        for action in [
            "elasticloadbalancing:DescribeTargetGroups",
            "elasticloadbalancing:DescribeLoadBalancers",
            "elasticloadbalancing:DescribeListeners",
            "elasticloadbalancing:DescribeRules",
            "autoscaling:DescribeAutoScalingGroups",
        ] {
            assert!(policy.allows(action), "{action}");
        }
        assert!(!policy.allows("elasticloadbalancing:DescribeTargetHealth"));
        let given = settings_of(&[
            "--via",
            "load-balancer",
            "--target-group",
            "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/web-green/2",
        ])
        .unwrap();
        assert!(
            !VerifyHealth::policy(&given).allows("autoscaling:DescribeAutoScalingGroups"),
            "the groups are given: no Auto Scaling read"
        );
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
