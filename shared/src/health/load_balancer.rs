//! A stack judged through its load balancer (`verify-health --via
//! load-balancer`): the way in that reaches this stack only, found through
//! the ELBv2 API, and the URL (and Host header) the probes take through it.
//! A hosted CI runner can reach an internet-facing load balancer where it
//! cannot reach the stack's private addresses.
//!
//! The load balancers are those the stack's target groups are attached to
//! (DescribeTargetGroups, DescribeLoadBalancers); each HTTP(S) listener's
//! rules (DescribeRules) and default action are read in priority order. A
//! rule, or the default action, is a route to the stack when:
//! - its actions are one forward action whose weight all goes to the stack's
//!   target groups (every other group at weight 0, or a plain TargetGroupArn
//!   forward);
//! - its conditions are only host-header (an exact name, sent as the Host
//!   header; a wildcard matches only a `--host-header` given) and
//!   path-pattern (the probe's path must match);
//! - no rule before it could take the probe's request elsewhere. Host, path
//!   and method decide whether an earlier rule matches; any other condition
//!   (a header, a query string, a source address) is taken as matching,
//!   since the probe cannot be sure it does not.
//!
//! A dedicated test listener (a port whose default action forwards to the
//! standby's group, as CodeDeploy's test traffic route) and a host-header
//! rule (`green.example.com` → green's group) are the usual routes.

use std::fmt::Write as _;

use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, Listener, ProtocolEnum, Rule, RuleCondition,
};
use aws_sdk_elasticloadbalancingv2::Client;

use crate::aws::elbv2::{self, forward_weights, LoadBalancer};
use crate::aws::ProviderError;
use crate::state::ProbeRoute;

/// The request the probes make, as the load balancer's rules see it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The path probed, e.g. `/health` (a query is ignored).
    pub path: String,
    /// The HTTP method, upper case.
    pub method: String,
    /// The Host header given (`--host-header`); else a rule's exact host,
    /// or the load balancer's DNS name.
    pub host: Option<String>,
}

/// What the load balancers of the stack's target groups offer.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    /// The load balancers' names.
    pub load_balancers: Vec<String>,
    /// Routes that reach only the stack, by load balancer, listener, then priority.
    pub fits: Vec<ProbeRoute>,
    /// Each listener and rule looked at that is no route, and why.
    pub passed_over: Vec<String>,
}

/// Reads the load balancers of `groups` and their HTTP(S) listeners and rules.
pub async fn find(
    client: &Client,
    groups: &[String],
    request: &Request,
) -> Result<Routes, ProviderError> {
    let mut routes = Routes::default();
    for lb in elbv2::load_balancers_of(client, groups).await? {
        routes.load_balancers.push(lb.name.clone());
        for listener in elbv2::listeners(client, &lb.arn).await? {
            let rules = match (listener.listener_arn(), is_http(&listener)) {
                (Some(arn), true) => elbv2::rules(client, arn).await?,
                _ => Vec::new(),
            };
            routes.add_listener(&lb, &listener, &rules, groups, request);
        }
    }
    Ok(routes)
}

fn is_http(listener: &Listener) -> bool {
    matches!(
        listener.protocol(),
        Some(ProtocolEnum::Http | ProtocolEnum::Https)
    )
}

/// A rule or a listener's default action, in the order the listener tries them.
struct Candidate<'a> {
    rule: Option<&'a Rule>,
    conditions: &'a [RuleCondition],
    actions: &'a [Action],
}

impl Candidate<'_> {
    fn priority(&self) -> Option<&str> {
        self.rule.and_then(Rule::priority)
    }
}

