//! The single-LLM baseline's static evaluation (GLPFT's stage-1 "backbone", the paper's
//! Single-LLM rows): samples built from a static test file as `prepro_backbone.py` builds
//! them, the model's output cleaned as `inference.py` cleans it, and scored as
//! `evaluate-backbone.py` scores (its parser; the metrics are the multi-agent ones).
//!
//! Like [`crate::static_eval`], data in, data out: callers run the model on
//! `model_input` and hand the output back.

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::parse::{parse_backbone_output, postprocess, CALLER, CONCLUSION, GIVE_UP};
use crate::prompt::{fill, render_turns, HistoryTurn, Role, Turn, PLANNER_SUFFIX};
use crate::pyjson::strip;
use crate::scores::{score_steps, Metrics};
use crate::static_eval::StaticRecord;
use crate::tool::ToolDoc;

/// One backbone step, with `inference.py`'s keys in its order (`tools`, `history`,
/// `model_input`, `reference`, `predictions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackboneSample {
    pub tools: Vec<ToolDoc>,
    /// The gold turns before this step.
    pub history: Vec<Turn>,
    /// The backbone template filled with the merged history, + `" assistant: "`.
    pub model_input: String,
    /// The gold step: thought, then `Action: ...`, `conclusion: <answer>` or
    /// `conclusion: give up.` (`prepro_backbone.py`'s `target`).
    pub reference: String,
    #[serde(default)]
    pub predictions: String,
    /// The record the step belongs to (the runner keeps a record's steps together).
    #[serde(skip)]
    pub record: usize,
}

/// Which prompt a give-up step gets. `prepro_backbone.py` never renders one for it: it
/// reuses the prompt of the step rendered before (stale history; from the previous
/// record when the give-up is a record's first step, and a crash when it is the file's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GiveUpInput {
    /// The reference's: the previous step's prompt.
    #[default]
    Previous,
    /// The fix: the give-up step's own history.
    Own,
}

/// `prepro_backbone.py` over `records` with `template` (e.g. `toolbench_backbone`): one
/// sample per assistant turn followed by a caller or conclusion turn, and per give-up.
pub fn build_backbone_samples(
    records: &[StaticRecord],
    template: &str,
    give_up: GiveUpInput,
) -> Result<Vec<BackboneSample>> {
    let mut builder = BackboneBuilder::new(template, give_up);
    let mut samples = Vec::new();
    for (r, record) in records.iter().enumerate() {
        samples.extend(builder.record(r, record)?);
    }
    Ok(samples)
}

/// `prepro_backbone.py`'s walk, one record at a time (for files streamed through, such
/// as GLPFT's training data). The history merges each assistant turn with its outcome
/// (`thought\nAction: ...`, or `thought\nconclusion: ...`) and leaves the caller and
/// conclusion turns out. The builder carries the script's `input` variable from record to
/// record: a give-up reuses it.
#[derive(Debug, Clone)]
pub struct BackboneBuilder<'t> {
    template: &'t str,
    give_up: GiveUpInput,
    last_input: Option<String>,
}

impl<'t> BackboneBuilder<'t> {
    pub fn new(template: &'t str, give_up: GiveUpInput) -> Self {
        BackboneBuilder {
            template,
            give_up,
            last_input: None,
        }
    }

    /// The samples of record number `r`. On an error the builder is as it was before the
    /// record (the next record's give-up does not see this one's prompts).
    pub fn record(&mut self, r: usize, record: &StaticRecord) -> Result<Vec<BackboneSample>> {
        let turns = &record.conversations;
        let mut samples = Vec::new();
        let mut last_input = self.last_input.clone();
        let mut history: Vec<HistoryTurn> = Vec::new();
        for (i, turn) in turns.iter().enumerate() {
            let merged = match turn.from {
                Role::User | Role::Observation => {
                    history.push(HistoryTurn::from(turn));
                    continue;
                }
                Role::Caller | Role::Conclusion => continue,
                Role::Assistant => turn,
            };
            let input = || {
                fill(self.template, &record.tools, None, &render_turns(&history)) + PLANNER_SUFFIX
            };
            let step = if merged.value.contains(GIVE_UP) {
                let model_input = match (self.give_up, &last_input) {
                    (GiveUpInput::Own, _) => input(),
                    (GiveUpInput::Previous, Some(previous)) => previous.clone(),
                    (GiveUpInput::Previous, None) => {
                        return Err(CoreError::invalid(
                            format!("record {r}"),
                            format!(
                            "turn {i} gives up before any step was rendered: prepro_backbone.py \
                                 reuses the previous step's prompt for a give-up and has none \
                                 here (it crashes); use the fix for give-up prompts"
                        ),
                        ))
                    }
                };
                let target = format!(
                    "{}\nconclusion: give up.",
                    strip(&merged.value.replace(GIVE_UP, ""))
                );
                Some((model_input, target))
            } else {
                let next = turns.get(i + 1).ok_or_else(|| {
                    CoreError::invalid(
                        format!("record {r}"),
                        format!("assistant turn {i} is the last turn and does not give up"),
                    )
                })?;
                let target = match next.from {
                    Role::Caller => Some(format!(
                        "{}\n{}",
                        strip(&merged.value.replace(CALLER, "")),
                        next.value
                    )),
                    Role::Conclusion => Some(format!(
                        "{}\nconclusion: {}",
                        strip(&merged.value.replace(CONCLUSION, "")),
                        next.value
                    )),
                    _ => None,
                };
                target.map(|target| {
                    let model_input = input();
                    last_input = Some(model_input.clone());
                    (model_input, target)
                })
            };
            let span = match step {
                Some((model_input, target)) => {
                    samples.push(BackboneSample {
                        tools: record.tools.clone(),
                        history: turns[..i].to_vec(),
                        model_input,
                        reference: target.clone(),
                        predictions: String::new(),
                        record: r,
                    });
                    target
                }
                None => merged.value.clone(),
            };
            history.push(HistoryTurn::new(Role::Assistant.label(), &span));
        }
        self.last_input = last_input;
        Ok(samples)
    }
}

