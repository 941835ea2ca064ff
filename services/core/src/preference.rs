//! ToolEval's preference evaluation (the win rate): a candidate's answer against a
//! reference's answer to the same query, judged, as StableToolBench's
//! `eval_preference.py` runs it with the default evaluator
//! (`tooleval_gpt-3.5-turbo_default`, `ReinforceToolLearningEvaluator`): both answers
//! judged from scratch, then the better one picked. Its prompts are the evaluator's
//! `template.txt`, verbatim.
//!
//! Where umi differs, on purpose: the order the two answers are shown in is drawn from a
//! generator seeded by the query and the round (Python's one global `random.seed(42)`
//! makes it depend on thread timing), so a judgment is the same at any concurrency.
//!
//! The seed's `run_eval_prefer.sh` cannot run as published (it passes flags
//! `eval_preference.py` does not define, and its rounds after the first raise
//! `KeyError`); StableToolBench's version runs, and is the one followed here.

use serde_json::{json, Value};

use crate::pass_rate::{
    format_fields, AnswerStatus, Converted, Judge, JudgeCall, JudgeError, CHECK_ANSWER_STATUS,
    PARSE_ANSWER_STATUS,
};
use crate::pyjson;
use crate::task::{fnv1a, mix64};

const CHECK_TASK_SOLVABLE: &str = include_str!("stabletoolbench_check_task_solvable.txt");
const SELECT_BETTER_ANSWER: &str = include_str!("stabletoolbench_select_better_answer.txt");

/// `final_answer` is cut to this many characters before judging (`process_answer`).
const MAX_FINAL_ANSWER_CHARS: usize = 1000;
/// `select_better_answer` is tried this many times when the judge's index is not one of
/// the answers' (tenacity's `stop_after_attempt(3)`).
const SELECT_ATTEMPTS: usize = 3;

/// Which of the two answers was preferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preferred {
    Reference,
    Candidate,
}

/// `process_answer`: the answer the judge sees, `final_answer` cut to 1000 characters
/// and `method` dropped (the other keys keep their order: `total_steps`, `final_answer`,
/// `answer_details`).
pub fn process_answer(answer: &Value) -> Value {
    let mut out = answer.clone();
    if let Some(map) = out.as_object_mut() {
        map.shift_remove("method");
        if let Some(Value::String(text)) = map.get_mut("final_answer") {
            if text.chars().count() > MAX_FINAL_ANSWER_CHARS {
                *text = text.chars().take(MAX_FINAL_ANSWER_CHARS).collect();
            }
        }
    }
    out
}

/// `process_tools`: the tools without `description` and `parameters`.
pub fn process_tools(tools: &[Value]) -> Vec<Value> {
    tools
        .iter()
        .map(|tool| {
            let mut tool = tool.clone();
            if let Some(map) = tool.as_object_mut() {
                map.shift_remove("description");
                map.shift_remove("parameters");
            }
            tool
        })
        .collect()
}

/// A small generator for the two random choices of a judgment (SplitMix64).
struct Draws(u64);

impl Draws {
    fn new(query_id: &str, round: usize) -> Self {
        Draws(fnv1a(query_id.bytes()) ^ mix64(42 ^ round as u64))
    }

    fn coin(&mut self) -> bool {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0) & 1 == 1
    }
}

/// One pair of answers to one query, ready for the judge.
struct Pair {
    query: String,
    /// `{"query", "available_tools"}` as `check_task_solvable` dumps it.
    task: String,
}

fn filled(template: &str, args: &[(&str, &str)]) -> Result<String, JudgeError> {
    Ok(format_fields(template, args)?)
}

impl Pair {
    /// The query and tools are the reference's (`eval_preference.py`).
    fn new(reference: &Converted) -> Self {
        Pair {
            query: reference.query.clone(),
            task: pyjson::dumps(&json!({
                "query": reference.query,
                "available_tools": process_tools(&reference.available_tools),
            })),
        }
    }

