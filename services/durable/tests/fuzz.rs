//! Property tests over the journal reader: journals are files a crash may have cut at any
//! byte, or that anything may have written. Any bytes: no panic, and a torn last line is
//! reported where it starts; any journal cut anywhere (inside a multi-byte character
//! too): exactly the whole records before the cut, then the tear. `scripts/fuzz.sh` runs
//! them with a million cases each; CI runs the default 256.

use std::path::Path;

use proptest::prelude::*;
use serde_json::{json, Value};
use umi_durable::JsonLines;

/// Every record `reader` hands out, or the error that stopped it.
fn read_all(reader: &mut JsonLines) -> Result<Vec<Value>, String> {
    let mut records = Vec::new();
    loop {
        match reader.next_record::<Value>() {
            Ok(Some(record)) => records.push(record),
            Ok(None) => return Ok(records),
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn record() -> impl Strategy<Value = Value> {
    (any::<u32>(), "[a-zé€😀 ]{0,12}").prop_map(|(n, s)| json!({"n": n, "s": s}))
}

proptest! {
    #[test]
    fn any_bytes_read_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let len = bytes.len() as u64;
        let mut reader = JsonLines::from_bytes(Path::new("j.jsonl"), bytes);
        let read = read_all(&mut reader);
        if let Some(torn) = reader.torn() {
            prop_assert!(read.is_ok());
            prop_assert!(torn.offset < len);
        }
        if let Err(message) = read {
            prop_assert!(message.contains("j.jsonl"), "{}", message);
        }
    }

    #[test]
    fn a_journal_cut_anywhere_gives_its_whole_records_then_the_tear(
        records in prop::collection::vec(record(), 0..8),
        cut_at in any::<prop::sample::Index>(),
    ) {
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        for r in &records {
            bytes.extend(serde_json::to_vec(r).unwrap());
            ends.push(bytes.len());
            bytes.push(b'\n');
        }
        let cut = cut_at.index(bytes.len() + 1);
        let whole = ends.iter().filter(|&&end| end <= cut).count();
        let line_start = ends[..whole].last().map_or(0, |end| end + 1);
        let mut reader = JsonLines::from_bytes(Path::new("j.jsonl"), bytes[..cut].to_vec());
        let read = read_all(&mut reader).unwrap();
        prop_assert_eq!(&read[..], &records[..whole]);
        // A partial line (some bytes of a record, not all) is the tear, where it starts.
        if cut > line_start {
            let torn = reader.torn().expect("a torn last line");
            prop_assert_eq!(torn.offset, line_start as u64);
            prop_assert_eq!(torn.line, whole + 1);
        } else {
            prop_assert!(reader.torn().is_none());
        }
    }
}
