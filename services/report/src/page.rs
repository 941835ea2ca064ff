//! The HTML page: one file, its style inline, its charts inline SVG, no script and no
//! address outside it, so it opens the same anywhere (mailed, archived, offline).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::Value;
use umi_core::parse::Plan;
use umi_core::pass_rate::AnswerStatus;
use umi_core::scores::StepOutcome;

use crate::paper;
use crate::read::{Group, Report, RunReport, StaticReport, Task, TaskEnd};
use crate::svg::{self, escape, num, Series};
use crate::tree;

/// What the page shows beyond the defaults.
#[derive(Debug, Clone)]
pub struct Options {
    /// Search trees drawn when none are named: the largest of each outcome in turn.
    pub trees: usize,
    /// Tasks whose trees are drawn (ids), instead of the chosen ones.
    pub tree_ids: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            trees: 6,
            tree_ids: Vec::new(),
        }
    }
}

const STYLE: &str = "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1d2433;margin:0;background:#f6f7f9}
main{max-width:1080px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 8px;border-bottom:1px solid #d8dce3;padding-bottom:4px}
h3{font-size:15px;margin:16px 0 6px}.sub{color:#5b6475;margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{background:#fff;border:1px solid #d8dce3;border-radius:6px;padding:10px 14px;min-width:110px}
.card b{display:block;font-size:22px}.card span{color:#5b6475}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(330px,1fr));gap:12px}
figure{background:#fff;border:1px solid #d8dce3;border-radius:6px;margin:0;padding:10px}
figcaption{color:#5b6475;font-size:13px;margin-bottom:6px}
svg.chart{width:100%;height:auto;display:block}svg text{font:11px system-ui,sans-serif;fill:#1d2433}
svg .tick,svg .axis{fill:#5b6475}svg .frame{stroke:#8a93a3;stroke-width:1}
svg .edge{fill:none;stroke:#b5bcc8;stroke-width:1.2}.treebox{overflow:auto;max-height:520px}
table{border-collapse:collapse;background:#fff;margin:6px 0;font-size:13px}
th,td{border:1px solid #d8dce3;padding:4px 8px;text-align:right}th:first-child,td:first-child{text-align:left}
th{background:#eef0f4}tr.ours td{font-weight:600;background:#fff8e1}
.note{color:#5b6475;font-size:13px}.legend{font-size:11px}
.swatch{display:inline-block;width:10px;height:10px;margin:0 4px 0 10px;border-radius:5px}";

fn end_color(end: TaskEnd) -> &'static str {
    match end {
        TaskEnd::Solved => "#59a14f",
        TaskEnd::GaveUp => "#edc948",
        TaskEnd::Exhausted => "#bab0ac",
        TaskEnd::Failed => "#e15759",
    }
}

const ROLE_COLORS: [(&str, &str); 3] = [
    ("planner", "#4e79a7"),
    ("caller", "#f28e2b"),
    ("summarizer", "#59a14f"),
];

fn role_color(role: &str) -> &'static str {
    ROLE_COLORS
        .iter()
        .find(|(r, _)| *r == role)
        .map_or("#9c755f", |(_, c)| c)
}

/// The whole page.
pub fn render(report: &Report, options: &Options) -> String {
    let (title, body) = match report {
        Report::Run(run) => (run.title.as_str(), run_body(run, options)),
        Report::Static(s) => (s.title.as_str(), static_body(s)),
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>umi report: {}</title><style>{STYLE}</style></head><body><main>{body}<p class=\"note\">Written by umi {} (<code>umi report</code>). Everything is in this file: no script, nothing fetched.</p></main></body></html>\n",
        escape(title),
        env!("CARGO_PKG_VERSION")
    )
}

fn card(out: &mut String, value: &str, label: &str, id: &str) {
    let _ = write!(
        out,
        "<div class=\"card\" id=\"{id}\"><b>{}</b><span>{}</span></div>",
        escape(value),
        escape(label)
    );
}

fn pct(x: f64) -> String {
    format!("{x:.1}%")
}

fn run_body(run: &RunReport, options: &Options) -> String {
    let tasks: Vec<(&Group, &Task)> = run
        .groups
        .iter()
        .flat_map(|g| g.tasks.iter().map(move |t| (g, t)))
        .collect();
    let count = |end: TaskEnd| tasks.iter().filter(|(_, t)| t.end == end).count();
    let mut out = String::new();
    let _ = write!(
        out,
        "<h1>umi report: {}</h1><p class=\"sub\">{} task{} in {} group{} ({})</p>",
        escape(&run.title),
        tasks.len(),
        if tasks.len() == 1 { "" } else { "s" },
        run.groups.len(),
        if run.groups.len() == 1 { "" } else { "s" },
        escape(
            &run.groups
                .iter()
                .map(|g| g.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    );
    out.push_str("<section id=\"summary\" class=\"cards\">");
    card(&mut out, &tasks.len().to_string(), "tasks", "card-tasks");
    for end in TaskEnd::ALL {
        card(
            &mut out,
            &count(end).to_string(),
            end.label(),
            &format!("card-{}", end.label().replace(' ', "-")),
        );
    }
    let judged: Vec<&Group> = run
        .groups
        .iter()
        .filter(|g| g.pass_rate.is_some())
        .collect();
    if !judged.is_empty() {
        let n: usize = judged
            .iter()
            .map(|g| g.pass_rate.as_ref().map_or(0, |p| p.queries))
            .sum();
        let solved: f64 = judged
            .iter()
            .filter_map(|g| g.pass_rate.as_ref())
            .map(|p| p.solve_rate * p.queries as f64)
            .sum();
        let label = if judged.len() == run.groups.len() {
            "pass rate".to_string()
        } else {
            format!(
                "pass rate ({} of {} groups judged)",
                judged.len(),
                run.groups.len()
            )
        };
        card(
            &mut out,
            &pct(solved / n.max(1) as f64),
            &label,
            "card-pass-rate",
        );
    }
    let compared: Vec<&Group> = run.groups.iter().filter(|g| g.win_rate.is_some()).collect();
    if !compared.is_empty() {
        let n: usize = compared
            .iter()
            .filter_map(|g| g.win_rate.as_ref())
            .map(|w| w.queries)
            .sum();
        let won: f64 = compared
            .iter()
            .filter_map(|g| g.win_rate.as_ref())
            .map(|w| w.win_rate * w.queries as f64)
            .sum();
        card(
            &mut out,
            &pct(100.0 * won / n.max(1) as f64),
            "win rate",
            "card-win-rate",
        );
    }
    out.push_str("</section>");
    outcomes(&mut out, run);
    distributions(&mut out, &tasks);
    role_calls(&mut out, &tasks);
    tool_calls(&mut out, &tasks);
    trees(&mut out, &tasks, options);
    out
}

fn outcomes(out: &mut String, run: &RunReport) {
    let series: Vec<Series<'_, ()>> = TaskEnd::ALL
        .iter()
        .map(|&e| Series {
            name: e.label(),
            color: end_color(e),
            values: (),
        })
        .collect();
    let rows: Vec<(String, Vec<f64>)> = run
        .groups
        .iter()
        .map(|g| {
            let counts = TaskEnd::ALL
                .iter()
                .map(|&e| g.tasks.iter().filter(|t| t.end == e).count() as f64)
                .collect();
            (g.name.clone(), counts)
        })
        .collect();
    let _ = write!(
        out,
        "<section id=\"outcomes\"><h2>Outcomes per group</h2><figure>{}</figure><table><tr><th>group</th><th>method</th><th>tasks</th>",
        svg::stacked_bars("outcomes per group", &rows, &series)
    );
    for end in TaskEnd::ALL {
        let _ = write!(out, "<th>{}</th>", end.label());
    }
    out.push_str("<th>pass rate</th><th>win rate</th></tr>");
    for g in &run.groups {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td>",
            escape(&g.name),
            escape(&g.method),
            g.tasks.len()
        );
        for end in TaskEnd::ALL {
            let _ = write!(
                out,
                "<td>{}</td>",
                g.tasks.iter().filter(|t| t.end == end).count()
            );
        }
        let rate = g.pass_rate.as_ref().map_or("–".to_string(), |p| {
            format!(
                "{} ± {:.1} ({} judged, {}×)",
                pct(p.solve_rate),
                p.std,
                p.queries,
                p.evaluate_times
            )
        });
        let win = g.win_rate.as_ref().map_or("–".to_string(), |w| {
            format!(
                "{} (tie {}) vs {}, {} queries, {}×",
                pct(100.0 * w.win_rate),
                pct(100.0 * w.tie_rate),
                w.reference,
                w.queries,
                w.evaluate_times
            )
        });
        let _ = write!(
            out,
            "<td>{}</td><td>{}</td></tr>",
            escape(&rate),
            escape(&win)
        );
    }
    out.push_str("</table>");
    if run
        .groups
        .iter()
        .any(|g| g.pass_rate.is_some() || g.win_rate.is_some())
    {
        out.push_str("<p class=\"note\">Pass rate as StableToolBench scores it (solved 1, unsure 0.5, unsolved 0; mean ± std over the evaluation runs), from each group's <code>pass_rate.json</code>; win rate as ToolEval's preference evaluation counts it (queries where the judge preferred this run's answer in more rounds than the reference's), from <code>win_rate.summary.json</code>. Both depend on the judge model that wrote the verdicts.</p>");
    }
    out.push_str("</section>");
}

fn distributions(out: &mut String, tasks: &[(&Group, &Task)]) {
    let steps: Vec<f64> = tasks.iter().map(|(_, t)| t.steps as f64).collect();
    let tokens: Vec<f64> = tasks.iter().map(|(_, t)| t.tokens as f64).collect();
    let seconds: Vec<f64> = tasks
        .iter()
        .filter_map(|(_, t)| t.calls.as_ref().map(|c| c.seconds))
        .collect();
    let _ = write!(
        out,
        "<section id=\"distributions\"><h2>Per task</h2><div class=\"grid\"><figure><figcaption>agent steps per task</figcaption>{}</figure><figure><figcaption>tokens per task (prompt and generated)</figcaption>{}</figure>",
        svg::histogram("steps per task", "steps", &steps, "#4e79a7"),
        svg::histogram("tokens per task", "tokens", &tokens, "#f28e2b")
    );
    if seconds.is_empty() {
        out.push_str("<figure><figcaption>wall time per task</figcaption><p class=\"note\">Not traced: answers without <code>trace.jsonl</code> (written by <code>umi run</code> in this process since this version; tasks a coordinator solved carry no calls).</p></figure>");
    } else {
        let _ = write!(
            out,
            "<figure><figcaption>wall time per task (s)</figcaption>{}</figure>",
            svg::histogram("wall time per task", "seconds", &seconds, "#59a14f")
        );
    }
    out.push_str("</div></section>");
}

/// p-th percentile (nearest rank) of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn role_calls(out: &mut String, tasks: &[(&Group, &Task)]) {
    let t0 = tasks
        .iter()
        .filter_map(|(_, t)| t.calls.as_ref().map(|c| c.started))
        .fold(f64::INFINITY, f64::min);
    let mut by_role: BTreeMap<&str, Vec<(f64, &umi_core::trace::RoleCall)>> = BTreeMap::new();
    for (_, t) in tasks {
        if let Some(c) = &t.calls {
            for call in &c.role_calls {
                by_role
                    .entry(call.role.as_str())
                    .or_default()
                    .push((c.started - t0 + call.at, call));
            }
        }
    }
    out.push_str("<section id=\"role-calls\"><h2>Role calls over time</h2>");
    if by_role.is_empty() {
        out.push_str("<p class=\"note\">No traced role calls.</p></section>");
        return;
    }
    let latency: Vec<Series<'_, Vec<(f64, f64)>>> = by_role
        .iter()
        .map(|(role, calls)| Series {
            name: role,
            color: role_color(role),
            values: calls.iter().map(|(x, c)| (*x, c.seconds)).collect(),
        })
        .collect();
    let reuse: Vec<Series<'_, Vec<(f64, f64)>>> = by_role
        .iter()
        .map(|(role, calls)| Series {
            name: role,
            color: role_color(role),
            values: calls
                .iter()
                .filter(|(_, c)| c.prompt_tokens > 0)
                .map(|(x, c)| (*x, c.cached_tokens as f64 / c.prompt_tokens as f64))
                .collect(),
        })
        .collect();
    let _ = write!(
        out,
        "<div class=\"grid\"><figure><figcaption>latency of each role call (s) by when it started; lines: means over tenths of the calls</figcaption>{}</figure><figure><figcaption>prefix-cache reuse: share of each call's prompt served from the cache</figcaption>{}</figure></div>",
        svg::scatter("role-call latency over time", ("seconds since the run's first task started", "latency (s)"), &latency, None),
        svg::scatter("prefix-cache reuse over time", ("seconds since the run's first task started", "cached share of prompt"), &reuse, Some(1.0))
    );
    out.push_str("<table><tr><th>role</th><th>calls</th><th>failed</th><th>latency p50 (s)</th><th>p95 (s)</th><th>prompt tokens</th><th>from the prefix cache</th><th>generated tokens</th></tr>");
    for (role, calls) in &by_role {
        let mut secs: Vec<f64> = calls.iter().map(|(_, c)| c.seconds).collect();
        secs.sort_by(f64::total_cmp);
        let prompt: usize = calls.iter().map(|(_, c)| c.prompt_tokens).sum();
        let cached: usize = calls.iter().map(|(_, c)| c.cached_tokens).sum();
        let generated: usize = calls.iter().map(|(_, c)| c.generated_tokens).sum();
        let failed = calls.iter().filter(|(_, c)| !c.ok).count();
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{failed}</td><td>{}</td><td>{}</td><td>{prompt}</td><td>{}</td><td>{generated}</td></tr>",
            escape(role),
            calls.len(),
            num(percentile(&secs, 50.0)),
            num(percentile(&secs, 95.0)),
            pct(100.0 * cached as f64 / prompt.max(1) as f64)
        );
    }
    out.push_str("</table></section>");
}

fn source_color(source: &str) -> &'static str {
    match source {
        "cache" | "recorded" => "#59a14f",
        "live" | "real_api" | "local" => "#4e79a7",
        "simulated" => "#f28e2b",
        _ => "#e15759",
    }
}

fn tool_calls(out: &mut String, tasks: &[(&Group, &Task)]) {
    let mut by_source: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    let mut statuses: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, t) in tasks {
        for call in t.calls.iter().flat_map(|c| &c.tool_calls) {
            *by_source
                .entry(call.source.label())
                .or_default()
                .entry(call.status.as_str())
                .or_default() += 1;
            *statuses.entry(call.status.as_str()).or_default() += 1;
        }
    }
    out.push_str("<section id=\"tool-calls\"><h2>Tool calls by source</h2>");
    if by_source.is_empty() {
        out.push_str("<p class=\"note\">No traced tool calls (no task called an API, or the answers were not traced).</p></section>");
        return;
    }
    let rows: Vec<(String, f64, &str)> = by_source
        .iter()
        .map(|(s, st)| {
            (
                s.to_string(),
                st.values().sum::<usize>() as f64,
                source_color(s),
            )
        })
        .collect();
    let _ = write!(
        out,
        "<figure><figcaption>where each reply came from: a response cache, a recorded answer, a live or real API, the simulating model, or nowhere (missing, bad input, a failed simulation)</figcaption>{}</figure><table><tr><th>source</th><th>calls</th>",
        svg::bars("tool calls by source", &rows)
    );
    for status in statuses.keys() {
        let _ = write!(out, "<th>{}</th>", escape(status));
    }
    out.push_str("</tr>");
    for (source, st) in &by_source {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td>",
            escape(source),
            st.values().sum::<usize>()
        );
        for status in statuses.keys() {
            let _ = write!(out, "<td>{}</td>", st.get(status).copied().unwrap_or(0));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table><p class=\"note\">Columns: ToolBench's status of each reply (ok, or the error the agent saw; transport: the backend could not be reached).</p></section>");
}

/// The tasks whose trees are drawn: those named, else the largest trees of each outcome
/// in turn.
fn chosen<'a>(tasks: &[(&'a Group, &'a Task)], options: &Options) -> Vec<(&'a Group, &'a Task)> {
    let with_tree = |t: &Task| t.tree.is_some();
    if !options.tree_ids.is_empty() {
        return options
            .tree_ids
            .iter()
            .filter_map(|id| {
                tasks
                    .iter()
                    .find(|(_, t)| &t.id == id && with_tree(t))
                    .copied()
            })
            .collect();
    }
    let mut per_end: Vec<Vec<(&Group, &Task)>> = TaskEnd::ALL
        .iter()
        .map(|&e| {
            let mut v: Vec<(&Group, &Task)> = tasks
                .iter()
                .filter(|(_, t)| t.end == e && with_tree(t))
                .copied()
                .collect();
            v.sort_by_key(|(_, t)| std::cmp::Reverse(t.steps));
            v
        })
        .collect();
    let mut out = Vec::new();
    let mut round = 0;
    while out.len() < options.trees && per_end.iter().any(|v| round < v.len()) {
        for v in &mut per_end {
            if out.len() < options.trees {
                if let Some(t) = v.get(round) {
                    out.push(*t);
                }
            }
        }
        round += 1;
    }
    out
}

fn trees(out: &mut String, tasks: &[(&Group, &Task)], options: &Options) {
    let chosen = chosen(tasks, options);
    out.push_str("<section id=\"trees\"><h2>Search trees</h2>");
    if chosen.is_empty() {
        out.push_str("<p class=\"note\">No answer file with a search tree.</p></section>");
        return;
    }
    out.push_str(
        "<p class=\"note\">Depth left to right, one row per leaf; hover a node for its text.",
    );
    for (name, color) in tree::LEGEND {
        let _ = write!(
            out,
            "<span class=\"swatch\" style=\"background:{color}\"></span>{name}"
        );
    }
    out.push_str("; hollow: pruned.</p>");
    for (g, t) in chosen {
        let Some(root) = &t.tree else { continue };
        let (drawing, nodes) = tree::draw(root, &format!("search tree of {}", t.id));
        let verdicts = if t.verdicts.is_empty() {
            String::new()
        } else {
            let v: Vec<&str> = t
                .verdicts
                .iter()
                .map(|s| match s {
                    AnswerStatus::Solved => "solved",
                    AnswerStatus::Unsolved => "unsolved",
                    AnswerStatus::Unsure => "unsure",
                })
                .collect();
            format!("; judged {}", v.join(", "))
        };
        let _ = write!(
            out,
            "<figure class=\"search-tree\" data-task=\"{}\"><figcaption><b>{} / {}</b>: {}, {} steps, {} nodes{}<br>{}</figcaption><div class=\"treebox\">{drawing}</div></figure>",
            escape(&t.id),
            escape(&g.name),
            escape(&t.id),
            t.end.label(),
            t.steps,
            nodes,
            escape(&verdicts),
            escape(&t.query.chars().take(400).collect::<String>())
        );
    }
    out.push_str("</section>");
}

/// `metrics.json`'s value of `key` (a fraction) in percent, if there.
fn metric(metrics: &Value, keys: &[&str]) -> Option<f64> {
    keys.iter()
        .find_map(|k| metrics.get(*k).and_then(Value::as_f64))
        .map(|x| x * 100.0)
}

fn static_body(s: &StaticReport) -> String {
    let mut out = String::new();
    let data = s.data.as_deref().unwrap_or("");
    let _ = write!(
        out,
        "<h1>umi report: {}</h1><p class=\"sub\">static evaluation{}</p><section id=\"summary\" class=\"cards\">",
        escape(&s.title),
        if data.is_empty() {
            String::new()
        } else {
            format!(" over {}", escape(data))
        }
    );
    let ours = [
        metric(&s.metrics, &["plan_em"]),
        metric(&s.metrics, &["action_em"]),
        metric(&s.metrics, &["hallu_rate"]),
        metric(&s.metrics, &["f1"]),
        metric(&s.metrics, &["rouge", "rouge_l"]),
    ];
    let samples = s.metrics.get("samples").and_then(Value::as_u64);
    if let Some(n) = samples {
        card(&mut out, &n.to_string(), "steps scored", "card-samples");
    }
    for (value, name) in ours.iter().zip(paper::COLUMNS) {
        card(
            &mut out,
            &value.map_or("–".into(), |v| format!("{v:.2}")),
            name,
            &format!("card-{}", name.to_lowercase().replace([' ', '.'], "")),
        );
    }
    out.push_str("</section>");
    // The paper's split that matches the test file, or both.
    let splits: Vec<(&str, bool)> = if data.contains("out_of_domain") {
        vec![("out-of-domain", true)]
    } else if data.contains("in_domain") {
        vec![("in-domain", false)]
    } else {
        vec![("in-domain", false), ("out-of-domain", true)]
    };
    out.push_str("<section id=\"metrics\"><h2>Metrics beside the paper's</h2>");
    for (split, ood) in splits {
        let _ = write!(
            out,
            "<h3>{split}</h3><table class=\"paper\"><tr><th>model</th>"
        );
        for c in paper::COLUMNS {
            let _ = write!(out, "<th>{c}</th>");
        }
        out.push_str("</tr><tr class=\"ours\"><td>this run</td>");
        for v in ours {
            let _ = write!(
                out,
                "<td>{}</td>",
                v.map_or("–".into(), |v| format!("{v:.2}"))
            );
        }
        out.push_str("</tr>");
        for row in &paper::ROWS {
            let values = if ood {
                row.out_of_domain
            } else {
                row.in_domain
            };
            let _ = write!(out, "<tr><td>{}</td>", escape(row.model));
            for v in values {
                let _ = write!(out, "<td>{v:.2}</td>");
            }
            out.push_str("</tr>");
        }
        out.push_str("</table>");
    }
    out.push_str("<p class=\"note\">Paper rows: α-UMi (arXiv 2401.07324) Table 1, in percent. Hallu. is lower-better. Scores of another model (the bundled one is SmolLM2-135M) are not the paper's models' scores: the columns say what the same evaluator gives this run.</p></section>");
    step_errors(&mut out, &s.steps);
    out
}

fn plan_label(p: Plan) -> &'static str {
    match p {
        Plan::Call => "call",
        Plan::Finish => "conclusion",
        Plan::GiveUp => "give up",
    }
}

fn step_errors(out: &mut String, steps: &[StepOutcome]) {
    out.push_str("<section id=\"step-errors\"><h2>Per-step errors</h2>");
    if steps.is_empty() {
        out.push_str("<p class=\"note\">No <code>predictions.json</code> here.</p></section>");
        return;
    }
    let plans = [Plan::Call, Plan::Finish, Plan::GiveUp];
    out.push_str("<h3>Planner: the reference's next step (rows) against the predicted one (columns)</h3><table class=\"confusion\"><tr><th>reference \\ predicted</th>");
    for p in plans {
        let _ = write!(out, "<th>{}</th>", plan_label(p));
    }
    out.push_str("<th>right</th></tr>");
    for r in plans {
        let row: Vec<&StepOutcome> = steps.iter().filter(|s| s.reference_plan == r).collect();
        let _ = write!(out, "<tr><td>{}</td>", plan_label(r));
        for p in plans {
            let _ = write!(
                out,
                "<td>{}</td>",
                row.iter().filter(|s| s.predicted_plan == p).count()
            );
        }
        let hits = row.iter().filter(|s| s.plan_hit()).count();
        let _ = write!(
            out,
            "<td>{}</td></tr>",
            if row.is_empty() {
                "–".to_string()
            } else {
                pct(100.0 * hits as f64 / row.len() as f64)
            }
        );
    }
    out.push_str("</table>");
    let calls: Vec<&StepOutcome> = steps.iter().filter(|s| s.same_action.is_some()).collect();
    let right = calls.iter().filter(|s| s.same_action == Some(true)).count();
    let hallucinated = calls
        .iter()
        .filter(|s| s.same_action == Some(false) && s.hallucinated)
        .count();
    let no_call = calls
        .iter()
        .filter(|s| {
            s.same_action == Some(false) && !s.hallucinated && s.predicted_plan != Plan::Call
        })
        .count();
    let wrong = calls.len() - right - hallucinated - no_call;
    let rows = vec![
        ("right action".to_string(), right as f64, "#59a14f"),
        (
            "another action (or none readable)".to_string(),
            wrong as f64,
            "#f28e2b",
        ),
        (
            "a tool that is not there".to_string(),
            hallucinated as f64,
            "#e15759",
        ),
        ("no call".to_string(), no_call as f64, "#bab0ac"),
    ];
    let all_hallucinated = steps.iter().filter(|s| s.hallucinated).count();
    let _ = write!(
        out,
        "<h3>Caller: the {} steps whose reference calls a tool</h3><figure>{}</figure><p class=\"note\">Hallucinated over all {} steps (the evaluator's Hallu.): {}.</p></section>",
        calls.len(),
        svg::bars("caller steps by what was called", &rows),
        steps.len(),
        all_hallucinated
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read::Group;
    use serde_json::json;
    use umi_core::env::ReplySource;
    use umi_core::trace::{RoleCall, TaskTrace, ToolCall};

    fn task(id: &str, end: TaskEnd, steps: usize) -> Task {
        Task {
            id: id.into(),
            query: format!("query <{id}>"),
            end,
            steps,
            tokens: 100 * steps,
            calls: Some(TaskTrace {
                started: 1000.0,
                seconds: 2.0,
                role_calls: vec![RoleCall {
                    role: "planner".into(),
                    at: 0.1,
                    seconds: 0.5,
                    prompt_tokens: 100,
                    cached_tokens: 40,
                    generated_tokens: 10,
                    ok: true,
                }],
                tool_calls: vec![ToolCall {
                    function: "f".into(),
                    source: ReplySource::Cache,
                    status: "ok".into(),
                    at: 0.7,
                    seconds: 0.01,
                }],
            }),
            tree: Some(json!({"node_type": "Action Input", "children": []})),
            verdicts: Vec::new(),
        }
    }

    #[test]
    fn a_run_page_has_every_section_and_no_outside_address() {
        let report = Report::Run(RunReport {
            title: "r<1>".into(),
            groups: vec![Group {
                name: "G1".into(),
                method: "DFS_woFilter_w2".into(),
                tasks: vec![task("a", TaskEnd::Solved, 3), task("b", TaskEnd::Failed, 1)],
                pass_rate: None,
                win_rate: None,
            }],
        });
        let html = render(&report, &Options::default());
        for id in [
            "summary",
            "outcomes",
            "distributions",
            "role-calls",
            "tool-calls",
            "trees",
        ] {
            assert!(html.contains(&format!("id=\"{id}\"")), "{id}");
        }
        assert!(html.contains("umi report: r&lt;1&gt;"));
        assert!(html.contains("query &lt;a&gt;"));
        assert!(html.contains("40.0%"), "the cached share");
        assert_eq!(html.matches("class=\"search-tree\"").count(), 2);
        assert!(!html.contains("<script"));
        // Only the SVG namespace names an address; nothing is fetched.
        let without_ns = html.replace("http://www.w3.org/2000/svg", "");
        assert!(!without_ns.contains("http://") && !without_ns.contains("https://"));
    }

    #[test]
    fn named_trees_replace_the_chosen_ones() {
        let g = Group {
            name: "G".into(),
            method: "m".into(),
            tasks: vec![task("a", TaskEnd::Solved, 3), task("b", TaskEnd::GaveUp, 2)],
            pass_rate: None,
            win_rate: None,
        };
        let tasks: Vec<(&Group, &Task)> = g.tasks.iter().map(|t| (&g, t)).collect();
        let options = Options {
            trees: 6,
            tree_ids: vec!["b".into()],
        };
        let picked: Vec<&str> = chosen(&tasks, &options)
            .iter()
            .map(|(_, t)| t.id.as_str())
            .collect();
        assert_eq!(picked, ["b"]);
        let one = Options {
            trees: 1,
            tree_ids: vec![],
        };
        assert_eq!(chosen(&tasks, &one).len(), 1);
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), 2.0);
        assert_eq!(percentile(&v, 95.0), 4.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