    /// `check_is_solved(return_reason=False)`: an empty or given-up final answer is
    /// Unsolved without asking; else `check_answer_status`, and for Unsure
    /// `parse_answer_status` over the whole (processed) answer.
    async fn status(&self, judge: &dyn Judge, answer: &Value) -> Result<AnswerStatus, JudgeError> {
        let final_answer = answer["final_answer"].as_str().unwrap_or_default();
        if final_answer.is_empty() || final_answer.contains("give_up_and_restart") {
            return Ok(AnswerStatus::Unsolved);
        }
        let prompt = filled(
            CHECK_ANSWER_STATUS,
            &[("query", &self.query), ("answer", final_answer)],
        )?;
        let status = judge
            .answer_status(JudgeCall::new("check_answer_status", prompt, false))
            .await?;
        if status != AnswerStatus::Unsure {
            return Ok(status);
        }
        let prompt = filled(
            PARSE_ANSWER_STATUS,
            &[("query", &self.query), ("answer", &pyjson::dumps(answer))],
        )?;
        judge
            .answer_status(JudgeCall::new("parse_answer_status", prompt, false))
            .await
    }

    /// `check_task_solvable`: asked as the evaluator asks it, though its answer is never
    /// used (the prompt's use of it is commented out in the evaluator).
    async fn check_task_solvable(&self, judge: &dyn Judge) -> Result<(), JudgeError> {
        let prompt = filled(CHECK_TASK_SOLVABLE, &[("task", &self.task)])?;
        let arguments = judge
            .call(JudgeCall::new("check_task_solvable", prompt, false))
            .await?;
        match arguments["task_status"].as_str() {
            Some("Solvable" | "Unsolvable" | "Unsure") => Ok(()),
            _ => Err(JudgeError::NoVerdict {
                missing: "valid task_status",
                arguments: arguments.to_string(),
            }),
        }
    }

