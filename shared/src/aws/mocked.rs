//! Answers of the AWS APIs as the SDK-mocked unit tests give them: error
//! bodies in each protocol's shape, Route53's change and listing outputs,
//! and ELB target health.

use aws_sdk_route53::operation::change_resource_record_sets::ChangeResourceRecordSetsOutput;
use aws_sdk_route53::operation::list_resource_record_sets::ListResourceRecordSetsOutput;
use aws_sdk_route53::primitives::DateTime;
use aws_sdk_route53::types::{ChangeInfo, ChangeStatus, ResourceRecordSet};

/// An error answer of a query or REST-XML service whose documents live in
/// `namespace` (e.g. `https://route53.amazonaws.com/doc/2013-04-01/`).
pub fn error_body(namespace: &str, code: &str, message: &str) -> String {
    format!(
        r#"<?xml version="1.0"?>
<ErrorResponse xmlns="{namespace}"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>r-1</RequestId></ErrorResponse>"#
    )
}

/// Route53's error answer.
pub fn route53_error(code: &str, message: &str) -> String {
    error_body(
        "https://route53.amazonaws.com/doc/2013-04-01/",
        code,
        message,
    )
}

/// A Route53 change `id` in `status`.
pub fn change_info(id: &str, status: ChangeStatus) -> ChangeInfo {
    ChangeInfo::builder()
        .id(format!("/change/{id}"))
        .status(status)
        .submitted_at(DateTime::from_secs(1_800_000_000))
        .build()
        .expect("id, status and time are set")
}

/// The answer to a ChangeResourceRecordSets: change `id` in `status`.
pub fn submitted(id: &str, status: ChangeStatus) -> ChangeResourceRecordSetsOutput {
    ChangeResourceRecordSetsOutput::builder()
        .change_info(change_info(id, status))
        .build()
}

/// The answer to a ListResourceRecordSets holding `sets`, on one page.
pub fn listing(sets: Vec<ResourceRecordSet>) -> ListResourceRecordSetsOutput {
    ListResourceRecordSetsOutput::builder()
        .set_resource_record_sets(Some(sets))
        .is_truncated(false)
        .max_items(100)
        .build()
        .expect("the page is set")
}

/// The answer to a DescribeTargetHealth: each of `targets` (instance id) on
/// `port` in `state`, for `reason`.
#[allow(clippy::needless_pass_by_value)]
pub fn target_health(
    targets: &[&str],
    port: i32,
    state: aws_sdk_elasticloadbalancingv2::types::TargetHealthStateEnum,
    reason: Option<aws_sdk_elasticloadbalancingv2::types::TargetHealthReasonEnum>,
) -> aws_sdk_elasticloadbalancingv2::operation::describe_target_health::DescribeTargetHealthOutput {
    use aws_sdk_elasticloadbalancingv2::types::{
        TargetDescription, TargetHealth, TargetHealthDescription,
    };
    aws_sdk_elasticloadbalancingv2::operation::describe_target_health::DescribeTargetHealthOutput::builder()
        .set_target_health_descriptions(Some(
            targets
                .iter()
                .map(|id| {
                    TargetHealthDescription::builder()
                        .target(TargetDescription::builder().id(*id).port(port).build())
                        .target_health(
                            TargetHealth::builder()
                                .state(state.clone())
                                .set_reason(reason.clone())
                                .description("as the load balancer sees it")
                                .build(),
                        )
                        .build()
                })
                .collect(),
        ))
        .build()
}
