//! `umi eval pass-rate`: StableToolBench's solvable pass rate of a directory of answer
//! files (`umi_core::pass_rate`), judged by an OpenAI-compatible model; writes the result
//! file in StableToolBench's schema and prints its line (`Solve rate: …% Std: …%`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use futures::StreamExt;
use serde_json::{json, Map, Value};
use umi_core::pass_rate::{convert, result_entry, score, AnswerStatus, Converted};
use umi_tools::judge::OpenAiJudge;

use super::support::output::{json_files_in, write_json_atomically};

#[derive(Args, Debug)]
pub struct PassRateArgs {
    /// A directory of answer files (`<query_id>_<method>.json`), as `umi run` writes them.
    #[arg(long)]
    pub answers: PathBuf,
    /// The judge: an OpenAI-compatible endpoint, `http(s)://host:port/v1`. Required: there
    /// is no pass rate without one.
    #[arg(long)]
    pub judge: Option<String>,
    /// The judge's model (StableToolBench's default evaluator: gpt-3.5-turbo-16k).
    #[arg(long, default_value = "gpt-3.5-turbo-16k")]
    pub judge_model: String,
    /// The judge's API key.
    #[arg(long, env = "UMI_JUDGE_API_KEY", hide_env_values = true)]
    pub judge_api_key: Option<String>,
    /// Judgments per query (StableToolBench's default: 4).
    #[arg(long, default_value_t = 4)]
    pub evaluate_times: usize,
    /// Only the queries listed in this file (StableToolBench's
    /// `solvable_queries/test_query_ids/<group>.json`, a JSON object keyed by id).
    #[arg(long)]
    pub test_ids: Option<PathBuf>,
    /// Judge calls at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// The result file (default: <answers>/pass_rate.json), StableToolBench's schema:
    /// per query id, its query, tools, steps, final step and each judgment.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The answers of `dir` as (query id, method, converted), sorted by file name; `results`
/// (this run's output file) and the pass rate's default output files are no answers.
fn read_answers(
    dir: &Path,
    ids: Option<&Map<String, Value>>,
    results: &Path,
) -> anyhow::Result<Vec<(String, Converted)>> {
    let files = json_files_in(dir)?;
    let mut out = Vec::new();
    for file in files {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        if file == results
            || file == results.with_extension("summary.json")
            || name.starts_with("pass_rate.")
        {
            continue;
        }
        let stem = file
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let Some((id, method)) = stem.split_once('_') else {
            continue; // summary.json and the like
        };
        if ids.is_some_and(|ids| !ids.contains_key(id)) {
            continue;
        }
        let value: Value = serde_json::from_slice(
            &std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?,
        )
        .with_context(|| format!("{}: not JSON", file.display()))?;
        if value.get("answer_generation").is_none() {
            bail!(
                "{}: not an answer file (no answer_generation)",
                file.display()
            );
        }
        out.push((id.to_string(), convert(&value, method)));
    }
    if out.is_empty() {
        bail!(
            "{}: no answer files (<query_id>_<method>.json) to judge",
            dir.display()
        );
    }
    Ok(out)
}

pub async fn run(a: PassRateArgs) -> anyhow::Result<()> {
    let Some(base) = a.judge.clone() else {
        bail!("the pass rate needs a judge: give --judge http(s)://host:port/v1 (an OpenAI-compatible endpoint; StableToolBench uses gpt-3.5-turbo-16k). umi makes up no proxy for it");
    };
    if a.evaluate_times == 0 || a.concurrency == 0 {
        bail!("--evaluate-times and --concurrency must be at least 1");
    }
    let ids = match &a.test_ids {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let v: Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: not JSON", path.display()))?;
            Some(v.as_object().cloned().with_context(|| {
                format!("{}: not a JSON object keyed by query id", path.display())
            })?)
        }
        None => None,
    };
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| a.answers.join("pass_rate.json"));
    let answers = read_answers(&a.answers, ids.as_ref(), &out)?;
    let judge = OpenAiJudge {
        base,
        model: a.judge_model.clone(),
        api_key: a.judge_api_key.clone(),
        timeout: Duration::from_secs(120),
    };
    let jobs = answers
        .iter()
        .enumerate()
        .flat_map(|(q, _)| (0..a.evaluate_times).map(move |run| (q, run)));
    let mut verdicts: Vec<Vec<Option<AnswerStatus>>> =
        vec![vec![None; a.evaluate_times]; answers.len()];
    let mut results = futures::stream::iter(jobs.map(|(q, run)| {
        let judge = &judge;
        let converted = &answers[q].1;
        async move { (q, run, converted.judge(judge).await) }
    }))
    .buffer_unordered(a.concurrency);
    while let Some((q, run, verdict)) = results.next().await {
        let verdict =
            verdict.map_err(|e| anyhow::anyhow!("judging query {}: {e}", answers[q].0))?;
        verdicts[q][run] = Some(verdict);
    }
    let verdicts: Vec<Vec<AnswerStatus>> = verdicts
        .into_iter()
        .map(|v| v.into_iter().flatten().collect())
        .collect();
    let mut label_cnt = Map::new();
    for ((id, converted), v) in answers.iter().zip(&verdicts) {
        label_cnt.insert(id.clone(), result_entry(converted, v));
    }
    write_json_atomically(&out, &Value::Object(label_cnt))?;
    let rate = score(&verdicts, a.evaluate_times);
    write_json_atomically(&out.with_extension("summary.json"), &json!(rate))?;
    println!(
        "Solve rate: {:.1}% Std: {:.1}% ({} queries, {} judgments each) -> {}",
        rate.solve_rate,
        rate.std,
        rate.queries,
        rate.evaluate_times,
        out.display()
    );
    Ok(())
}
