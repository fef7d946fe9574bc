//! Deciding whether a stack is healthy: HTTP probes and the gates that a
//! traffic shift must pass before it moves on.

pub mod gate;
pub mod probe;

pub use gate::{Gate, GatePolicy, GateVerdict};
pub use probe::{HttpProbe, ProbeResult};
