//! An append-only journal of finished model calls, so a long evaluation that is
//! interrupted resumes where it stopped instead of starting over.
//!
//! One JSON object per line. The first line names the run (its `fingerprint`); a
//! journal written by a different run is refused rather than silently mixed in. A
//! torn last line (the process died mid-write) is cut off and that call redone; any
//! other damaged line is an error (`umi_durable::JsonLines` reads it).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
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
    /// A damaged line inside the journal (a torn last line is not an error: its call is
    /// made again).
    #[error("resuming from a damaged evaluation journal (delete it to start over): {0}")]
    Damaged(#[source] umi_durable::ReadError),
    /// The journal could not be read at all.
    #[error(transparent)]
    Unreadable(umi_durable::ReadError),
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
        let mut lines = umi_durable::JsonLines::open(path).map_err(JournalError::Unreadable)?;
        if exists {
            let header: Option<Header> = lines.next_record().ok().flatten();
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
            while let Some(e) = lines
                .next_record::<Entry>()
                .map_err(JournalError::Damaged)?
            {
                match e.seconds {
                    Some(s) => seconds += s,
                    None => untimed += 1,
                }
                done.insert((e.stage, e.step), e.output);
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
        } else {
            // The next entry starts on a line of its own, with no torn one before it.
            lines
                .ready_to_append(&file)
                .map_err(JournalError::Unreadable)?;
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
    fn a_line_torn_inside_a_multi_byte_character_is_redone_and_the_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        {
            let mut j = Journal::open(&path, "run-a").unwrap();
            j.record("planner", 0, "Next: caller — ünïcode", 1.0)
                .unwrap();
            j.record("caller", 0, "Action: café", 2.0).unwrap();
        }
        // The crash comes after the first byte of "é" (0xc3 0xa9): not valid UTF-8.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"stage\":\"planner\",\"step\":1,\"output\":\"caf\xc3")
            .unwrap();
        drop(f);

        let mut j = Journal::open(&path, "run-a").unwrap();
        assert_eq!(j.len(), 2);
        assert_eq!(j.get("planner", 0), Some("Next: caller — ünïcode"));
        assert_eq!(j.get("caller", 0), Some("Action: café"));
        assert_eq!(j.get("planner", 1), None, "the torn call is redone");
        j.record("planner", 1, "Next: café", 0.5).unwrap();
        drop(j);
        // The torn bytes are gone, not left mid-file under the redone call.
        let j = Journal::open(&path, "run-a").unwrap();
        assert_eq!(j.len(), 3);
        assert_eq!(j.get("planner", 1), Some("Next: café"));
        assert_eq!(j.seconds(), (3.5, 0));
        let text = std::fs::read(&path).unwrap();
        assert!(
            std::str::from_utf8(&text).is_ok(),
            "the torn bytes were left"
        );
    }

    #[test]
    fn a_damaged_line_inside_the_journal_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        {
            let mut j = Journal::open(&path, "run-a").unwrap();
            j.record("planner", 0, "Next: caller", 1.0).unwrap();
        }
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"stage\":\"planner\",\n").unwrap();
        drop(f);
        let err = format!("{:#}", Journal::open(&path, "run-a").err().unwrap());
        assert!(err.contains("journal.jsonl, line 3"), "{err}");
        assert!(err.contains("delete it to start over"), "{err}");
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
