//! What IAM authorizes for a recorded AWS call, and whether a printed policy
//! allows it: the least-privilege audit every integration test runs on the
//! steps it starts (see [`crate::steps::run`]).
//!
//! A call needs its action on each resource it names: the instance, image,
//! snapshot, launch template, group, alarm, hosted zone, target group,
//! listener or S3 object in its request, and the resources it creates (an
//! id not known yet: `(new)`); an action without a resource level
//! (`Describe*`, `ListHealthChecks`, ...) needs `*`. EC2's tag on create
//! also needs `ec2:CreateTags` on what is created, with `ec2:CreateAction`.
//! Resources are matched as IAM matches them: ARN part by part, with `*`
//! and `?` wildcards.
//!
//! Conditions are evaluated where the request carries their key:
//! `aws:RequestTag/K`, `aws:TagKeys`, `ec2:CreateAction` and Route53's
//! `ChangeResourceRecordSetsNormalizedRecordNames` / `...RecordTypes` /
//! `...Actions`. Conditions on what the resource already is
//! (`aws:ResourceTag/K`, `ec2:LaunchTemplate`) are not checked (the request
//! does not carry them; moto would have to be asked); nor are the calls
//! Auto Scaling makes on the caller's behalf (RunInstances of a group), nor
//! TerminateInstanceInAutoScalingGroup's group (its request names only the
//! instance): for those only the action is checked.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::autoscaling_front::form;
use crate::route53_front;

/// The account moto's server answers for.
pub const ACCOUNT: &str = "123456789012";

/// One authorization a call needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    /// `service:Action` as IAM spells it.
    pub action: String,
    /// The resource's ARN, or `*` for an action without a resource level.
    pub resource: String,
    /// The condition keys the request carries for this resource, and their values.
    pub context: BTreeMap<String, Vec<String>>,
}

impl Need {
    fn new(action: &str, resource: impl Into<String>) -> Self {
        Self {
            action: action.to_owned(),
            resource: resource.into(),
            context: BTreeMap::new(),
        }
    }

    fn with(mut self, context: &BTreeMap<String, Vec<String>>) -> Self {
        self.context.extend(context.clone());
        self
    }
}

/// Everything the call `action` of `service` (the SigV4 signing name)
/// needs, from its request; `None` when its resources cannot be told from
/// the request (then only its action is checked).
pub fn needs(
    (service, action, region): (&str, &str, &str),
    path: &str,
    body: &[u8],
) -> Option<Vec<Need>> {
    let iam_service = if service == "monitoring" {
        "cloudwatch"
    } else {
        service
    };
    let name = format!("{iam_service}:{action}");
    match service {
        "ec2" => ec2(&name, region, &form(body)),
        "autoscaling" => autoscaling(&name, region, &form(body)),
        "monitoring" => cloudwatch(&name, region, &form(body)),
        "elasticloadbalancing" => elbv2(&name, &form(body)),
        "route53" => route53(&name, path, body),
        "s3" => Some(vec![Need::new(&name, s3_arn(path))]),
        _ => None,
    }
}

fn ec2_arn(region: &str, kind: &str, id: &str) -> String {
    // Images and snapshots name no account.
    let account = if matches!(kind, "image" | "snapshot") {
        ""
    } else {
        ACCOUNT
    };
    format!("arn:aws:ec2:{region}:{account}:{kind}/{id}")
}

/// The EC2 resource type of an id, by its prefix.
fn ec2_kind(id: &str) -> &'static str {
    match id.split_once('-').map_or("", |(p, _)| p) {
        "i" => "instance",
        "ami" => "image",
        "snap" => "snapshot",
        "vol" => "volume",
        "lt" => "launch-template",
        "sg" => "security-group",
        "subnet" => "subnet",
        "eni" => "network-interface",
        _ => "unknown",
    }
}

/// The values of the list `prefix.N` (or `prefix.N.suffix`), in order.
fn list(fields: &BTreeMap<String, String>, prefix: &str, suffix: &str) -> Vec<String> {
    let mut found: Vec<(u32, String)> = fields
        .iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix(prefix)?.strip_prefix('.')?;
            let (n, tail) = rest.split_once('.').unwrap_or((rest, ""));
            (tail == suffix).then(|| Some((n.parse().ok()?, v.clone())))?
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, v)| v).collect()
}

