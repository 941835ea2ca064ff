//! StableToolBench's solvable pass rate (SoPR, `toolbench/tooleval/eval_pass_rate.py` with
//! its default evaluator `tooleval_gpt-3.5-turbo_default`), over umi's answer files:
//!
//! - each answer is first read as StableToolBench's converter reads it
//!   (`convert_to_answer_format.py::process_valid_data`: the last train conversation from
//!   its third message, each call a `tool` node `{name, arguments, response}`);
//! - an answer whose last step is not a `Finish` call, or whose final answer is empty or a
//!   give-up, is Unsolved without asking the judge;
//! - otherwise the judge is asked `check_answer_status` (the query and the final answer),
//!   and when it is Unsure, `parse_answer_status` (the query and the whole converted
//!   answer): Solved, Unsolved or Unsure;
//! - every query is judged `evaluate_times` times; each run scores Solved 1, Unsure 0.5,
//!   Unsolved 0 over all queries; the rate is the mean over runs, with their standard
//!   deviation.
//!
//! The judge's prompts are StableToolBench's (`stabletoolbench_*.txt`, verbatim from its
//! `template.txt`; StableToolBench is Apache-2.0). There is no pass rate without a judge.

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::agent::BoxFuture;
use crate::answer::toolbench_roles;
use crate::pyjson;

const CHECK_ANSWER_STATUS: &str = include_str!("stabletoolbench_check_answer_status.txt");
const PARSE_ANSWER_STATUS: &str = include_str!("stabletoolbench_parse_answer_status.txt");

/// A judge's verdict on one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AnswerStatus {
    Solved,
    Unsolved,
    Unsure,
}

impl AnswerStatus {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "Solved" => Some(AnswerStatus::Solved),
            "Unsolved" => Some(AnswerStatus::Unsolved),
            "Unsure" => Some(AnswerStatus::Unsure),
            _ => None,
        }
    }

    /// As StableToolBench records it (`str(AnswerStatus.Solved)`).
    pub fn recorded(self) -> &'static str {
        match self {
            AnswerStatus::Solved => "AnswerStatus.Solved",
            AnswerStatus::Unsolved => "AnswerStatus.Unsolved",
            AnswerStatus::Unsure => "AnswerStatus.Unsure",
        }
    }

    fn score(self) -> f64 {
        match self {
            AnswerStatus::Solved => 1.0,
            AnswerStatus::Unsure => 0.5,
            AnswerStatus::Unsolved => 0.0,
        }
    }
}

/// One function the judge is made to call: its name, and the user message
/// (StableToolBench's template with the arguments filled in).
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeCall {
    pub function: &'static str,
    pub prompt: String,
}

/// Whatever answers the judge's calls (an OpenAI-compatible chat endpoint in practice).
pub trait Judge: Send + Sync {
    fn answer_status<'a>(&'a self, call: JudgeCall) -> BoxFuture<'a, Result<AnswerStatus, String>>;
}

/// An answer as StableToolBench's converter writes it for the judge.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    pub query: String,
    pub final_answer: String,
    /// Tool steps, as the `answer_details` chain holds them.
    pub steps: Vec<Value>,
    pub tool_names: Vec<String>,
    /// `{"method", "total_steps", "final_answer", "answer_details"}`.
    pub answer: Value,
}

