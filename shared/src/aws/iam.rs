//! Least privilege: the IAM policy a step needs for the options it was given
//! (`--print-iam-policy`). Each step builds its policy from its checked
//! settings, naming resources where IAM allows it (a hosted zone, a target
//! group, an Auto Scaling group) and `*` where the action has no resource
//! level (the `Describe*` calls). The integration tests record every call a
//! step makes and check that this policy allows it.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

/// An identity policy: statements of allowed actions on resources.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Statements by their `Sid`, in `Sid` order.
    statements: BTreeMap<String, Statement>,
}

/// One `Allow` statement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Statement {
    /// `service:Action` names.
    pub actions: BTreeSet<String>,
    /// Resource ARNs, or `*`.
    pub resources: BTreeSet<String>,
}

impl Policy {
    /// A policy allowing nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Allows `actions` on `resources` in statement `sid` (merged with what
    /// the statement already allows).
    pub fn allow<I, S>(&mut self, sid: &str, actions: &[&str], resources: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let statement = self.statements.entry(sid.to_owned()).or_default();
        statement
            .actions
            .extend(actions.iter().map(|a| (*a).to_owned()));
        statement
            .resources
            .extend(resources.into_iter().map(Into::into));
        self
    }

    /// Adds every statement of `other`.
    pub fn merge(&mut self, other: &Policy) -> &mut Self {
        for (sid, s) in &other.statements {
            let mine = self.statements.entry(sid.clone()).or_default();
            mine.actions.extend(s.actions.iter().cloned());
            mine.resources.extend(s.resources.iter().cloned());
        }
        self
    }

    /// Whether some statement allows `action` (`service:Action`; IAM compares
    /// action names without regard to case).
    pub fn allows(&self, action: &str) -> bool {
        self.statements
            .values()
            .flat_map(|s| s.actions.iter())
            .any(|a| a.eq_ignore_ascii_case(action))
    }

    /// Whether it allows nothing at all.
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }

    /// The policy document as IAM reads it.
    pub fn to_json(&self) -> Value {
        let statements: Vec<Value> = self
            .statements
            .iter()
            .map(|(sid, s)| {
                json!({
                    "Sid": sid,
                    "Effect": "Allow",
                    "Action": s.actions.iter().collect::<Vec<_>>(),
                    "Resource": s.resources.iter().collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({ "Version": "2012-10-17", "Statement": statements })
    }
}

/// ARNs of the resources steps name in their policies.
pub mod arn {
    /// A Route53 hosted zone (`Z123` or `/hostedzone/Z123`).
    pub fn hosted_zone(zone_id: &str) -> String {
        format!(
            "arn:aws:route53:::hostedzone/{}",
            zone_id.trim_start_matches("/hostedzone/")
        )
    }

    /// Every Route53 change (GetChange takes a change id, unknown beforehand).
    pub const ROUTE53_CHANGES: &str = "arn:aws:route53:::change/*";

    /// Every Route53 health check.
    pub const ROUTE53_HEALTH_CHECKS: &str = "arn:aws:route53:::healthcheck/*";

    /// Every EC2 instance in `region` (`*` for any region).
    pub fn instances(region: &str) -> String {
        format!("arn:aws:ec2:{region}:*:instance/*")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_merge_by_sid_and_render_as_iam_reads_them() {
        let mut p = Policy::new();
        p.allow(
            "Route53Records",
            &["route53:ListResourceRecordSets"],
            [arn::hosted_zone("/hostedzone/Z1")],
        );
        p.allow(
            "Route53Records",
            &["route53:ChangeResourceRecordSets"],
            [arn::hosted_zone("Z1")],
        );
        p.allow(
            "Route53Changes",
            &["route53:GetChange"],
            [arn::ROUTE53_CHANGES],
        );
        assert!(p.allows("route53:changeresourcerecordsets"));
        assert!(!p.allows("route53:DeleteHostedZone"));
        assert_eq!(
            p.to_json(),
            json!({"Version": "2012-10-17", "Statement": [
                {"Sid": "Route53Changes", "Effect": "Allow", "Action": ["route53:GetChange"],
                 "Resource": ["arn:aws:route53:::change/*"]},
                {"Sid": "Route53Records", "Effect": "Allow",
                 "Action": ["route53:ChangeResourceRecordSets", "route53:ListResourceRecordSets"],
                 "Resource": ["arn:aws:route53:::hostedzone/Z1"]},
            ]})
        );
        let mut q = Policy::new();
        q.merge(&p);
        assert_eq!(q, p);
        assert!(Policy::new().is_empty());
    }
}