impl Routes {
    fn add_listener(
        &mut self,
        lb: &LoadBalancer,
        listener: &Listener,
        rules: &[Rule],
        groups: &[String],
        request: &Request,
    ) {
        let port = listener
            .port()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(0);
        let protocol = listener.protocol().map_or("", ProtocolEnum::as_str);
        let name = format!("{}:{port}", lb.name);
        let (Some(arn), true) = (listener.listener_arn(), is_http(listener)) else {
            self.passed_over
                .push(format!("{name} {protocol}: not an HTTP(S) listener"));
            return;
        };
        let mut ordered: Vec<&Rule> = rules
            .iter()
            .filter(|r| r.is_default() != Some(true) && r.priority() != Some("default"))
            .collect();
        ordered.sort_by_key(|r| {
            r.priority()
                .and_then(|p| p.parse::<u32>().ok())
                .unwrap_or(u32::MAX)
        });
        let default_actions = if listener.default_actions().is_empty() {
            rules
                .iter()
                .find(|r| r.is_default() == Some(true))
                .map_or(&[][..], Rule::actions)
        } else {
            listener.default_actions()
        };
        let steps: Vec<Candidate<'_>> = ordered
            .iter()
            .map(|r| Candidate {
                rule: Some(r),
                conditions: r.conditions(),
                actions: r.actions(),
            })
            .chain(std::iter::once(Candidate {
                rule: None,
                conditions: &[],
                actions: default_actions,
            }))
            .collect();
        for (i, step) in steps.iter().enumerate() {
            let label = match step.priority() {
                Some(p) => format!("{name} rule {p}"),
                None => format!("{name} default action"),
            };
            let fit = reaches(step.actions, groups).and_then(|target_groups| {
                let host = host_to_send(step.conditions, request)?;
                only_host_and_path(step.conditions, &request.path)?;
                let sent = host.as_deref().unwrap_or(&lb.dns_name);
                if let Some(earlier) = steps[..i].iter().find(|e| {
                    could_take(e.conditions, sent, request) && reaches(e.actions, groups).is_err()
                }) {
                    return Err(format!(
                        "rule {} before it could take the probe's requests (Host {sent}, {} {})",
                        earlier.priority().unwrap_or("?"),
                        request.method,
                        path_only(&request.path)
                    ));
                }
                Ok((host, target_groups))
            });
            match fit {
                Ok((host_header, target_groups)) => self.fits.push(ProbeRoute {
                    load_balancer: lb.name.clone(),
                    dns_name: lb.dns_name.clone(),
                    scheme: lb.scheme.clone(),
                    listener: arn.to_owned(),
                    port,
                    protocol: protocol.to_owned(),
                    rule: step.rule.and_then(Rule::rule_arn).map(str::to_owned),
                    priority: step.priority().map(str::to_owned),
                    host_header,
                    target_groups,
                }),
                Err(why) => self.passed_over.push(format!("{label}: {why}")),
            }
        }
    }
}

/// The target group's name in its ARN (`...:targetgroup/NAME/ID`).
pub fn group_name(arn: &str) -> &str {
    arn.rsplit('/').nth(1).unwrap_or(arn)
}

