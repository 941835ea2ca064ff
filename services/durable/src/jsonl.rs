//! Reading an append-only journal of JSON lines, one record a line, that a crash may
//! have cut short. The rule, for every journal in umi: a last line without its newline
//! that does not parse is torn (the process died writing it) and is dropped; any other
//! line that does not parse is damage, an error naming the file and the line. Lines are
//! bytes until parsed, so a tear inside a multi-byte character is a torn line like any
//! other rather than an I/O error. Blank lines are skipped.
//!
//! Records are read one at a time, each as the type the caller asks for, so a journal
//! may start with a header of another type than its entries.

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}, line {line}: {message}", path.display())]
    Malformed {
        path: PathBuf,
        /// 1-based.
        line: usize,
        message: String,
    },
}

/// Where a torn last line was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Torn {
    /// 1-based.
    pub line: usize,
    /// The byte it starts at: the length of the journal without it.
    pub offset: u64,
}

/// A journal read into memory, handing out its records in order.
pub struct JsonLines {
    path: PathBuf,
    bytes: Vec<u8>,
    /// Where the next line starts.
    next: usize,
    /// Lines handed out or skipped so far.
    line: usize,
    torn: Option<Torn>,
}

impl JsonLines {
    /// Reads the journal at `path`; a missing file is an empty journal.
    pub fn open(path: &Path) -> Result<JsonLines, ReadError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(ReadError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Ok(JsonLines::from_bytes(path, bytes))
    }

