//! Every executable's `--help` is its documented contract: pinned here as
//! snapshots, so a changed flag is a visible diff.

use clap::CommandFactory;

use super::admin::SwitchyardArgs;
use super::bake_ami::BakeAmiArgs;
use super::deploy_standby::DeployStandbyArgs;
use super::register_host::RegisterHostArgs;
use super::shift_weight::ShiftWeightArgs;
use super::verify_health::VerifyHealthArgs;

/// The long help of `T`'s (sub)command at `path`, 100 columns wide.
fn help<T: CommandFactory>(path: &[&str]) -> String {
    let mut command = T::command().term_width(100);
    command.build();
    let mut sub = &mut command;
    for name in path {
        sub = sub.find_subcommand_mut(name).unwrap();
    }
    sub.render_long_help().to_string()
}

#[test]
fn shift_weight() {
    ShiftWeightArgs::command().debug_assert();
    insta::assert_snapshot!("shift-weight-help", help::<ShiftWeightArgs>(&[]));
}

#[test]
fn verify_health() {
    VerifyHealthArgs::command().debug_assert();
    insta::assert_snapshot!("verify-health-help", help::<VerifyHealthArgs>(&[]));
}

#[test]
fn bake_ami() {
    BakeAmiArgs::command().debug_assert();
    insta::assert_snapshot!("bake-ami-help", help::<BakeAmiArgs>(&[]));
    insta::assert_snapshot!("bake-ami-sweep-help", help::<BakeAmiArgs>(&["sweep"]));
}

#[test]
fn register_host() {
    RegisterHostArgs::command().debug_assert();
    insta::assert_snapshot!("register-host-help", help::<RegisterHostArgs>(&[]));
    insta::assert_snapshot!(
        "register-host-join-help",
        help::<RegisterHostArgs>(&["join"])
    );
    insta::assert_snapshot!(
        "register-host-leave-help",
        help::<RegisterHostArgs>(&["leave"])
    );
    insta::assert_snapshot!(
        "register-host-list-help",
        help::<RegisterHostArgs>(&["list"])
    );
    insta::assert_snapshot!(
        "register-host-user-data-help",
        help::<RegisterHostArgs>(&["user-data"])
    );
}

#[test]
fn switchyard() {
    SwitchyardArgs::command().debug_assert();
    insta::assert_snapshot!("switchyard-help", help::<SwitchyardArgs>(&[]));
    insta::assert_snapshot!(
        "switchyard-route-apply-help",
        help::<SwitchyardArgs>(&["route", "apply"])
    );
    insta::assert_snapshot!(
        "switchyard-lock-status-help",
        help::<SwitchyardArgs>(&["lock", "status"])
    );
}

#[test]
fn deploy_standby() {
    DeployStandbyArgs::command().debug_assert();
    insta::assert_snapshot!("deploy-standby-help", help::<DeployStandbyArgs>(&[]));
    insta::assert_snapshot!(
        "deploy-standby-retire-help",
        help::<DeployStandbyArgs>(&["retire"])
    );
}
