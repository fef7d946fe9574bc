//! A verification's report: text, JSON, a markdown summary, JUnit XML (one
//! test case per endpoint and alarm, for Jenkins' junit step) and the verdict
//! recorded in the state.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};
use serde::Serialize;

use super::alarms::AlarmsReport;
use super::load_balancer;
use super::policy::{EndpointState, ProbeReport};
use super::target_health::TargetsReport;
use crate::outcome::{Code, Failure, StepReport};
use crate::state::{
    steps, EndpointVerdict, Health, JournalEntry, Outcome, ProbeRoute, StateError, StateFile,
    Verdict, Via,
};

/// What a verification found, by kind of evidence.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// What judged the stack.
    pub via: Via,
    /// The way into the load balancer the probes took (`via` load-balancer).
    pub route: Option<ProbeRoute>,
    /// The HTTP probes'.
    pub probes: Option<ProbeReport>,
    /// The target groups' (boxed: reports stay small).
    pub targets: Option<Box<TargetsReport>>,
    /// The alarms'.
    pub alarms: Option<AlarmsReport>,
}

/// Everything one run of verify-health found.
#[derive(Debug, Clone, Serialize)]
pub struct HealthReport {
    /// The stack verified, when one was named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    /// The combined verdict.
    pub verdict: Health,
    /// One line of evidence.
    pub summary: String,
    /// What judged the stack: `probes`, `target-health` or `load-balancer`.
    pub via: Via,
    /// The way into the load balancer the probes took (`via` load-balancer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<Box<ProbeRoute>>,
    /// When the verdict was reached.
    pub at: DateTime<Utc>,
    /// Wall-clock time of the verification.
    pub elapsed_ms: u64,
    /// The HTTP probes' evidence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probes: Option<ProbeReport>,
    /// The target groups' evidence (`--via target-health`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub targets: Option<Box<TargetsReport>>,
    /// The alarms' evidence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alarms: Option<AlarmsReport>,
}

impl HealthReport {
    /// Combines the evidence's verdicts: any unhealthy makes it unhealthy,
    /// else any inconclusive (or none at all) makes it inconclusive.
    pub fn combine(stack: Option<String>, evidence: Evidence, elapsed: Duration) -> Self {
        let Evidence {
            via,
            route,
            probes,
            targets,
            alarms,
        } = evidence;
        let parts: Vec<(Health, &str)> = probes
            .iter()
            .map(|p| (p.verdict, p.summary.as_str()))
            .chain(targets.iter().map(|t| (t.verdict, t.summary.as_str())))
            .chain(alarms.iter().map(|a| (a.verdict, a.summary.as_str())))
            .collect();
        let verdicts: Vec<Health> = parts.iter().map(|(v, _)| *v).collect();
        let verdict = if verdicts.contains(&Health::Unhealthy) {
            Health::Unhealthy
        } else if verdicts.contains(&Health::Inconclusive) || verdicts.is_empty() {
            Health::Inconclusive
        } else {
            Health::Healthy
        };
        let mut summary = parts.iter().map(|(_, s)| *s).collect::<Vec<_>>().join("; ");
        if let Some(r) = &route {
            summary = format!("through {}: {summary}", load_balancer::describe(r));
        }
        Self {
            stack,
            verdict,
            summary,
            via,
            route: route.map(Box::new),
            at: Utc::now(),
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            probes,
            targets,
            alarms,
        }
    }

    /// The verdict as the state records it.
    pub fn to_verdict(&self) -> Verdict {
        let mut v = Verdict {
            status: self.verdict,
            at: self.at,
            summary: self.summary.clone(),
            endpoints: Vec::new(),
            latency_ms: None,
            via: Some(self.via),
            route: self.route.as_deref().cloned(),
            extra: serde_json::Map::new(),
        };
        if let Some(p) = &self.probes {
            v.endpoints = p
                .endpoints
                .iter()
                .map(|e| EndpointVerdict {
                    url: e.url.clone(),
                    pass: e.state == EndpointState::Healthy,
                    latency_ms: e.latency_ms,
                    last: e.last.clone(),
                })
                .collect();
            v.latency_ms = Some(
                [
                    ("p50".to_owned(), p.latency.p50_ms),
                    ("p95".to_owned(), p.latency.p95_ms),
                    ("max".to_owned(), p.latency.max_ms),
                ]
                .into(),
            );
        }
        if let Some(t) = &self.targets {
            v.endpoints
                .extend(t.targets.iter().map(|t| EndpointVerdict {
                    url: format!("target:{}:{}", t.target.id, t.target.port),
                    pass: t.health.is_serving(),
                    latency_ms: 0,
                    last: t.health.describe(),
                }));
        }
        v
    }

