//! The state document: one versioned JSON file per deployment, passed from stage
//! to stage. [`document`] holds the types, [`store`] reads and writes the file
//! atomically, [`journal`] records every change a step makes.

pub mod document;
pub mod history;
pub mod journal;
pub mod location;
pub mod merge;
pub mod s3;
pub mod store;
pub mod validate;

pub use document::{
    Deployment, EndpointVerdict, Health, Host, Image, ProbeRoute, RegionalStack, Role, RouteState,
    ShiftProgress, ShiftStatus, Stack, StateDocument, Verdict, Via, Weights, SCHEMA,
};
pub use journal::{steps, Change, JournalEntry, Outcome};
pub use location::StateLocation;
pub use store::{StateError, StateFile};

/// The JSON Schema of the state document, as published in `schema/state-v1.schema.json`.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(StateDocument);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
