//! Auto Scaling's lifecycle hooks as AWS runs them, in front of moto.
//!
//! moto keeps lifecycle hooks (PutLifecycleHook, DescribeLifecycleHooks) but
//! - ignores CreateAutoScalingGroup's `LifecycleHookSpecificationList`: AWS
//!   makes those hooks with the group, before its first instance launches.
//!   The fault proxy puts them into moto once moto has made the group, so a
//!   group made with its hooks has them, as on AWS;
//! - does not implement CompleteLifecycleAction nor
//!   RecordLifecycleActionHeartbeat. The fault proxy answers them itself, as
//!   AWS does: refused (`ValidationError`) unless the group has the hook and
//!   the instance is one of the group's, and unless the action is still
//!   pending (a completed action takes neither a second completion nor a
//!   heartbeat). Every such call is recorded with its arguments, so a test
//!   can assert who completed what, with which result, and when.

use std::collections::BTreeMap;
use std::time::Instant;

/// The form fields of a query-protocol body (`Action=...&Name=value...`), decoded.
pub fn form(body: &[u8]) -> BTreeMap<String, String> {
    let text = String::from_utf8_lossy(body);
    reqwest::Url::parse(&format!("http://form/?{text}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

/// The hooks of a CreateAutoScalingGroup call's `LifecycleHookSpecificationList`,
/// as the PutLifecycleHook form fields that make each (group name included).
pub fn hook_specifications(fields: &BTreeMap<String, String>) -> Vec<BTreeMap<String, String>> {
    const PREFIX: &str = "LifecycleHookSpecificationList.member.";
    let mut hooks: BTreeMap<u32, BTreeMap<String, String>> = BTreeMap::new();
    for (key, value) in fields {
        let Some(rest) = key.strip_prefix(PREFIX) else {
            continue;
        };
        let Some((n, field)) = rest.split_once('.') else {
            continue;
        };
        let Ok(n) = n.parse::<u32>() else { continue };
        hooks
            .entry(n)
            .or_default()
            .insert(field.to_owned(), value.clone());
    }
    let group = fields
        .get("AutoScalingGroupName")
        .cloned()
        .unwrap_or_default();
    hooks
        .into_values()
        .map(|mut h| {
            h.insert("Action".into(), "PutLifecycleHook".into());
            h.insert("Version".into(), "2011-01-01".into());
            h.insert("AutoScalingGroupName".into(), group.clone());
            h
        })
        .collect()
}

/// A form body from fields.
pub fn encode(fields: &BTreeMap<String, String>) -> String {
    let mut url = reqwest::Url::parse("http://form/").expect("a constant URL");
    url.query_pairs_mut().extend_pairs(fields.iter());
    url.query().unwrap_or_default().to_owned()
}

/// One CompleteLifecycleAction or RecordLifecycleActionHeartbeat, as the proxy answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleCall {
    /// `CompleteLifecycleAction` or `RecordLifecycleActionHeartbeat`.
    pub action: String,
    /// `AutoScalingGroupName`.
    pub group: String,
    /// `LifecycleHookName`.
    pub hook: String,
    /// `InstanceId`.
    pub instance: String,
    /// `LifecycleActionResult` (CompleteLifecycleAction only).
    pub result: Option<String>,
    /// `None` when accepted; the refusal's message otherwise.
    pub refused: Option<String>,
    /// When the proxy answered it.
    pub at: Instant,
}

impl LifecycleCall {
    /// The call from its form fields, not yet judged.
    pub fn from_form(action: &str, fields: &BTreeMap<String, String>) -> Self {
        let field = |k: &str| fields.get(k).cloned().unwrap_or_default();
        Self {
            action: action.to_owned(),
            group: field("AutoScalingGroupName"),
            hook: field("LifecycleHookName"),
            instance: field("InstanceId"),
            result: fields.get("LifecycleActionResult").cloned(),
            refused: None,
            at: Instant::now(),
        }
    }

    /// Why AWS would refuse it: given whether moto's group has the hook
    /// (`hook_exists`) and the instance (`member`), and the calls accepted so far.
    pub fn refusal(
        &self,
        hook_exists: bool,
        member: bool,
        earlier: &[LifecycleCall],
    ) -> Option<String> {
        if self.group.is_empty() || self.hook.is_empty() || self.instance.is_empty() {
            return Some(
                "LifecycleHookName, AutoScalingGroupName and InstanceId (or a \
                 LifecycleActionToken) are required"
                    .to_owned(),
            );
        }
        if self.action == "CompleteLifecycleAction"
            && !matches!(self.result.as_deref(), Some("CONTINUE" | "ABANDON"))
        {
            return Some(format!(
                "LifecycleActionResult {:?} is not CONTINUE or ABANDON",
                self.result
            ));
        }
        let completed = earlier.iter().any(|c| {
            c.refused.is_none()
                && c.action == "CompleteLifecycleAction"
                && (c.group.as_str(), c.hook.as_str(), c.instance.as_str())
                    == (
                        self.group.as_str(),
                        self.hook.as_str(),
                        self.instance.as_str(),
                    )
        });
        if !hook_exists || !member || completed {
            return Some(format!(
                "No active Lifecycle Action found with instance ID {}",
                self.instance
            ));
        }
        None
    }
}

/// The success answer of `action`, in the query protocol's XML.
pub fn ok_body(action: &str) -> String {
    format!(
        "<{action}Response xmlns=\"http://autoscaling.amazonaws.com/doc/2011-01-01/\"><{action}Result/><ResponseMetadata><RequestId>fault-proxy</RequestId></ResponseMetadata></{action}Response>"
    )
}

/// Whether a DescribeLifecycleHooks answer names the hook `name`.
pub fn names_hook(xml: &str, name: &str) -> bool {
    xml.contains(&format!("<LifecycleHookName>{name}</LifecycleHookName>"))
}

/// Whether a DescribeAutoScalingGroups answer lists the instance `id`.
pub fn lists_instance(xml: &str, id: &str) -> bool {
    xml.contains(&format!("<InstanceId>{id}</InstanceId>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_specifications_become_put_lifecycle_hook_calls() {
        let fields = form(
            b"Action=CreateAutoScalingGroup&AutoScalingGroupName=web-green\
              &LifecycleHookSpecificationList.member.1.LifecycleHookName=switchyard-drain\
              &LifecycleHookSpecificationList.member.1.LifecycleTransition=autoscaling%3AEC2_INSTANCE_TERMINATING\
              &LifecycleHookSpecificationList.member.1.HeartbeatTimeout=600\
              &LifecycleHookSpecificationList.member.1.DefaultResult=CONTINUE",
        );
        let hooks = hook_specifications(&fields);
        assert_eq!(hooks.len(), 1);
        assert_eq!(hooks[0]["AutoScalingGroupName"], "web-green");
        assert_eq!(
            hooks[0]["LifecycleTransition"],
            "autoscaling:EC2_INSTANCE_TERMINATING"
        );
        assert_eq!(form(encode(&hooks[0]).as_bytes()), hooks[0]);
    }

    #[test]
    fn a_completion_needs_the_hook_the_member_and_a_pending_action() {
        let mut fields = BTreeMap::from([
            ("AutoScalingGroupName".to_owned(), "web".to_owned()),
            ("LifecycleHookName".to_owned(), "drain".to_owned()),
            ("InstanceId".to_owned(), "i-1".to_owned()),
            ("LifecycleActionResult".to_owned(), "CONTINUE".to_owned()),
        ]);
        let call = LifecycleCall::from_form("CompleteLifecycleAction", &fields);
        assert_eq!(call.refusal(true, true, &[]), None);
        assert!(call.refusal(false, true, &[]).is_some());
        assert!(call.refusal(true, false, &[]).is_some());
        assert!(call
            .refusal(true, true, std::slice::from_ref(&call))
            .is_some());
        let beat = LifecycleCall::from_form("RecordLifecycleActionHeartbeat", &fields);
        assert_eq!(beat.refusal(true, true, std::slice::from_ref(&beat)), None);
        assert!(beat
            .refusal(true, true, std::slice::from_ref(&call))
            .is_some());
        fields.insert("LifecycleActionResult".into(), "GO".into());
        let bad = LifecycleCall::from_form("CompleteLifecycleAction", &fields);
        assert!(bad.refusal(true, true, &[]).is_some());
    }
}
