//! CloudWatch metric alarms on a group's average CPU, as the classic simple
//! scaling setup pairs them with scaling policies: read them back, and create
//! or replace them (PutMetricAlarm is an upsert by name).

use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, Statistic};
use aws_sdk_cloudwatch::Client;

use super::ProviderError;

/// An alarm on the average `CPUUtilization` (namespace `AWS/EC2`) of one
/// Auto Scaling group, whose action is a scaling policy.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuAlarm {
    /// The alarm's name.
    pub name: String,
    /// The group (dimension `AutoScalingGroupName`).
    pub group: String,
    /// Percent CPU.
    pub threshold: f64,
    /// True: fires at or above the threshold; false: at or below it.
    pub above: bool,
    /// Seconds per evaluation period.
    pub period_secs: u32,
    /// Periods in a row that must breach.
    pub evaluation_periods: u32,
    /// What the alarm triggers (the policy ARNs).
    pub actions: Vec<String>,
}

impl CpuAlarm {
    fn operator(&self) -> ComparisonOperator {
        if self.above {
            ComparisonOperator::GreaterThanOrEqualToThreshold
        } else {
            ComparisonOperator::LessThanOrEqualToThreshold
        }
    }
}

fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The alarm named `name` as CloudWatch holds it, when it is a CPU alarm on a group.
pub async fn describe(client: &Client, name: &str) -> Result<Option<CpuAlarm>, ProviderError> {
    let out = client
        .describe_alarms()
        .alarm_names(name)
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("cloudwatch:DescribeAlarms", &e))?;
    Ok(out
        .metric_alarms()
        .iter()
        .find(|a| a.alarm_name() == Some(name))
        .map(|a| CpuAlarm {
            name: name.to_owned(),
            group: a
                .dimensions()
                .iter()
                .find(|d| d.name() == Some("AutoScalingGroupName"))
                .and_then(|d| d.value())
                .unwrap_or_default()
                .to_owned(),
            threshold: a.threshold().unwrap_or_default(),
            above: a
                .comparison_operator()
                .is_some_and(|o| *o == ComparisonOperator::GreaterThanOrEqualToThreshold),
            period_secs: u32::try_from(a.period().unwrap_or(0)).unwrap_or(0),
            evaluation_periods: u32::try_from(a.evaluation_periods().unwrap_or(0)).unwrap_or(0),
            actions: a.alarm_actions().to_vec(),
        }))
}

/// Creates or replaces the alarm.
pub async fn put(client: &Client, alarm: &CpuAlarm) -> Result<(), ProviderError> {
    client
        .put_metric_alarm()
        .alarm_name(&alarm.name)
        .alarm_description(format!(
            "switchyard: scale {} when average CPU is {} {}%",
            alarm.group,
            if alarm.above { ">=" } else { "<=" },
            alarm.threshold
        ))
        .namespace("AWS/EC2")
        .metric_name("CPUUtilization")
        .dimensions(
            Dimension::builder()
                .name("AutoScalingGroupName")
                .value(&alarm.group)
                .build(),
        )
        .statistic(Statistic::Average)
        .period(int(alarm.period_secs))
        .evaluation_periods(int(alarm.evaluation_periods))
        .threshold(alarm.threshold)
        .comparison_operator(alarm.operator())
        .set_alarm_actions(Some(alarm.actions.clone()))
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("cloudwatch:PutMetricAlarm", &e))?;
    Ok(())
}

/// Deletes alarms by name (missing ones are no error).
pub async fn delete(client: &Client, names: &[String]) -> Result<(), ProviderError> {
    if names.is_empty() {
        return Ok(());
    }
    client
        .delete_alarms()
        .set_alarm_names(Some(names.to_vec()))
        .send()
        .await
        .map_err(|e| ProviderError::from_sdk("cloudwatch:DeleteAlarms", &e))?;
    Ok(())
}
