//! `switchyard`: what a pipeline needs around the steps rather than inside
//! them: the deployment lock, the release history, state file checks, and
//! regional record groups declared in a routes spec.

fn main() -> std::process::ExitCode {
    switchyard::step::main::<switchyard::commands::admin::Admin>()
}
