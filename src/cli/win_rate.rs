//! `umi eval win-rate`: ToolEval's preference evaluation (`umi_core::preference`) of a
//! folder of answer files (the candidate) against another (the reference, e.g. ChatGPT's
//! answers to the same queries), judged by an OpenAI-compatible model. Writes
//! StableToolBench's preference file (per query id, each side's votes and each round's
//! state) and its summary, and prints `eval_preference.py`'s line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::Args;
use serde_json::{json, Map, Value};
use umi_core::preference::win_rate;
use umi_core::pyjson;
use umi_tools::preferences::{compare_all, Pair, PreferenceStore};

use super::args::judge::JudgeArgs;
use super::pass_rate::{read_answers, read_test_ids};
use super::support::output::write_json_atomically;

#[derive(Args, Debug)]
pub struct WinRateArgs {
    /// The candidate's answer files (`<query_id>_<method>.json`), as `umi run` writes them.
    #[arg(long)]
    pub answers: PathBuf,
    /// The reference's answer files for the same queries (ToolEval compares against
    /// ChatGPT's: StableToolBench's `chatgpt_cot` answers, say).
    #[arg(long)]
    pub reference: PathBuf,
    /// The candidate's method (which answer files count).
    #[arg(long, default_value = "DFS_woFilter_w2")]
    pub method: String,
    /// The reference's method (default: --method; `CoT@1` for a `chatgpt_cot` folder).
    #[arg(long)]
    pub reference_method: Option<String>,
    /// Names of the two sides in the result file (default: the folders' names).
    #[arg(long)]
    pub candidate_name: Option<String>,
    #[arg(long)]
    pub reference_name: Option<String>,
    #[command(flatten)]
    pub judge: JudgeArgs,
    /// Rounds per query (the seed's run_eval_prefer.sh: 7; odd, so no ties).
    #[arg(long, default_value_t = 7)]
    pub evaluate_times: usize,
    /// Only the queries listed in this file (`test_query_ids/<group>.json`); default: every
    /// query either side answered (one side's missing answer counts for the other).
    #[arg(long)]
    pub test_ids: Option<PathBuf>,
    /// Judgments at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// The result file (default: <answers>/win_rate.json); its summary goes beside it
    /// (`.summary.json`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The judgments kept between evaluations (default: win_rate.votes.jsonl beside the
    /// result file): only what is not there is asked of the judge.
    #[arg(long)]
    pub votes: Option<PathBuf>,
}

/// The folder's name and its parent's (`runs/G1_instruction` → `G1_instruction`, `runs`).
fn folder_names(dir: &Path) -> (String, String) {
    let full = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let name = |p: Option<&Path>| {
        p.and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    (name(Some(&full)), name(full.parent()))
}

/// The two sides' names in the result file: as given, else their folders' names, or,
/// where those are the same (one group's folder in two runs, as
/// scripts/stabletoolbench.sh compares them), their parent folders' names.
fn side_names(a: &WinRateArgs) -> (String, String) {
    let (candidate, candidate_parent) = folder_names(&a.answers);
    let (reference, reference_parent) = folder_names(&a.reference);
    let (candidate, reference) = if candidate == reference && candidate_parent != reference_parent {
        (candidate_parent, reference_parent)
    } else if candidate == reference {
        ("candidate".to_string(), "reference".to_string())
    } else {
        (candidate, reference)
    };
    (
        a.candidate_name.clone().unwrap_or(candidate),
        a.reference_name.clone().unwrap_or(reference),
    )
}

pub async fn run(a: WinRateArgs) -> anyhow::Result<()> {
    let (judge, judge_id) = a.judge.judge("the win rate")?;
    if a.evaluate_times == 0 || a.concurrency == 0 {
        bail!("--evaluate-times and --concurrency must be at least 1");
    }
    let ids = a.test_ids.as_deref().map(read_test_ids).transpose()?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| a.answers.join("win_rate.json"));
    let reference_method = a.reference_method.as_deref().unwrap_or(&a.method);
    let candidates = read_answers(&a.answers, &a.method, ids.as_ref(), &out)?;
    let references = read_answers(&a.reference, reference_method, ids.as_ref(), &out)?;
    let (candidate_name, reference_name) = side_names(&a);
    let query_ids: BTreeSet<&str> = match &ids {
        Some(ids) => ids.keys().map(String::as_str).collect(),
        None => candidates
            .iter()
            .chain(&references)
            .map(|(id, _)| id.as_str())
            .collect(),
    };
    let find = |side: &'_ [(String, umi_core::pass_rate::Converted)], id: &str| {
        side.iter().find(|(i, _)| i == id).map(|(_, c)| c).cloned()
    };
    let owned: Vec<(&str, Option<_>, Option<_>)> = query_ids
        .iter()
        .map(|id| (*id, find(&references, id), find(&candidates, id)))
        .collect();
    let pairs: Vec<Pair<'_>> = owned
        .iter()
        .map(|(id, r, c)| Pair {
            query_id: id,
            reference: r.as_ref(),
            candidate: c.as_ref(),
        })
        .collect();
    let votes_path = a.votes.clone().unwrap_or_else(|| {
        out.parent()
            .unwrap_or(Path::new("."))
            .join("win_rate.votes.jsonl")
    });
    let mut store = PreferenceStore::open(&votes_path)?;
    let compared = compare_all(
        &pairs,
        &judge,
        &judge_id,
        &mut store,
        a.evaluate_times,
        a.concurrency,
    )
    .await?;

    // StableToolBench's preference file: per query id, each side's votes, each round's state.
    let mut file = Map::new();
    for (pair, (r, c)) in pairs.iter().zip(&compared.votes) {
        let mut entry = Map::new();
        entry.insert(reference_name.clone(), json!(r));
        entry.insert(candidate_name.clone(), json!(c));
        for round in 0..a.evaluate_times {
            entry.insert(format!("round_{round}"), json!("complete"));
        }
        file.insert(pair.query_id.to_string(), Value::Object(entry));
    }
    write_json_atomically(&out, &Value::Object(file))?;
    let rate = win_rate(&compared.votes);
    write_json_atomically(
        &out.with_extension("summary.json"),
        &json!({
            "reference": reference_name,
            "candidate": candidate_name,
            "win_rate": rate.win,
            "lose_rate": rate.lose,
            "tie_rate": rate.tie,
            "queries": rate.queries,
            "evaluate_times": a.evaluate_times,
            "judge_model": a.judge.judge_model,
            "asked": compared.asked,
            "reused": compared.reused,
        }),
    )?;
    println!(
        "Test set: {}. Reference model: {reference_name}, Candidate model: {candidate_name}. Win rate: {}, Tie rate: {}",
        folder_names(&a.answers).0,
        pyjson::dumps(&json!(rate.win)),
        pyjson::dumps(&json!(rate.tie))
    );
    eprintln!(
        "{}: {} judgments asked of the judge, {} reused from {}, {} rounds without it (one side unanswered) -> {}",
        a.answers.display(),
        compared.asked,
        compared.reused,
        store.path().display(),
        compared.without_judge,
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use umi_core::pyjson;

    /// The rates print as Python prints floats (`str(win)`), through umi's one
    /// Python-number rule.
    #[test]
    fn rates_print_as_python_prints_floats() {
        for (x, text) in [
            (1.0, "1.0"),
            (0.0, "0.0"),
            (0.5, "0.5"),
            (2.0 / 3.0, "0.6666666666666666"),
        ] {
            assert_eq!(pyjson::dumps(&json!(x)), text);
        }
    }
}
