//! switchyard: safe, health-gated releases driven from CI.
//!
//! The step executables (`shift-weight`, and the others as they land) are thin
//! command layers over this library: each parses its flags into checked
//! settings and makes one call here, so every decision can be tested in-process.
//!
//! - [`state`]: the versioned state document handed from step to step.
//! - [`cli`]: the command-line contract shared by every step (flags, exit codes, output).
//! - [`aws`]: SDK configuration, retry policy and service helpers.
//! - [`health`]: HTTP probes and the gates that decide whether traffic may move on.
//! - [`host`]: hosts joining and leaving the fleet with their labels (IMDSv2,
//!   EC2 tags, ELBv2 targets), the fleet view, and the cloud-init user-data.
//! - [`image`]: machine images baked from a base image and a provisioning
//!   script, reused by input hash, copied across regions; the sweep of leftovers.
//! - [`stack`]: the [`stack::StackDriver`] seam that brings a color's stack up and down.
//! - [`traffic`]: the [`traffic::Router`] seam and the weight-shifting engine.

pub mod aws;
pub mod cli;
pub mod health;
pub mod host;
pub mod image;
pub mod stack;
pub mod state;
pub mod traffic;

#[cfg(test)]
mod fuzz_tests;
