//! α-UMi's prompt templates and the trajectory ("history") format, byte-identical to the
//! reference's `GLPFT/utils/prompt_lib.py` (the released checkpoints were trained on them).

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::tool::{render_docs, tool_names, ToolDoc};

/// Every template the reference defines, by its reference name. Adding a variant is a row
/// here, not new code.
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "toolbench_planner",
        "You have assess to the following apis:\n{doc}\nThe conversation history is:\n{history}\nYou are the assistant to plan what to do next and whether is caller's or conclusion's turn to answer.\nAnswer with a following format:\nThe thought of the next step, followed by Next: caller or conclusion or give up.",
    ),
    (
        "toolbench_caller",
        "You have assess to the following apis:\n{doc}\nThe conversation history is:\n{history}\nThe thought of this step is:\n{thought}\nBase on the thought make an api call in the following format:\nAction: the name of api that should be called in this step, should be exactly in [{tool_names}],\nAction Input: the api call request.",
    ),
    ("toolbench_summarizer", "Make a conclusion based on the conversation history:\n{history}"),
    (
        "toolbench_backbone",
        "You have assess to the following apis:\n{doc}\nThe conversation history is:\n{history}\nYou should answer the action of next step in the following format:\nThe thought to solve the question,\nAction: the name of api that should be called in this step, should be exactly in [{tool_names}],\nAction Input: the api call request.\nOnce you think the question is finished, output conclusion: the final answer of the question or give up if you think you cannot answer this question.\n",
    ),
    (
        "toolalpaca_planner",
        "You have assess to the following apis:\n{doc}\nThe conversation history is:\n{history}\nYou are the assistant to plan what to do next and whether is caller's or conclusion's turn to answer.\nAnswer with a following format:\nThe thought of the next step, followed by Next: caller or conclusion.",
    ),
    (
        "toolalpaca_caller",
        "You have assess to the following apis:\n{doc}\nThe conversation history is:\n{history}\nThe thought of this step is:\n{thought}\nBase on the thought make an api call in the following format:\nAction: the name of api that should be called in this step, should be exactly in [{tool_names}],\nAction Input: the api call request.",
    ),
    ("toolalpaca_summarizer", "Make a conclusion based on the conversation history:\n{history}"),
    (
        "toolalpaca_backbone",
        "You have assess to the following apis:\n{doc}\nThe conversation history is:\n{history}\nYou should answer the action of next step in the following format:\nThe thought to solve the question,\nAction: the name of api that should be called in this step, should be exactly in [{tool_names}],\nAction Input: the api call request.\nOnce you think the question is finished, output conclusion: the final answer of the question.\n",
    ),
];

/// Text appended after each role's filled template: the role's turn label.
pub const PLANNER_SUFFIX: &str = " assistant: ";
pub const CALLER_SUFFIX: &str = " caller: ";
pub const SUMMARIZER_SUFFIX: &str = " conclusion: ";

pub fn template(name: &str) -> Result<&'static str> {
    TEMPLATES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let known: Vec<&str> = TEMPLATES.iter().map(|(n, _)| *n).collect();
            CoreError::invalid(
                "template",
                format!("{name:?} (known: {})", known.join(", ")),
            )
        })
}

/// Fills a template as the reference does: plain global replacement, in the order
/// `{doc}`, `{tool_names}`, `{thought}`, `{history}` (the order matters only if a tool doc
/// itself contains a placeholder, and is replicated anyway).
/// `thought` is `None` for the roles that are given none (planner, summarizer): their
/// text is then left alone, `{thought}` included.
pub fn fill(template: &str, tools: &[ToolDoc], thought: Option<&str>, history: &str) -> String {
    let text = template
        .replace("{doc}", &render_docs(tools))
        .replace("{tool_names}", &tool_names(tools));
    let text = match thought {
        Some(t) => text.replace("{thought}", t),
        None => text,
    };
    text.replace("{history}", history)
}

/// Who spoke a turn of the trajectory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
    Caller,
    Observation,
    Conclusion,
}

impl Role {
    pub fn label(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Caller => "caller",
            Role::Observation => "observation",
            Role::Conclusion => "conclusion",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub from: Role,
    pub value: String,
}

impl Turn {
    pub fn new(from: Role, value: impl Into<String>) -> Self {
        Turn {
            from,
            value: value.into(),
        }
    }
}

/// A turn as it is rendered: its label and text. Labels are the five roles, plus
/// `planner` (the static pipeline labels the planner turn so).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryTurn {
    pub label: String,
    pub value: String,
}

impl HistoryTurn {
    pub fn new(label: &str, value: &str) -> Self {
        HistoryTurn {
            label: label.to_string(),
            value: value.to_string(),
        }
    }
}

impl From<&Turn> for HistoryTurn {
    fn from(t: &Turn) -> Self {
        HistoryTurn::new(t.from.label(), &t.value)
    }
}

/// Renders turns as `label: value</s>`, except observations, which carry no `</s>` (the
/// next turn's label follows the observation text directly).
pub fn render_turns(turns: &[HistoryTurn]) -> String {
    let mut out = String::new();
    for turn in turns {
        out.push_str(&turn.label);
        out.push_str(": ");
        out.push_str(&turn.value);
        if turn.label != Role::Observation.label() {
            out.push_str("</s>");
        }
    }
    out
}

pub fn render_history(turns: &[Turn]) -> String {
    render_turns(&turns.iter().map(HistoryTurn::from).collect::<Vec<_>>())
}

/// The three α-UMi role templates in use (by default the `toolbench_*` ones).
#[derive(Debug, Clone)]
pub struct RolePrompts {
    pub planner: &'static str,
    pub caller: &'static str,
    pub summarizer: &'static str,
}

impl RolePrompts {
    pub fn named(planner: &str, caller: &str, summarizer: &str) -> Result<Self> {
        Ok(RolePrompts {
            planner: template(planner)?,
            caller: template(caller)?,
            summarizer: template(summarizer)?,
        })
    }

    pub fn toolbench() -> Self {
        RolePrompts {
            planner: TEMPLATES[0].1,
            caller: TEMPLATES[1].1,
            summarizer: TEMPLATES[2].1,
        }
    }

    /// Planner input: the filled planner template + `" assistant: "`.
    pub fn planner_input(&self, tools: &[ToolDoc], history: &str) -> String {
        fill(self.planner, tools, None, history) + PLANNER_SUFFIX
    }

    /// Caller input. `history` already ends with the planner's turn.
    pub fn caller_input(&self, tools: &[ToolDoc], thought: &str, history: &str) -> String {
        fill(self.caller, tools, Some(thought), history) + CALLER_SUFFIX
    }

    /// Summarizer input. `history` already ends with the planner's turn.
    pub fn summarizer_input(&self, tools: &[ToolDoc], history: &str) -> String {
        fill(self.summarizer, tools, None, history) + SUMMARIZER_SUFFIX
    }
}
