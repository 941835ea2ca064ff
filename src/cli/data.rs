//! `umi data glpft`: GLPFT's training data from ToolBench's answer files (or from a stage
//! file), as the reference's `GLPFT/scripts/prepro_toolbench.sh` makes it; the logic is
//! in `umi-data`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use umi_core::static_backbone::GiveUpInput;
use umi_data::roles::Templates;
use umi_data::stage1::REFERENCE_LIMIT;
use umi_data::{DataError, Options, Source, Summary, Unit};

use super::support::progress::Progress;

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// GLPFT's training files (train_backbone/planner/caller/summarizer.json) from
    /// ToolBench's answer files, byte-identical to the reference's preprocessing scripts.
    Glpft(GlpftArgs),
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["toolbench", "stage_1", "stage_2"])))]
pub struct GlpftArgs {
    /// ToolBench's data folder (answer/G{1,2,3}_answer/, test_query_ids/): all six
    /// scripts, from `prepro_raw_stage_1.py` on.
    #[arg(long, value_name = "DIR")]
    pub toolbench: Option<PathBuf>,
    /// A raw_data_stage_1.json: stage 2 and the role scripts.
    #[arg(long = "stage-1", value_name = "FILE")]
    pub stage_1: Option<PathBuf>,
    /// A raw_data_stage_2.json: the role scripts only.
    #[arg(long = "stage-2", value_name = "FILE")]
    pub stage_2: Option<PathBuf>,
    /// Output folder: raw_data/raw_data_stage_{1,2}.json and train_<mode>.json, as the
    /// reference lays them out.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The template family (`--prompt_type <family>_<mode>`).
    #[arg(long, default_value = "toolbench", value_parser = ["toolbench", "toolalpaca"])]
    pub templates: String,
    /// Fix: keep every trajectory. `prepro_raw_stage_1.py` writes only its first 20 (a
    /// debugging cut left in the script), which is the default; umi then stops reading
    /// after the 20th (the script reads, and may crash on, every file first).
    #[arg(long)]
    pub all_trajectories: bool,
    /// Fix: a backbone give-up step's prompt holds its own history. `prepro_backbone.py`
    /// reuses the previous step's prompt (from another trajectory when the give-up comes
    /// first), which is the default.
    #[arg(long)]
    pub fix_give_up_prompt: bool,
    /// Fix: leave out (and list) the trajectories a script would stop on, such as an
    /// observation that is JSON without a `response`; by default the run stops there,
    /// naming the file and the problem.
    #[arg(long)]
    pub skip_invalid: bool,
}

pub fn run(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::Glpft(a) => glpft(a),
    }
}

fn glpft(a: GlpftArgs) -> anyhow::Result<()> {
    let source = match (a.toolbench, a.stage_1, a.stage_2) {
        (Some(dir), _, _) => Source::ToolBench(dir),
        (_, Some(file), _) => Source::Stage1(file),
        (_, _, Some(file)) => Source::Stage2(file),
        _ => anyhow::bail!("give one of --toolbench, --stage-1, --stage-2"),
    };
    let options = Options {
        templates: Templates::family(&a.templates)?,
        all_trajectories: a.all_trajectories,
        give_up: if a.fix_give_up_prompt {
            GiveUpInput::Own
        } else {
            GiveUpInput::Previous
        },
        skip_invalid: a.skip_invalid,
    };
    let mut bar: Option<Progress> = None;
    let summary = umi_data::run(&source, &a.out, &options, &mut |p| {
        let bar = bar.get_or_insert_with(|| match p.unit {
            Unit::Files => Progress::new("answer files", p.total as usize),
            Unit::Bytes => Progress::bytes("stage file", p.total),
        });
        bar.set(p.done);
        bar.message(format!("{} conversations", p.conversations));
    });
    if let Some(bar) = &mut bar {
        bar.finish();
    }
    let summary = summary.map_err(|e| match e {
        DataError::Invalid { .. } if !a.skip_invalid => anyhow::anyhow!(
            "{e}\n(--skip-invalid leaves such trajectories out, lists them and goes on)"
        ),
        e => anyhow::Error::new(e),
    });
    let summary = summary.with_context(|| format!("umi data glpft into {}", a.out.display()))?;
    report(&summary, &options);
    Ok(())
}

fn report(summary: &Summary, options: &Options) {
    for (path, records) in &summary.files {
        println!("{records:>8}  {}", path.display());
    }
    let (b, p) = (summary.backbone_endings, summary.planner_endings);
    println!(
        "backbone: {} finish, {} give up; planner: {} finish, {} give up",
        b.finished, b.gave_up, p.finished, p.gave_up
    );
    if summary.without_train_messages > 0 {
        println!(
            "{} answer files have no train_messages (no valid chain): left out, as the \
             reference does",
            summary.without_train_messages
        );
    }
    if summary.unread_files > 0 && !options.all_trajectories {
        eprintln!(
            "note: stage 1 kept its first {REFERENCE_LIMIT} trajectories, as \
             prepro_raw_stage_1.py does (data[:{REFERENCE_LIMIT}]); {} answer files were \
             not read. --all-trajectories keeps them all.",
            summary.unread_files
        );
    }
    if !summary.skipped.is_empty() {
        eprintln!(
            "left out {} trajectories the reference's scripts stop on:",
            summary.skipped.len()
        );
        for s in summary.skipped.iter().take(20) {
            eprintln!("  {}: {}", s.input, s.problem);
        }
        if summary.skipped.len() > 20 {
            eprintln!("  ... and {} more", summary.skipped.len() - 20);
        }
    }
}
