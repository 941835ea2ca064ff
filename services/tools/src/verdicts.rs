//! Verdicts kept between evaluations of the pass rate: a JSON-lines file, one verdict a
//! line, appended and synced as each arrives, keyed by what decides it (the query id and
//! text, a SHA-256 of the converted answer the judge reads, the judge's model and the
//! evaluation's index). A re-evaluation asks the judge only about what changed; a rerun
//! over unchanged answers asks nothing and gives the same result.
//!
//! StableToolBench's `eval_pass_rate.py` keeps its result file and, without
//! `--overwrite`, skips the query ids already in it (whatever their answer now); here an
//! answer that changed is judged again.

use std::collections::HashMap;
use std::hash::Hash;
use std::io::Write;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use umi_core::pass_rate::{AnswerStatus, Converted, Judge, JudgeError};
use umi_core::pyjson;

use crate::judge::{judge_with_backoff, Backoff};

#[derive(Debug, thiserror::Error)]
pub enum VerdictError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}, line {line}: not a verdict ({message})")]
    Malformed {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("judging query {query_id}: {error}")]
    Judge { query_id: String, error: JudgeError },
}

/// What a verdict is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VerdictKey {
    pub query_id: String,
    pub query: String,
    /// SHA-256 (hex) of the converted answer as the judge reads it (`json.dumps(answer)`:
    /// method, steps, final answer and details).
    pub answer_sha256: String,
    pub judge_model: String,
    /// Which of the `--evaluate-times` judgments (0-based).
    pub evaluation: usize,
}

impl VerdictKey {
    pub fn new(
        query_id: &str,
        converted: &Converted,
        judge_model: &str,
        evaluation: usize,
    ) -> Self {
        VerdictKey {
            query_id: query_id.to_string(),
            query: converted.query.clone(),
            answer_sha256: answer_sha256(converted),
            judge_model: judge_model.to_string(),
            evaluation,
        }
    }
}

/// SHA-256 (hex) of `json.dumps(answer)` of a converted answer.
pub fn answer_sha256(converted: &Converted) -> String {
    sha256(&pyjson::dumps(&converted.answer))
}

/// SHA-256 (hex) of `text`.
pub fn sha256(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Serialize, Deserialize)]
#[serde(bound(deserialize = "K: DeserializeOwned, V: DeserializeOwned"))]
struct Line<K, V> {
    #[serde(flatten)]
    key: K,
    verdict: V,
}

/// Judgments of a file, keyed by what decides each, and the file to append new ones to:
/// the pass rate's verdicts (`VerdictStore`) and the win rate's preferences
/// (`preferences::PreferenceStore`).
pub struct Judgments<K, V> {
    path: PathBuf,
    known: HashMap<K, V>,
    file: std::fs::File,
}

/// The pass rate's verdicts.
pub type VerdictStore = Judgments<VerdictKey, AnswerStatus>;

