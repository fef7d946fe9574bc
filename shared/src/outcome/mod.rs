//! How a step ends: its exit code (the same table for every step), the
//! failure that explains a non-zero one, and the report it prints.
//!
//! A leaf module: it knows nothing of the state, the providers or the command
//! line. Domain errors implement [`ExitStatus`] to say which code they stand
//! for; [`report::emit`] is the one place that prints a step's end.

pub mod report;

use std::fmt::Write as _;

pub use report::{OutputFormat, StepReport};

/// A step's exit code (see DESIGN.md, "Command-line conventions").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 0: done.
    Done,
    /// 1: a check failed (unhealthy, gate failed); nothing left half-done.
    CheckFailed,
    /// 2: usage or bad input; nothing was changed.
    Usage,
    /// 3: provider or infrastructure error after retries.
    Provider,
    /// 4: aborted and rolled back; traffic is back where it was.
    RolledBack,
    /// 5: conflict: another deployment holds the lock, or the state forbids the step.
    Conflict,
    /// 130: interrupted; temporary resources cleaned up.
    Interrupted,
}

impl Code {
    /// Every code, in numeric order.
    pub const ALL: [Code; 7] = [
        Self::Done,
        Self::CheckFailed,
        Self::Usage,
        Self::Provider,
        Self::RolledBack,
        Self::Conflict,
        Self::Interrupted,
    ];

    /// What the code tells the caller, in one sentence (man pages, docs).
    pub fn meaning(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::CheckFailed => "a check failed (unhealthy, gate failed); nothing left half-done",
            Self::Usage => "usage or bad input; nothing was changed",
            Self::Provider => {
                "provider or infrastructure error after retries (AWS, network, HAProxy)"
            }
            Self::RolledBack => "aborted and rolled back: traffic is back where it was",
            Self::Conflict => {
                "conflict: another deployment holds the lock, or the state forbids the step"
            }
            Self::Interrupted => "interrupted; temporary resources cleaned up",
        }
    }

    /// The number the process exits with.
    pub fn number(self) -> u8 {
        match self {
            Self::Done => 0,
            Self::CheckFailed => 1,
            Self::Usage => 2,
            Self::Provider => 3,
            Self::RolledBack => 4,
            Self::Conflict => 5,
            Self::Interrupted => 130,
        }
    }
}

/// Errors that know which exit code they stand for.
pub trait ExitStatus {
    /// The exit code this error ends a step with.
    fn exit_code(&self) -> Code;
}

/// A failed step: the exit code and the error that explains it.
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub code: Code,
    /// What went wrong, with its causes.
    pub error: anyhow::Error,
}

impl Failure {
    /// A failure with an explicit code.
    pub fn new(code: Code, error: impl Into<anyhow::Error>) -> Self {
        Self {
            code,
            error: error.into(),
        }
    }

    /// A failure with `code` and a message of its own.
    pub fn message(code: Code, message: impl std::fmt::Display) -> Self {
        Self::new(code, anyhow::anyhow!("{message}"))
    }

    /// Bad input (exit 2).
    pub fn usage(message: impl std::fmt::Display) -> Self {
        Self::message(Code::Usage, message)
    }

    /// The error and its causes as one line: `a: b: c`.
    pub fn text(&self) -> String {
        chain(&self.error)
    }
}

impl<E> From<E> for Failure
where
    E: ExitStatus + std::error::Error + Send + Sync + 'static,
{
    fn from(error: E) -> Self {
        Self {
            code: error.exit_code(),
            error: error.into(),
        }
    }
}

/// The error and its causes as one message: `a: b: c`.
pub fn chain(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for (i, cause) in error.chain().enumerate() {
        if i > 0 {
            text.push_str(": ");
        }
        let _ = write!(text, "{cause}");
    }
    text
}
