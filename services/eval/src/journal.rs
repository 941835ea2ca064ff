//! An append-only journal of finished model calls, so a long evaluation that is
//! interrupted resumes where it stopped instead of starting over.
//!
//! One JSON object per line. The first line names the run (its `fingerprint`); a
//! journal written by a different run is refused rather than silently mixed in. A
//! torn last line (the process died mid-write) is ignored: that call is redone.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// `doing`: opening, reading or writing.
    #[error("{doing} {}", path.display())]
    Io {
        doing: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{} was written by a run with other inputs or settings; \
         use another --out or delete it to start over",
        path.display()
    )]
    OtherRun { path: PathBuf },
    #[error(
        "{} is not an evaluation journal (bad first line); delete it to start over",
        path.display()
    )]
    NotAJournal { path: PathBuf },
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// An I/O error while `doing` something to the journal at `path`.
fn io<'a>(doing: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> JournalError + 'a {
    move |source| JournalError::Io {
        doing,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    fingerprint: String,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    stage: String,
    step: usize,
    output: String,
    /// How long the call took (absent in journals written before this field existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seconds: Option<f64>,
}

/// The journal of one run, open for appending, with the calls recorded so far.
pub struct Journal {
    path: PathBuf,
    file: File,
    done: HashMap<(String, usize), String>,
    /// Seconds of the recorded calls that carry a duration, and how many do not.
    seconds: f64,
    untimed: usize,
}

impl Journal {
    /// Opens (or starts) the journal at `path` for the run named by `fingerprint`.
    pub fn open(path: &Path, fingerprint: &str) -> Result<Self, JournalError> {
        let mut done = HashMap::new();
        let (mut seconds, mut untimed) = (0.0, 0);
        // An empty file is a journal whose run died before writing its first line.
        let exists = std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
        if exists {
            let file = File::open(path).map_err(io("opening", path))?;
            let mut lines = BufReader::new(file).lines();
            let header = lines.next().transpose().map_err(io("reading", path))?;
            let header: Option<Header> = header.and_then(|l| serde_json::from_str(&l).ok());
            match header {
                Some(h) if h.fingerprint == fingerprint => {}
                Some(_) => {
                    return Err(JournalError::OtherRun {
                        path: path.to_path_buf(),
                    })
                }
                None => {
                    return Err(JournalError::NotAJournal {
                        path: path.to_path_buf(),
                    })
                }
            }
            for line in lines {
                let line = line.map_err(io("reading", path))?;
                if let Ok(e) = serde_json::from_str::<Entry>(&line) {
                    match e.seconds {
                        Some(s) => seconds += s,
                        None => untimed += 1,
                    }
                    done.insert((e.stage, e.step), e.output);
                }
            }
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io("opening", path))?;
        if !exists {
            let header = serde_json::to_string(&Header {
                fingerprint: fingerprint.to_string(),
            })?;
            writeln!(file, "{header}").map_err(io("writing", path))?;
        } else if std::fs::read(path).map_err(io("reading", path))?.last() != Some(&b'\n') {
            // A torn last line has no newline: start the next entry on a line of its own.
            writeln!(file).map_err(io("writing", path))?;
        }
        Ok(Journal {
            path: path.to_path_buf(),
            file,
            done,
            seconds,
            untimed,
        })
    }

    /// The output recorded for `stage`/`step` by an earlier run, if any.
    pub fn get(&self, stage: &str, step: usize) -> Option<&str> {
        self.done
            .get(&(stage.to_string(), step))
            .map(String::as_str)
    }

    /// How many calls are recorded.
    pub fn len(&self) -> usize {
        self.done.len()
    }

    /// Whether no call is recorded yet (a new run).
    pub fn is_empty(&self) -> bool {
        self.done.is_empty()
    }

    /// Model time of every recorded call that carries one, and how many do not.
    pub fn seconds(&self) -> (f64, usize) {
        (self.seconds, self.untimed)
    }

    /// Records a finished call. Each line is written in one `write` and synced to disk,
    /// so a crash (of the process or the machine) loses at most the call in progress.
    pub fn record(
        &mut self,
        stage: &str,
        step: usize,
        output: &str,
        seconds: f64,
    ) -> Result<(), JournalError> {
        let mut line = serde_json::to_string(&Entry {
            stage: stage.to_string(),
            step,
            output: output.to_string(),
            seconds: Some(seconds),
        })?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.sync_data())
            .map_err(io("writing", &self.path))?;
        self.done
            .insert((stage.to_string(), step), output.to_string());
        self.seconds += seconds;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resumes_recorded_calls_and_ignores_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        {
            let mut j = Journal::open(&path, "run-a").unwrap();
            j.record("planner", 0, "Next: caller", 1.5).unwrap();
            j.record("answer", 0, "Action: x", 2.0).unwrap();
        }
        // A crash mid-write leaves half a line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"stage":"planner","step":1,"out"#).unwrap();
        drop(f);

        let mut j = Journal::open(&path, "run-a").unwrap();
        assert_eq!(j.len(), 2);
        assert_eq!(j.get("planner", 0), Some("Next: caller"));
        assert_eq!(j.get("planner", 1), None);
        j.record("planner", 1, "Next: give up", 0.5).unwrap();
        let j = Journal::open(&path, "run-a").unwrap();
        assert_eq!(j.get("planner", 1), Some("Next: give up"));
        assert_eq!(j.len(), 3);
        assert_eq!(j.seconds(), (4.0, 0));
    }

    #[test]
    fn refuses_a_journal_from_another_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        Journal::open(&path, "run-a").unwrap();
        let err = Journal::open(&path, "run-b").err().unwrap().to_string();
        assert!(err.contains("other inputs or settings"), "{err}");
    }
}
