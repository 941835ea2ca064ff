use std::path::PathBuf;

/// Everything that can go wrong while loading or running a model.
///
/// Load errors always carry the offending path so that a one-line message
/// tells the user which file is wrong and why.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{path}: {message}")]
    Load { path: PathBuf, message: String },

    #[error("invalid {what}: {message}")]
    InvalidArgument { what: &'static str, message: String },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    /// Shown as its first line only: candle errors may carry a backtrace, which must not
    /// reach clients (the whole error is in `Debug`, for the server's log).
    #[error("model: {}", one_line(&.0.to_string()))]
    Candle(#[from] candle_core::Error),

    #[error("prompt has {prompt} tokens but the model's context is {context} tokens")]
    PromptTooLong { prompt: usize, context: usize },

    /// A batched decode step failed; every sequence in it gets this.
    #[error("decode step: {0}")]
    Step(String),

    #[error("the engine has shut down")]
    Shutdown,

    /// The caller went away while its prompt was being prefilled: the rest of the prefill
    /// was skipped.
    #[error("the request was cancelled during prefill")]
    Abandoned,

    /// Admission control: the queue is full; the request was not taken.
    #[error("overloaded: {waiting} requests already wait (the limit is {limit}); try another replica or later")]
    Overloaded { waiting: usize, limit: usize },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, EngineError>;

impl EngineError {
    pub fn load(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        EngineError::Load {
            path: path.into(),
            message: one_line(&message.to_string()),
        }
    }

    pub fn invalid(what: &'static str, message: impl std::fmt::Display) -> Self {
        EngineError::InvalidArgument {
            what,
            message: message.to_string(),
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EngineError::Io {
            path: path.into(),
            source,
        }
    }
}

/// candle errors can carry backtraces and multi-line context; users get the first line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candle_errors_reach_clients_without_their_backtrace() {
        let traced = candle_core::Error::WithBacktrace {
            inner: Box::new(candle_core::Error::Msg("shape mismatch in matmul".into())),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        assert!(
            traced.to_string().contains('\n'),
            "the fixture carries a backtrace"
        );
        let shown = EngineError::from(traced).to_string();
        assert_eq!(shown, "model: shape mismatch in matmul");
        assert_eq!(
            EngineError::load("m.gguf", "bad\n   0: frame").to_string(),
            "m.gguf: bad"
        );
    }
}
