//! `umi report DIR`: the HTML page of a run directory, a folder of them (one per query
//! group), or a static evaluation's output (`umi_report`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// A folder `umi run` wrote (or a folder of such folders, one per query group, as
    /// scripts/stabletoolbench.sh leaves them), or one `umi eval static` wrote.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Where to write the page (default: DIR/report.html).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// How many search trees to draw, chosen from each outcome in turn, largest first.
    #[arg(long, default_value_t = umi_report::Options::default().trees)]
    pub trees: usize,
    /// Draw this task's search tree (a query id; repeat for several) instead of chosen ones.
    #[arg(long = "tree", value_name = "ID")]
    pub tree_ids: Vec<String>,
}

pub fn run(a: ReportArgs) -> anyhow::Result<()> {
    let report = umi_report::read(&a.dir)?;
    let page = umi_report::render(
        &report,
        &umi_report::Options {
            trees: a.trees,
            tree_ids: a.tree_ids,
        },
    );
    let out = a.out.unwrap_or_else(|| a.dir.join("report.html"));
    umi_durable::write(&out, page.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    println!("{}", out.display());
    Ok(())
}
