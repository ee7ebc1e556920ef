//! The CLI's error: a message for a person, and the exit code it ends the program with.

use std::fmt;

/// A failure of a subcommand, already worded for the user.
#[derive(Debug)]
pub struct CliError {
    /// What went wrong, with enough context to act on.
    pub message: String,
}

impl CliError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The result of a subcommand.
pub type CliResult<T> = Result<T, CliError>;

/// Adds what was being done to an error, so the message says where it failed.
pub trait Context<T> {
    /// Wraps the error as `"{what}: {error}"`.
    fn context(self, what: impl FnOnce() -> String) -> CliResult<T>;
}

impl<T, E: fmt::Display> Context<T> for Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> CliResult<T> {
        self.map_err(|e| CliError::new(format!("{}: {e}", what())))
    }
}
