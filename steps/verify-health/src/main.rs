//! `verify-health`: decide whether a stack is healthy, from HTTP(S) probes and
//! CloudWatch alarms; and manage the Route53 health checks of a record group.

fn main() -> std::process::ExitCode {
    switchyard::step::main::<switchyard::commands::verify_health::VerifyHealth>()
}