    /// Records the verdict in the state under the stack's name, and journals it.
    pub async fn record(&self, file: &StateFile) -> Result<(), StateError> {
        let Some(name) = &self.stack else {
            return Ok(());
        };
        let mut doc = file.load().await?;
        doc.health.insert(name.clone(), self.to_verdict());
        let outcome = if self.verdict == Health::Healthy {
            Outcome::Ok
        } else {
            Outcome::Failed
        };
        doc.record(
            JournalEntry::new(steps::VERIFY_HEALTH, "verdict", outcome)
                .detail(format!("{name}: {}", self.summary)),
        );
        file.save(&mut doc).await
    }

    /// JUnit XML: one suite, with a test case for the verdict and one per
    /// endpoint and per alarm. The suite fails exactly when the step does:
    /// an endpoint that is down while the quorum still holds is reported as
    /// skipped (tolerated), not as a failure, so that Jenkins' `junit` marks
    /// the build as the verdict does.
    pub fn junit(&self) -> String {
        let name = self.stack.clone().unwrap_or_else(|| "endpoints".to_owned());
        let mut report = Report::new(steps::VERIFY_HEALTH);
        let mut suite = TestSuite::new(format!("verify-health {name}"));
        suite.add_property(Property::new("via", self.via.as_str()));
        if let Some(r) = &self.route {
            suite.add_property(Property::new("route", load_balancer::describe(r)));
        }
        let healthy = self.verdict == Health::Healthy;
        let verdict = if healthy {
            TestCaseStatus::success()
        } else {
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_message(format!("{}: {}", word(self.verdict), self.summary));
            s.set_type(word(self.verdict));
            s
        };
        let mut case = TestCase::new("verdict", verdict);
        case.set_classname(format!("verify-health.{name}"));
        case.set_time(Duration::from_millis(self.elapsed_ms));
        suite.add_test_case(case);
        if let Some(p) = &self.probes {
            for e in &p.endpoints {
                let (kind, what) = match e.state {
                    EndpointState::Healthy => (None, String::new()),
                    EndpointState::Unhealthy => {
                        (Some("unhealthy"), format!("unhealthy: {}", e.last))
                    }
                    EndpointState::Undecided => (
                        Some("undecided"),
                        format!("undecided after {} probe(s): {}", e.probes, e.last),
                    ),
                };
                let status = match kind {
                    None => TestCaseStatus::success(),
                    Some(kind) if healthy => {
                        let mut s = TestCaseStatus::skipped();
                        s.set_message(format!(
                            "tolerated: {} of {} endpoints healthy, {} needed; {what}",
                            p.healthy, p.total, p.needed
                        ));
                        s.set_type(kind);
                        s
                    }
                    Some(kind) => {
                        let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                        s.set_message(what);
                        s.set_type(kind);
                        s
                    }
                };
                let mut case = TestCase::new(e.url.clone(), status);
                case.set_classname(format!("verify-health.{name}"));
                case.set_time(Duration::from_millis(e.latency_ms));
                suite.add_test_case(case);
            }
        }
        if let Some(t) = &self.targets {
            target_cases(&mut suite, t, &name, healthy);
        }
        if let Some(a) = &self.alarms {
            for alarm in &a.alarms {
                let status = if alarm.verdict == Health::Healthy {
                    TestCaseStatus::success()
                } else {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(format!("{}: {}", alarm.state, alarm.reason));
                    s.set_type(alarm.state.clone());
                    s
                };
                let mut case = TestCase::new(format!("alarm {}", alarm.name), status);
                case.set_classname(format!("verify-health.{name}.alarms"));
                suite.add_test_case(case);
            }
        }
        report.add_test_suite(suite);
        report.to_string().unwrap_or_default()
    }
}

