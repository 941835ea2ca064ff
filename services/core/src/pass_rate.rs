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
//! `template.txt`; StableToolBench is Apache-2.0), filled as Python's `str.format` fills
//! them (one pass: a query holding `{answer}` keeps it). There is no pass rate without a
//! judge.
//!
//! Which files are answers is the converter's rule (`answer_files`): a `.json` file whose
//! name contains the method, its query id the name up to the first `_`; so the CoT@1 and
//! DFS files of one id are never both counted. Several inference runs (one folder each)
//! are summarised as StableToolBench's tables are, mean ± standard deviation (`Spread`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::agent::BoxFuture;
use crate::answer::toolbench_roles;
use crate::pyjson;

pub(crate) const CHECK_ANSWER_STATUS: &str =
    include_str!("stabletoolbench_check_answer_status.txt");
pub(crate) const PARSE_ANSWER_STATUS: &str =
    include_str!("stabletoolbench_parse_answer_status.txt");

/// A judge's verdict on one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// One function the judge is made to call: its name, the user message
/// (StableToolBench's template with the arguments filled in), and whether its schema
/// asks for a `reason` (`return_reason`).
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeCall {
    pub function: &'static str,
    pub prompt: String,
    pub reason: bool,
}

impl JudgeCall {
    pub fn new(function: &'static str, prompt: String, reason: bool) -> Self {
        JudgeCall {
            function,
            prompt,
            reason,
        }
    }
}

/// The schema of one of the default evaluator's functions (`config.yaml` of
/// `tooleval_gpt-3.5-turbo_default`), as `function_call` sends it: with `reason` added
/// last, and required, when the call asks for one.
pub fn function_schema(name: &str, reason: bool) -> Value {
    let status =
        |field: &str, values: [&str; 3]| json!({field: {"type": "string", "enum": values}});
    let (description, mut properties, required) = match name {
        "check_task_solvable" => (
            "Parse the task description and return the task_status about the task",
            status("task_status", ["Unsure", "Unsolvable", "Solvable"]),
            "task_status",
        ),
        "select_better_answer" => (
            "Select the better answer with a comprehensive investigation on given aspects. You should ignore the impact of the order of candidate answers.",
            json!({"index": {"type": "number", "description": "The `index` value in the selected better answer."}}),
            "index",
        ),
        other => {
            debug_assert!(
                matches!(other, "check_answer_status" | "parse_answer_status"),
                "{other} is none of the evaluator's functions"
            );
            (
            "Parse the json answer with layerd nodes and return the answer_status about the answer",
            status("answer_status", ["Unsure", "Unsolved", "Solved"]),
            "answer_status",
            )
        }
    };
    let mut required = vec![required];
    if reason {
        properties["reason"] = json!({"type": "string", "description": "explain your answer."});
        required.push("reason");
    }
    json!({
        "name": name,
        "description": description,
        "parameters": {"type": "object", "properties": properties, "required": required},
    })
}

/// Whatever answers the judge's calls (an OpenAI-compatible chat endpoint in practice).
pub trait Judge: Send + Sync {
    /// The arguments the judge called `call.function` with (`function_call`).
    fn call<'a>(&'a self, call: JudgeCall) -> BoxFuture<'a, Result<Value, JudgeError>>;

    /// The verdict of an answer-status call, as `check_is_solved` reads it:
    /// `AnswerStatus(ret['answer_status'])`, and `ret['reason']` when asked for; an error
    /// (for the pass rate's backoff) when either is missing or no status.
    fn answer_status<'a>(
        &'a self,
        call: JudgeCall,
    ) -> BoxFuture<'a, Result<AnswerStatus, JudgeError>> {
        Box::pin(async move {
            let wants_reason = call.reason;
            let arguments = self.call(call).await?;
            let no_verdict = |missing| JudgeError::NoVerdict {
                missing,
                arguments: arguments.to_string(),
            };
            let status = arguments["answer_status"]
                .as_str()
                .and_then(AnswerStatus::parse)
                .ok_or_else(|| no_verdict("valid answer_status"))?;
            if wants_reason && arguments.get("reason").is_none() {
                return Err(no_verdict("reason"));
            }
            Ok(status)
        })
    }
}

