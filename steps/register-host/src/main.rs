//! `register-host`: a host joins the fleet with its labels, and leaves it
//! cleanly; the fleet by labels; the cloud-init user-data that does both for
//! every host a launch template starts.

fn main() -> std::process::ExitCode {
    switchyard::step::main::<switchyard::commands::register_host::RegisterHost>()
}
