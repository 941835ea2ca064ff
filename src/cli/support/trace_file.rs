//! A run's `trace.jsonl` (`umi_core::trace`): opened for appending once per run (a torn
//! last line from a crash cut off first), one synced line per finished task.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use umi_core::trace::{TraceLine, TRACE_FILE};

pub struct TraceFile {
    path: PathBuf,
    file: File,
}

impl TraceFile {
    /// Opens (or creates) the trace in `dir`, ready to append after its whole lines.
    pub fn open(dir: &Path) -> anyhow::Result<TraceFile> {
        let path = dir.join(TRACE_FILE);
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let mut lines = umi_durable::JsonLines::open(&path)?;
        while lines.next_record::<TraceLine>()?.is_some() {}
        lines.ready_to_append(&file)?;
        Ok(TraceFile { path, file })
    }

    pub fn append(&mut self, line: &TraceLine) -> anyhow::Result<()> {
        let mut text = serde_json::to_string(line)?;
        text.push('\n');
        self.file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.sync_data())
            .with_context(|| format!("appending to {}", self.path.display()))
    }
}
