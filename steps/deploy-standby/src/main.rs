//! `deploy-standby`: bring the standby stack (blue or green) up at the new
//! version on EC2 Auto Scaling, in one or more regions at once; and retire
//! the old stack once the new one has taken all the traffic.

fn main() -> std::process::ExitCode {
    switchyard::step::main::<switchyard::commands::deploy_standby::DeployStandby>()
}
