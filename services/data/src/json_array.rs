//! JSON arrays too big to hold: read one element at a time, and written one element at
//! a time as Python's `json.dump(items, f, indent=2)` lays them out, into a file that
//! replaces its target only when the whole array is written.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::Deserializer as _;
use serde_json::Value;
use umi_core::pyjson;
use umi_durable::{Replacement, WriteError};

use crate::error::{DataError, Result};

/// Bytes gathered before they go to the file.
const FLUSH_AT: usize = 1 << 20;

/// A JSON array written element by element, byte-identical to `json.dump(list, f,
/// indent=2)` (ASCII-escaped, `[]` when empty, no newline at the end).
pub struct ArrayWriter {
    path: PathBuf,
    file: Replacement,
    buf: String,
    len: usize,
}

impl ArrayWriter {
    /// Starts the array; `path` is replaced on [`ArrayWriter::finish`], and left as it
    /// was if the writer is dropped before.
    pub fn create(path: &Path) -> Result<ArrayWriter> {
        Ok(ArrayWriter {
            path: path.to_path_buf(),
            file: Replacement::begin(path)?,
            buf: String::new(),
            len: 0,
        })
    }

    pub fn push(&mut self, item: &Value) -> Result<()> {
        self.buf
            .push_str(if self.len == 0 { "[\n  " } else { ",\n  " });
        pyjson::write_indented(item, 2, 2, &mut self.buf);
        self.len += 1;
        if self.buf.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(())
    }

    /// The file the array replaces.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many elements are written.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Closes the array and puts the file in place.
    pub fn finish(mut self) -> Result<usize> {
        self.buf.push_str(if self.len == 0 { "[]" } else { "\n]" });
        self.flush()?;
        let len = self.len;
        self.file.commit()?;
        Ok(len)
    }

    fn flush(&mut self) -> Result<()> {
        let written = self.file.file().write_all(self.buf.as_bytes());
        self.buf.clear();
        written.map_err(|source| {
            DataError::Write(WriteError {
                path: self.path.clone(),
                source,
            })
        })
    }
}

/// Calls `each` with every element of the JSON array `reader` holds, in order, holding
/// one element at a time. `name` names the input in errors. Stops at the first error
/// `each` returns.
pub fn for_each_element(
    name: &str,
    reader: impl Read,
    mut each: impl FnMut(usize, Value) -> Result<()>,
) -> Result<()> {
    let mut stopped = None;
    let mut de = serde_json::Deserializer::from_reader(reader);
    let read = (&mut de).deserialize_seq(Elements {
        each: &mut each,
        stopped: &mut stopped,
    });
    if let Some(e) = stopped {
        return Err(e);
    }
    read.and_then(|()| de.end())
        .map_err(|e| DataError::invalid(name, format!("not a JSON array: {e}")))
}

struct Elements<'a, F> {
    each: &'a mut F,
    stopped: &'a mut Option<DataError>,
}

impl<'de, F: FnMut(usize, Value) -> Result<()>> Visitor<'de> for Elements<'_, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while let Some(item) = seq.next_element_seed(OneValue)? {
            if let Err(e) = (self.each)(index, item) {
                *self.stopped = Some(e);
                return Err(de::Error::custom("stopped"));
            }
            index += 1;
        }
        Ok(())
    }
}

struct OneValue;

impl<'de> DeserializeSeed<'de> for OneValue {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        serde::Deserialize::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn written(items: &[Value]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        let mut w = ArrayWriter::create(&path).unwrap();
        for item in items {
            w.push(item).unwrap();
        }
        assert_eq!(w.finish().unwrap(), items.len());
        std::fs::read_to_string(&path).unwrap()
    }

    /// The whole array written at once by `dumps_indented` is what `json.dump(indent=2)`
    /// writes (pinned in umi-core); element by element must give the same bytes.
    #[test]
    fn element_by_element_is_the_whole_array_at_once() {
        let items = vec![
            json!({"tools": [], "history": [{"from": "user", "value": "é"}], "n": 1.5}),
            json!([]),
            json!("x"),
            json!({"nested": {"a": [1, {"b": {}}]}}),
        ];
        assert_eq!(
            written(&items),
            pyjson::dumps_indented(&Value::Array(items.clone()), 2)
        );
        assert_eq!(written(&[]), "[]");
    }

    #[test]
    fn elements_are_read_one_at_a_time_in_order() {
        let mut seen = Vec::new();
        for_each_element("t.json", &b"[1, {\"a\": 2}, \"x\"]"[..], |i, v| {
            seen.push((i, v));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![(0, json!(1)), (1, json!({"a": 2})), (2, json!("x"))]
        );
    }

    #[test]
    fn a_broken_array_or_a_refused_element_stops_the_read() {
        let err = for_each_element("t.json", &b"{\"a\": 1}"[..], |_, _| Ok(())).unwrap_err();
        assert!(
            err.to_string().starts_with("t.json: not a JSON array"),
            "{err}"
        );
        let err = for_each_element("t.json", &b"[1, 2] x"[..], |_, _| Ok(())).unwrap_err();
        assert!(err.to_string().contains("trailing"), "{err}");
        let err = for_each_element("t.json", &b"[1, 2, 3]"[..], |i, _| {
            if i == 1 {
                Err(DataError::invalid("record 1", "refused"))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "record 1: refused");
    }

    #[test]
    fn an_unfinished_array_leaves_the_target_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        std::fs::write(&path, "old").unwrap();
        let mut w = ArrayWriter::create(&path).unwrap();
        w.push(&json!(1)).unwrap();
        drop(w);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