/// The groups a route's actions send requests to, when they are all the
/// stack's; else why not.
fn reaches(actions: &[Action], groups: &[String]) -> Result<Vec<String>, String> {
    let forward = match actions {
        [] => return Err("no action".to_owned()),
        [one] if one.r#type() == Some(&ActionTypeEnum::Forward) => one,
        [one] => {
            return Err(format!(
                "answers with a {} action",
                one.r#type().map_or("?", ActionTypeEnum::as_str)
            ))
        }
        more => {
            let kinds: Vec<&str> = more
                .iter()
                .map(|a| a.r#type().map_or("?", ActionTypeEnum::as_str))
                .collect();
            return Err(format!(
                "runs {} before it forwards (a probe would not reach a target)",
                kinds.join(", ")
            ));
        }
    };
    let weights = forward_weights(forward);
    let sending: Vec<&(String, u32)> = weights.iter().filter(|(_, w)| *w > 0).collect();
    let elsewhere: Vec<&&(String, u32)> = sending
        .iter()
        .filter(|(arn, _)| !groups.contains(arn))
        .collect();
    if sending.is_empty() {
        return Err("forwards to no target group with a weight above 0".to_owned());
    }
    if !elsewhere.is_empty() {
        let to: Vec<String> = sending
            .iter()
            .map(|(arn, w)| {
                if sending.len() == 1 {
                    group_name(arn).to_owned()
                } else {
                    format!("{} (weight {w})", group_name(arn))
                }
            })
            .collect();
        return Err(format!("forwards to {}", to.join(", ")));
    }
    Ok(sending.iter().map(|(arn, _)| arn.clone()).collect())
}

/// A condition's field and plain values (from the field's config, or the
/// older `Values`), and whether it matches by regular expression.
fn condition(c: &RuleCondition) -> (&str, Vec<&str>, bool) {
    let field = c.field().unwrap_or_default();
    let mut values: Vec<&str> = c.values().iter().map(String::as_str).collect();
    let mut regex = !c.regex_values().is_empty();
    if let Some(h) = c.host_header_config() {
        values.extend(h.values().iter().map(String::as_str));
        regex |= !h.regex_values().is_empty();
    }
    if let Some(p) = c.path_pattern_config() {
        values.extend(p.values().iter().map(String::as_str));
        regex |= !p.regex_values().is_empty();
    }
    if let Some(m) = c.http_request_method_config() {
        values.extend(m.values().iter().map(String::as_str));
    }
    let field = match field {
        "" if c.host_header_config().is_some() => "host-header",
        "" if c.path_pattern_config().is_some() => "path-pattern",
        "" if c.http_request_method_config().is_some() => "http-request-method",
        other => other,
    };
    (field, values, regex)
}

/// The Host header a route needs: none without a host-header condition
/// (the given one, if any), else the given one if every condition matches
/// it, else the first exact name that every condition matches.
fn host_to_send(conditions: &[RuleCondition], request: &Request) -> Result<Option<String>, String> {
    let hosts: Vec<Vec<&str>> = conditions
        .iter()
        .map(condition)
        .filter(|(f, _, _)| *f == "host-header")
        .map(|(_, values, regex)| {
            if regex {
                Err("matches the host by regular expression".to_owned())
            } else {
                Ok(values)
            }
        })
        .collect::<Result<_, _>>()?;
    if hosts.is_empty() {
        return Ok(request.host.clone());
    }
    let all: Vec<&str> = hosts.iter().flatten().copied().collect();
    let matches_all = |host: &str| {
        hosts.iter().all(|values| {
            values
                .iter()
                .any(|v| glob(&v.to_ascii_lowercase(), &host.to_ascii_lowercase()))
        })
    };
    if let Some(given) = &request.host {
        return if matches_all(given) {
            Ok(Some(given.clone()))
        } else {
            Err(format!(
                "host-header {} does not match --host-header {given}",
                all.join(", ")
            ))
        };
    }
    all.iter()
        .find(|v| !v.contains(['*', '?']) && matches_all(v))
        .map(|v| Some((*v).to_owned()))
        .ok_or_else(|| {
            format!(
                "host-header {} names no exact host (pass --host-header with a host it matches)",
                all.join(", ")
            )
        })
}

/// Refuses conditions other than host-header and a path-pattern the probe's path matches.
fn only_host_and_path(conditions: &[RuleCondition], path: &str) -> Result<(), String> {
    for c in conditions {
        match condition(c) {
            ("host-header", _, _) => {}
            ("path-pattern", _, true) => {
                return Err("matches the path by regular expression".to_owned())
            }
            ("path-pattern", values, false) => {
                if !values.iter().any(|v| glob(v, path_only(path))) {
                    return Err(format!(
                        "path-pattern {} does not match the probe's path {}",
                        values.join(", "),
                        path_only(path)
                    ));
                }
            }
            (field, _, _) => {
                return Err(format!(
                    "also has a {field} condition, which the probe may not meet"
                ))
            }
        }
    }
    Ok(())
}

/// Whether a rule with `conditions` could match the probe's request: host,
/// path and method are checked; any other condition might match.
fn could_take(conditions: &[RuleCondition], host: &str, request: &Request) -> bool {
    let host = host.to_ascii_lowercase();
    conditions.iter().all(|c| match condition(c) {
        ("host-header", values, false) => {
            values.iter().any(|v| glob(&v.to_ascii_lowercase(), &host))
        }
        ("path-pattern", values, false) => values.iter().any(|v| glob(v, path_only(&request.path))),
        ("http-request-method", values, false) => values.contains(&request.method.as_str()),
        _ => true,
    })
}

fn path_only(path: &str) -> &str {
    path.split('?').next().unwrap_or(path)
}

/// ALB's wildcard match: `*` any characters, `?` exactly one.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // matched[j]: the pattern so far matches the first j characters of text.
    let mut matched = vec![false; t.len() + 1];
    matched[0] = true;
    for pc in p {
        let mut next = vec![false; t.len() + 1];
        for j in 0..=t.len() {
            next[j] = match pc {
                '*' => matched[j] || (j > 0 && next[j - 1]),
                '?' => j > 0 && matched[j - 1],
                c => j > 0 && matched[j - 1] && t[j - 1] == c,
            };
        }
        matched = next;
    }
    matched[t.len()]
}