impl StepReport for HealthReport {
    fn text(&self) -> String {
        let who = self
            .stack
            .as_deref()
            .map(|s| format!("{s}: "))
            .unwrap_or_default();
        let mut t = format!("{who}{} — {}\n", word(self.verdict), self.summary);
        let _ = writeln!(t, "  via {}", self.via.as_str());
        if let Some(p) = &self.probes {
            let failing: Vec<_> = p
                .endpoints
                .iter()
                .filter(|e| e.state != EndpointState::Healthy)
                .collect();
            for e in failing.iter().take(20) {
                let _ = writeln!(t, "  {:?} {}: {}", e.state, e.url, e.last);
            }
            if failing.len() > 20 {
                let _ = writeln!(t, "  ... and {} more", failing.len() - 20);
            }
        }
        if let Some(targets) = &self.targets {
            for target in targets.targets.iter().filter(|t| !t.health.is_serving()) {
                let _ = writeln!(
                    t,
                    "  target {}:{} is {}",
                    target.target.id,
                    target.target.port,
                    target.health.describe()
                );
            }
        }
        if let Some(a) = &self.alarms {
            for alarm in a.alarms.iter().filter(|a| a.verdict != Health::Healthy) {
                let _ = writeln!(
                    t,
                    "  alarm {} is {}: {}",
                    alarm.name, alarm.state, alarm.reason
                );
            }
        }
        t
    }

    fn outputs(&self) -> Vec<(String, String)> {
        let mut out = vec![
            ("verdict".into(), word(self.verdict).to_owned()),
            ("summary".into(), self.summary.clone()),
            ("via".into(), self.via.as_str().to_owned()),
        ];
        if let Some(r) = &self.route {
            out.push(("route".into(), load_balancer::describe(r)));
        }
        if let Some(p) = &self.probes {
            out.push(("healthy".into(), p.healthy.to_string()));
            out.push(("total".into(), p.total.to_string()));
            out.push(("p95-ms".into(), p.latency.p95_ms.to_string()));
        }
        if let Some(t) = &self.targets {
            out.push(("targets-healthy".into(), t.serving.to_string()));
            out.push(("targets-total".into(), t.total.to_string()));
        }
        out
    }

    fn failure(&self) -> Option<Failure> {
        (self.verdict != Health::Healthy).then(|| {
            Failure::message(
                Code::CheckFailed,
                format!(
                    "{} is {}: {}",
                    self.stack.as_deref().unwrap_or("the target"),
                    word(self.verdict),
                    self.summary
                ),
            )
        })
    }

    fn hook_vars(&self) -> Vec<(&'static str, String)> {
        vec![("SWITCHYARD_VERDICT", word(self.verdict).to_owned())]
    }

    fn summary(&self) -> String {
        let who = self.stack.as_deref().unwrap_or("endpoints");
        let mut s = format!(
            "### verify-health {who}: {}\n\n{}\n\nEvidence: {}\n",
            word(self.verdict),
            self.summary,
            self.via.as_str()
        );
        if let Some(r) = &self.route {
            let _ = writeln!(
                s,
                "\n| load balancer | DNS name | listener | rule | Host |\n|---|---|---|---|---|\n| {} ({}) | {} | {} {} | {} | {} |",
                r.load_balancer,
                r.scheme,
                r.dns_name,
                r.port,
                r.protocol,
                r.priority.as_deref().unwrap_or("default action"),
                r.host_header.as_deref().unwrap_or("-")
            );
        }
        if let Some(p) = &self.probes {
            let _ = writeln!(
                s,
                "\n| endpoints | healthy | p50 | p95 | max |\n|---|---|---|---|---|\n| {} | {} | {} ms | {} ms | {} ms |",
                p.total, p.healthy, p.latency.p50_ms, p.latency.p95_ms, p.latency.max_ms
            );
            let failing: Vec<_> = p
                .endpoints
                .iter()
                .filter(|e| e.state != EndpointState::Healthy)
                .take(20)
                .collect();
            if !failing.is_empty() {
                s.push_str("\n| failing endpoint | last probe |\n|---|---|\n");
                for e in failing {
                    let _ = writeln!(s, "| {} | {} |", e.url, e.last.replace('|', "\\|"));
                }
            }
        }
        if let Some(t) = &self.targets {
            s.push_str("\n| target | group | health |\n|---|---|---|\n");
            for target in &t.targets {
                let _ = writeln!(
                    s,
                    "| {}:{} | {} | {} |",
                    target.target.id,
                    target.target.port,
                    target.group.rsplit('/').nth(1).unwrap_or(&target.group),
                    target.health.describe().replace('|', "\\|")
                );
            }
        }
        if let Some(a) = &self.alarms {
            s.push_str("\n| alarm | state |\n|---|---|\n");
            for alarm in &a.alarms {
                let _ = writeln!(s, "| {} | {} |", alarm.name, alarm.state);
            }
        }
        s
    }
}