/// Request tags as condition keys: `aws:RequestTag/K` and `aws:TagKeys`.
fn tag_context(keys: &[String], values: &[String]) -> BTreeMap<String, Vec<String>> {
    let mut context = BTreeMap::new();
    if keys.is_empty() {
        return context;
    }
    for (k, v) in keys.iter().zip(values) {
        context.insert(format!("aws:RequestTag/{k}"), vec![v.clone()]);
    }
    context.insert("aws:TagKeys".to_owned(), keys.to_vec());
    context
}

/// The tags of each `TagSpecification.N` by its resource type.
fn tag_specifications(
    fields: &BTreeMap<String, String>,
) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let types = list(fields, "TagSpecification", "ResourceType");
    types
        .iter()
        .enumerate()
        .map(|(i, kind)| {
            let prefix = format!("TagSpecification.{}.Tag", i + 1);
            let keys = list(fields, &prefix, "Key");
            let values = list(fields, &prefix, "Value");
            (kind.clone(), tag_context(&keys, &values))
        })
        .collect()
}

fn ec2(action: &str, region: &str, f: &BTreeMap<String, String>) -> Option<Vec<Need>> {
    let short = action.trim_start_matches("ec2:");
    let specs = tag_specifications(f);
    let no_tags = BTreeMap::new();
    // What the call creates: the resource type and its id placeholder.
    let created: &[&str] = match short {
        "RunInstances" => &["instance", "volume", "network-interface"],
        "CreateImage" | "CopyImage" => &["image", "snapshot"],
        "CreateLaunchTemplate" => &["launch-template"],
        _ => &[],
    };
    let mut needs: Vec<Need> = Vec::new();
    for kind in created {
        let tags = specs.get(*kind).unwrap_or(&no_tags);
        needs.push(Need::new(action, ec2_arn(region, kind, "(new)")).with(tags));
        if !tags.is_empty() {
            let mut context = tags.clone();
            context.insert("ec2:CreateAction".to_owned(), vec![short.to_owned()]);
            needs.push(Need::new("ec2:CreateTags", ec2_arn(region, kind, "(new)")).with(&context));
        }
    }
    let one = |key: &str, kind: &str| f.get(key).map(|id| ec2_arn(region, kind, id));
    match short {
        "RunInstances" => {
            needs.extend(one("ImageId", "image").map(|a| Need::new(action, a)));
            needs.push(Need::new(
                action,
                one("SubnetId", "subnet").unwrap_or_else(|| ec2_arn(region, "subnet", "(default)")),
            ));
            let groups = list(f, "SecurityGroupId", "");
            if groups.is_empty() {
                needs.push(Need::new(
                    action,
                    ec2_arn(region, "security-group", "(default)"),
                ));
            }
            needs.extend(
                groups
                    .iter()
                    .map(|g| Need::new(action, ec2_arn(region, "security-group", g))),
            );
            needs.extend(one("KeyName", "key-pair").map(|a| Need::new(action, a)));
            needs.extend(
                one("LaunchTemplate.LaunchTemplateId", "launch-template")
                    .map(|a| Need::new(action, a)),
            );
        }
        "CreateImage" | "GetConsoleOutput" => {
            needs.push(Need::new(action, one("InstanceId", "instance")?));
        }
        "CopyImage" | "CreateLaunchTemplate" => {}
        "TerminateInstances" => needs.extend(
            list(f, "InstanceId", "")
                .iter()
                .map(|i| Need::new(action, ec2_arn(region, "instance", i))),
        ),
        "DeregisterImage" => needs.push(Need::new(action, one("ImageId", "image")?)),
        "DeleteSnapshot" => needs.push(Need::new(action, one("SnapshotId", "snapshot")?)),
        "CreateLaunchTemplateVersion" | "ModifyLaunchTemplate" | "DeleteLaunchTemplateVersions" => {
            // By name, the template's id (its ARN) is not in the request.
            needs.push(Need::new(
                action,
                one("LaunchTemplateId", "launch-template")?,
            ));
        }
        "CreateTags" => {
            let keys = list(f, "Tag", "Key");
            let values = list(f, "Tag", "Value");
            let context = tag_context(&keys, &values);
            needs.extend(
                list(f, "ResourceId", "")
                    .iter()
                    .map(|id| Need::new(action, ec2_arn(region, ec2_kind(id), id)).with(&context)),
            );
        }
        s if s.starts_with("Describe") => needs.push(Need::new(action, "*")),
        _ => return None,
    }
    Some(needs)
}

