//! The command line, and nothing else: clap's argument structs for every
//! executable (the flags every step shares in [`args`], a route's flags in
//! [`route`], one module per executable), how clap spells the library's
//! closed sets ([`values`]), and completions and man pages generated from
//! these definitions ([`generate`]). Checking flags into settings is each
//! command's job (`crate::commands`); nothing below the commands imports
//! this module.

pub mod admin;
pub mod args;
pub mod bake_ami;
pub mod deploy_standby;
pub mod generate;
pub mod register_host;
pub mod route;
pub mod values;

pub use args::{parse_duration, CommonArgs, LockArgs, StepArgs};
pub mod shift_weight;
pub mod verify_health;

#[cfg(test)]
mod tests;
