//! One module per executable: each checks its flags (`crate::cli`) into
//! typed settings and runs the library with them, as a
//! [`crate::step::Command`] that the runner drives.

pub mod admin;
pub mod bake_ami;
pub mod deploy_standby;
pub mod register_host;
pub mod route;
pub mod shift_weight;
pub mod verify_health;
