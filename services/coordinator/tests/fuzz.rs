//! Property tests over what a coordinator reads from outside: task ids (from any client;
//! they reach logs and the journal) and the task journal (a file a crash may have cut,
//! or anything may have written). Any input: no panic; ids are accepted exactly as the
//! rule says; a journal opens or fails with a clear error; a journal of well-formed
//! records with any crash counts opens, and a task past its crash bounds never runs
//! again. `scripts/fuzz.sh` runs them
//! with a million cases each; CI runs the default 256.

use std::time::Duration;

use proptest::prelude::*;
use umi_coordinator::journal::{TaskJournal, MAX_CRASHES, MAX_UNTRACED_CRASHES};
use umi_coordinator::service::check_task_id;

/// The rule, written out again: a query id of 1 to 128 letters, digits, `_`, `-` or `.`
/// (not only dots), then optionally `#` and 1 to 64 ASCII letters and digits.
fn follows_the_rule(id: &str) -> bool {
    let (query, digest) = match id.split_once('#') {
        Some((q, d)) => (q, Some(d)),
        None => (id, None),
    };
    let query_ok = (1..=128).contains(&query.chars().count())
        && query
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        && !query.chars().all(|c| c == '.');
    let digest_ok = digest.is_none_or(|d| {
        (1..=64).contains(&d.len()) && d.chars().all(|c| c.is_ascii_alphanumeric())
    });
    query_ok && digest_ok
}

fn task_id() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_.-]{1,20}(#[A-Za-z0-9]{1,70})?",
        "[A-Za-z0-9_.#/ -]{0,30}",
        "[\\PC\\n\\r\\t]{0,40}",
        any::<String>(),
    ]
}

proptest! {
    #[test]
    fn task_ids_are_accepted_exactly_as_the_rule_says(id in task_id()) {
        let accepted = check_task_id(&id).is_ok();
        prop_assert_eq!(accepted, follows_the_rule(&id), "{:?}", id);
    }

    #[test]
    fn any_journal_bytes_open_or_fail_clearly(bytes in journal_bytes()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.jsonl");
        std::fs::write(&path, &bytes).unwrap();
        match TaskJournal::open(&path, Duration::from_secs(3600)) {
            Ok(_) => {}
            Err(e) => prop_assert!(e.to_string().contains("tasks.jsonl"), "{}", e),
        }
    }
}

/// A well-formed journal of one task: queued with any crash counts, maybe started,
/// maybe a panic naming it or not, maybe a clean stop.
fn one_task_journal() -> impl Strategy<Value = (u32, u32, bool, Option<bool>, bool)> {
    (
        prop_oneof![0..4u32, Just(u32::MAX - 1), Just(u32::MAX), any::<u32>()],
        prop_oneof![0..12u32, Just(u32::MAX), any::<u32>()],
        any::<bool>(),
        prop::option::of(any::<bool>()),
        any::<bool>(),
    )
}

proptest! {
    #[test]
    fn a_task_past_its_crash_bounds_is_never_run_again(
        (crashes, untraced, started, panic_names_it, stopped) in one_task_journal()
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.jsonl");
        let mut lines = vec![format!(
            r#"{{"record":"queued","id":"a","query":"q","apis":[],"crashes":{crashes},"untraced":{untraced}}}"#
        )];
        if started {
            lines.push(r#"{"record":"started","id":"a"}"#.to_string());
        }
        match panic_names_it {
            Some(true) => lines.push(r#"{"record":"panicked","tasks":["a"],"message":"m"}"#.to_string()),
            Some(false) => lines.push(r#"{"record":"panicked","tasks":[],"message":"m"}"#.to_string()),
            None => {}
        }
        if stopped {
            lines.push(r#"{"record":"stopped"}"#.to_string());
        }
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let (_journal, recovered) = TaskJournal::open(&path, Duration::from_secs(3600))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let crashed = started && !stopped;
        let crashes = crashes.saturating_add(u32::from(crashed && panic_names_it == Some(true)));
        let untraced = untraced.saturating_add(u32::from(crashed && panic_names_it.is_none()));
        let past_bounds = crashes >= MAX_CRASHES || untraced >= MAX_UNTRACED_CRASHES;
        prop_assert_eq!(recovered.unfinished.is_empty(), past_bounds);
        prop_assert_eq!(recovered.ended.len(), usize::from(past_bounds));
    }
}

/// Journal-like bytes: lines of real records, pieces of them, and noise.
fn journal_bytes() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        Just(r#"{"record":"queued","id":"a","query":"q","apis":[]}"#.to_string()),
        Just(r#"{"record":"started","id":"a"}"#.to_string()),
        Just(r#"{"record":"stopped"}"#.to_string()),
        Just(r#"{"record":"panicked","tasks":["a"],"message":"boom"}"#.to_string()),
        Just(r#"{"record":"ended","id":"a","state":"answered","steps":1,"tokens":2,"failure":"","answer":"x","ended_at":1}"#.to_string()),
        Just(r#"{"record":"forgotten","id":"a"}"#.to_string()),
        "[ -~]{0,40}",
        any::<String>(),
    ];
    (
        prop::collection::vec(line, 0..8),
        any::<bool>(),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(lines, cut, at)| {
            let mut bytes = lines.join("\n").into_bytes();
            if cut && !bytes.is_empty() {
                bytes.truncate(at.index(bytes.len()));
            }
            bytes
        })
}
