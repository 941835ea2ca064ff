//! Property tests over the evaluation journal reader (`umi eval static`'s resume file,
//! which a crash may have cut or anything may have written): any bytes open the journal
//! or fail with an error naming the file; never a panic. `scripts/fuzz.sh` runs it
//! with a million cases; CI runs the default 256.

use proptest::prelude::*;
use umi_eval::journal::{Journal, JournalError};

proptest! {
    #[test]
    fn any_bytes_open_or_fail_with_a_typed_error(
        lines in prop::collection::vec(
            prop_oneof![
                "[ -~]{0,60}",
                any::<String>(),
                Just(r#"{"fingerprint":"f"}"#.to_string()),
            ],
            0..6,
        ),
        torn in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let mut bytes = lines.join("\n").into_bytes();
        if torn {
            bytes.pop();
        }
        std::fs::write(&path, &bytes).unwrap();
        match Journal::open(&path, "f") {
            Ok(_) => {}
            // A serde error is about a value, not the file; every other error names it.
            Err(JournalError::Json(_)) => {}
            Err(e) => prop_assert!(e.to_string().contains("journal.jsonl"), "{}", e),
        }
    }
}
