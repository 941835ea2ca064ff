//! α-UMi's static (step-level) evaluation pipeline, `infer_pipeline.py`: every marked
//! planner step of a test trajectory becomes one sample with the gold history (teacher
//! forcing); the planner answers first, then the caller or the summarizer on its
//! decision; `predictions.json` keeps the reference's schema and sample order.
//!
//! The pipeline is data in, data out: callers run the models on the inputs it produces
//! (in whatever batches they like) and hand the outputs back.

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::parse::{
    cut_planner, parse_output, postprocess, Decision, Parsed, CALLER, CONCLUSION, GIVE_UP,
};
use crate::prompt::{render_history, Role, RolePrompts, Turn};
use crate::scores::{evaluate_with, score_steps, Metrics, Scored};
use crate::tool::ToolDoc;

/// One trajectory of the static test set.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StaticRecord {
    pub tools: Vec<ToolDoc>,
    pub instruction: String,
    pub conversations: Vec<Turn>,
}

/// Parses a static test file, naming the record and field that is wrong.
pub fn parse_records(text: &str) -> Result<Vec<StaticRecord>> {
    let values: Vec<serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| CoreError::invalid("static test file", format!("not a JSON array: {e}")))?;
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value(v).map_err(|e| CoreError::invalid(format!("record {i}"), e))
        })
        .collect()
}

/// What the gold trajectory did at a step, for the oracle roles.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Gold {
    pub planner: String,
    pub next: Option<Turn>,
}

/// One evaluation step. Field names are the reference's (`dispath` sic).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    pub tools: Vec<ToolDoc>,
    pub instruction: String,
    pub history: Vec<Turn>,
    pub dispath: String,
    pub model_input: String,
    pub reference: String,
    #[serde(default)]
    pub predictions: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub planner_prediction: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub model_input_for_caller: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub model_input_for_summarizer: Option<String>,
    #[serde(skip)]
    pub gold: Option<Gold>,
    #[serde(skip)]
    pub decision: Option<Decision>,
}

fn has_marker(value: &str) -> bool {
    value.contains(CALLER) || value.contains(CONCLUSION) || value.contains(GIVE_UP)
}

/// `build_infer_samples`: one sample per assistant turn with a `Next:` marker.
pub fn build_samples(records: &[StaticRecord], prompts: &RolePrompts) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for (r, record) in records.iter().enumerate() {
        let turns = &record.conversations;
        for (i, turn) in turns.iter().enumerate() {
            if turn.from != Role::Assistant || !has_marker(&turn.value) {
                continue;
            }
            let history = turns[..i].to_vec();
            let dispath = render_history(&history);
            let next = turns.get(i + 1);
            let reference =
                if turn.value.contains("Next: caller") || turn.value.contains(CONCLUSION) {
                    let next = next.ok_or_else(|| {
                        CoreError::invalid(
                            format!("record {r}"),
                            format!("assistant turn {i} has no following turn"),
                        )
                    })?;
                    format!(
                        "assistant: {}</s>{}: {}</s>",
                        turn.value,
                        next.from.label(),
                        next.value
                    )
                } else {
                    turn.value.clone()
                };
            samples.push(Sample {
                tools: record.tools.clone(),
                instruction: record.instruction.clone(),
                model_input: prompts.planner_input(&record.tools, &dispath),
                history,
                dispath,
                reference,
                predictions: String::new(),
                planner_prediction: None,
                model_input_for_caller: None,
                model_input_for_summarizer: None,
                gold: Some(Gold {
                    planner: turn.value.clone(),
                    next: next.cloned(),
                }),
                decision: None,
            });
        }
    }
    Ok(samples)
}

