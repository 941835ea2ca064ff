//! What a report is drawn from. A run directory (`umi run --out`) holds answer files
//! (`<id>_<method>.json`), `manifest.json`, and since this version `trace.jsonl`; after
//! `umi eval pass-rate`, `pass_rate.json`. A folder of such directories (one per query
//! group, as `scripts/stabletoolbench.sh` leaves them) is read group by group. A static
//! evaluation's folder (`umi eval static --out`) holds `metrics.json` and
//! `predictions.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use umi_core::answer::recorded_outcome;
use umi_core::dfs::Outcome;
use umi_core::pass_rate::{answer_files, score, AnswerStatus, PassRate};
use umi_core::scores::{step_outcomes, StepOutcome};
use umi_core::static_eval::{read_predictions, scored};
use umi_core::trace::{TaskTrace, TraceLine, TRACE_FILE};

use crate::ReportError;

/// What `umi report` draws.
pub enum Report {
    Run(RunReport),
    Static(StaticReport),
}

pub struct RunReport {
    /// The folder's name.
    pub title: String,
    pub groups: Vec<Group>,
}

/// One run directory: one query group.
pub struct Group {
    pub name: String,
    pub method: String,
    pub tasks: Vec<Task>,
    /// StableToolBench's pass rate, where `umi eval pass-rate` left its result file.
    pub pass_rate: Option<PassRate>,
    /// ToolEval's win rate, where `umi eval win-rate` left its summary.
    pub win_rate: Option<WinRateSummary>,
}

/// `win_rate.summary.json`, as `umi eval win-rate` writes it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct WinRateSummary {
    pub reference: String,
    pub win_rate: f64,
    pub tie_rate: f64,
    pub queries: usize,
    pub evaluate_times: usize,
}

/// How a task ended, as the report counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TaskEnd {
    Solved,
    GaveUp,
    Exhausted,
    Failed,
}

impl TaskEnd {
    pub const ALL: [TaskEnd; 4] = [
        TaskEnd::Solved,
        TaskEnd::GaveUp,
        TaskEnd::Exhausted,
        TaskEnd::Failed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            TaskEnd::Solved => "solved",
            TaskEnd::GaveUp => "gave up",
            TaskEnd::Exhausted => "exhausted",
            TaskEnd::Failed => "failed",
        }
    }

    fn of(outcome: Outcome, failed: bool) -> TaskEnd {
        match (failed, outcome) {
            (true, _) => TaskEnd::Failed,
            (false, Outcome::Answered) => TaskEnd::Solved,
            (false, Outcome::GaveUp) => TaskEnd::GaveUp,
            (false, Outcome::Exhausted) => TaskEnd::Exhausted,
        }
    }
}

pub struct Task {
    pub id: String,
    pub query: String,
    pub end: TaskEnd,
    pub steps: usize,
    pub tokens: usize,
    /// Its calls, where `umi run` traced them.
    pub calls: Option<TaskTrace>,
    /// The search tree of its answer file (`tree.tree`).
    pub tree: Option<Value>,
    /// The judge's verdicts, where the pass rate was computed.
    pub verdicts: Vec<AnswerStatus>,
}

pub struct StaticReport {
    pub title: String,
    /// The test file the evaluation ran over (from its manifest), if known.
    pub data: Option<String>,
    /// `metrics.json` as written (the reference evaluator's keys).
    pub metrics: Value,
    /// Each step's judgment, from `predictions.json` (empty without it).
    pub steps: Vec<StepOutcome>,
}

/// Reads `dir`: a static evaluation's output, a run directory, or a folder of run
/// directories.
pub fn read(dir: &Path) -> Result<Report, ReportError> {
    if !dir.is_dir() {
        return Err(ReportError::Unreadable {
            path: dir.to_path_buf(),
            message: "not a folder".into(),
        });
    }
    let title = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string());
    if dir.join("metrics.json").is_file() {
        return read_static(dir, title).map(Report::Static);
    }
    let mut groups = Vec::new();
    if let Some(group) = read_group(dir, &title)? {
        groups.push(group);
    } else {
        for sub in sorted_entries(dir)? {
            if sub.is_dir() {
                let name = sub
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if let Some(group) = read_group(&sub, &name)? {
                    groups.push(group);
                }
            }
        }
    }
    if groups.is_empty() {
        return Err(ReportError::NothingToReport {
            path: dir.to_path_buf(),
            message: "no answer files (<id>_<method>.json), no trace.jsonl and no metrics.json here or in its folders: give a folder `umi run` or `umi eval static` wrote".into(),
        });
    }
    Ok(Report::Run(RunReport { title, groups }))
}