/// One JUnit test case per target of the stack; one that does not serve is
/// tolerated (skipped) when the verdict is healthy.
fn target_cases(suite: &mut TestSuite, t: &TargetsReport, name: &str, healthy: bool) {
    for target in &t.targets {
        let status = match (target.health.is_serving(), healthy) {
            (true, _) => TestCaseStatus::success(),
            (false, true) => {
                let mut s = TestCaseStatus::skipped();
                s.set_message(format!(
                    "tolerated: {} of {} targets healthy, {} needed; {}",
                    t.serving,
                    t.total,
                    t.needed,
                    target.health.describe()
                ));
                s.set_type(target.health.state.clone());
                s
            }
            (false, false) => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(target.health.describe());
                s.set_type(target.health.state.clone());
                s
            }
        };
        let mut case = TestCase::new(
            format!("target {}:{}", target.target.id, target.target.port),
            status,
        );
        case.set_classname(format!("verify-health.{name}.targets"));
        suite.add_test_case(case);
    }
}

/// The verdict as one word.
pub fn word(h: Health) -> &'static str {
    match h {
        Health::Healthy => "healthy",
        Health::Unhealthy => "unhealthy",
        Health::Inconclusive => "inconclusive",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> ProbeRoute {
        ProbeRoute {
            load_balancer: "web".into(),
            dns_name: "web-1.us-east-1.elb.amazonaws.com".into(),
            scheme: "internal".into(),
            listener: "arn:aws:elasticloadbalancing:us-east-1:1:listener/app/web/1/2".into(),
            port: 443,
            protocol: "HTTPS".into(),
            rule: Some(
                "arn:aws:elasticloadbalancing:us-east-1:1:listener-rule/app/web/1/2/3".into(),
            ),
            priority: Some("10".into()),
            host_header: Some("green.example.com".into()),
            target_groups: vec![
                "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/web-green/2".into(),
            ],
        }
    }

    #[test]
    fn every_form_of_the_report_says_which_evidence_and_route_it_used() {
        let report = HealthReport::combine(
            Some("green".into()),
            Evidence {
                via: Via::LoadBalancer,
                route: Some(route()),
                ..Evidence::default()
            },
            Duration::from_millis(5),
        );
        let described = "web:443 HTTPS rule 10 (Host green.example.com), an internal load balancer (reachable only from inside its VPC)";
        assert!(
            report.summary.starts_with(&format!("through {described}")),
            "{}",
            report.summary
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["via"], "load-balancer");
        assert_eq!(json["route"]["priority"], "10");
        let verdict = report.to_verdict();
        assert_eq!(
            (verdict.via, verdict.route),
            (Some(Via::LoadBalancer), Some(route()))
        );
        assert!(
            report.text().contains("\n  via load-balancer\n"),
            "{}",
            report.text()
        );
        assert!(
            report.summary().contains("Evidence: load-balancer")
                && report.summary().contains("| web (internal) | web-1.us-east-1.elb.amazonaws.com | 443 HTTPS | 10 | green.example.com |"),
            "{}",
            report.summary()
        );
        let junit = report.junit();
        assert!(
            junit.contains(r#"<property name="via" value="load-balancer"/>"#),
            "{junit}"
        );
        assert!(
            junit.contains(r#"<property name="route" value="web:443 HTTPS rule 10"#),
            "{junit}"
        );
        assert!(report
            .outputs()
            .contains(&("route".to_owned(), described.to_owned())));

        let probes = HealthReport::combine(None, Evidence::default(), Duration::ZERO);
        assert_eq!(serde_json::to_value(&probes).unwrap()["via"], "probes");
        assert!(probes.to_verdict().route.is_none());
    }
}