/// Reads an answer file as `convert_to_answer_format.py` does (valid data: the last
/// conversation from its third message; otherwise no steps: a random walk of the tree
/// ends in no `Finish` call, and the final answer is empty anyway).
pub fn convert(answer_file: &Value, method: &str) -> Converted {
    let mut file = answer_file.clone();
    toolbench_roles(&mut file);
    let generation = &file["answer_generation"];
    let query = generation["query"].as_str().unwrap_or("").to_string();
    let final_answer = generation["final_answer"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let functions = generation["function"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let tool_names = functions
        .iter()
        .filter_map(|f| f["name"].as_str().map(str::to_string))
        .collect();
    let mut steps = Vec::new();
    let valid = generation["valid_data"].as_bool().unwrap_or(false);
    let conversation = generation["train_messages"]
        .as_array()
        .and_then(|c| c.last())
        .and_then(Value::as_array)
        .filter(|_| valid);
    if let Some(conversation) = conversation {
        let mut i = 2;
        while i < conversation.len() {
            let m = &conversation[i];
            if m["role"] == "assistant" {
                if let Some(call) = m.get("function_call").filter(|c| c.is_object()) {
                    let response = if call["name"] == "Finish" {
                        json!("")
                    } else {
                        conversation
                            .get(i + 1)
                            .map_or(json!(""), |n| n["content"].clone())
                    };
                    steps.push(json!({"role": "tool", "message": {"name": call["name"], "arguments": call["arguments"], "response": response}}));
                    i += 1;
                } else {
                    steps.push(json!({"role": "assistant", "message": m["content"]}));
                }
            }
            i += 1;
        }
    }
    // system → user → the steps, each the only `next` of the one before.
    let mut chain = Value::Null;
    for node in steps.iter().rev() {
        let mut node = node.clone();
        node["next"] = if chain.is_null() {
            json!([])
        } else {
            json!([chain])
        };
        chain = node;
    }
    let user = json!({"role": "user", "message": "", "next": if chain.is_null() { json!([]) } else { json!([chain]) }});
    let details = json!([{"role": "system", "message": "", "next": [user]}]);
    let answer = json!({
        "method": method,
        "total_steps": steps.len() + 2,
        "final_answer": final_answer,
        "answer_details": details,
    });
    Converted {
        query,
        final_answer,
        steps,
        tool_names,
        answer,
    }
}

impl Converted {
    /// `get_steps`: `Step n: <tool message>` lines, and the last as `Final step: …`.
    pub fn step_texts(&self) -> (String, String) {
        let tools: Vec<String> = self
            .steps
            .iter()
            .filter(|s| s["role"] == "tool")
            .map(|s| pyjson::repr(&s["message"]))
            .collect();
        let lines: Vec<String> = tools
            .iter()
            .enumerate()
            .map(|(i, t)| format!("Step {}: {t}", i + 1))
            .collect();
        let last = tools
            .last()
            .map_or(String::new(), |t| format!("Final step: {t}"));
        (lines.join("\n"), last)
    }

    /// `compute_pass_rate` + `check_is_solved` for one evaluation.
    pub async fn judge(&self, judge: &dyn Judge) -> Result<AnswerStatus, String> {
        let (_, final_step) = self.step_texts();
        if !final_step.contains("'name': 'Finish'") {
            return Ok(AnswerStatus::Unsolved);
        }
        if self.final_answer.is_empty() || self.final_answer.contains("give_up_and_restart") {
            return Ok(AnswerStatus::Unsolved);
        }
        let status = judge
            .answer_status(JudgeCall {
                function: "check_answer_status",
                prompt: fill(CHECK_ANSWER_STATUS, &self.query, &self.final_answer),
            })
            .await?;
        if status != AnswerStatus::Unsure {
            return Ok(status);
        }
        judge
            .answer_status(JudgeCall {
                function: "parse_answer_status",
                prompt: fill(
                    PARSE_ANSWER_STATUS,
                    &self.query,
                    &pyjson::dumps(&self.answer),
                ),
            })
            .await
    }
}

/// Python's `template.format(query=…, answer=…)` (the templates hold no other braces).
fn fill(template: &str, query: &str, answer: &str) -> String {
    template
        .replace("{query}", query)
        .replace("{answer}", answer)
}

/// The verdicts of every run, per query, and the rate.
#[derive(Debug, Clone, Serialize)]
pub struct PassRate {
    /// Percent, the mean over runs.
    pub solve_rate: f64,
    /// Percent, the standard deviation over runs (numpy's, population).
    pub std: f64,
    pub queries: usize,
    pub evaluate_times: usize,
}

/// Scores `verdicts` (per query, one per run) as `eval_pass_rate.py` does.
pub fn score(verdicts: &[Vec<AnswerStatus>], evaluate_times: usize) -> PassRate {
    let n = verdicts.len().max(1) as f64;
    let runs: Vec<f64> = (0..evaluate_times)
        .map(|run| {
            verdicts
                .iter()
                .map(|v| v.get(run).map_or(0.0, |s| s.score()))
                .sum::<f64>()
                / n
        })
        .collect();
    let mean = runs.iter().sum::<f64>() / runs.len().max(1) as f64;
    let var = runs.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / runs.len().max(1) as f64;
    PassRate {
        solve_rate: mean * 100.0,
        std: var.sqrt() * 100.0,
        queries: verdicts.len(),
        evaluate_times,
    }
}

/// One query's entry of StableToolBench's result file (`label_cnt[query_id]`).
pub fn result_entry(converted: &Converted, verdicts: &[AnswerStatus]) -> Value {
    let (steps, final_step) = converted.step_texts();
    let solved: Map<String, Value> = verdicts
        .iter()
        .enumerate()
        .map(|(i, s)| (i.to_string(), json!(s.recorded())))
        .collect();
    json!({
        "query": converted.query,
        "tool_names": converted.tool_names,
        "answer_steps": steps,
        "final_step": final_step,
        "is_solved": solved,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(final_answer: &str) -> Value {
        json!({"answer_generation": {
            "valid_data": true,
            "query": "Weather in Paris?",
            "final_answer": final_answer,
            "function": [{"name": "current_for_weather"}, {"name": "Finish"}],
            "train_messages": [[
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": "Look.", "function_call": {"name": "current_for_weather", "arguments": "{}"}},
                {"role": "observation", "name": "current_for_weather", "content": "sunny"},
                {"role": "assistant", "content": "Done.", "function_call": {"name": "Finish", "arguments": final_answer}},
            ]],
        }})
    }

    struct Scripted(Vec<AnswerStatus>, std::sync::Mutex<Vec<JudgeCall>>);
    impl Judge for Scripted {
        fn answer_status<'a>(
            &'a self,
            call: JudgeCall,
        ) -> BoxFuture<'a, Result<AnswerStatus, String>> {
            let mut calls = self.1.lock().unwrap();
            let status = self.0[calls.len()];
            calls.push(call);
            Box::pin(async move { Ok(status) })
        }
    }

    #[test]
    fn answers_convert_as_stabletoolbenchs_converter_reads_them() {
        let c = convert(
            &answered(r#"{"return_type": "give_answer", "final_answer": "Sunny."}"#),
            "DFS_woFilter_w2",
        );
        assert_eq!(c.steps.len(), 2);
        assert_eq!(c.answer["total_steps"], 4);
        let (steps, last) = c.step_texts();
        assert_eq!(
            steps.lines().next().unwrap(),
            "Step 1: {'name': 'current_for_weather', 'arguments': '{}', 'response': 'sunny'}"
        );
        assert!(last.starts_with("Final step: {'name': 'Finish'"), "{last}");
        let first = &c.answer["answer_details"][0];
        assert_eq!(
            (first["role"].as_str(), first["next"][0]["role"].as_str()),
            (Some("system"), Some("user"))
        );
    }

    #[test]
    fn the_judge_is_asked_only_for_real_answers_and_unsure_goes_to_the_details() {
        let judge = Scripted(
            vec![AnswerStatus::Unsure, AnswerStatus::Solved],
            Default::default(),
        );
        let c = convert(
            &answered(r#"{"return_type": "give_answer", "final_answer": "Sunny."}"#),
            "m",
        );
        let status = crate::testing::block_on(c.judge(&judge));
        assert_eq!(status, Ok(AnswerStatus::Solved));
        let calls = judge.1.lock().unwrap();
        assert_eq!(calls[0].function, "check_answer_status");
        assert!(
            calls[0]
                .prompt
                .contains("Query:\nWeather in Paris?\nAnswer:\n{\"return_type\""),
            "{}",
            calls[0].prompt
        );
        assert_eq!(calls[1].function, "parse_answer_status");
        assert!(
            calls[1]
                .prompt
                .contains("\"answer_details\": [{\"role\": \"system\""),
            "{}",
            calls[1].prompt
        );
        drop(calls);
        let give_up = convert(&answered(r#"{"return_type": "give_up_and_restart"}"#), "m");
        let judge = Scripted(vec![], Default::default());
        assert_eq!(
            crate::testing::block_on(give_up.judge(&judge)),
            Ok(AnswerStatus::Unsolved)
        );
        assert!(judge.1.lock().unwrap().is_empty());
    }

    #[test]
    fn runs_score_solved_one_unsure_half_and_average() {
        use AnswerStatus::*;
        let rate = score(&[vec![Solved, Unsure], vec![Unsolved, Solved]], 2);
        // Run 0: (1 + 0) / 2; run 1: (0.5 + 1) / 2.
        assert!((rate.solve_rate - 62.5).abs() < 1e-9);
        assert!((rate.std - 12.5).abs() < 1e-9);
    }
}