fn unreadable(path: &Path, e: impl std::fmt::Display) -> ReportError {
    ReportError::Unreadable {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| unreadable(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    out.sort();
    Ok(out)
}

fn read_json(path: &Path) -> Result<Value, ReportError> {
    let bytes = std::fs::read(path).map_err(|e| unreadable(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| unreadable(path, format!("not JSON: {e}")))
}

/// The method an answer file's name ends with (`DFS_woFilter_w2`, `CoT@1`), if any.
fn method_of(name: &str) -> Option<&str> {
    let stem = name.strip_suffix(".json")?;
    ["_DFS_woFilter_w", "_CoT@"].iter().find_map(|marker| {
        let at = stem.rfind(marker)?;
        let method = &stem[at + 1..];
        let number = method.rsplit(['w', '@']).next().unwrap_or_default();
        (at > 0 && !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()))
            .then_some(method)
    })
}

/// One run directory, or None when `dir` holds no run.
fn read_group(dir: &Path, name: &str) -> Result<Option<Group>, ReportError> {
    let manifest_method = std::fs::read(dir.join("manifest.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|m| m.get("method").and_then(Value::as_str).map(str::to_string));
    let names: Vec<String> = sorted_entries(dir)?
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    // The run's method, else the one most answer files here have.
    let method = manifest_method.or_else(|| {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for m in names.iter().filter_map(|n| method_of(n)) {
            *counts.entry(m).or_default() += 1;
        }
        counts
            .into_iter()
            .max_by_key(|&(_, n)| n)
            .map(|(m, _)| m.to_string())
    });
    // The answer files as StableToolBench's converter picks them; a task's id is the
    // file name less the method (ids may hold '_', which the converter's ids cut at).
    let mut answers: BTreeMap<String, PathBuf> = BTreeMap::new();
    if let Some(method) = &method {
        let suffix = format!("_{method}.json");
        for file in answer_files(&names, method).0 {
            let id = file
                .file_name
                .strip_suffix(&suffix)
                .unwrap_or(&file.query_id)
                .to_string();
            answers.insert(id, dir.join(&file.file_name));
        }
    }
    let mut trace = read_trace(&dir.join(TRACE_FILE))?;
    // Another method's tasks (a --width 1 run into the same folder) are not this run's.
    if let Some(method) = &method {
        trace.retain(|_, line| &line.method == method);
    }
    if answers.is_empty() && trace.is_empty() {
        return Ok(None);
    }
    let mut tasks = Vec::new();
    let ids: std::collections::BTreeSet<&String> = answers.keys().chain(trace.keys()).collect();
    for id in ids {
        let answer = match answers.get(id) {
            Some(path) => Some(read_json(path)?),
            None => None,
        };
        tasks.push(task(id, answer, trace.get(id)));
    }
    let method = method.unwrap_or_default();
    let pass_rate = read_verdicts(&dir.join("pass_rate.json"), &mut tasks)?;
    let summary = dir.join("win_rate.summary.json");
    let win_rate = if summary.is_file() {
        Some(
            serde_json::from_value(read_json(&summary)?)
                .map_err(|e| unreadable(&summary, format!("not a win-rate summary: {e}")))?,
        )
    } else {
        None
    };
    Ok(Some(Group {
        name: name.to_string(),
        method,
        tasks,
        pass_rate,
        win_rate,
    }))
}

/// The trace's last line per id (a task run again is traced again).
fn read_trace(path: &Path) -> Result<BTreeMap<String, TraceLine>, ReportError> {
    let mut lines = umi_durable::JsonLines::open(path).map_err(|e| unreadable(path, e))?;
    let mut out = BTreeMap::new();
    while let Some(line) = lines
        .next_record::<TraceLine>()
        .map_err(|e| unreadable(path, e))?
    {
        out.insert(line.id.clone(), line);
    }
    Ok(out)
}

fn task(id: &str, answer: Option<Value>, traced: Option<&TraceLine>) -> Task {
    let generation = answer.as_ref().and_then(|a| a.get("answer_generation"));
    let count = |key: &str| {
        generation
            .and_then(|g| g.get(key))
            .and_then(Value::as_u64)
            .unwrap_or(0) as usize
    };
    let query = generation
        .and_then(|g| g.get("query"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let tree = answer
        .as_ref()
        .and_then(|a| a.pointer("/tree/tree"))
        .cloned();
    let (end, steps, tokens) = match traced {
        Some(line) => (
            TaskEnd::of(line.outcome, line.failure.is_some()),
            line.steps,
            line.tokens,
        ),
        None => {
            let failed = answer.as_ref().is_some_and(|a| a.get("failure").is_some());
            let outcome = answer
                .as_ref()
                .and_then(recorded_outcome)
                .unwrap_or(Outcome::Exhausted);
            (
                TaskEnd::of(outcome, failed),
                count("query_count"),
                count("total_tokens"),
            )
        }
    };
    Task {
        id: id.to_string(),
        query,
        end,
        steps,
        tokens,
        calls: traced.and_then(|l| l.calls.clone()),
        tree,
        verdicts: Vec::new(),
    }
}

/// StableToolBench's result file (`umi eval pass-rate` writes it as the original does):
/// per query id, `is_solved` holds each evaluation's verdict.
fn read_verdicts(path: &Path, tasks: &mut [Task]) -> Result<Option<PassRate>, ReportError> {
    if !path.is_file() {
        return Ok(None);
    }
    let file = read_json(path)?;
    let entries = file
        .as_object()
        .ok_or_else(|| unreadable(path, "not an object of query ids"))?;
    let mut all = Vec::new();
    for (id, entry) in entries {
        let solved = entry
            .get("is_solved")
            .and_then(Value::as_object)
            .ok_or_else(|| unreadable(path, format!("query {id}: no \"is_solved\" object")))?;
        let mut runs: Vec<(usize, AnswerStatus)> = Vec::new();
        for (run, label) in solved {
            let status = label
                .as_str()
                .and_then(|l| AnswerStatus::parse(l.trim_start_matches("AnswerStatus.")))
                .ok_or_else(|| unreadable(path, format!("query {id}: verdict {label} unknown")))?;
            runs.push((run.parse().unwrap_or(usize::MAX), status));
        }
        runs.sort_by_key(|(run, _)| *run);
        let verdicts: Vec<AnswerStatus> = runs.into_iter().map(|(_, s)| s).collect();
        // The result file's ids are the converter's: the file name up to its first '_'.
        if let Some(task) = tasks
            .iter_mut()
            .find(|t| &t.id == id || t.id.split('_').next() == Some(id.as_str()))
        {
            task.verdicts = verdicts.clone();
        }
        all.push(verdicts);
    }
    let times = all.iter().map(Vec::len).max().unwrap_or(0);
    Ok(Some(score(&all, times.max(1))))
}

fn read_static(dir: &Path, title: String) -> Result<StaticReport, ReportError> {
    let metrics = read_json(&dir.join("metrics.json"))?;
    if !metrics.is_object() {
        return Err(unreadable(&dir.join("metrics.json"), "not an object"));
    }
    let manifest = std::fs::read(dir.join("manifest.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let data = manifest.as_ref().and_then(|m| {
        m.pointer("/data/path")
            .or_else(|| m.get("data"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    // The single-LLM baseline's outputs are read by its own evaluator's parser.
    let parse = match manifest
        .as_ref()
        .and_then(|m| m.get("agent"))
        .and_then(Value::as_str)
    {
        Some("backbone") => umi_core::parse::parse_backbone_output,
        _ => umi_core::parse::parse_output,
    };
    let predictions_path = dir.join("predictions.json");
    let steps = if predictions_path.is_file() {
        let entries = read_json(&predictions_path)?;
        let entries = entries
            .as_array()
            .ok_or_else(|| unreadable(&predictions_path, "not a list"))?;
        let predictions =
            read_predictions(entries).map_err(|e| unreadable(&predictions_path, e))?;
        step_outcomes(&scored(&predictions), parse)
    } else {
        Vec::new()
    };
    Ok(StaticReport {
        title,
        data,
        metrics,
        steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_file_names_give_their_method() {
        assert_eq!(
            method_of("12_DFS_woFilter_w2.json"),
            Some("DFS_woFilter_w2")
        );
        assert_eq!(method_of("a_b_CoT@1.json"), Some("CoT@1"));
        for other in [
            "manifest.json",
            "summary.json",
            "pass_rate.json",
            "_DFS_woFilter_w2.json",
            "x_DFS_woFilter_wz.json",
        ] {
            assert_eq!(method_of(other), None, "{other}");
        }
    }

    #[test]
    fn a_folder_of_toolbench_named_answers_reads_with_the_converters_ids() {
        let dir = tempfile::tempdir().unwrap();
        let answer = serde_json::json!({"answer_generation": {"valid_data": true, "finish_type": "give_answer",
            "query": "q", "query_count": 2, "total_tokens": 10, "final_answer": "x"}});
        for name in [
            "10_ChatGPT_DFS_woFilter_w2.json",
            "11_ChatGPT_DFS_woFilter_w2.json",
        ] {
            std::fs::write(dir.path().join(name), answer.to_string()).unwrap();
        }
        std::fs::write(
            dir.path().join("pass_rate.json"),
            r#"{"10": {"is_solved": {"0": "AnswerStatus.Solved"}}}"#,
        )
        .unwrap();
        let Report::Run(run) = read(dir.path()).unwrap() else {
            panic!("not a run")
        };
        let tasks = &run.groups[0].tasks;
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks[0].id, "10_ChatGPT");
        assert_eq!(tasks[0].verdicts, [AnswerStatus::Solved]);
        assert_eq!(run.groups[0].method, "DFS_woFilter_w2");
    }
}
