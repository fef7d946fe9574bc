//! One module per executable: each checks its flags (`crate::cli`) into
//! typed settings and runs the library with them, as a
//! [`crate::step::Command`] that the runner drives.

pub mod route;
pub mod shift_weight;