    /// `select_better_answer` over `answers` (their places `indexes` in the shown
    /// order): identical answers are a coin toss without asking; else the judge's
    /// `index`, read as Python's `int()` reads it, tried again when it is not one of
    /// `indexes`.
    async fn select_better(
        &self,
        judge: &dyn Judge,
        indexes: &[usize],
        answers: [&Value; 2],
        draws: &mut Draws,
    ) -> Result<usize, JudgeError> {
        let identical = answers[0]["final_answer"] == answers[1]["final_answer"]
            && answers[0]["answer_details"] == answers[1]["answer_details"];
        if identical {
            return Ok(indexes[usize::from(draws.coin())]);
        }
        let prompt = filled(
            SELECT_BETTER_ANSWER,
            &[
                ("query", &self.query),
                ("answer_0", &pyjson::dumps(answers[0])),
                ("answer_1", &pyjson::dumps(answers[1])),
            ],
        )?;
        let mut last = None;
        for _ in 0..SELECT_ATTEMPTS {
            let result = judge
                .call(JudgeCall::new("select_better_answer", prompt.clone(), true))
                .await
                .and_then(|arguments| {
                    python_int(&arguments["index"])
                        .and_then(|i| usize::try_from(i).ok())
                        .filter(|i| indexes.contains(i))
                        .ok_or(JudgeError::NoVerdict {
                            missing: "index of one of the answers",
                            arguments: arguments.to_string(),
                        })
                });
            match result {
                Ok(index) => return Ok(index),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }
}

/// Python's `int()` of a JSON value: a number truncated toward zero, a string of an
/// integer; anything else is no index.
fn python_int(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite())
                .map(|f| f.trunc() as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

/// One round of the preference between `reference` and `candidate` (`annotate_preference`
/// then `normalized_openai_completions`): the query and tools are the reference's; the
/// answers are shown in an order drawn for (`query_id`, `round`).
pub async fn prefer(
    judge: &dyn Judge,
    query_id: &str,
    round: usize,
    reference: &Converted,
    candidate: &Converted,
) -> Result<Preferred, JudgeError> {
    let mut draws = Draws::new(query_id, round);
    // `random.shuffle([0, 1])`: shown[k] is the answer shown as Answer_k.
    let shown: [usize; 2] = if draws.coin() { [1, 0] } else { [0, 1] };
    prefer_shown(judge, shown, &mut draws, reference, candidate).await
}

/// One round with the answers shown in the order `shown` (`shown[k]`: 0 for the
/// reference's answer, 1 for the candidate's, shown as Answer_k); `draws` toss the coin
/// between identical answers.
async fn prefer_shown(
    judge: &dyn Judge,
    shown: [usize; 2],
    draws: &mut Draws,
    reference: &Converted,
    candidate: &Converted,
) -> Result<Preferred, JudgeError> {
    let pair = Pair::new(reference);
    let answers = [
        process_answer(&reference.answer),
        process_answer(&candidate.answer),
    ];
    let projected = [&answers[shown[0]], &answers[shown[1]]];
    let mut status = Vec::with_capacity(2);
    for answer in projected {
        status.push(pair.status(judge, answer).await?);
    }
    let with = |s: AnswerStatus| -> Vec<usize> { (0..2).filter(|&k| status[k] == s).collect() };
    let solved = with(AnswerStatus::Solved);
    let unsure = with(AnswerStatus::Unsure);
    let picked = if solved.len() == 1 {
        solved[0]
    } else if solved.len() == 2 {
        // `check_task_solvable(has_been_solved=True)` answers without asking.
        pair.select_better(judge, &[0, 1], projected, draws).await?
    } else if unsure.len() == 1 {
        unsure[0]
    } else {
        pair.check_task_solvable(judge).await?;
        pair.select_better(judge, &[0, 1], projected, draws).await?
    };
    Ok(if shown[picked] == 0 {
        Preferred::Reference
    } else {
        Preferred::Candidate
    })
}

/// Win, lose and tie rates over queries' votes (reference, candidate), as
/// `eval_preference.py` computes them: a query is won when the candidate has more votes,
/// tied when both have as many.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct WinRate {
    pub win: f64,
    pub lose: f64,
    pub tie: f64,
    pub queries: usize,
}

pub fn win_rate(votes: &[(usize, usize)]) -> WinRate {
    let n = votes.len().max(1) as f64;
    let count =
        |f: fn(usize, usize) -> bool| votes.iter().filter(|(r, c)| f(*r, *c)).count() as f64 / n;
    WinRate {
        win: count(|r, c| c > r),
        lose: count(|r, c| r > c),
        tie: count(|r, c| r == c),
        queries: votes.len(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::agent::BoxFuture;

    #[test]
    fn the_templates_are_the_evaluators() {
        assert!(CHECK_TASK_SOLVABLE.starts_with("\nPlease check whether the given task solvable"));
        assert!(CHECK_TASK_SOLVABLE.contains("Task:\n{task}\n"));
        assert!(SELECT_BETTER_ANSWER.starts_with("\nQuery:\n{query}\n\nAnswer_0:\n{answer_0}"));
        assert!(SELECT_BETTER_ANSWER
            .ends_with("else if you cannot determine, select a random answer.\n"));
    }

    #[test]
    fn answers_are_processed_in_place_order() {
        let long = "é".repeat(1500);
        let answer =
            json!({"method": "m", "total_steps": 2, "final_answer": long, "answer_details": []});
        let p = process_answer(&answer);
        let keys: Vec<&String> = p.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["total_steps", "final_answer", "answer_details"]);
        assert_eq!(p["final_answer"].as_str().unwrap().chars().count(), 1000);
        let tools = process_tools(&[json!({"name": "f", "description": "d", "parameters": {}})]);
        assert_eq!(tools, [json!({"name": "f"})]);
    }

    #[test]
    fn python_int_reads_indexes_as_int_does() {
        assert_eq!(python_int(&json!(1)), Some(1));
        assert_eq!(python_int(&json!(1.9)), Some(1));
        assert_eq!(python_int(&json!("0")), Some(0));
        assert_eq!(python_int(&json!("x")), None);
        assert_eq!(python_int(&json!(null)), None);
    }

    #[test]
    fn rates_count_queries_by_their_votes() {
        let r = win_rate(&[(0, 3), (1, 2), (2, 1), (1, 1)]);
        assert_eq!((r.win, r.lose, r.tie, r.queries), (0.5, 0.25, 0.25, 4));
    }

    /// A scripted judge (a test double): answer statuses by a word in the judged text,
    /// the better answer by `pick`; records every call.
    struct Scripted {
        pick: Value,
        calls: Mutex<Vec<JudgeCall>>,
    }

    impl Judge for Scripted {
        fn call<'a>(&'a self, call: JudgeCall) -> BoxFuture<'a, Result<Value, JudgeError>> {
            let arguments = match call.function {
                "check_answer_status" | "parse_answer_status" => {
                    let status = if call.prompt.contains("SOLVED") {
                        "Solved"
                    } else if call.prompt.contains("MAYBE") {
                        "Unsure"
                    } else {
                        "Unsolved"
                    };
                    json!({"answer_status": status})
                }
                "check_task_solvable" => json!({"task_status": "Solvable"}),
                _ => json!({"index": self.pick, "reason": "scripted"}),
            };
            self.calls.lock().unwrap().push(call);
            Box::pin(async move { Ok(arguments) })
        }
    }

    fn converted(final_answer: &str) -> Converted {
        Converted {
            query: "Weather in Oslo?".into(),
            final_answer: final_answer.into(),
            steps: vec![],
            tool_names: vec!["f".into()],
            available_tools: vec![json!({"name": "f", "description": "d", "parameters": {}})],
            answer: json!({"method": "DFS_woFilter_w2", "total_steps": 1, "final_answer": final_answer, "answer_details": []}),
        }
    }

    fn judge(pick: Value) -> Scripted {
        Scripted {
            pick,
            calls: Mutex::new(Vec::new()),
        }
    }

    fn run(j: &Scripted, id: &str, reference: &str, candidate: &str) -> Preferred {
        let (r, c) = (converted(reference), converted(candidate));
        crate::testing::block_on(prefer(j, id, 0, &r, &c)).unwrap()
    }

    #[test]
    fn one_solved_answer_wins_without_a_comparison() {
        let j = judge(json!(0));
        assert_eq!(
            run(&j, "1", "sorry", "SOLVED: 3 degrees"),
            Preferred::Candidate
        );
        assert_eq!(run(&j, "1", "SOLVED: 3 degrees", ""), Preferred::Reference);
        let calls = j.calls.lock().unwrap();
        assert!(calls.iter().all(|c| c.function == "check_answer_status"));
        // The empty answer was never asked about; statuses are asked without a reason.
        assert_eq!(calls.len(), 3);
        assert!(calls.iter().all(|c| !c.reason));
    }

    #[test]
    fn two_unsolved_answers_are_compared_after_asking_if_the_task_is_solvable() {
        for (id, pick) in [("7", 0), ("8", 1), ("9", 0), ("10", 1)] {
            let j = judge(json!(pick));
            let preferred = run(&j, id, "no luck", "nothing found");
            let calls = j.calls.lock().unwrap();
            let functions: Vec<&str> = calls.iter().map(|c| c.function).collect();
            assert_eq!(
                functions,
                [
                    "check_answer_status",
                    "check_answer_status",
                    "check_task_solvable",
                    "select_better_answer"
                ]
            );
            let task = &calls[2].prompt;
            assert!(
                task.contains(
                    r#"{"query": "Weather in Oslo?", "available_tools": [{"name": "f"}]}"#
                ),
                "{task}"
            );
            let select = &calls[3];
            assert!(select.reason, "select_better_answer asks for a reason");
            // Whichever was shown first, the pick maps back to the answer shown there.
            let shown_first = if select.prompt.find("no luck") < select.prompt.find("nothing found")
            {
                Preferred::Reference
            } else {
                Preferred::Candidate
            };
            let expected = match (pick, shown_first) {
                (0, first) => first,
                (_, Preferred::Reference) => Preferred::Candidate,
                (_, Preferred::Candidate) => Preferred::Reference,
            };
            assert_eq!(preferred, expected, "query {id}");
            assert!(
                select.prompt.contains(
                    r#"{"total_steps": 1, "final_answer": "no luck", "answer_details": []}"#
                ),
                "{}",
                select.prompt
            );
        }
    }

    #[test]
    fn an_unsure_answer_is_looked_at_in_detail_and_wins_over_an_unsolved_one() {
        let j = judge(json!(0));
        assert_eq!(run(&j, "3", "MAYBE 3 degrees", "no"), Preferred::Reference);
        let functions: Vec<&str> = j.calls.lock().unwrap().iter().map(|c| c.function).collect();
        assert!(functions.contains(&"parse_answer_status"));
        assert!(!functions.contains(&"select_better_answer"));
    }

    #[test]
    fn a_bad_index_is_asked_again_then_fails_and_identical_answers_need_no_judge() {
        let j = judge(json!(5));
        let (r, c) = (converted("a"), converted("b"));
        let err = crate::testing::block_on(prefer(&j, "4", 0, &r, &c)).unwrap_err();
        assert!(err.to_string().contains("index"), "{err}");
        let selects = j
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.function == "select_better_answer")
            .count();
        assert_eq!(selects, SELECT_ATTEMPTS);

        let j = judge(json!(0));
        run(&j, "5", "same", "same");
        assert!(j
            .calls
            .lock()
            .unwrap()
            .iter()
            .all(|c| c.function != "select_better_answer"));
    }

