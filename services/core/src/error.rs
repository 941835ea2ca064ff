/// Errors of the agent core: bad input data, named with what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("invalid {what}: {message}")]
    Invalid { what: String, message: String },

    #[error("{0}")]
    Other(String),
}

impl CoreError {
    pub fn invalid(what: impl Into<String>, message: impl std::fmt::Display) -> Self {
        CoreError::Invalid {
            what: what.into(),
            message: message.to_string(),
        }
    }
}

pub type Result<T> = std::result::Result<T, CoreError>;
