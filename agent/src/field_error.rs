//! [`FieldError`]: what a user got wrong in a definition (a check, a
//! service), and where. Shared by [`crate::checks`] and the service
//! registry, which both parse user input field by field; the config and the
//! HTTP API turn it into their own errors.

use thiserror::Error;

/// A definition the user got wrong, and where.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("`{field}`: {message}")]
pub struct FieldError {
    /// Path of the field as the user wrote it: `Check.Interval`,
    /// `services[0].checks[1].interval`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}
