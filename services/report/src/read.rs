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
use umi_core::pass_rate::{score, AnswerStatus, PassRate};
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

/// The method an answer file's name ends with (`DFS_woFilter_w2`, `CoT@1`), and its id.
fn answer_file_name(name: &str) -> Option<(&str, &str)> {
    let stem = name.strip_suffix(".json")?;
    for marker in ["_DFS_woFilter_w", "_CoT@"] {
        if let Some(at) = stem.rfind(marker) {
            let method = &stem[at + 1..];
            let number = method.rsplit(['w', '@']).next().unwrap_or_default();
            if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) && at > 0 {
                return Some((&stem[..at], method));
            }
        }
    }
    None
}

/// One run directory, or None when `dir` holds no run.
fn read_group(dir: &Path, name: &str) -> Result<Option<Group>, ReportError> {
    let manifest_method = std::fs::read(dir.join("manifest.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|m| m.get("method").and_then(Value::as_str).map(str::to_string));
    let mut answers: BTreeMap<String, (String, PathBuf)> = BTreeMap::new();
    for path in sorted_entries(dir)? {
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some((id, method)) = answer_file_name(&file_name) {
            if manifest_method.as_deref().is_none_or(|m| m == method) {
                answers.insert(id.to_string(), (method.to_string(), path));
            }
        }
    }
    let trace = read_trace(&dir.join(TRACE_FILE))?;
    if answers.is_empty() && trace.is_empty() {
        return Ok(None);
    }
    let mut tasks = Vec::new();
    let ids: std::collections::BTreeSet<&String> = answers.keys().chain(trace.keys()).collect();
    for id in ids {
        let answer = match answers.get(id) {
            Some((_, path)) => Some(read_json(path)?),
            None => None,
        };
        tasks.push(task(id, answer, trace.get(id)));
    }
    let method = manifest_method
        .or_else(|| answers.values().next().map(|(m, _)| m.clone()))
        .unwrap_or_default();
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
        if let Some(task) = tasks.iter_mut().find(|t| &t.id == id) {
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
    let data = std::fs::read(dir.join("manifest.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|m| {
            m.pointer("/data/path")
                .or_else(|| m.pointer("/data/built_in"))
                .or_else(|| m.get("data"))
                .and_then(Value::as_str)
                .map(str::to_string)
        });
    let predictions_path = dir.join("predictions.json");
    let steps = if predictions_path.is_file() {
        let entries = read_json(&predictions_path)?;
        let entries = entries
            .as_array()
            .ok_or_else(|| unreadable(&predictions_path, "not a list"))?;
        let predictions =
            read_predictions(entries).map_err(|e| unreadable(&predictions_path, e))?;
        step_outcomes(&scored(&predictions), umi_core::parse::parse_output)
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
    fn answer_file_names_give_id_and_method() {
        assert_eq!(
            answer_file_name("12_DFS_woFilter_w2.json"),
            Some(("12", "DFS_woFilter_w2"))
        );
        assert_eq!(answer_file_name("a_b_CoT@1.json"), Some(("a_b", "CoT@1")));
        for other in [
            "manifest.json",
            "summary.json",
            "pass_rate.json",
            "_DFS_woFilter_w2.json",
            "x_DFS_woFilter_wz.json",
        ] {
            assert_eq!(answer_file_name(other), None, "{other}");
        }
    }
}
