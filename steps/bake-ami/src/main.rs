//! `bake-ami`: a machine image baked from a base image and a provisioning
//! script, reused when nothing changed, copied to other regions; and the
//! sweep of what killed bakes left behind.

fn main() -> std::process::ExitCode {
    switchyard::step::main::<switchyard::commands::bake_ami::BakeAmi>()
}
