//! `umi eval pass-rate`: StableToolBench's solvable pass rate of one or more folders of
//! answer files (`umi_core::pass_rate`), judged by an OpenAI-compatible model with
//! StableToolBench's timeouts and retries (`umi_tools::judge`); verdicts are kept in a
//! file and reused (`umi_tools::verdicts`). Per folder (an inference run) it writes the
//! result file in StableToolBench's schema and prints its line (`Solve rate: …% Std:
//! …%`); over several folders, the mean and standard deviation of their rates.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Map, Value};
use umi_core::pass_rate::{answer_files, convert, result_file, score, Converted, Spread};
use umi_tools::judge::Backoff;
use umi_tools::verdicts::{judge_all, VerdictStore};

use super::args::judge::JudgeArgs;
use super::support::output::{json_files_in, write_json_atomically};

#[derive(Args, Debug)]
pub struct PassRateArgs {
    /// A directory of answer files (`<query_id>_<method>.json`), as `umi run` writes them:
    /// one inference run. Repeat it for several runs: each is scored, then the mean and
    /// standard deviation of their rates are reported.
    #[arg(long, required = true)]
    pub answers: Vec<PathBuf>,
    /// The method whose answer files count, StableToolBench's converter's rule: the
    /// `.json` files whose name contains it (so a query's CoT@1 and DFS files are not
    /// both counted). `umi run` writes `DFS_woFilter_w<width>` (`--width 2`, the default)
    /// or `CoT@1` (`--width 1`).
    #[arg(long, default_value = "DFS_woFilter_w2")]
    pub method: String,
    #[command(flatten)]
    pub judge: JudgeArgs,
    /// Judgments per query (StableToolBench's default: 4).
    #[arg(long, default_value_t = 4)]
    pub evaluate_times: usize,
    /// Only the queries listed in this file (StableToolBench's
    /// `solvable_queries/test_query_ids/<group>.json`, a JSON object keyed by id).
    #[arg(long)]
    pub test_ids: Option<PathBuf>,
    /// Judgments at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// The result file (default: <answers>/pass_rate.json), StableToolBench's schema:
    /// per query id, its query, tools, steps, final step and each judgment. Its summary
    /// goes beside it (`.summary.json`). With several --answers each run's is in its
    /// folder.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The verdicts kept between evaluations (default: pass_rate.verdicts.jsonl beside
    /// the result file), keyed by query id and text, the answer's hash, the judge model
    /// and the evaluation: only what is not there is asked of the judge.
    #[arg(long)]
    pub verdicts: Option<PathBuf>,
    /// Also write the summary over all runs here.
    #[arg(long)]
    pub summary: Option<PathBuf>,
}

