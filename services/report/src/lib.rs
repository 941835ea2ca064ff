//! `umi report`: one self-contained HTML file (no script, no network at view time) of a
//! run directory or a static evaluation's output.
//!
//! - `read.rs` reads what the run left: answer files, `trace.jsonl`, `pass_rate.json`,
//!   `win_rate.json`, or `metrics.json` and `predictions.json`;
//! - `page.rs` writes the page's sections over the charts of `svg.rs` and the search trees
//!   of `tree.rs`; `paper.rs` holds the paper's static table.

mod page;
mod paper;
pub mod read;
mod svg;
mod tree;

pub use page::{render, Options};
pub use read::{read, Report};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{}: {message}", path.display())]
    Unreadable {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("{}: {message}", path.display())]
    NothingToReport {
        path: std::path::PathBuf,
        message: String,
    },
}
