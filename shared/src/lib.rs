//! switchyard: safe, health-gated releases driven from CI.
//!
//! Every executable is a few lines calling [`step::main`] with one of the
//! [`commands`]; everything else lives here, in layers that import only
//! downwards (a test in `architecture_tests` keeps it so):
//!
//! - leaves, knowing nothing of the domain or the command line:
//!   [`outcome`] (exit codes, failures, the one reporter), [`wait`] (backoff,
//!   deadlines, signals, progress lines) and [`hooks`];
//! - the domain: [`state`] (the versioned state document), [`aws`] (SDK
//!   configuration, retries, one file per service), [`health`] (probes,
//!   gates, alarms, Route53 health checks, verdicts), [`host`] (hosts joining
//!   and leaving the fleet), [`image`] (baking machine images), [`lease`]
//!   (one run at a time: a route's lease, a service's release lock), [`stack`] (the
//!   [`stack::StackDriver`] seam, standby and rolling deployments) and
//!   [`traffic`] (the [`traffic::Router`] seam, the shift engine, regional
//!   routes);
//! - [`cli`]: clap's argument structs, and nothing else;
//! - [`commands`]: one module per executable, checking its flags into
//!   settings and running the domain;
//! - [`step`]: the runner every executable uses.

pub mod aws;
pub mod cli;
pub mod commands;
pub mod health;
pub mod hooks;
pub mod host;
pub mod image;
pub mod lease;
pub mod outcome;
pub mod stack;
pub mod state;
pub mod step;
pub mod traffic;
pub mod wait;

#[cfg(test)]
mod architecture_tests;
#[cfg(test)]
mod fuzz_tests;