    /// Every request, in order, and the preferred answer are those StableToolBench's
    /// `annotate_preference` makes of the same answer files shown in the same order
    /// (tests/fixtures/preference, scripts/make_preference_fixture.py): one solved, both
    /// solved, both unsolved, an unsure one, two give-ups, identical answers, a query
    /// with braces and a judge first naming no answer.
    #[test]
    fn each_request_and_preference_is_stabletoolbenchs() {
        /// Replays the reference's replies in order; records every call.
        struct Replay(Mutex<(Vec<Value>, Vec<JudgeCall>)>);
        impl Judge for Replay {
            fn call<'a>(&'a self, call: JudgeCall) -> BoxFuture<'a, Result<Value, JudgeError>> {
                let mut state = self.0.lock().unwrap();
                let reply = state.0.remove(0);
                state.1.push(call);
                Box::pin(async move { Ok(reply) })
            }
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/preference");
        let read = |path: std::path::PathBuf| -> Value {
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
        };
        let expected = read(dir.join("expected.json"));
        let cases = expected["judged"].as_object().unwrap();
        assert_eq!(cases.len(), 7);
        for (id, rounds) in cases {
            let file = format!("{id}_DFS_woFilter_w2.json");
            let reference =
                crate::pass_rate::convert(&read(dir.join("ref").join(&file)), "DFS_woFilter_w2");
            let candidate =
                crate::pass_rate::convert(&read(dir.join("cand").join(&file)), "DFS_woFilter_w2");
            for (side, converted) in [("ref", &reference), ("cand", &candidate)] {
                let want = &expected["converted"][side][id];
                assert_eq!(converted.answer, want["answer"], "{side} {id}");
                assert_eq!(json!(converted.available_tools), want["available_tools"]);
            }
            for round in rounds.as_array().unwrap() {
                let shown = [0, 1].map(|k| round["shown"][k].as_u64().unwrap() as usize);
                let replies = round["replies"].as_array().unwrap().clone();
                let judge = Replay(Mutex::new((replies, Vec::new())));
                let preferred = crate::testing::block_on(prefer_shown(
                    &judge,
                    shown,
                    &mut Draws::new(id, 0),
                    &reference,
                    &candidate,
                ))
                .unwrap();
                let (left, calls) = judge.0.into_inner().unwrap();
                assert!(left.is_empty(), "case {id} {shown:?}: replies left");
                let sent: Vec<Value> = calls
                    .iter()
                    .map(|c| json!([c.function, c.reason, c.prompt]))
                    .collect();
                let want: Vec<Value> = round["requests"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| {
                        let function = &r["tools"][0]["function"];
                        let reason = function["parameters"]["required"]
                            .as_array()
                            .unwrap()
                            .contains(&json!("reason"));
                        json!([function["name"], reason, r["messages"][0]["content"]])
                    })
                    .collect();
                assert_eq!(sent, want, "case {id}, shown {shown:?}");
                // Identical answers are a coin toss (umi's own seeded draw).
                if id != "6" {
                    let want = if round["preferred"] == 0 {
                        Preferred::Reference
                    } else {
                        Preferred::Candidate
                    };
                    assert_eq!(preferred, want, "case {id}, shown {shown:?}");
                }
            }
        }
    }

    #[test]
    fn the_shown_order_depends_on_query_and_round_only() {
        let orders: Vec<bool> = (0..64).map(|round| Draws::new("q", round).coin()).collect();
        assert!(orders.iter().any(|&o| o) && orders.iter().any(|&o| !o));
        assert_eq!(Draws::new("q", 3).coin(), Draws::new("q", 3).coin());
    }
}