/// Why a judgment has no verdict.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JudgeError {
    /// The judge's endpoint could not be reached, or the request failed on the way.
    #[error("{url}: {detail}")]
    Unreachable { url: String, detail: String },
    /// The endpoint answered with an error status.
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    /// The reply is not the function call asked for (not JSON, no call, arguments not
    /// JSON).
    #[error("{url}: {detail}")]
    Reply { url: String, detail: String },
    /// The function's arguments hold no verdict: `missing` names what they lack (a valid
    /// `answer_status`, or the `reason` asked for).
    #[error("no {missing} in {arguments}")]
    NoVerdict {
        missing: &'static str,
        arguments: String,
    },
    /// Every attempt of one call failed; the last one's error.
    #[error("the judge failed {attempts} times: {last}")]
    Attempts {
        attempts: u32,
        last: Box<JudgeError>,
    },
    /// Retried until the time allowed for one judgment ran out; the last try's error.
    #[error("{last} (retried for {seconds:.1} s)")]
    RetriedFor { seconds: f64, last: Box<JudgeError> },
    #[error(transparent)]
    Template(#[from] TemplateError),
}

/// An answer as StableToolBench's converter writes it for the judge.
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    pub query: String,
    pub final_answer: String,
    /// Tool steps, as the `answer_details` chain holds them.
    pub steps: Vec<Value>,
    pub tool_names: Vec<String>,
    /// The functions offered (`available_tools`: the answer file's function specs).
    pub available_tools: Vec<Value>,
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
        available_tools: functions,
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

    /// The verdict that needs no judge (`compute_pass_rate`'s and `check_is_solved`'s
    /// first checks): Unsolved when the last step is no `Finish` call, or the final answer
    /// is empty or a give-up; `None` when the judge must be asked.
    pub fn verdict_without_judge(&self) -> Option<AnswerStatus> {
        let (_, final_step) = self.step_texts();
        if !final_step.contains("'name': 'Finish'")
            || self.final_answer.is_empty()
            || self.final_answer.contains("give_up_and_restart")
        {
            return Some(AnswerStatus::Unsolved);
        }
        None
    }

    /// `compute_pass_rate` + `check_is_solved` for one evaluation.
    pub async fn judge(&self, judge: &dyn Judge) -> Result<AnswerStatus, JudgeError> {
        if let Some(status) = self.verdict_without_judge() {
            return Ok(status);
        }
        let status = judge
            .answer_status(JudgeCall::new(
                "check_answer_status",
                fill(CHECK_ANSWER_STATUS, &self.query, &self.final_answer)?,
                true,
            ))
            .await?;
        if status != AnswerStatus::Unsure {
            return Ok(status);
        }
        judge
            .answer_status(JudgeCall::new(
                "parse_answer_status",
                fill(
                    PARSE_ANSWER_STATUS,
                    &self.query,
                    &pyjson::dumps(&self.answer),
                )?,
                true,
            ))
            .await
    }
}

/// A template Python's `str.format` would refuse (the templates are StableToolBench's
/// constants, so this is a bug in them, never in an answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template: a single '{0}' at byte {1} (Python's str.format refuses it)")]
    Unmatched(char, usize),
    #[error("template: the field {{{0}}} is not one of the arguments")]
    UnknownField(String),
}

/// The judge's template filled with `query` and `answer` as StableToolBench fills it:
/// `str(template).format(query=…, answer=…)`.
fn fill(template: &str, query: &str, answer: &str) -> Result<String, TemplateError> {
    format_fields(template, &[("query", query), ("answer", answer)])
}

/// Python's `str.format` with keyword arguments, for the templates' `{name}` fields:
/// one pass over the template (a value is inserted as is, never scanned again, so a
/// query holding `{answer}` keeps it), `{{` and `}}` are literal braces, a lone brace or a
/// field that is no argument is an error. Conversions and format specs (`{x!r}`,
/// `{x:>4}`) are not supported: the templates have none, so they read as unknown fields.
pub fn format_fields(template: &str, args: &[(&str, &str)]) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template.char_indices().peekable();
    while let Some((at, c)) = rest.next() {
        match c {
            '{' if rest.peek().is_some_and(|&(_, n)| n == '{') => {
                rest.next();
                out.push('{');
            }
            '{' => {
                let start = at + 1;
                let end = loop {
                    match rest.next() {
                        Some((i, '}')) => break i,
                        Some((_, '{')) | None => return Err(TemplateError::Unmatched('{', at)),
                        Some(_) => {}
                    }
                };
                let name = &template[start..end];
                let value = args
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| *v)
                    .ok_or_else(|| TemplateError::UnknownField(name.to_string()))?;
                out.push_str(value);
            }
            '}' if rest.peek().is_some_and(|&(_, n)| n == '}') => {
                rest.next();
                out.push('}');
            }
            '}' => return Err(TemplateError::Unmatched('}', at)),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// One answer file of a folder, chosen by `answer_files`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerFile {
    pub query_id: String,
    pub file_name: String,
}

