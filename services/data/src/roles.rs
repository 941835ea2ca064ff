//! The four training files of one conversation, as `prepro_backbone.py`,
//! `prepro_planner.py`, `prepro_caller.py` and `prepro_summarizer.py` write them: records
//! `{"tools", "history", "input", "target"}`, where `history` is the conversation's turns
//! before the step, `input` the role's template filled with those turns rendered, and
//! `target` what the role learns to say.
//!
//! Each script renders its own history: the planner's has every turn; the caller's leaves
//! out the calls it does not learn (`invalid_hallucination_function_name`); the
//! summarizer's leaves out conclusions that are `none`; the backbone's merges each
//! assistant turn with its outcome (umi-core's [`BackboneBuilder`], the same walk the
//! single-LLM static evaluation uses).

use serde_json::{Map, Value};
use umi_core::error::CoreError;
use umi_core::parse::GIVE_UP;
use umi_core::prompt::{
    fill, render_turns, template, HistoryTurn, Role, Turn, CALLER_SUFFIX, PLANNER_SUFFIX,
    SUMMARIZER_SUFFIX,
};
use umi_core::static_backbone::{BackboneBuilder, GiveUpInput};
use umi_core::static_eval::StaticRecord;
use umi_core::tool::ToolDoc;

use crate::py::{get, kind};

/// A caller turn whose function the tool environment did not know (DFSDT renames it so).
pub const HALLUCINATED: &str = "invalid_hallucination_function_name";

/// A conclusion the summarizer does not learn: stage 2's stand-in for a missing answer.
const NO_ANSWER: &str = "none";

/// The four templates, by the reference's names (`<family>_backbone` etc.).
#[derive(Debug, Clone, Copy)]
pub struct Templates {
    pub backbone: &'static str,
    pub planner: &'static str,
    pub caller: &'static str,
    pub summarizer: &'static str,
}

impl Templates {
    /// `toolbench` or `toolalpaca`: the `--prompt_type` the reference's script passes is
    /// `<family>_<mode>`.
    pub fn family(family: &str) -> Result<Templates, CoreError> {
        Ok(Templates {
            backbone: template(&format!("{family}_backbone"))?,
            planner: template(&format!("{family}_planner"))?,
            caller: template(&format!("{family}_caller"))?,
            summarizer: template(&format!("{family}_summarizer"))?,
        })
    }
}

/// How many steps end a trajectory, as the backbone and planner scripts count them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Endings {
    pub finished: usize,
    pub gave_up: usize,
}

impl std::ops::AddAssign for Endings {
    fn add_assign(&mut self, other: Endings) {
        self.finished += other.finished;
        self.gave_up += other.gave_up;
    }
}

/// One conversation's records for each training file.
#[derive(Debug, Default)]
pub struct RoleRecords {
    pub backbone: Vec<Value>,
    pub planner: Vec<Value>,
    pub caller: Vec<Value>,
    pub summarizer: Vec<Value>,
    pub backbone_endings: Endings,
    pub planner_endings: Endings,
}

/// The role scripts over a stream of conversations (stage-2 records). It carries the
/// backbone script's state from one conversation to the next.
pub struct RoleSamples<'t> {
    templates: Templates,
    backbone: BackboneBuilder<'t>,
}

/// A stage-2 record as the role scripts read it: typed turns for the rules, the raw JSON
/// for what they copy into each record (`tools`, `history`).
struct Conversation<'r> {
    tools_json: &'r Value,
    turns_json: &'r [Value],
    record: StaticRecord,
}