fn group_arn(region: &str, name: &str) -> String {
    format!(
        "arn:aws:autoscaling:{region}:{ACCOUNT}:autoScalingGroup:(id):autoScalingGroupName/{name}"
    )
}

fn autoscaling(action: &str, region: &str, f: &BTreeMap<String, String>) -> Option<Vec<Need>> {
    let short = action.trim_start_matches("autoscaling:");
    if short.starts_with("Describe") {
        return Some(vec![Need::new(action, "*")]);
    }
    if short == "CreateOrUpdateTags" {
        return Some(
            list(f, "Tags.member", "ResourceId")
                .iter()
                .map(|g| Need::new(action, group_arn(region, g)))
                .collect(),
        );
    }
    let group = f.get("AutoScalingGroupName")?;
    Some(vec![Need::new(action, group_arn(region, group))])
}

fn cloudwatch(action: &str, region: &str, f: &BTreeMap<String, String>) -> Option<Vec<Need>> {
    let alarm = |name: &str| format!("arn:aws:cloudwatch:{region}:{ACCOUNT}:alarm:{name}");
    let short = action.trim_start_matches("cloudwatch:");
    let names = list(f, "AlarmNames.member", "");
    Some(match short {
        "PutMetricAlarm" => vec![Need::new(action, alarm(f.get("AlarmName")?))],
        "DescribeAlarms" | "DeleteAlarms" if !names.is_empty() => {
            names.iter().map(|n| Need::new(action, alarm(n))).collect()
        }
        // A prefix asks for every alarm it starts: the policy must name
        // that prefix (or more).
        "DescribeAlarms" => vec![Need::new(
            action,
            alarm(&format!(
                "{}*",
                f.get("AlarmNamePrefix").map_or("", String::as_str)
            )),
        )],
        "GetMetricData" | "PutMetricData" | "ListMetrics" => vec![Need::new(action, "*")],
        _ => return None,
    })
}

fn elbv2(action: &str, f: &BTreeMap<String, String>) -> Option<Vec<Need>> {
    let short = action.trim_start_matches("elasticloadbalancing:");
    if short.starts_with("Describe") {
        return Some(vec![Need::new(action, "*")]);
    }
    let arns = match short {
        "ModifyListener" => vec![f.get("ListenerArn")?.clone()],
        "ModifyRule" => vec![f.get("RuleArn")?.clone()],
        "RegisterTargets" | "DeregisterTargets" => vec![f.get("TargetGroupArn")?.clone()],
        "AddTags" | "RemoveTags" => list(f, "ResourceArns.member", ""),
        _ => return None,
    };
    let mut keys = list(f, "Tags.member", "Key");
    keys.extend(list(f, "TagKeys.member", ""));
    let values = list(f, "Tags.member", "Value");
    let mut context = tag_context(&keys, &values);
    if short == "RemoveTags" {
        context.retain(|k, _| k == "aws:TagKeys");
    }
    Some(
        arns.into_iter()
            .map(|a| Need::new(action, a).with(&context))
            .collect(),
    )
}

fn route53(action: &str, path: &str, body: &[u8]) -> Option<Vec<Need>> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let arn = |kind: &str, id: &str| format!("arn:aws:route53:::{kind}/{id}");
    let need = match parts.get(1..).unwrap_or_default() {
        ["hostedzone", zone, "rrset"] => Need::new(action, arn("hostedzone", zone)),
        ["change", id] => Need::new(action, arn("change", id)),
        ["healthcheck", id] | ["healthcheck", id, "status"] => {
            Need::new(action, arn("healthcheck", id))
        }
        ["healthcheck"] => Need::new(action, "*"),
        _ => return None,
    };
    let mut need = need;
    if action == "route53:ChangeResourceRecordSets" {
        let changes = route53_front::changes(&String::from_utf8_lossy(body));
        let mut names: Vec<String> = changes
            .iter()
            .map(|c| c.set.key.0.trim_end_matches('.').to_ascii_lowercase())
            .collect();
        let mut types: Vec<String> = changes.iter().map(|c| c.set.key.1.clone()).collect();
        let mut actions: Vec<String> = changes.iter().map(|c| c.action.clone()).collect();
        for v in [&mut names, &mut types, &mut actions] {
            v.sort();
            v.dedup();
        }
        need.context.insert(
            "route53:ChangeResourceRecordSetsNormalizedRecordNames".into(),
            names,
        );
        need.context
            .insert("route53:ChangeResourceRecordSetsRecordTypes".into(), types);
        need.context
            .insert("route53:ChangeResourceRecordSetsActions".into(), actions);
    }
    Some(vec![need])
}