/// The answer files among `names` (a folder's file names, in the order they are read) as
/// `convert_to_answer_format.py` chooses them: `filename.endswith('.json') and method in
/// filename`, the query id `filename.split('_')[0]`; one file per id, a later name
/// replacing an earlier one of the same id at the earlier one's place (a Python dict's
/// assignment). So with `DFS_woFilter_w2` a `7_CoT@1.json` beside `7_DFS_woFilter_w2.json`
/// is not read, and the two are never both counted. Returns the files and the names that
/// were replaced (the converter drops them silently).
pub fn answer_files<S: AsRef<str>>(names: &[S], method: &str) -> (Vec<AnswerFile>, Vec<String>) {
    let mut files: Vec<AnswerFile> = Vec::new();
    let mut replaced = Vec::new();
    for name in names.iter().map(AsRef::as_ref) {
        if !(name.ends_with(".json") && name.contains(method)) {
            continue;
        }
        let query_id = name.split('_').next().unwrap_or(name).to_string();
        let file = AnswerFile {
            query_id,
            file_name: name.to_string(),
        };
        match files.iter_mut().find(|f| f.query_id == file.query_id) {
            Some(earlier) => replaced.push(std::mem::replace(earlier, file).file_name),
            None => files.push(file),
        }
    }
    (files, replaced)
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

/// A mean and standard deviation as StableToolBench reports them (`mean±std` in its
/// tables; `eval_pass_rate.py` prints `sum(scores) / len(scores)` and `np.std(scores)`):
/// the population standard deviation (numpy's default, `ddof=0`: divided by n, not n-1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub mean: f64,
    pub std: f64,
}

impl Spread {
    /// Of `values`; zero and zero for none.
    pub fn of(values: &[f64]) -> Spread {
        let n = values.len().max(1) as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        Spread {
            mean,
            std: var.sqrt(),
        }
    }
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
    let spread = Spread::of(&runs);
    PassRate {
        solve_rate: spread.mean * 100.0,
        std: spread.std * 100.0,
        queries: verdicts.len(),
        evaluate_times,
    }
}