/// `web-alb:80 HTTP rule 10 (Host green.example.com)`, for messages and reports.
pub fn describe(route: &ProbeRoute) -> String {
    let mut s = format!(
        "{}:{} {} {}",
        route.load_balancer,
        route.port,
        route.protocol,
        route
            .priority
            .as_deref()
            .map_or_else(|| "default action".to_owned(), |p| format!("rule {p}"))
    );
    if let Some(h) = &route.host_header {
        let _ = write!(s, " (Host {h})");
    }
    if route.scheme == "internal" {
        s.push_str(", an internal load balancer (reachable only from inside its VPC)");
    }
    s
}

/// The route the probes take: the only one that fits (on `--listener-port`
/// when given), or why there is none to take (a usage error: exit 2).
pub fn choose(
    routes: &Routes,
    groups: &[String],
    listener_port: Option<u16>,
) -> Result<ProbeRoute, String> {
    let names: Vec<&str> = groups.iter().map(|g| group_name(g)).collect();
    let names = names.join(", ");
    if routes.load_balancers.is_empty() {
        return Err(format!(
            "no load balancer forwards to the stack's target group(s) {names}: attach them through a listener or rule, or use --via probes"
        ));
    }
    let fits: Vec<&ProbeRoute> = routes
        .fits
        .iter()
        .filter(|r| listener_port.is_none_or(|p| r.port == p))
        .collect();
    let Some(first) = fits.first() else {
        let on = listener_port
            .map(|p| format!(" on port {p}"))
            .unwrap_or_default();
        let found = if routes.passed_over.is_empty() {
            String::new()
        } else {
            format!(" (found: {})", routes.passed_over.join("; "))
        };
        let other = match listener_port {
            Some(_) if !routes.fits.is_empty() => format!(
                "; routes on other ports: {}",
                routes
                    .fits
                    .iter()
                    .map(describe)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            _ => String::new(),
        };
        return Err(format!(
            "no route into load balancer(s) {} reaches only the target group(s) {names}{on}{found}{other}. \
             Add a test listener (a port whose default action forwards to {names}) or a host-header rule \
             (an exact host forwarding to {names}), or use --via target-health",
            routes.load_balancers.join(", ")
        ));
    };
    if fits.iter().any(|r| r.listener != first.listener) {
        let all: Vec<String> = fits.iter().map(|r| describe(r)).collect();
        return Err(format!(
            "several listeners reach the target group(s) {names}: {}; pick one with --listener-port",
            all.join("; ")
        ));
    }
    Ok((*first).clone())
}

/// The URL the probes take through `route` to `path`.
pub fn url(route: &ProbeRoute, path: &str) -> String {
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    format!(
        "{}://{}:{}{path}",
        route.protocol.to_ascii_lowercase(),
        route.dns_name,
        route.port
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use aws_sdk_elasticloadbalancingv2::operation::describe_listeners::DescribeListenersOutput;
    use aws_sdk_elasticloadbalancingv2::operation::describe_load_balancers::DescribeLoadBalancersOutput;
    use aws_sdk_elasticloadbalancingv2::operation::describe_rules::DescribeRulesOutput;
    use aws_sdk_elasticloadbalancingv2::operation::describe_target_groups::DescribeTargetGroupsOutput;
    use aws_sdk_elasticloadbalancingv2::types::{
        ForwardActionConfig, HostHeaderConditionConfig, LoadBalancerSchemeEnum,
        PathPatternConditionConfig, TargetGroup, TargetGroupTuple,
    };
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    use super::*;

    const LB: &str = "arn:aws:elasticloadbalancing:us-east-1:1:loadbalancer/app/web/1";
    const BLUE: &str = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/web-blue/1";
    const GREEN: &str = "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/web-green/2";

    /// A listener and its rules (priority, conditions, actions), as ELBv2 holds them.
    struct FakeListener {
        port: i32,
        protocol: ProtocolEnum,
        default: Action,
        rules: Vec<(u32, Vec<RuleCondition>, Action)>,
    }

    fn listener_arn(port: i32) -> String {
        format!("arn:aws:elasticloadbalancing:us-east-1:1:listener/app/web/1/{port}")
    }

    /// A client whose ELBv2 answers come from one load balancer with `ports`.
    fn elb(scheme: LoadBalancerSchemeEnum, ports: Vec<FakeListener>) -> Client {
        let ports = Arc::new(ports);
        let groups = mock!(Client::describe_target_groups).then_output(|| {
            DescribeTargetGroupsOutput::builder()
                .target_groups(
                    TargetGroup::builder()
                        .target_group_arn(GREEN)
                        .load_balancer_arns(LB)
                        .build(),
                )
                .build()
        });
        let lbs = mock!(Client::describe_load_balancers).then_output(move || {
            DescribeLoadBalancersOutput::builder()
                .load_balancers(
                    aws_sdk_elasticloadbalancingv2::types::LoadBalancer::builder()
                        .load_balancer_arn(LB)
                        .load_balancer_name("web")
                        .dns_name("web-1.us-east-1.elb.amazonaws.com")
                        .scheme(scheme.clone())
                        .build(),
                )
                .build()
        });
        let p = ports.clone();
        let listeners = mock!(Client::describe_listeners)
            .match_requests(|r| r.load_balancer_arn() == Some(LB))
            .then_output(move || {
                DescribeListenersOutput::builder()
                    .set_listeners(Some(
                        p.iter()
                            .map(|l| {
                                Listener::builder()
                                    .listener_arn(listener_arn(l.port))
                                    .load_balancer_arn(LB)
                                    .port(l.port)
                                    .protocol(l.protocol.clone())
                                    .default_actions(l.default.clone())
                                    .build()
                            })
                            .collect(),
                    ))
                    .build()
            });
        let p = ports;
        let rules = mock!(Client::describe_rules).then_compute_output(move |r| {
            let listener = p
                .iter()
                .find(|l| Some(listener_arn(l.port).as_str()) == r.listener_arn())
                .expect("a listener of the load balancer");
            let mut out: Vec<Rule> = listener
                .rules
                .iter()
                .map(|(priority, conditions, action)| {
                    Rule::builder()
                        .rule_arn(format!("{}/rule-{priority}", listener_arn(listener.port)))
                        .priority(priority.to_string())
                        .set_conditions(Some(conditions.clone()))
                        .actions(action.clone())
                        .is_default(false)
                        .build()
                })
                .collect();
            out.push(
                Rule::builder()
                    .rule_arn(format!("{}/default", listener_arn(listener.port)))
                    .priority("default")
                    .actions(listener.default.clone())
                    .is_default(true)
                    .build(),
            );
            // ELBv2 lists the rules in no promised order.
            out.reverse();
            DescribeRulesOutput::builder().set_rules(Some(out)).build()
        });
        mock_client!(
            aws_sdk_elasticloadbalancingv2,
            RuleMode::MatchAny,
            [&groups, &lbs, &listeners, &rules]
        )
    }

    fn to(arn: &str) -> Action {
        Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .target_group_arn(arn)
            .build()
    }

    fn weighted(blue: i32, green: i32) -> Action {
        let tuple = |arn: &str, weight| {
            TargetGroupTuple::builder()
                .target_group_arn(arn)
                .weight(weight)
                .build()
        };
        Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .forward_config(
                ForwardActionConfig::builder()
                    .target_groups(tuple(BLUE, blue))
                    .target_groups(tuple(GREEN, green))
                    .build(),
            )
            .build()
    }

    fn host(values: &[&str]) -> RuleCondition {
        RuleCondition::builder()
            .field("host-header")
            .host_header_config(
                HostHeaderConditionConfig::builder()
                    .set_values(Some(values.iter().map(|v| (*v).to_owned()).collect()))
                    .build(),
            )
            .build()
    }

    fn path(values: &[&str]) -> RuleCondition {
        RuleCondition::builder()
            .field("path-pattern")
            .path_pattern_config(
                PathPatternConditionConfig::builder()
                    .set_values(Some(values.iter().map(|v| (*v).to_owned()).collect()))
                    .build(),
            )
            .build()
    }

    fn http(
        port: i32,
        default: Action,
        rules: Vec<(u32, Vec<RuleCondition>, Action)>,
    ) -> FakeListener {
        FakeListener {
            port,
            protocol: ProtocolEnum::Http,
            default,
            rules,
        }
    }

    fn request(host: Option<&str>) -> Request {
        Request {
            path: "/health".into(),
            method: "GET".into(),
            host: host.map(str::to_owned),
        }
    }

    async fn route(
        client: &Client,
        host_header: Option<&str>,
        port: Option<u16>,
    ) -> Result<ProbeRoute, String> {
        let groups = vec![GREEN.to_owned()];
        let routes = find(client, &groups, &request(host_header)).await.unwrap();
        choose(&routes, &groups, port)
    }

    #[tokio::test]
    async fn a_test_listener_whose_default_action_forwards_to_the_stack() {
        let client = elb(
            LoadBalancerSchemeEnum::InternetFacing,
            vec![http(80, to(BLUE), vec![]), http(8443, to(GREEN), vec![])],
        );
        let r = route(&client, None, None).await.unwrap();
        assert_eq!(
            (r.port, r.rule.as_deref(), r.host_header.as_deref()),
            (8443, None, None)
        );
        assert_eq!(r.target_groups, vec![GREEN.to_owned()]);
        assert_eq!(
            url(&r, "/health"),
            "http://web-1.us-east-1.elb.amazonaws.com:8443/health"
        );
        assert_eq!(describe(&r), "web:8443 HTTP default action");
    }

    #[tokio::test]
    async fn a_host_header_rule_gives_the_host_to_send() {
        let client = elb(
            LoadBalancerSchemeEnum::Internal,
            vec![http(
                80,
                to(BLUE),
                vec![
                    (5, vec![host(&["blue.example.com"])], to(BLUE)),
                    (
                        10,
                        vec![host(&["green.example.com"]), path(&["/*"])],
                        to(GREEN),
                    ),
                ],
            )],
        );
        let r = route(&client, None, None).await.unwrap();
        assert_eq!(r.port, 80);
        assert_eq!(r.priority.as_deref(), Some("10"));
        assert_eq!(r.host_header.as_deref(), Some("green.example.com"));
        assert!(r.rule.as_deref().unwrap().ends_with("/rule-10"));
        assert_eq!(
            describe(&r),
            "web:80 HTTP rule 10 (Host green.example.com), an internal load balancer (reachable only from inside its VPC)"
        );
    }

    #[tokio::test]
    async fn a_weighted_forward_with_every_other_group_at_0_reaches_the_stack() {
        let client = elb(
            LoadBalancerSchemeEnum::InternetFacing,
            vec![
                http(80, weighted(90, 10), vec![]),
                http(8080, weighted(0, 1), vec![]),
            ],
        );
        let r = route(&client, None, None).await.unwrap();
        assert_eq!(r.port, 8080);
        assert_eq!(
            r.target_groups,
            vec![GREEN.to_owned()],
            "blue at 0 is no target"
        );
    }

    #[tokio::test]
    async fn several_listeners_fit_and_the_listener_port_picks_one() {
        let client = elb(
            LoadBalancerSchemeEnum::InternetFacing,
            vec![
                http(
                    80,
                    to(BLUE),
                    vec![(10, vec![host(&["green.example.com"])], to(GREEN))],
                ),
                http(8443, to(GREEN), vec![]),
            ],
        );
        let err = route(&client, None, None).await.unwrap_err();
        assert!(
            err.starts_with("several listeners reach the target group(s) web-green: web:80 HTTP rule 10 (Host green.example.com); web:8443 HTTP default action; pick one with --listener-port"),
            "{err}"
        );
        assert_eq!(
            route(&client, None, Some(80))
                .await
                .unwrap()
                .priority
                .as_deref(),
            Some("10")
        );
        assert_eq!(
            route(&client, None, Some(8443)).await.unwrap().priority,
            None
        );
        let err = route(&client, None, Some(9000)).await.unwrap_err();
        assert!(err.contains("on port 9000"), "{err}");
        assert!(
            err.contains("routes on other ports: web:80 HTTP rule 10"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn no_route_reaches_only_the_stack_and_the_message_says_what_to_add() {
        let client = elb(
            LoadBalancerSchemeEnum::InternetFacing,
            vec![
                http(
                    80,
                    weighted(90, 10),
                    vec![
                        // Green's rule, but blue's rule before it takes every path.
                        (5, vec![path(&["/*"])], to(BLUE)),
                        (10, vec![host(&["green.example.com"])], to(GREEN)),
                        (20, vec![path(&["/api/*"])], to(GREEN)),
                    ],
                ),
                FakeListener {
                    port: 443,
                    protocol: ProtocolEnum::Tcp,
                    default: to(GREEN),
                    rules: vec![],
                },
            ],
        );
        let err = route(&client, None, None).await.unwrap_err();
        for part in [
            "no route into load balancer(s) web reaches only the target group(s) web-green",
            "web:80 rule 10: rule 5 before it could take the probe's requests (Host green.example.com, GET /health)",
            "web:80 rule 20: path-pattern /api/* does not match the probe's path /health",
            "web:80 default action: forwards to web-blue (weight 90), web-green (weight 10)",
            "web:443 TCP: not an HTTP(S) listener",
            "Add a test listener (a port whose default action forwards to web-green) or a host-header rule",
            "or use --via target-health",
        ] {
            assert!(err.contains(part), "{part:?} in {err}");
        }
    }

    #[tokio::test]
    async fn a_wildcard_host_is_skipped_unless_a_host_header_it_matches_is_given() {
        let client = elb(
            LoadBalancerSchemeEnum::InternetFacing,
            vec![http(
                80,
                to(BLUE),
                vec![(10, vec![host(&["*.green.example.com"])], to(GREEN))],
            )],
        );
        let err = route(&client, None, None).await.unwrap_err();
        assert!(
            err.contains("web:80 rule 10: host-header *.green.example.com names no exact host (pass --host-header with a host it matches)"),
            "{err}"
        );
        let r = route(&client, Some("app.green.example.com"), None)
            .await
            .unwrap();
        assert_eq!(r.host_header.as_deref(), Some("app.green.example.com"));
        let err = route(&client, Some("blue.example.com"), None)
            .await
            .unwrap_err();
        assert!(
            err.contains("does not match --host-header blue.example.com"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_group_on_no_load_balancer_has_no_route() {
        let groups = mock!(Client::describe_target_groups).then_output(|| {
            DescribeTargetGroupsOutput::builder()
                .target_groups(TargetGroup::builder().target_group_arn(GREEN).build())
                .build()
        });
        let client = mock_client!(
            aws_sdk_elasticloadbalancingv2,
            RuleMode::MatchAny,
            [&groups]
        );
        let err = route(&client, None, None).await.unwrap_err();
        assert!(
            err.starts_with("no load balancer forwards to the stack's target group(s) web-green"),
            "{err}"
        );
    }

    #[test]
    fn wildcards_match_as_alb_does() {
        assert!(glob("*.example.com", "green.example.com"));
        assert!(!glob("*.example.com", "example.com"));
        assert!(glob("/api/?/x", "/api/1/x"));
        assert!(!glob("/api/?/x", "/api/12/x"));
        assert!(glob("*", ""));
        assert!(glob("/health", "/health"));
        assert!(!glob("/Health", "/health"));
    }
}
