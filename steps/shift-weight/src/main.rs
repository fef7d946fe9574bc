//! `shift-weight`: move traffic between stacks or regions, step by step, with
//! health gates and automatic rollback.

fn main() -> std::process::ExitCode {
    switchyard::step::main::<switchyard::commands::shift_weight::ShiftWeight>()
}