/// StableToolBench's result file (`label_cnt`): per query id, in the answers' order, its
/// `result_entry`.
pub fn result_file(answers: &[(String, Converted)], verdicts: &[Vec<AnswerStatus>]) -> Value {
    let entries: Map<String, Value> = answers
        .iter()
        .zip(verdicts)
        .map(|((id, converted), v)| (id.clone(), result_entry(converted, v)))
        .collect();
    Value::Object(entries)
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
        fn call<'a>(&'a self, call: JudgeCall) -> BoxFuture<'a, Result<Value, JudgeError>> {
            let mut calls = self.1.lock().unwrap();
            let status = self.0[calls.len()];
            calls.push(call);
            let arguments = json!({"answer_status": format!("{status:?}"), "reason": "scripted"});
            Box::pin(async move { Ok(arguments) })
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

    /// tests/fixtures/pass-rate (scripts/make_pass_rate_fixture.py): answer files and
    /// what StableToolBench's own converter and evaluator made of them.
    fn fixture(path: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/pass-rate")
            .join(path)
    }

    fn expected() -> Value {
        serde_json::from_slice(&std::fs::read(fixture("expected.json")).unwrap()).unwrap()
    }

    fn fixture_names() -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(fixture("answers"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn read_fixture(name: &str) -> Value {
        serde_json::from_slice(&std::fs::read(fixture("answers").join(name)).unwrap()).unwrap()
    }

    #[test]
    fn answer_files_are_chosen_by_method_as_the_converter_chooses_them() {
        let expected = expected();
        for method in ["DFS_woFilter_w2", "CoT@1"] {
            let (files, replaced) = answer_files(&fixture_names(), method);
            assert!(replaced.is_empty());
            let mut ids: Vec<&str> = files.iter().map(|f| f.query_id.as_str()).collect();
            ids.sort();
            let reference = expected["converted"][method].as_object().unwrap();
            let mut want: Vec<&str> = reference.keys().map(String::as_str).collect();
            want.sort();
            assert_eq!(ids, want, "{method}");
            for file in &files {
                let converted = convert(&read_fixture(&file.file_name), method);
                assert_eq!(
                    converted.answer, reference[&file.query_id]["answer"],
                    "{method} {}",
                    file.file_name
                );
            }
        }
        // One id answered by both methods is one answer; other files are no answers; a
        // second file of one id replaces the first, as a dict assignment does.
        let names = [
            "7_CoT@1.json",
            "7_DFS_woFilter_w2.json",
            "8_DFS_woFilter_w2.json",
            "pass_rate.json",
            "summary.json",
            "9_DFS_woFilter_w2.json.bak",
            "8_old_DFS_woFilter_w2.json",
        ];
        let (files, replaced) = answer_files(&names, "DFS_woFilter_w2");
        let chosen: Vec<(&str, &str)> = files
            .iter()
            .map(|f| (f.query_id.as_str(), f.file_name.as_str()))
            .collect();
        assert_eq!(
            chosen,
            [
                ("7", "7_DFS_woFilter_w2.json"),
                ("8", "8_old_DFS_woFilter_w2.json")
            ]
        );
        assert_eq!(replaced, ["8_DFS_woFilter_w2.json"]);
    }

    /// The prompts, and whether the judge is asked at all, are those StableToolBench's
    /// evaluator made of the same answers: a query holding `{answer}`, `{query}` and
    /// braces keeps them (one `str.format` pass), an answer holding `{query}` too.
    #[test]
    fn the_judge_gets_the_prompts_stabletoolbenchs_evaluator_sends() {
        let expected = expected();
        let (files, _) = answer_files(&fixture_names(), "DFS_woFilter_w2");
        for file in &files {
            let reference = &expected["judged"][&file.query_id];
            let converted = convert(&read_fixture(&file.file_name), "DFS_woFilter_w2");
            let (steps, last) = converted.step_texts();
            assert_eq!(
                json!([steps, last]),
                reference["steps"],
                "{}",
                file.file_name
            );
            let script: Vec<AnswerStatus> = reference["requests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    let function = r["tool_choice"]["function"]["name"].as_str().unwrap();
                    match (file.query_id.as_str(), function) {
                        ("7", "check_answer_status") => AnswerStatus::Unsure,
                        ("7", _) => AnswerStatus::Solved,
                        _ => AnswerStatus::Unsolved,
                    }
                })
                .collect();
            let judge = Scripted(script, Default::default());
            let verdict = crate::testing::block_on(converted.judge(&judge)).unwrap();
            assert_eq!(json!(verdict.recorded()), reference["verdict"]);
            let calls = judge.1.lock().unwrap();
            let sent: Vec<Value> = calls
                .iter()
                .map(|c| json!([c.function, c.prompt]))
                .collect();
            let want: Vec<Value> = reference["requests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    json!([
                        r["tool_choice"]["function"]["name"],
                        r["messages"][0]["content"]
                    ])
                })
                .collect();
            assert_eq!(sent, want, "{}", file.file_name);
        }
    }

    #[test]
    fn templates_are_filled_in_one_pass_as_python_format_fills_them() {
        let args = [("query", "say {answer} {{x}}"), ("answer", "A {query}")];
        assert_eq!(
            format_fields("Q: {query}\nA: {answer} {{lit}} }}{{", &args),
            Ok("Q: say {answer} {{x}}\nA: A {query} {lit} }{".to_string())
        );
        assert_eq!(
            format_fields("a { b", &args),
            Err(TemplateError::Unmatched('{', 2))
        );
        assert_eq!(
            format_fields("a } b", &args),
            Err(TemplateError::Unmatched('}', 2))
        );
        assert_eq!(
            format_fields("{task}", &args),
            Err(TemplateError::UnknownField("task".into()))
        );
        // StableToolBench's two templates take exactly these fields.
        for template in [CHECK_ANSWER_STATUS, PARSE_ANSWER_STATUS] {
            assert!(fill(template, "q", "a").is_ok());
        }
    }

    #[test]
    fn several_runs_spread_as_numpy_mean_and_std() {
        for case in expected()["runs"].as_array().unwrap() {
            let rates: Vec<f64> = case["rates"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_f64().unwrap())
                .collect();
            let spread = Spread::of(&rates);
            assert!(
                (spread.mean - case["mean"].as_f64().unwrap()).abs() < 1e-12,
                "{case}"
            );
            assert!(
                (spread.std - case["std"].as_f64().unwrap()).abs() < 1e-12,
                "{case}"
            );
        }
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