/// The answers of `dir` as (query id, converted), the files chosen by `answer_files` in
/// file-name order; `results` (this run's output file) and the pass rate's own files are
/// no answers.
pub(crate) fn read_answers(
    dir: &Path,
    method: &str,
    ids: Option<&Map<String, Value>>,
    results: &Path,
) -> anyhow::Result<Vec<(String, Converted)>> {
    let files: Vec<PathBuf> = json_files_in(dir)?
        .into_iter()
        .filter(|file| {
            let name = file.file_name().unwrap_or_default().to_string_lossy();
            !(file == results
                || *file == results.with_extension("summary.json")
                || name.starts_with("pass_rate."))
        })
        .collect();
    let names: Vec<String> = files
        .iter()
        .map(|f| {
            f.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let (chosen, replaced) = answer_files(&names, method);
    for name in &replaced {
        eprintln!(
            "{}: {name} is replaced by a later file of its query id (StableToolBench's converter keeps one)",
            dir.display()
        );
    }
    let mut out = Vec::new();
    for file in chosen {
        if ids.is_some_and(|ids| !ids.contains_key(&file.query_id)) {
            continue;
        }
        let path = dir.join(&file.file_name);
        let value: Value = serde_json::from_slice(
            &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("{}: not JSON", path.display()))?;
        if value.get("answer_generation").is_none() {
            bail!(
                "{}: not an answer file (no answer_generation)",
                path.display()
            );
        }
        out.push((file.query_id, convert(&value, method)));
    }
    if out.is_empty() {
        let methods: Vec<&str> = names
            .iter()
            .filter_map(|n| n.strip_suffix(".json")?.split_once('_').map(|(_, m)| m))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        bail!(
            "{}: no answer files of method {method} (<query_id>_{method}.json) to judge{}",
            dir.display(),
            if methods.is_empty() {
                String::new()
            } else {
                format!("; methods there: {} (--method)", methods.join(", "))
            }
        );
    }
    Ok(out)
}

/// A `test_query_ids/<group>.json`: a JSON object keyed by query id.
pub(crate) fn read_test_ids(path: &Path) -> anyhow::Result<Map<String, Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    v.as_object()
        .cloned()
        .with_context(|| format!("{}: not a JSON object keyed by query id", path.display()))
}

pub async fn run(a: PassRateArgs) -> anyhow::Result<()> {
    let (judge, judge_id) = a.judge.judge("the pass rate")?;
    if a.evaluate_times == 0 || a.concurrency == 0 {
        bail!("--evaluate-times and --concurrency must be at least 1");
    }
    if a.answers.len() > 1 && (a.out.is_some() || a.verdicts.is_some()) {
        bail!("--out and --verdicts name one run's files: with several --answers each run keeps its own in its folder (pass_rate.json, pass_rate.verdicts.jsonl)");
    }
    let ids = a.test_ids.as_deref().map(read_test_ids).transpose()?;
    let backoff = Backoff::default();

    let mut runs = Vec::new();
    for dir in &a.answers {
        let out = a.out.clone().unwrap_or_else(|| dir.join("pass_rate.json"));
        let answers = read_answers(dir, &a.method, ids.as_ref(), &out)?;
        let verdicts_path = a.verdicts.clone().unwrap_or_else(|| {
            out.parent()
                .unwrap_or(Path::new("."))
                .join("pass_rate.verdicts.jsonl")
        });
        let mut store = VerdictStore::open(&verdicts_path)?;
        let judged = judge_all(
            &answers,
            &judge,
            // Verdicts are the judge's: its model at its endpoint (two servers may both
            // call their model "default").
            &judge_id,
            &mut store,
            a.evaluate_times,
            a.concurrency,
            &backoff,
        )
        .await?;
        write_json_atomically(&out, &result_file(&answers, &judged.verdicts))?;
        let rate = score(&judged.verdicts, a.evaluate_times);
        println!(
            "Solve rate: {:.1}% Std: {:.1}% ({} queries, {} judgments each) -> {}",
            rate.solve_rate,
            rate.std,
            rate.queries,
            rate.evaluate_times,
            out.display()
        );
        eprintln!(
            "{}: {} judgments asked of the judge, {} reused from {}, {} without it",
            dir.display(),
            judged.asked,
            judged.reused,
            store.path().display(),
            judged.without_judge
        );
        runs.push((dir.clone(), out, rate, judged));
    }

    let rates: Vec<f64> = runs.iter().map(|(_, _, rate, _)| rate.solve_rate).collect();
    let spread = Spread::of(&rates);
    let over_runs = json!({
        "method": a.method,
        "judge_model": a.judge.judge_model,
        "evaluate_times": a.evaluate_times,
        "runs": runs.iter().map(|(dir, out, rate, judged)| json!({
            "answers": dir,
            "result": out,
            "solve_rate": rate.solve_rate,
            "std": rate.std,
            "queries": rate.queries,
            "asked": judged.asked,
            "reused": judged.reused,
        })).collect::<Vec<_>>(),
        "solve_rate_mean": spread.mean,
        "solve_rate_std": spread.std,
        "std_of": "the runs' solve rates, population (numpy.std, ddof=0), as StableToolBench's eval_pass_rate.py",
    });
    for (_, out, rate, judged) in &runs {
        // The run's own fields first (the summary's schema), then what was added.
        let mut summary = json!(rate);
        if let Some(fields) = summary.as_object_mut() {
            fields.insert("method".into(), json!(a.method));
            fields.insert("judge_model".into(), json!(a.judge.judge_model));
            fields.insert("asked".into(), json!(judged.asked));
            fields.insert("reused".into(), json!(judged.reused));
            fields.insert("over_runs".into(), over_runs.clone());
        }
        write_json_atomically(&out.with_extension("summary.json"), &summary)?;
    }
    if let Some(path) = &a.summary {
        write_json_atomically(path, &over_runs)?;
    }
    if runs.len() > 1 {
        println!(
            "Over {} runs: Solve rate: {:.1}% Std: {:.1}% (population std of the runs' rates)",
            runs.len(),
            spread.mean,
            spread.std
        );
    }
    Ok(())
}
