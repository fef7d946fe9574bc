//! EC2 Auto Scaling calls used by the steps: completing a lifecycle action,
//! so that a group waiting on a hook (a launching or terminating instance)
//! goes on at once instead of at the hook's heartbeat time-out.

use aws_sdk_autoscaling::Client;

use super::ProviderError;

/// What a completed lifecycle action tells the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleResult {
    /// Go on: launch into service, or terminate.
    Continue,
    /// Give up: a launching instance is terminated; a terminating one is terminated all the same.
    Abandon,
}

impl LifecycleResult {
    /// The API value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Continue => "CONTINUE",
            Self::Abandon => "ABANDON",
        }
    }
}

/// Completes the lifecycle action of `hook` in group `group` for `instance_id`.
pub async fn complete_lifecycle_action(
    client: &Client,
    hook: &str,
    group: &str,
    instance_id: &str,
    result: LifecycleResult,
) -> Result<(), ProviderError> {
    client
        .complete_lifecycle_action()
        .lifecycle_hook_name(hook)
        .auto_scaling_group_name(group)
        .instance_id(instance_id)
        .lifecycle_action_result(result.as_str())
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("autoscaling:CompleteLifecycleAction", &e))?;
    Ok(())
}