impl BackboneSample {
    /// Takes the model's decoded output, cleaned as `inference.py` cleans it.
    pub fn finish(&mut self, output: &str) {
        self.predictions = postprocess(output);
    }
}

/// Scores finished samples as `evaluate-backbone.py` does.
pub fn score_backbone(samples: &[BackboneSample]) -> Metrics {
    score_steps(
        samples
            .iter()
            .map(|s| (s.reference.as_str(), s.predictions.as_str(), &s.tools[..])),
        parse_backbone_output,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::template;
    use crate::static_eval::parse_records;

    fn record(turns: &[(&str, &str)]) -> StaticRecord {
        let conversations: Vec<serde_json::Value> = turns
            .iter()
            .map(|(from, value)| serde_json::json!({"from": from, "value": value}))
            .collect();
        let text = serde_json::json!([{
            "tools": [{"Name": "t", "Description": "d"}],
            "instruction": "q",
            "conversations": conversations,
        }])
        .to_string();
        parse_records(&text).unwrap().remove(0)
    }

    #[test]
    fn history_merges_each_assistant_turn_with_its_outcome() {
        let r = record(&[
            ("user", "find x"),
            ("assistant", "look it up. Next: caller."),
            ("caller", "Action: t\nAction Input: {}"),
            ("observation", "{\"x\": 1}"),
            ("assistant", "found it. Next: conclusion."),
            ("conclusion", "x is 1"),
        ]);
        let samples = build_backbone_samples(&[r], "{history}", GiveUpInput::Previous).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].model_input, "user: find x</s> assistant: ");
        assert_eq!(
            samples[0].reference,
            "look it up.\nAction: t\nAction Input: {}"
        );
        assert_eq!(
            samples[1].model_input,
            "user: find x</s>assistant: look it up.\nAction: t\nAction Input: {}</s>observation: {\"x\": 1} assistant: "
        );
        assert_eq!(samples[1].reference, "found it.\nconclusion: x is 1");
        assert_eq!(samples[1].history.len(), 4);
    }

    #[test]
    fn a_give_up_reuses_the_previous_prompt_unless_fixed() {
        let r = record(&[
            ("user", "find x"),
            ("assistant", "try. Next: caller."),
            ("caller", "Action: t\nAction Input: {}"),
            ("observation", "error"),
            ("assistant", "no luck. Next: give up."),
        ]);
        let stale =
            build_backbone_samples(std::slice::from_ref(&r), "{history}", GiveUpInput::Previous)
                .unwrap();
        assert_eq!(stale[1].model_input, stale[0].model_input);
        assert_eq!(stale[1].reference, "no luck.\nconclusion: give up.");
        let own = build_backbone_samples(&[r], "{history}", GiveUpInput::Own).unwrap();
        assert!(own[1]
            .model_input
            .ends_with("observation: error assistant: "));

        let first = record(&[("user", "q"), ("assistant", "no. Next: give up.")]);
        let err = build_backbone_samples(
            std::slice::from_ref(&first),
            "{history}",
            GiveUpInput::Previous,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("record 0") && err.contains("give"), "{err}");
        assert!(build_backbone_samples(&[first], "{history}", GiveUpInput::Own).is_ok());
    }

    #[test]
    fn a_last_assistant_turn_that_does_not_give_up_is_refused_by_record() {
        let r = record(&[("user", "q"), ("assistant", "hmm. Next: caller.")]);
        let err = build_backbone_samples(
            &[r],
            template("toolbench_backbone").unwrap(),
            GiveUpInput::Own,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("record 0") && err.contains("last turn"),
            "{err}"
        );
    }
}
