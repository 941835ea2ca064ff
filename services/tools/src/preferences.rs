//! The win rate's judgments (`umi_core::preference`) over a set of queries, each judged
//! `evaluate_times` rounds, kept between evaluations in a JSON-lines file as the pass
//! rate's verdicts are (`verdicts::Judgments`): keyed by the query, both answers as the
//! judge reads them, the judge's model and the round, so a rerun asks only what changed.
//!
//! A query answered by one side only counts for it without a judgment, in every round, as
//! `eval_preference.py` counts it.

use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use umi_core::pass_rate::{Converted, Judge, JudgeError};
use umi_core::preference::{prefer, process_tools, Preferred};
use umi_core::pyjson;

use crate::verdicts::{answer_sha256, sha256, Judgments, VerdictError};

/// What one round's judgment of one query is about: everything the judge reads (the
/// query, the tools, both answers), who judges, and the round.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PreferenceKey {
    pub query_id: String,
    pub query: String,
    /// SHA-256 of the reference's tools as the judge's task shows them.
    pub tools_sha256: String,
    pub reference_sha256: String,
    pub candidate_sha256: String,
    pub judge_model: String,
    pub round: usize,
}

pub type PreferenceStore = Judgments<PreferenceKey, Preferred>;

/// One query of the comparison: the reference's answer and the candidate's, either
/// possibly missing.
pub struct Pair<'a> {
    pub query_id: &'a str,
    pub reference: Option<&'a Converted>,
    pub candidate: Option<&'a Converted>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Compared {
    /// Per query, in the pairs' order: (reference votes, candidate votes).
    pub votes: Vec<(usize, usize)>,
    /// Judgments asked of the judge.
    pub asked: usize,
    /// Judgments read from the file.
    pub reused: usize,
    /// Rounds decided without the judge (one side has no answer).
    pub without_judge: usize,
}

/// Every pair judged `rounds` times (`concurrency` judgments at once), judgments in
/// `store` reused and new ones recorded as they arrive.
pub async fn compare_all(
    pairs: &[Pair<'_>],
    judge: &dyn Judge,
    judge_model: &str,
    store: &mut PreferenceStore,
    rounds: usize,
    concurrency: usize,
) -> Result<Compared, VerdictError> {
    let mut votes = vec![(0usize, 0usize); pairs.len()];
    let count = |v: &mut (usize, usize), p: Preferred| match p {
        Preferred::Reference => v.0 += 1,
        Preferred::Candidate => v.1 += 1,
    };
    let (mut reused, mut without_judge) = (0, 0);
    let mut todo = Vec::new();
    for (q, pair) in pairs.iter().enumerate() {
        let (reference, candidate) = match (pair.reference, pair.candidate) {
            (Some(r), Some(c)) => (r, c),
            // The evaluator's order: no reference answer counts for the candidate (even
            // when it has none either), no candidate answer for the reference.
            (None, _) => {
                votes[q].1 += rounds;
                without_judge += rounds;
                continue;
            }
            (Some(_), None) => {
                votes[q].0 += rounds;
                without_judge += rounds;
                continue;
            }
        };
        let base = PreferenceKey {
            query_id: pair.query_id.to_string(),
            query: reference.query.clone(),
            tools_sha256: sha256(&pyjson::dumps(&Value::Array(process_tools(
                &reference.available_tools,
            )))),
            reference_sha256: answer_sha256(reference),
            candidate_sha256: answer_sha256(candidate),
            judge_model: judge_model.to_string(),
            round: 0,
        };
        for round in 0..rounds {
            let key = PreferenceKey {
                round,
                ..base.clone()
            };
            match store.get(&key) {
                Some(p) => {
                    count(&mut votes[q], p);
                    reused += 1;
                }
                None => todo.push((q, round, key, reference, candidate)),
            }
        }
    }
    let asked = todo.len();
    let stop = AtomicBool::new(false);
    let stop = &stop;
    let mut results = futures::stream::iter(todo.into_iter().map(
        |(q, round, key, reference, candidate)| async move {
            let preferred = if stop.load(Ordering::Relaxed) {
                Err(JudgeError::Reply {
                    url: String::new(),
                    detail: "not asked: an earlier judgment failed".into(),
                })
            } else {
                prefer(judge, pairs[q].query_id, round, reference, candidate).await
            };
            (q, key, preferred)
        },
    ))
    .buffer_unordered(concurrency.max(1));
    // After a failure no new judgment starts, but those under way are still recorded
    // (they are paid for), then the first failure is returned.
    let mut failed = None;
    while let Some((q, key, preferred)) = results.next().await {
        match preferred {
            Ok(preferred) => {
                store.record(key, preferred)?;
                count(&mut votes[q], preferred);
            }
            Err(error) if failed.is_none() => {
                failed = Some(VerdictError::Judge {
                    query_id: pairs[q].query_id.to_string(),
                    error,
                });
                stop.store(true, Ordering::Relaxed);
            }
            Err(_) => {}
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(Compared {
        votes,
        asked,
        reused,
        without_judge,
    })
}
