//! The closed sets of the library that flags name (`--output json`,
//! `--type https`, `--insufficient-data pass`): clap learns their spelling
//! and help here, so the types themselves stay free of the command line.

use clap::builder::PossibleValue;
use clap::ValueEnum;

use crate::health::alarms::InsufficientData;
use crate::health::route53::CheckKind;
use crate::health::target_health::Via;
use crate::outcome::OutputFormat;
use crate::stack::asg::HealthCheckType;
use crate::stack::standby::Color;
use crate::state::Role;

impl ValueEnum for OutputFormat {
    fn value_variants<'a>() -> &'a [Self] {
        &[Self::Text, Self::Json]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Self::Text => PossibleValue::new("text").help("Lines for people"),
            Self::Json => PossibleValue::new("json").help("One JSON object, for programs"),
        })
    }
}

impl ValueEnum for Role {
    fn value_variants<'a>() -> &'a [Self] {
        &[Self::Active, Self::Standby, Self::Retired]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Self::Active => PossibleValue::new("active").help("The stack that takes the traffic"),
            Self::Standby => PossibleValue::new("standby").help("The stack brought up beside it"),
            Self::Retired => {
                PossibleValue::new("retired").help("A stack scaled down after a release")
            }
        })
    }
}

impl ValueEnum for Via {
    fn value_variants<'a>() -> &'a [Self] {
        &[Self::Probes, Self::TargetHealth, Self::LoadBalancer]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Self::Probes => PossibleValue::new("probes").help("HTTP(S) probes from where the step runs"),
            Self::TargetHealth => PossibleValue::new("target-health").help(
                "The stack's target groups' health (DescribeTargetHealth): no probe has to reach the stack",
            ),
            Self::LoadBalancer => PossibleValue::new("load-balancer").help(
                "HTTP(S) probes through the load balancer, by a listener or rule that reaches only the stack",
            ),
        })
    }
}

impl ValueEnum for InsufficientData {
    fn value_variants<'a>() -> &'a [Self] {
        &[Self::Fail, Self::Pass, Self::Inconclusive]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()).help(match self {
            Self::Fail => "Unhealthy",
            Self::Pass => "Healthy (said out loud in the evidence)",
            Self::Inconclusive => "Neither: the verdict is inconclusive",
        }))
    }
}

impl ValueEnum for CheckKind {
    fn value_variants<'a>() -> &'a [Self] {
        &CheckKind::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()).help(match self {
            Self::Http => "HTTP GET, 2xx or 3xx within 4 s passes",
            Self::Https => "HTTPS GET (the certificate is not validated by Route53)",
            Self::HttpStrMatch => {
                "HTTP, and the search string in the first 5,120 bytes of the body"
            }
            Self::HttpsStrMatch => {
                "HTTPS, and the search string in the first 5,120 bytes of the body"
            }
            Self::Tcp => "A TCP connection",
        }))
    }
}

impl ValueEnum for Color {
    fn value_variants<'a>() -> &'a [Self] {
        &Color::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.name()))
    }
}

impl ValueEnum for HealthCheckType {
    fn value_variants<'a>() -> &'a [Self] {
        &[Self::Ec2, Self::Elb]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Self::Ec2 => PossibleValue::new("ec2").help("The instance's EC2 status checks"),
            Self::Elb => PossibleValue::new("elb").help("The load balancer's target health checks"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command line spells each value as the library does (in routes
    /// specs, the state and the reports).
    #[test]
    fn spellings_agree_with_the_library() {
        for kind in CheckKind::ALL {
            let value = kind.to_possible_value().map(|v| v.get_name().to_owned());
            assert_eq!(value.as_deref(), Some(kind.name()));
            assert_eq!(
                serde_json::to_value(kind).ok(),
                Some(serde_json::Value::from(kind.name()))
            );
        }
        for policy in InsufficientData::value_variants() {
            assert_eq!(
                serde_json::to_value(policy).ok(),
                Some(serde_json::Value::from(policy.name()))
            );
        }
    }
}
