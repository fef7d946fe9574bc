//! Least privilege: the IAM policy a step needs for the options it was given
//! (`--print-iam-policy`). Each step builds its policy from its checked
//! settings, naming resources where IAM allows it (a hosted zone, a target
//! group, an Auto Scaling group, an alarm by name) and narrowing by tag
//! conditions what has no name in its ARN (instances, images, snapshots,
//! launch templates): `aws:RequestTag/K` and `ec2:CreateAction` when the step
//! tags a resource as it creates it, `aws:ResourceTag/K` when it acts on what
//! it tagged. `*` is left only where the action has no resource level (the
//! `Describe*` calls). The integration tests record every call a step makes
//! and check that this policy allows its action on the resources it names;
//! `make test` runs parliament on the policies of every step.

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
    /// Conditions, all of which must hold: operator (`StringEquals`) → key
    /// (`aws:ResourceTag/service`) → the values, any of which matches.
    pub conditions: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
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

    /// Adds condition `operator` `key` in `values` to statement `sid`
    /// (values merge with those the statement already names for that key).
    pub fn when<I, S>(&mut self, sid: &str, operator: &str, key: &str, values: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.statements
            .entry(sid.to_owned())
            .or_default()
            .conditions
            .entry(operator.to_owned())
            .or_default()
            .entry(key.to_owned())
            .or_default()
            .extend(values.into_iter().map(Into::into));
        self
    }

    /// Allows `ec2:CreateTags` on EC2 resources of `kinds` (statement
    /// `TagOnCreate`) only as the calls `create_actions` create them: the
    /// tags on creation, which EC2 authorizes as a CreateTags.
    pub fn tag_on_create(&mut self, kinds: &[&str], create_actions: &[&str]) -> &mut Self {
        let resources = kinds.iter().map(|kind| match *kind {
            "image" => arn::IMAGES.to_owned(),
            "snapshot" => arn::SNAPSHOTS.to_owned(),
            kind => arn::ec2(kind, "*"),
        });
        self.allow("TagOnCreate", &["ec2:CreateTags"], resources)
            .when(
                "TagOnCreate",
                condition::EQUALS,
                condition::EC2_CREATE_ACTION,
                create_actions.iter().copied(),
            )
    }

    /// Narrows the Route53 changes of statement `sid` to record sets named
    /// `names` of types `types` (every change of a batch must be one).
    pub fn only_records<N, T>(&mut self, sid: &str, names: N, types: T) -> &mut Self
    where
        N: IntoIterator,
        N::Item: AsRef<str>,
        T: IntoIterator,
        T::Item: Into<String>,
    {
        self.when(
            sid,
            condition::ALL_EQUAL,
            condition::ROUTE53_RECORD_NAMES,
            names
                .into_iter()
                .map(|n| condition::normalized_record_name(n.as_ref())),
        )
        .when(
            sid,
            condition::ALL_EQUAL,
            condition::ROUTE53_RECORD_TYPES,
            types,
        )
    }

    /// Adds every statement of `other`.
    pub fn merge(&mut self, other: &Policy) -> &mut Self {
        for (sid, s) in &other.statements {
            let mine = self.statements.entry(sid.clone()).or_default();
            mine.actions.extend(s.actions.iter().cloned());
            mine.resources.extend(s.resources.iter().cloned());
            for (operator, keys) in &s.conditions {
                let ours = mine.conditions.entry(operator.clone()).or_default();
                for (key, values) in keys {
                    ours.entry(key.clone())
                        .or_default()
                        .extend(values.iter().cloned());
                }
            }
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
                let mut statement = json!({
                    "Sid": sid,
                    "Effect": "Allow",
                    "Action": s.actions.iter().collect::<Vec<_>>(),
                    "Resource": s.resources.iter().collect::<Vec<_>>(),
                });
                if !s.conditions.is_empty() {
                    statement["Condition"] = s
                        .conditions
                        .iter()
                        .map(|(operator, keys)| {
                            let keys: serde_json::Map<String, Value> = keys
                                .iter()
                                .map(|(key, values)| {
                                    let values: Vec<&String> = values.iter().collect();
                                    let value = match values.as_slice() {
                                        [one] => json!(one),
                                        many => json!(many),
                                    };
                                    (key.clone(), value)
                                })
                                .collect();
                            (operator.clone(), Value::Object(keys))
                        })
                        .collect::<serde_json::Map<String, Value>>()
                        .into();
                }
                statement
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

    /// EC2 resources of `kind` (`volume`, `subnet`, `launch-template`, ...)
    /// in any region and account: `id` names one, `*` all of them.
    pub fn ec2(kind: &str, id: &str) -> String {
        format!("arn:aws:ec2:*:*:{kind}/{id}")
    }

    /// Every machine image (image ARNs name no account).
    pub const IMAGES: &str = "arn:aws:ec2:*::image/*";

    /// Every EBS snapshot (snapshot ARNs name no account).
    pub const SNAPSHOTS: &str = "arn:aws:ec2:*::snapshot/*";

    /// The Auto Scaling group `name`, in any region and account.
    pub fn auto_scaling_group(name: &str) -> String {
        format!("arn:aws:autoscaling:*:*:autoScalingGroup:*:autoScalingGroupName/{name}")
    }

    /// The CloudWatch alarm `name` (a trailing `*` for a prefix).
    pub fn alarm(name: &str) -> String {
        format!("arn:aws:cloudwatch:*:*:alarm:{name}")
    }
}

/// Condition keys and operators the steps' policies use.
pub mod condition {
    /// Exact string match; one of the values.
    pub const EQUALS: &str = "StringEquals";
    /// Match with `*` and `?` wildcards.
    pub const LIKE: &str = "StringLike";

    /// [`EQUALS`], or [`LIKE`] for a value with a wildcard (a service the
    /// state names, unknown when the policy is printed, is `*`).
    pub fn string_match(value: &str) -> &'static str {
        if value.contains(['*', '?']) {
            LIKE
        } else {
            EQUALS
        }
    }
    /// Every value of a multivalued key (tag keys, record names) is one of these.
    pub const ALL_EQUAL: &str = "ForAllValues:StringEquals";
    /// Every value of a multivalued key matches one of these patterns.
    pub const ALL_LIKE: &str = "ForAllValues:StringLike";
    /// The key is present (`false`) in the request.
    pub const NULL: &str = "Null";

    /// The tag `key` of the resource acted on.
    pub fn resource_tag(key: &str) -> String {
        format!("aws:ResourceTag/{key}")
    }

    /// The tag `key` in the request (tags put on as a resource is created,
    /// or by CreateTags).
    pub fn request_tag(key: &str) -> String {
        format!("aws:RequestTag/{key}")
    }

    /// The tag keys of the request.
    pub const TAG_KEYS: &str = "aws:TagKeys";

    /// The EC2 call that creates the resources a CreateTags tags on creation.
    pub const EC2_CREATE_ACTION: &str = "ec2:CreateAction";

    /// The record names of a Route53 change batch, lowercased without the
    /// trailing dot.
    pub const ROUTE53_RECORD_NAMES: &str = "route53:ChangeResourceRecordSetsNormalizedRecordNames";

    /// The record types of a Route53 change batch.
    pub const ROUTE53_RECORD_TYPES: &str = "route53:ChangeResourceRecordSetsRecordTypes";

    /// A record name as Route53's condition key compares it.
    pub fn normalized_record_name(name: &str) -> String {
        name.trim_end_matches('.').to_ascii_lowercase()
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

    #[test]
    fn conditions_render_and_merge_by_operator_and_key() {
        let mut p = Policy::new();
        p.allow("Tag", &["ec2:CreateTags"], [arn::instances("*")])
            .when(
                "Tag",
                condition::EQUALS,
                condition::EC2_CREATE_ACTION,
                ["RunInstances"],
            )
            .when(
                "Tag",
                condition::string_match("*"),
                &condition::request_tag("switchyard:service"),
                ["*"],
            );
        let mut other = Policy::new();
        other.when(
            "Tag",
            condition::EQUALS,
            condition::EC2_CREATE_ACTION,
            ["CreateImage"],
        );
        p.merge(&other);
        p.allow(
            "Records",
            &["route53:ChangeResourceRecordSets"],
            [arn::hosted_zone("Z1")],
        )
        .only_records("Records", ["App.Example.com."], ["A".to_owned()]);
        let json = p.to_json();
        assert_eq!(
            json["Statement"][1]["Condition"],
            json!({
                "StringEquals": {"ec2:CreateAction": ["CreateImage", "RunInstances"]},
                "StringLike": {"aws:RequestTag/switchyard:service": "*"},
            })
        );
        assert_eq!(
            json["Statement"][0]["Condition"],
            json!({"ForAllValues:StringEquals": {
                "route53:ChangeResourceRecordSetsNormalizedRecordNames": "app.example.com",
                "route53:ChangeResourceRecordSetsRecordTypes": "A",
            }})
        );
        assert_eq!(condition::string_match("go-auth"), condition::EQUALS);
    }
}