impl<K, V> Judgments<K, V>
where
    K: Serialize + DeserializeOwned + Eq + Hash + Clone,
    V: Serialize + DeserializeOwned + Copy,
{
    /// Opens (or creates) `path` and reads its judgments (a later line of one key wins).
    /// A last line cut short (a crash mid-write) is dropped from the file; any other line
    /// that is no judgment is an error (`umi_durable::JsonLines`'s rule).
    pub fn open(path: &Path) -> Result<Self, VerdictError> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|source| VerdictError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        let mut lines = umi_durable::JsonLines::open(path).map_err(unreadable)?;
        let mut known = HashMap::new();
        while let Some(parsed) = lines.next_record::<Line<K, V>>().map_err(unreadable)? {
            known.insert(parsed.key, parsed.verdict);
        }
        if let Some(torn) = lines.torn() {
            tracing::warn!(path = %path.display(), line = torn.line, "dropping a verdict cut short");
        }
        lines.ready_to_append(&file).map_err(unreadable)?;
        Ok(Judgments {
            path: path.to_path_buf(),
            known,
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    pub fn get(&self, key: &K) -> Option<V> {
        self.known.get(key).copied()
    }

    /// Appends one judgment and syncs it to disk before returning.
    pub fn record(&mut self, key: K, verdict: V) -> Result<(), VerdictError> {
        let io = |source| VerdictError::Io {
            path: self.path.clone(),
            source,
        };
        let mut text = serde_json::to_string(&Line {
            key: key.clone(),
            verdict,
        })
        .map_err(|e| io(std::io::Error::other(e)))?;
        text.push('\n');
        self.file.write_all(text.as_bytes()).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.known.insert(key, verdict);
        Ok(())
    }
}

fn unreadable(e: umi_durable::ReadError) -> VerdictError {
    match e {
        umi_durable::ReadError::Io { path, source } => VerdictError::Io { path, source },
        umi_durable::ReadError::Malformed {
            path,
            line,
            message,
        } => VerdictError::Malformed {
            path,
            line,
            message,
        },
    }
}

/// The verdicts of a set of answers, and where they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    /// Per answer, one per evaluation.
    pub verdicts: Vec<Vec<AnswerStatus>>,
    /// Judgments the judge was asked for (each one or two calls, and their retries).
    pub asked: usize,
    /// Judgments read from the verdict file.
    pub reused: usize,
    /// Judgments decided without the judge (no Finish, an empty answer, a give-up).
    pub without_judge: usize,
}

/// Every answer judged `evaluate_times` times: the verdicts `store` holds are reused, the
/// rest asked of `judge` (`concurrency` judgments at once, each with `backoff`) and
/// recorded as they arrive, so an interrupted evaluation keeps what it had.
pub async fn judge_all(
    answers: &[(String, Converted)],
    judge: &dyn Judge,
    judge_model: &str,
    store: &mut VerdictStore,
    evaluate_times: usize,
    concurrency: usize,
    backoff: &Backoff,
) -> Result<Judged, VerdictError> {
    let mut verdicts: Vec<Vec<Option<AnswerStatus>>> =
        vec![vec![None; evaluate_times]; answers.len()];
    let mut todo = Vec::new();
    let (mut reused, mut without_judge) = (0, 0);
    for (q, (id, converted)) in answers.iter().enumerate() {
        if let Some(status) = converted.verdict_without_judge() {
            verdicts[q] = vec![Some(status); evaluate_times];
            without_judge += evaluate_times;
            continue;
        }
        for (run, slot) in verdicts[q].iter_mut().enumerate() {
            let key = VerdictKey::new(id, converted, judge_model, run);
            match store.get(&key) {
                Some(status) => {
                    *slot = Some(status);
                    reused += 1;
                }
                None => todo.push((q, run, key)),
            }
        }
    }
    let asked = todo.len();
    let mut results = futures::stream::iter(todo.into_iter().map(|(q, run, key)| {
        let converted = &answers[q].1;
        async move {
            let verdict = judge_with_backoff(converted, judge, backoff).await;
            (q, run, key, verdict)
        }
    }))
    .buffer_unordered(concurrency.max(1));
    while let Some((q, run, key, verdict)) = results.next().await {
        let verdict = verdict.map_err(|error| VerdictError::Judge {
            query_id: answers[q].0.clone(),
            error,
        })?;
        store.record(key, verdict)?;
        verdicts[q][run] = Some(verdict);
    }
    Ok(Judged {
        verdicts: verdicts
            .into_iter()
            .map(|v| v.into_iter().flatten().collect())
            .collect(),
        asked,
        reused,
        without_judge,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::Value;
    use umi_core::agent::BoxFuture;
    use umi_core::pass_rate::{answer_files, convert, result_file, JudgeCall};

    use super::*;

    fn fixture_answers(method: &str) -> Vec<(String, Converted)> {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/pass-rate/answers");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        answer_files(&names, method)
            .0
            .into_iter()
            .map(|f| {
                let value: Value =
                    serde_json::from_slice(&std::fs::read(dir.join(&f.file_name)).unwrap())
                        .unwrap();
                (f.query_id, convert(&value, method))
            })
            .collect()
    }

    /// A counting judge (a test double): Unsure on the first call of a judgment whose
    /// query mentions Zürich, then Solved; counts every call.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl Judge for Counting {
        fn call<'a>(&'a self, call: JudgeCall) -> BoxFuture<'a, Result<Value, JudgeError>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            let status = if call.function == "check_answer_status" && call.prompt.contains("Zürich")
            {
                "Unsure"
            } else {
                "Solved"
            };
            let arguments = serde_json::json!({"answer_status": status, "reason": "scripted"});
            Box::pin(async move { Ok(arguments) })
        }
    }

    async fn evaluate(
        answers: &[(String, Converted)],
        judge: &Counting,
        path: &Path,
        times: usize,
    ) -> (Judged, Value) {
        let mut store = VerdictStore::open(path).unwrap();
        let judged = judge_all(
            answers,
            judge,
            "m",
            &mut store,
            times,
            3,
            &Backoff::default(),
        )
        .await
        .unwrap();
        let result = result_file(answers, &judged.verdicts);
        (judged, result)
    }

    #[tokio::test]
    async fn a_rerun_asks_only_about_what_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pass_rate.verdicts.jsonl");
        let mut answers = fixture_answers("DFS_woFilter_w2");
        // 7 (Unsure, then the details) and 8 are asked; 10 and 11 need no judge.
        let judge = Counting::default();
        let (first, result) = evaluate(&answers, &judge, &path, 2).await;
        assert_eq!((first.asked, first.reused, first.without_judge), (4, 0, 4));
        assert_eq!(judge.0.load(Ordering::SeqCst), 2 * 2 + 2);

        // Nothing changed: no call, the same verdicts and result.
        let judge = Counting::default();
        let (again, same) = evaluate(&answers, &judge, &path, 2).await;
        assert_eq!(judge.0.load(Ordering::SeqCst), 0);
        assert_eq!((again.asked, again.reused), (0, 4));
        assert_eq!(again.verdicts, first.verdicts);
        assert_eq!(
            serde_json::to_vec_pretty(&same).unwrap(),
            serde_json::to_vec_pretty(&result).unwrap()
        );

        // One more evaluation and one changed answer: only those are asked.
        let eight = answers.iter().position(|(id, _)| id == "8").unwrap();
        answers[eight].1.answer["final_answer"] = "Snow.".into();
        let judge = Counting::default();
        let (changed, _) = evaluate(&answers, &judge, &path, 3).await;
        // 8: three evaluations anew; 7: only the third (two calls).
        assert_eq!((changed.asked, changed.reused), (3 + 1, 2));
        assert_eq!(judge.0.load(Ordering::SeqCst), 3 + 2);

        // Another judge model is another verdict.
        let mut store = VerdictStore::open(&path).unwrap();
        let judge = Counting::default();
        let other = judge_all(
            &answers,
            &judge,
            "other",
            &mut store,
            1,
            1,
            &Backoff::default(),
        )
        .await
        .unwrap();
        assert_eq!(other.asked, 2);
    }

    #[test]
    fn a_verdict_cut_short_is_dropped_and_the_file_stays_appendable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.jsonl");
        let answers = fixture_answers("DFS_woFilter_w2");
        let key = |run| VerdictKey::new(&answers[0].0, &answers[0].1, "m", run);
        {
            let mut store = VerdictStore::open(&path).unwrap();
            store.record(key(0), AnswerStatus::Solved).unwrap();
            store.record(key(1), AnswerStatus::Unsure).unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let cut = text.len() - 10;
        std::fs::write(&path, &text[..cut]).unwrap();
        let mut store = VerdictStore::open(&path).unwrap();
        assert_eq!(store.len(), 1);
        assert_eq!(store.get(&key(0)), Some(AnswerStatus::Solved));
        store.record(key(2), AnswerStatus::Unsolved).unwrap();
        let store = VerdictStore::open(&path).unwrap();
        assert_eq!(store.len(), 2);
        assert_eq!(store.get(&key(2)), Some(AnswerStatus::Unsolved));

        // Cut inside a multi-byte character (the query's "é"): dropped all the same.
        let key = |run| VerdictKey {
            query_id: "1".into(),
            query: "Un café, s'il vous plaît".into(),
            answer_sha256: "00".into(),
            judge_model: "m".into(),
            evaluation: run,
        };
        std::fs::remove_file(&path).unwrap();
        {
            let mut store = VerdictStore::open(&path).unwrap();
            store.record(key(0), AnswerStatus::Solved).unwrap();
            store.record(key(1), AnswerStatus::Unsure).unwrap();
        }
        let text = std::fs::read(&path).unwrap();
        let second = text.iter().position(|&b| b == b'\n').unwrap() + 1;
        let e_acute = second
            + text[second..]
                .windows(2)
                .position(|w| w == "é".as_bytes())
                .unwrap();
        std::fs::write(&path, &text[..e_acute + 1]).unwrap();
        let mut store = VerdictStore::open(&path).unwrap();
        assert_eq!(store.len(), 1);
        store.record(key(2), AnswerStatus::Unsolved).unwrap();
        assert_eq!(VerdictStore::open(&path).unwrap().len(), 2);

        std::fs::write(&path, "{\"not\": \"a verdict\"}\n").unwrap();
        let err = VerdictStore::open(&path).err().unwrap().to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