    /// A journal's contents, read elsewhere; `path` names it in errors.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> JsonLines {
        JsonLines {
            path: path.to_path_buf(),
            bytes,
            next: 0,
            line: 0,
            torn: None,
        }
    }

    /// The next record, as a `T`; None at the end of the journal, or at a torn last line
    /// (which [`JsonLines::torn`] then reports).
    pub fn next_record<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ReadError> {
        while self.next < self.bytes.len() {
            let start = self.next;
            let rest = &self.bytes[start..];
            let (line, ended) = match rest.iter().position(|&b| b == b'\n') {
                Some(newline) => (&rest[..newline], true),
                None => (rest, false),
            };
            self.next = start + line.len() + usize::from(ended);
            self.line += 1;
            if line.trim_ascii().is_empty() {
                continue;
            }
            match serde_json::from_slice::<T>(line) {
                Ok(record) => return Ok(Some(record)),
                // Only the last line lacks its newline, and a crash tears only the last.
                Err(_) if !ended => {
                    self.torn = Some(Torn {
                        line: self.line,
                        offset: start as u64,
                    });
                    return Ok(None);
                }
                Err(e) => {
                    return Err(ReadError::Malformed {
                        path: self.path.clone(),
                        line: self.line,
                        message: e.to_string(),
                    })
                }
            }
        }
        Ok(None)
    }

    /// The torn last line, once reading has reached it.
    pub fn torn(&self) -> Option<Torn> {
        self.torn
    }

    /// Readies `file`, this journal opened for writing, for appending to what was read:
    /// a torn last line is cut off (so it never sits mid-file under the next record) and
    /// a whole last line without its newline is given one. Call it once every record
    /// has been read.
    pub fn ready_to_append(&self, file: &File) -> Result<(), ReadError> {
        debug_assert!(self.next >= self.bytes.len(), "records left unread");
        let io = |source| ReadError::Io {
            path: self.path.clone(),
            source,
        };
        if let Some(torn) = self.torn {
            file.set_len(torn.offset).map_err(io)?;
        } else if self.bytes.last().is_some_and(|&b| b != b'\n') {
            (&*file).write_all(b"\n").map_err(io)?;
        } else {
            return Ok(());
        }
        file.sync_data().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use std::fs::OpenOptions;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Deserialize)]
    struct Entry {
        text: String,
    }

    fn entry(text: &str) -> Entry {
        Entry { text: text.into() }
    }

    fn read_all(lines: &mut JsonLines) -> Result<Vec<Entry>, ReadError> {
        let mut entries = Vec::new();
        while let Some(e) = lines.next_record()? {
            entries.push(e);
        }
        Ok(entries)
    }

    #[test]
    fn a_last_line_torn_inside_a_multi_byte_character_is_dropped() {
        let mut bytes = "{\"text\":\"ünï\"}\n\n{\"text\":\"b\"}\n"
            .as_bytes()
            .to_vec();
        // The first byte of "é" (0xc3 0xa9), then the crash: not valid UTF-8.
        bytes.extend_from_slice(b"{\"text\":\"caf\xc3");
        let mut lines = JsonLines::from_bytes(Path::new("j.jsonl"), bytes);
        assert_eq!(read_all(&mut lines).unwrap(), [entry("ünï"), entry("b")]);
        assert_eq!(
            lines.torn(),
            Some(Torn {
                line: 4,
                offset: "{\"text\":\"ünï\"}\n\n{\"text\":\"b\"}\n".len() as u64
            })
        );
    }

    #[test]
    fn a_bad_line_with_its_newline_is_an_error_naming_the_file_and_line() {
        for bad in [&b"{\"text\":"[..], b"{\"text\":\"caf\xc3\"}", b"not json"] {
            let mut bytes = b"{\"text\":\"a\"}\n".to_vec();
            bytes.extend_from_slice(bad);
            bytes.extend_from_slice(b"\n{\"text\":\"c\"}\n");
            let mut lines = JsonLines::from_bytes(Path::new("/runs/j.jsonl"), bytes);
            let err = read_all(&mut lines).unwrap_err();
            assert!(matches!(err, ReadError::Malformed { line: 2, .. }), "{err}");
            assert!(
                err.to_string().starts_with("/runs/j.jsonl, line 2: "),
                "{err}"
            );
        }
    }

    #[test]
    fn a_whole_last_line_without_its_newline_is_a_record() {
        let bytes = b"{\"text\":\"a\"}\n{\"text\":\"b\"}  ".to_vec();
        let mut lines = JsonLines::from_bytes(Path::new("j.jsonl"), bytes);
        assert_eq!(read_all(&mut lines).unwrap(), [entry("a"), entry("b")]);
        assert_eq!(lines.torn(), None);
    }

    #[test]
    fn records_of_different_types_are_read_in_turn() {
        #[derive(Deserialize)]
        struct Header {
            run: u32,
        }
        let bytes = b"{\"run\":7}\n{\"text\":\"a\"}\n".to_vec();
        let mut lines = JsonLines::from_bytes(Path::new("j.jsonl"), bytes);
        let header: Header = lines.next_record().unwrap().unwrap();
        assert_eq!(header.run, 7);
        assert_eq!(read_all(&mut lines).unwrap(), [entry("a")]);
    }

    #[test]
    fn a_missing_journal_is_empty_and_an_unreadable_one_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut lines = JsonLines::open(&dir.path().join("none.jsonl")).unwrap();
        assert_eq!(read_all(&mut lines).unwrap(), []);
        let err = JsonLines::open(dir.path()).err().unwrap();
        assert!(matches!(err, ReadError::Io { .. }), "{err}");
    }

    #[test]
    fn appending_after_a_torn_line_or_an_unterminated_one_starts_a_line_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        for (tail, kept) in [
            (&b"{\"text\":\"caf\xc3"[..], 1),
            (b"{\"text\":\"b\"}", 2),
            (b"", 1),
        ] {
            let mut bytes = b"{\"text\":\"a\"}\n".to_vec();
            bytes.extend_from_slice(tail);
            std::fs::write(&path, &bytes).unwrap();
            let mut lines = JsonLines::open(&path).unwrap();
            assert_eq!(read_all(&mut lines).unwrap().len(), kept);
            let mut file = OpenOptions::new().append(true).open(&path).unwrap();
            lines.ready_to_append(&file).unwrap();
            file.write_all(b"{\"text\":\"z\"}\n").unwrap();

            let mut again = JsonLines::open(&path).unwrap();
            let entries = read_all(&mut again).unwrap();
            assert_eq!(entries.len(), kept + 1, "{tail:?}");
            assert_eq!(entries.last(), Some(&entry("z")));
            assert_eq!(again.torn(), None);
        }
    }
}