/// A path-style S3 call's resource: the object, or the bucket.
fn s3_arn(path: &str) -> String {
    format!(
        "arn:aws:s3:::{}",
        path.trim_start_matches('/').trim_end_matches('/')
    )
}

/// Whether `text` matches `pattern`, where `*` is any run of characters and
/// `?` any one.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Whether the resource pattern `pattern` of a policy matches `arn`, as IAM
/// matches them: `*` matches everything; otherwise the six colon-separated
/// parts are matched one by one (a wildcard does not reach over a colon
/// before the resource part).
pub fn arn_matches(pattern: &str, arn: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let p: Vec<&str> = pattern.splitn(6, ':').collect();
    let a: Vec<&str> = arn.splitn(6, ':').collect();
    p.len() == 6 && a.len() == 6 && p.iter().zip(&a).all(|(p, a)| glob(p, a))
}

/// Whether the condition block `operator` of a statement holds for `need`:
/// keys the request does not carry the values of are not checked (see the
/// module's documentation).
fn condition_holds(operator: &str, keys: &serde_json::Map<String, Value>, need: &Need) -> bool {
    let evaluated = |key: &str| {
        key.starts_with("aws:RequestTag/")
            || key == "aws:TagKeys"
            || key == "ec2:CreateAction"
            || key.starts_with("route53:ChangeResourceRecordSets")
    };
    keys.iter().all(|(key, wanted)| {
        if !evaluated(key) {
            return true;
        }
        let wanted: Vec<&str> = match wanted {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let have = need.context.get(key).cloned().unwrap_or_default();
        let like = operator.contains("StringLike");
        let one = |v: &str| {
            wanted
                .iter()
                .any(|w| if like { glob(w, v) } else { *w == v })
        };
        match operator {
            "StringEquals" | "StringLike" => have.len() == 1 && one(&have[0]),
            "ForAllValues:StringEquals" | "ForAllValues:StringLike" => have.iter().all(|v| one(v)),
            "ForAnyValue:StringEquals" | "ForAnyValue:StringLike" => have.iter().any(|v| one(v)),
            // Operators the steps do not use on keys the request carries.
            _ => false,
        }
    })
}

/// Whether `policy` (an IAM policy document) allows `need`.
pub fn allows(policy: &Value, need: &Need) -> bool {
    policy["Statement"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| {
            let strings = |v: &Value| -> Vec<String> {
                match v {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(a) => a
                        .iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect(),
                    _ => Vec::new(),
                }
            };
            s["Effect"] == "Allow"
                && strings(&s["Action"])
                    .iter()
                    .any(|a| glob(&a.to_ascii_lowercase(), &need.action.to_ascii_lowercase()))
                && strings(&s["Resource"])
                    .iter()
                    .any(|r| arn_matches(r, &need.resource))
                && s["Condition"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .all(|(op, keys)| {
                        keys.as_object()
                            .is_some_and(|k| condition_holds(op, k, need))
                    })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arns_match_part_by_part_with_wildcards() {
        assert!(arn_matches("*", "arn:aws:ec2:us-east-1::image/ami-1"));
        assert!(arn_matches(
            "arn:aws:ec2:*:*:instance/*",
            "arn:aws:ec2:us-east-1:123456789012:instance/i-1"
        ));
        assert!(!arn_matches(
            "arn:aws:ec2:*:*:instance/*",
            "arn:aws:ec2:us-east-1::image/ami-1"
        ));
        assert!(arn_matches(
            "arn:aws:cloudwatch:*:*:alarm:web-*",
            "arn:aws:cloudwatch:us-east-1:123456789012:alarm:web-cpu-high"
        ));
        assert!(!arn_matches(
            "arn:aws:cloudwatch:*:*:alarm:web-cpu-hig?",
            "arn:aws:cloudwatch:us-east-1:123456789012:alarm:web-cpu-low"
        ));
        // A wildcard does not reach over the region's colon.
        assert!(!arn_matches("arn:aws:s3:*", "arn:aws:s3:::bucket/key"));
        assert!(arn_matches(
            "arn:aws:s3:::bucket/*",
            "arn:aws:s3:::bucket/a/b"
        ));
    }

    #[test]
    fn run_instances_needs_every_resource_and_tag_on_create() {
        let body = b"Action=RunInstances&ImageId=ami-1&SubnetId=subnet-1&\
TagSpecification.1.ResourceType=instance&TagSpecification.1.Tag.1.Key=switchyard%3Aservice&\
TagSpecification.1.Tag.1.Value=web";
        let needs = needs(("ec2", "RunInstances", "us-east-1"), "/", body).unwrap();
        let resources: Vec<(&str, &str)> = needs
            .iter()
            .map(|n| (n.action.as_str(), n.resource.as_str()))
            .collect();
        assert!(resources.contains(&("ec2:RunInstances", "arn:aws:ec2:us-east-1::image/ami-1")));
        assert!(resources.contains(&(
            "ec2:RunInstances",
            "arn:aws:ec2:us-east-1:123456789012:subnet/subnet-1"
        )));
        assert!(resources.contains(&(
            "ec2:RunInstances",
            "arn:aws:ec2:us-east-1:123456789012:security-group/(default)"
        )));
        let tag = needs
            .iter()
            .find(|n| n.action == "ec2:CreateTags")
            .expect("tag on create needs CreateTags");
        assert_eq!(tag.context["ec2:CreateAction"], ["RunInstances"]);
        assert_eq!(tag.context["aws:RequestTag/switchyard:service"], ["web"]);

        let policy = json!({"Statement": [
            {"Effect": "Allow", "Action": "ec2:CreateTags", "Resource": "arn:aws:ec2:*:*:instance/*",
             "Condition": {"StringEquals": {"ec2:CreateAction": "RunInstances",
                                            "aws:RequestTag/switchyard:service": "web"}}},
        ]});
        assert!(allows(&policy, tag));
        let mut other = tag.clone();
        other.context.insert(
            "aws:RequestTag/switchyard:service".into(),
            vec!["api".into()],
        );
        assert!(!allows(&policy, &other));
        let mut later = tag.clone();
        later.context.remove("ec2:CreateAction");
        assert!(!allows(&policy, &later));
    }

    #[test]
    fn record_changes_are_checked_against_the_names_they_may_change() {
        let body = b"<ChangeResourceRecordSetsRequest><ChangeBatch><Changes>
<Change><Action>UPSERT</Action><ResourceRecordSet><Name>App.Example.com.</Name><Type>A</Type></ResourceRecordSet></Change>
</Changes></ChangeBatch></ChangeResourceRecordSetsRequest>";
        let needs = needs(
            ("route53", "ChangeResourceRecordSets", "us-east-1"),
            "/2013-04-01/hostedzone/Z1/rrset/",
            body,
        )
        .unwrap();
        assert_eq!(needs[0].resource, "arn:aws:route53:::hostedzone/Z1");
        let policy = |name: &str| {
            json!({"Statement": [{"Effect": "Allow", "Action": ["route53:ChangeResourceRecordSets"],
                "Resource": ["arn:aws:route53:::hostedzone/Z1"],
                "Condition": {"ForAllValues:StringEquals": {
                    "route53:ChangeResourceRecordSetsNormalizedRecordNames": [name]}}}]})
        };
        assert!(allows(&policy("app.example.com"), &needs[0]));
        assert!(!allows(&policy("other.example.com"), &needs[0]));
    }

    #[test]
    fn describe_calls_need_star_and_named_resources_their_arn() {
        let policy = json!({"Statement": [
            {"Effect": "Allow", "Action": ["ec2:DescribeImages"], "Resource": ["arn:aws:ec2:*::image/*"]},
            {"Effect": "Allow", "Action": ["cloudwatch:DescribeAlarms"], "Resource": ["arn:aws:cloudwatch:*:*:alarm:web-*"]},
        ]});
        let describe = needs(
            ("ec2", "DescribeImages", "us-east-1"),
            "/",
            b"Action=DescribeImages",
        )
        .unwrap();
        assert!(
            !allows(&policy, &describe[0]),
            "an action without resource level needs *"
        );
        let prefix = needs(
            ("monitoring", "DescribeAlarms", "us-east-1"),
            "/",
            b"Action=DescribeAlarms&AlarmNamePrefix=web-",
        )
        .unwrap();
        assert!(allows(&policy, &prefix[0]));
        let all = needs(
            ("monitoring", "DescribeAlarms", "us-east-1"),
            "/",
            b"Action=DescribeAlarms",
        )
        .unwrap();
        assert!(!allows(&policy, &all[0]));
    }
}