impl Sample {
    /// Takes the planner's raw output and routes the sample: a give-up is final; a
    /// conclusion gets a summarizer input, anything else a caller input. The planner
    /// turn is labelled `planner: ` here (the static pipeline's quirk; training and real
    /// time say `assistant: `).
    pub fn route(&mut self, planner_output: &str, prompts: &RolePrompts) -> Decision {
        let text = postprocess(planner_output);
        let (cut, decision) = cut_planner(&text, CALLER);
        let history = format!("{}planner: {cut}</s>", self.dispath);
        match decision {
            Decision::GiveUp => self.predictions = cut.clone(),
            Decision::Conclusion => {
                self.model_input_for_summarizer =
                    Some(prompts.summarizer_input(&self.tools, &history));
            }
            Decision::Caller => {
                self.model_input_for_caller =
                    Some(prompts.caller_input(&self.tools, &cut, &history));
            }
        }
        if decision != Decision::GiveUp {
            self.predictions = text;
        }
        self.planner_prediction = (decision != Decision::GiveUp).then_some(cut);
        self.decision = Some(decision);
        decision
    }

    /// Takes the caller's or summarizer's raw output.
    pub fn finish(&mut self, output: &str) {
        let output = postprocess(output);
        let planner = self.planner_prediction.clone().unwrap_or_default();
        self.predictions = match self.decision {
            Some(Decision::Conclusion) => format!("asssitant: {planner}</s>conclusion: {output}"),
            _ => format!("asssitant: {planner}</s>caller: {output}"),
        };
    }

    /// The oracle's output for the role this sample needs next.
    pub fn oracle_output(&self) -> String {
        let Some(gold) = &self.gold else {
            return String::new();
        };
        match self.decision {
            None => gold.planner.clone(),
            Some(_) => gold
                .next
                .as_ref()
                .map(|t| t.value.clone())
                .unwrap_or_default(),
        }
    }
}

/// The reference's output order: caller samples, then give-ups, then summarizer samples.
pub fn reference_order(samples: Vec<Sample>) -> Vec<Sample> {
    let rank = |s: &Sample| match s.decision {
        Some(Decision::Caller) | None => 0,
        Some(Decision::GiveUp) => 1,
        Some(Decision::Conclusion) => 2,
    };
    let mut samples = samples;
    samples.sort_by_key(rank);
    samples
}

/// Scores finished samples.
pub fn score(samples: &[Sample]) -> Metrics {
    score_steps(
        samples
            .iter()
            .map(|s| (s.reference.as_str(), s.predictions.as_str(), &s.tools[..])),
        parse_output,
    )
}

/// Scores a `predictions.json` as `evaluate-multi_agent.py` reads one (or, with
/// [`parse_backbone_output`](crate::parse::parse_backbone_output), `evaluate-backbone.py`).
pub fn score_predictions(
    entries: &[serde_json::Value],
    parse: fn(&str) -> Parsed,
) -> Result<Metrics> {
    let predictions = read_predictions(entries)?;
    Ok(evaluate_with(&scored(&predictions), parse))
}

/// One entry of a `predictions.json`, as the evaluator reads it.
pub struct Prediction {
    pub reference: String,
    pub prediction: String,
    pub tool_names: Vec<String>,
}

/// The steps as the scoring functions take them.
pub fn scored(predictions: &[Prediction]) -> Vec<Scored<'_>> {
    predictions
        .iter()
        .map(|p| Scored {
            reference: &p.reference,
            prediction: &p.prediction,
            tool_names: p.tool_names.iter().map(String::as_str).collect(),
        })
        .collect()
}

/// A `predictions.json`'s entries as `evaluate-multi_agent.py` reads them: from each only
/// its tools' `Name`s, `reference` and `predictions`, so files written by the seed's own
/// `infer_pipeline.py` or `inference.py` read as umi's do. An entry without them is an
/// error naming it.
pub fn read_predictions(entries: &[serde_json::Value]) -> Result<Vec<Prediction>> {
    let field = |i: usize, e: &'_ serde_json::Value, key: &str| -> Result<String> {
        e.get(key)
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                CoreError::invalid(format!("prediction {i}"), format!("no string \"{key}\""))
            })
    };
    let mut out = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let tools = e
            .get("tools")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| CoreError::invalid(format!("prediction {i}"), "no \"tools\" list"))?;
        let tool_names = tools
            .iter()
            .map(|t| {
                t.get("Name")
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| {
                        CoreError::invalid(format!("prediction {i}"), "a tool without a \"Name\"")
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        out.push(Prediction {
            reference: field(i, e, "reference")?,
            prediction: field(i, e, "predictions")?,
            tool_names,
        });
    }
    Ok(out)
}