impl<'t> RoleSamples<'t> {
    pub fn new(templates: Templates, give_up: GiveUpInput) -> RoleSamples<'t> {
        RoleSamples {
            templates,
            backbone: BackboneBuilder::new(templates.backbone, give_up),
        }
    }

    /// The records of conversation number `index`. On an error nothing is carried over
    /// from it to the next conversation.
    pub fn conversation(&mut self, index: usize, record: &Value) -> Result<RoleRecords, String> {
        let c = Conversation::read(record)?;
        let (planner, planner_endings) = self.planner(&c)?;
        let caller = self.caller(&c);
        let summarizer = self.summarizer(&c);
        let (backbone, backbone_endings) = self.backbone(index, &c)?;
        Ok(RoleRecords {
            backbone,
            planner,
            caller,
            summarizer,
            backbone_endings,
            planner_endings,
        })
    }

    /// `prepro_planner.py`: one record per assistant turn that gives up or is followed by
    /// a call or a conclusion (but not by a hallucinated call); the history has every turn.
    fn planner(&self, c: &Conversation) -> Result<(Vec<Value>, Endings), String> {
        let turns = &c.record.conversations;
        let mut records = Vec::new();
        let mut endings = Endings::default();
        let mut history = Vec::new();
        for (i, turn) in turns.iter().enumerate() {
            if turn.from == Role::Assistant {
                let gives_up = turn.value.contains(GIVE_UP);
                let next = turns.get(i + 1);
                if !gives_up && next.is_none() {
                    return Err(last_turn(i, "prepro_planner.py"));
                }
                let next_from = next.map(|t| t.from);
                if gives_up || matches!(next_from, Some(Role::Caller | Role::Conclusion)) {
                    let learned = match next {
                        Some(call) if call.from == Role::Caller => {
                            !call.value.contains(HALLUCINATED)
                        }
                        _ => {
                            if gives_up {
                                endings.gave_up += 1;
                            } else if next_from == Some(Role::Conclusion) {
                                endings.finished += 1;
                            }
                            true
                        }
                    };
                    if learned {
                        let input = fill(
                            self.templates.planner,
                            &c.record.tools,
                            None,
                            &render_turns(&history),
                        ) + PLANNER_SUFFIX;
                        records.push(c.sample(i, input, &turn.value));
                    }
                }
            }
            history.push(HistoryTurn::from(turn));
        }
        Ok((records, endings))
    }

    /// `prepro_caller.py`: one record per call that is not hallucinated, its thought the
    /// turn before it; hallucinated calls are left out of the history too. The script
    /// fills `{history}` before `{thought}`.
    fn caller(&self, c: &Conversation) -> Vec<Value> {
        let turns = &c.record.conversations;
        let mut records = Vec::new();
        let mut history = Vec::new();
        for (i, turn) in turns.iter().enumerate() {
            if turn.from == Role::Caller {
                if turn.value.contains(HALLUCINATED) {
                    continue;
                }
                // `conversations[i - 1]`: Python's index -1 is the last turn.
                let thought = match i.checked_sub(1) {
                    Some(before) => &turns[before].value,
                    None => &turns[turns.len() - 1].value,
                };
                let input = fill(
                    self.templates.caller,
                    &c.record.tools,
                    None,
                    &render_turns(&history),
                )
                .replace("{thought}", thought)
                    + CALLER_SUFFIX;
                records.push(c.sample(i, input, &turn.value));
            }
            history.push(HistoryTurn::from(turn));
        }
        records
    }

    /// `prepro_summarizer.py`: one record per conclusion other than `none`; `none`
    /// conclusions are left out of the history too.
    fn summarizer(&self, c: &Conversation) -> Vec<Value> {
        let mut records = Vec::new();
        let mut history = Vec::new();
        for (i, turn) in c.record.conversations.iter().enumerate() {
            if turn.from == Role::Conclusion {
                if turn.value == NO_ANSWER {
                    continue;
                }
                let input = fill(
                    self.templates.summarizer,
                    &c.record.tools,
                    None,
                    &render_turns(&history),
                ) + SUMMARIZER_SUFFIX;
                records.push(c.sample(i, input, &turn.value));
            }
            history.push(HistoryTurn::from(turn));
        }
        records
    }

    /// `prepro_backbone.py`, through the builder the static evaluation uses.
    fn backbone(
        &mut self,
        index: usize,
        c: &Conversation,
    ) -> Result<(Vec<Value>, Endings), String> {
        let samples = self
            .backbone
            .record(index, &c.record)
            .map_err(|e| format!("prepro_backbone.py: {e}"))?;
        let turns = &c.record.conversations;
        let mut endings = Endings::default();
        let records = samples
            .into_iter()
            .map(|s| {
                let i = s.history.len();
                if turns[i].value.contains(GIVE_UP) {
                    endings.gave_up += 1;
                } else if turns.get(i + 1).map(|t| t.from) == Some(Role::Conclusion) {
                    endings.finished += 1;
                }
                c.sample(i, s.model_input, &s.reference)
            })
            .collect();
        Ok((records, endings))
    }
}

