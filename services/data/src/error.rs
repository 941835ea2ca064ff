//! The data pipeline's one error type: a file that could not be read or written, or an
//! input the reference's scripts would not process (named: the file, the record, the
//! field, and what is wrong with it).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(#[from] umi_durable::WriteError),
    #[error("{input}: {problem}")]
    Invalid { input: String, problem: String },
}

impl DataError {
    pub fn invalid(input: impl Into<String>, problem: impl std::fmt::Display) -> Self {
        DataError::Invalid {
            input: input.into(),
            problem: problem.to_string(),
        }
    }

    pub fn read(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Read {
            path: path.into(),
            source,
        }
    }
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;
