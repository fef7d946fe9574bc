//! Integration and end-to-end tests: the step executables run as processes
//! against real local services (moto's server, HTTP health endpoints), and
//! the real aws CLI cross-checks what they did.

// A scenario reads best as one function, setup to last check.
#![allow(clippy::too_many_lines)]
// Fixture helpers panic on setup failures, like the tests they serve.
#![allow(clippy::unwrap_used)]

mod analysis;
mod bake_ami;
mod deploy_command;
mod deploy_rolling;
mod deploy_standby;
mod docs;
mod dry_runs;
mod envelope;
mod ergonomics;
mod faults;
mod fixture;
mod generate;
mod iam;
mod kill_resume;
mod pipeline;
mod pipelines;
mod regional;
mod register_host;
mod release_pipeline;
mod routers;
mod secrets;
mod shift_weight;
mod state_s3;
mod verify_health;