impl<'r> Conversation<'r> {
    fn read(record: &'r Value) -> Result<Conversation<'r>, String> {
        let tools_json = get(record, "tools")?;
        let Value::Array(tool_list) = tools_json else {
            return Err(format!("tools is {}, not a list", kind(tools_json)));
        };
        let tools = tool_list
            .iter()
            .enumerate()
            .map(|(i, t)| ToolDoc::try_from(t.clone()).map_err(|e| format!("tools[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let turns_value = get(record, "conversations")?;
        let Value::Array(turns_json) = turns_value else {
            return Err(format!(
                "conversations is {}, not a list",
                kind(turns_value)
            ));
        };
        let turns = turns_json
            .iter()
            .enumerate()
            .map(|(i, t)| turn(t).map_err(|e| format!("conversations[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Conversation {
            tools_json,
            turns_json,
            record: StaticRecord {
                tools,
                instruction: String::new(),
                conversations: turns,
            },
        })
    }

    /// A training record for the step at turn `i`.
    fn sample(&self, i: usize, input: String, target: &str) -> Value {
        let mut r = Map::new();
        r.insert("tools".into(), self.tools_json.clone());
        r.insert(
            "history".into(),
            Value::Array(self.turns_json[..i].to_vec()),
        );
        r.insert("input".into(), input.into());
        r.insert("target".into(), target.into());
        Value::Object(r)
    }
}

/// A turn the role scripts can render: a known speaker and a text (they concatenate the
/// value into the history, and raise on anything but a string).
fn turn(value: &Value) -> Result<Turn, String> {
    let from = get(value, "from")?;
    let from: Role = serde_json::from_value(from.clone()).map_err(|_| {
        format!("\"from\" is {from}, not one of user, assistant, caller, observation, conclusion")
    })?;
    let text = get(value, "value")?;
    let text = text.as_str().ok_or_else(|| {
        format!(
            "the {} turn's value is {}, not a string (the role scripts crash on it)",
            from.label(),
            kind(text)
        )
    })?;
    Ok(Turn::new(from, text))
}

fn last_turn(i: usize, script: &str) -> String {
    format!(
        "assistant turn {i} is the conversation's last and does not give up ({script} reads \
         past the end and crashes)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(turns: &[(&str, &str)]) -> Value {
        let conversations: Vec<Value> = turns
            .iter()
            .map(|(from, value)| json!({"from": from, "value": value}))
            .collect();
        json!({"tools": [{"Name": "t", "function": "f", "input": {}}],
               "instruction": "q", "conversations": conversations})
    }

    fn templates() -> Templates {
        Templates {
            backbone: "B {history}",
            planner: "P {history}",
            caller: "C {history} | {thought}",
            summarizer: "S {history}",
        }
    }

    #[test]
    fn each_script_renders_its_own_history() {
        let r = record(&[
            ("user", "q"),
            ("assistant", "a1 Next: caller."),
            (
                "caller",
                "Action: invalid_hallucination_function_name\nAction Input: {}",
            ),
            ("observation", "o1"),
            ("assistant", "a2 Next: caller."),
            ("caller", "Action: t\nAction Input: {}"),
            ("observation", "o2"),
            ("assistant", "a3 Next: conclusion."),
            ("conclusion", "none"),
            ("user", "again"),
            ("assistant", "a4 Next: conclusion."),
            ("conclusion", "done"),
        ]);
        let mut roles = RoleSamples::new(templates(), GiveUpInput::Previous);
        let out = roles.conversation(0, &r).unwrap();
        let inputs = |records: &[Value]| -> Vec<String> {
            records
                .iter()
                .map(|r| r["input"].as_str().unwrap().to_string())
                .collect()
        };
        // Planner: a1 is followed by a hallucinated call and is not learned.
        assert_eq!(out.planner.len(), 3);
        assert_eq!(
            out.planner_endings,
            Endings {
                finished: 2,
                gave_up: 0
            }
        );
        assert!(inputs(&out.planner)[0].contains("caller: Action: invalid_hallucination"));
        // Caller: the hallucinated call is neither learned nor in the history.
        assert_eq!(out.caller.len(), 1);
        let caller = &inputs(&out.caller)[0];
        assert!(!caller.contains("invalid_hallucination"), "{caller}");
        assert!(caller.ends_with("| a2 Next: caller. caller: "), "{caller}");
        // Summarizer: `none` is neither learned nor in the history.
        assert_eq!(out.summarizer.len(), 1);
        let summary = &inputs(&out.summarizer)[0];
        assert!(!summary.contains("conclusion: none"), "{summary}");
        assert!(summary.ends_with("assistant: a4 Next: conclusion.</s> conclusion: "));
        assert_eq!(out.summarizer[0]["target"], "done");
        // Every record copies the turns before its step.
        assert_eq!(out.summarizer[0]["history"].as_array().unwrap().len(), 11);
        assert_eq!(out.backbone.len(), 4);
    }

    #[test]
    fn the_caller_template_gets_its_history_before_its_thought() {
        // A history that holds the text `{thought}` has it replaced, as in the script.
        let r = record(&[
            ("user", "say {thought}"),
            ("assistant", "T Next: caller."),
            ("caller", "Action: t\nAction Input: {}"),
        ]);
        let out = RoleSamples::new(templates(), GiveUpInput::Previous)
            .conversation(0, &r)
            .unwrap();
        assert_eq!(
            out.caller[0]["input"],
            "C user: say T Next: caller.</s>assistant: T Next: caller.</s> | T Next: caller. caller: "
        );
    }

    #[test]
    fn what_the_scripts_crash_on_is_named() {
        let mut roles = RoleSamples::new(templates(), GiveUpInput::Previous);
        let err = roles
            .conversation(
                0,
                &record(&[("user", "q"), ("assistant", "a Next: caller.")]),
            )
            .unwrap_err();
        assert!(err.contains("assistant turn 1"), "{err}");
        let err = roles
            .conversation(
                0,
                &json!({"tools": [], "conversations": [{"from": "user", "value": {"a": 1}}]}),
            )
            .unwrap_err();
        assert!(
            err.contains("conversations[0]") && err.contains("an object"),
            "{err}"
        );
        // A give-up before any rendered step: the backbone script reuses a prompt it
        // does not have.
        let err = roles
            .conversation(
                0,
                &record(&[("user", "q"), ("assistant", "no. Next: give up.")]),
            )
            .unwrap_err();
        assert!(err.starts_with("prepro_backbone.py: "), "{err}");
        let mut fixed = RoleSamples::new(templates(), GiveUpInput::Own);
        let out = fixed
            .conversation(
                0,
                &record(&[("user", "q"), ("assistant", "no. Next: give up.")]),
            )
            .unwrap();
        assert_eq!(out.backbone[0]["target"], "no.\nconclusion: give up.");
        assert_eq!(
            out.backbone_endings,
            Endings {
                finished: 0,
                gave_up: 1
            }
        );
    }
}
