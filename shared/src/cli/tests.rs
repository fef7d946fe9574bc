//! Every executable's `--help` is its documented contract: pinned here as
//! snapshots, so a changed flag is a visible diff.

use clap::CommandFactory;

use super::shift_weight::ShiftWeightArgs;

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
