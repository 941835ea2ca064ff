//! One α-UMi agent step in the real-time (DFSDT) pipeline, `CollbaAgentV3.prediction`:
//! the planner decides, then the caller makes the call or the summarizer answers, and the
//! combined text becomes the assistant message that the next step's history shows.

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::constraint::{caller_grammar, Constraint};
use crate::error::{CoreError, Result};
use crate::parse::{cut_planner, parse_action, realtime_output, realtime_planner, Decision};
use crate::prompt::{render_turns, HistoryTurn, RolePrompts};
use crate::pyjson;
use crate::tool::ToolDoc;
use crate::toolbench;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleKind {
    Planner,
    Caller,
    Summarizer,
}

impl RoleKind {
    /// Every role, in the order of a step: planner, caller, summarizer.
    pub const ALL: [RoleKind; 3] = [RoleKind::Planner, RoleKind::Caller, RoleKind::Summarizer];

    /// The role named `name` (`as_str`'s names).
    pub fn parse(name: &str) -> Option<RoleKind> {
        RoleKind::ALL.into_iter().find(|r| r.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RoleKind::Planner => "planner",
            RoleKind::Caller => "caller",
            RoleKind::Summarizer => "summarizer",
        }
    }
}

/// What generated a role's output: a model, or the simulated engine (a test double,
/// never a model). Its label is what responses on the wire, answer files (`"engine"`) and
/// the engines' metrics say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Model,
    Sim,
}

impl EngineKind {
    pub const fn label(self) -> &'static str {
        match self {
            EngineKind::Model => "model",
            EngineKind::Sim => "sim",
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// What a role model returned.
#[derive(Debug, Clone, Default)]
pub struct Generated {
    pub text: String,
    pub prompt_tokens: usize,
    /// Prompt tokens served by the prefix cache (0 where the source does not say).
    pub cached_tokens: usize,
    pub generated_tokens: usize,
    /// Written by the simulated engine (a test double), not a model.
    pub simulated: bool,
    /// What a function-calling chat answered (`PromptForm::Functions`); `text` is then
    /// its content.
    pub chat: Option<ChatReply>,
}

/// A function-calling chat's assistant message: its content (`None` when the model only
/// called a function, as OpenAI's API answers then) and its first call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChatReply {
    pub content: Option<String>,
    pub function_call: Option<FunctionCall>,
}

/// Which prompt a role request is rendered into.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptForm {
    /// α-UMi's role templates, from `tools`, `history` and `thought`.
    #[default]
    AlphaUmi,
    /// ToolLLaMA's template (`toolbench::toolllama_prompt`): `history` holds the search's
    /// messages as (message role, content) and `functions` the function list.
    ToolLlama,
    /// A chat with function calling (OpenAI's): `chat` and `functions` as they are.
    /// Only an OpenAI-compatible endpoint that calls functions serves it.
    Functions,
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a role is asked: the structured state its prompt is rendered from, so that the
/// prompt is rendered in one place (`RoleRequest::render`) wherever the model runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleRequest {
    pub role: RoleKind,
    pub tools: Vec<ToolDoc>,
    /// The trajectory so far; for the caller and summarizer it ends with the planner turn.
    pub history: Vec<HistoryTurn>,
    /// The planner's (cut) output, for the caller.
    pub thought: Option<String>,
    /// The task the call serves, for the worker's logs and spans (set by `task::solve`;
    /// empty outside a task). Not part of the prompt.
    #[serde(default)]
    pub task_id: String,
    /// What this call adds to the base seed (set by `task::solve`: the task's own base
    /// plus the call's number within the task, so a task's sampled outputs do not depend
    /// on which other tasks run beside it, or where). `None`: the role implementation
    /// numbers its calls itself. Not part of the prompt.
    #[serde(default)]
    pub seed_offset: Option<u64>,
    /// Which prompt this is (α-UMi's role templates unless a ToolBench agent asks).
    #[serde(default)]
    pub form: PromptForm,
    /// ToolBench's OpenAI-style function list (`Finish` last), for ToolBench's agents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<Value>,
    /// The conversation of a function-calling chat (`PromptForm::Functions`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chat: Vec<Message>,
    /// Decode an α-UMi caller's output under the grammar of its offered tools
    /// ([`crate::constraint::caller_grammar`]; `--constrain caller`).
    #[serde(default)]
    pub constrain_call: bool,
}

impl RoleRequest {
    /// An α-UMi role request (the other fields empty: no task yet, α-UMi's form).
    pub fn alpha_umi(
        role: RoleKind,
        tools: Vec<ToolDoc>,
        history: Vec<HistoryTurn>,
        thought: Option<String>,
    ) -> Self {
        RoleRequest {
            role,
            tools,
            history,
            thought,
            task_id: String::new(),
            seed_offset: None,
            form: PromptForm::AlphaUmi,
            functions: vec![],
            chat: vec![],
            constrain_call: false,
        }
    }

    /// The grammar its output is decoded under, if any: an α-UMi caller asked to be
    /// constrained gets its tools' grammar.
    pub fn constraint(&self) -> Option<Constraint> {
        let caller = self.role == RoleKind::Caller && self.form == PromptForm::AlphaUmi;
        (caller && self.constrain_call)
            .then(|| caller_grammar(&self.tools))
            .flatten()
    }

    /// The prompt text. A function-calling chat has none: only an endpoint that calls
    /// functions serves it, and anything else refuses it here, saying so.
    pub fn render(&self, prompts: &RolePrompts) -> Result<String> {
        let history = render_turns(&self.history);
        Ok(match self.form {
            PromptForm::AlphaUmi => match self.role {
                RoleKind::Planner => prompts.planner_input(&self.tools, &history),
                RoleKind::Caller => prompts.caller_input(
                    &self.tools,
                    self.thought.as_deref().unwrap_or(""),
                    &history,
                ),
                RoleKind::Summarizer => prompts.summarizer_input(&self.tools, &history),
            },
            PromptForm::ToolLlama => toolbench::toolllama_prompt(&self.history, &self.functions),
            PromptForm::Functions => return Err(RoleRequest::chat_has_no_prompt()),
        })
    }

    /// Why a function-calling chat is refused wherever a prompt is rendered or sent over
    /// gRPC: only an endpoint that calls functions serves it.
    pub fn chat_has_no_prompt() -> CoreError {
        CoreError::invalid(
            "agent",
            "openai-functions needs an OpenAI-compatible chat endpoint that calls \
             functions (--planner-endpoint openai+http://HOST:PORT/v1: vLLM, TGI, \
             OpenAI, or a umi worker's --openai-listen); engines in process and \
             workers over gRPC serve rendered prompts",
        )
    }
}

/// Whatever serves the three roles: in-process engines, remote workers, an API. The
/// search never knows which. A failure is a `CoreError` classified where it arose.
pub trait RoleModels: Send + Sync {
    fn generate<'a>(&'a self, request: RoleRequest) -> BoxFuture<'a, Result<Generated>>;
}

/// Each role served by its own implementation: e.g. the planner on an OpenAI-compatible
/// server and the other two on umi workers.
pub struct PerRole {
    pub planner: std::sync::Arc<dyn RoleModels>,
    pub caller: std::sync::Arc<dyn RoleModels>,
    pub summarizer: std::sync::Arc<dyn RoleModels>,
}

impl RoleModels for PerRole {
    fn generate<'a>(&'a self, request: RoleRequest) -> BoxFuture<'a, Result<Generated>> {
        match request.role {
            RoleKind::Planner => self.planner.generate(request),
            RoleKind::Caller => self.caller.generate(request),
            RoleKind::Summarizer => self.summarizer.generate(request),
        }
    }
}

/// A chat message of the search state, in ToolBench's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// Fields in the order the reference's dicts have them (user: role, content, value;
/// assistant: role, content, function_call, value; observation: role, name, content,
/// value; `valid` added last when a retry prompt is spent). ToolBench's agents' messages
/// have no `value`, and their assistant's `content` may be `null`.
pub struct Message {
    pub role: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_call: Option<FunctionCall>,
    /// α-UMi's messages: the raw agent string (assistant) or the text shown to the models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid: Option<bool>,
}

impl Message {
    /// A message of `role` with `content` only (ToolBench's agents' shape).
    pub fn plain(role: &str, content: &str) -> Self {
        Message {
            role: role.into(),
            content: Some(content.into()),
            value: None,
            name: None,
            function_call: None,
            valid: None,
        }
    }

    /// An α-UMi user message (content and value).
    pub fn user(text: &str) -> Self {
        Message {
            value: Some(text.into()),
            ..Message::plain("user", text)
        }
    }

    /// An α-UMi observation message.
    pub fn observation(function: &str, text: &str) -> Self {
        Message {
            name: Some(function.into()),
            value: Some(text.into()),
            ..Message::plain("observation", text)
        }
    }

    /// The text α-UMi's history shows of a message: its `value` (its content for a
    /// message without one).
    pub fn shown(&self) -> &str {
        self.value
            .as_deref()
            .or(self.content.as_deref())
            .unwrap_or("")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    pub arguments: String,
}

/// The collab agent's history turns: user, assistant and observation messages, other
/// roles skipped. Spent (`valid: false`) messages are *not* filtered out, as in the
/// reference.
pub fn history_turns(messages: &[Message]) -> Vec<HistoryTurn> {
    messages
        .iter()
        .filter(|m| matches!(m.role.as_str(), "assistant" | "user" | "observation"))
        .map(|m| HistoryTurn::new(&m.role, m.shown()))
        .collect()
}

/// The rendered history (`{history}`) of a message list.
pub fn render_messages(messages: &[Message]) -> String {
    render_turns(&history_turns(messages))
}

/// One agent step's result.
#[derive(Debug, Clone)]
pub struct Step {
    pub decision: Decision,
    /// The raw combined agent string (`<thought></s>caller: ...`).
    pub value: String,
    pub thought: String,
    pub call: FunctionCall,
    pub tokens: usize,
}

/// Planner attempts while its output is empty (`none`).
pub const PLANNER_ATTEMPTS: usize = 5;

pub async fn agent_step(
    models: &dyn RoleModels,
    tools: &[ToolDoc],
    messages: &[Message],
) -> Result<Step> {
    let history = history_turns(messages);
    let request = |role: RoleKind, history: Vec<HistoryTurn>, thought: Option<String>| {
        RoleRequest::alpha_umi(role, tools.to_vec(), history, thought)
    };
    let mut tokens = 0;
    let mut planned = None;
    for _ in 0..PLANNER_ATTEMPTS {
        let out = models
            .generate(request(RoleKind::Planner, history.clone(), None))
            .await?;
        tokens += out.prompt_tokens + out.generated_tokens;
        planned = realtime_planner(&out.text);
        if planned.is_some() {
            break;
        }
    }
    // Five empty outputs: the reference goes on with the text `none`.
    let planned = planned.unwrap_or_else(|| "none".to_string());
    let (cut, decision) = cut_planner(&planned, " Next: caller.");
    let mut with_planner = history;
    with_planner.push(HistoryTurn::new("assistant", &cut));
    let value = match decision {
        Decision::GiveUp => cut.clone(),
        Decision::Conclusion => {
            let out = models
                .generate(request(RoleKind::Summarizer, with_planner, None))
                .await?;
            tokens += out.prompt_tokens + out.generated_tokens;
            format!("{cut}</s>conclusion: {}", realtime_output(&out.text))
        }
        Decision::Caller => {
            let out = models
                .generate(request(RoleKind::Caller, with_planner, Some(cut.clone())))
                .await?;
            tokens += out.prompt_tokens + out.generated_tokens;
            format!("{cut}</s>caller: {}", realtime_output(&out.text))
        }
    };
    let (thought, call) = collab_parse(&value);
    Ok(Step {
        decision,
        value,
        thought,
        call,
        tokens,
    })
}

/// `collab_agent_parser`: the agent string as a thought and a function call, exactly as
/// the reference reads it: a leading `assistant: ` dropped; a give-up or a conclusion
/// anywhere in the text becomes `Finish` with `json.dumps`-formatted arguments, the
/// thought being the text before that marker; otherwise the thought is the text before
/// `</s>caller: ` (its `Next: caller.` kept) and the call is read from the text between
/// the first and second `</s>`.
pub fn collab_parse(value: &str) -> (String, FunctionCall) {
    let text = value.strip_prefix("assistant: ").unwrap_or(value);
    let finish = |arguments: serde_json::Value| FunctionCall {
        name: "Finish".into(),
        arguments: pyjson::dumps(&arguments),
    };
    if let Some(at) = text.find("Next: give up") {
        let call = finish(json!({"return_type": "give_up_and_restart"}));
        return (pyjson::strip(&text[..at]).to_string(), call);
    }
    if let Some(at) = text.find("Next: conclusion") {
        // The reference raises when `conclusion:` is there but `conclusion: ` is not;
        // umi takes the whole text, as when neither is there.
        let answer = match text.rfind("conclusion: ") {
            Some(i) if text.contains("conclusion:") => &text[i + "conclusion: ".len()..],
            _ => text,
        }
        .replace("</s>", "");
        let call = finish(json!({"return_type": "give_answer", "final_answer": answer}));
        return (pyjson::strip(&text[..at]).to_string(), call);
    }
    let thought = text.split("</s>caller: ").next().unwrap_or(text);
    // The reference raises when there is no `</s>`; umi reads no call (`none`, `{}`).
    let (name, arguments) = parse_action(text.split("</s>").nth(1).unwrap_or(""));
    (
        pyjson::strip(thought).to_string(),
        FunctionCall { name, arguments },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keeps_spent_messages_and_skips_unknown_roles() {
        let mut retry = Message::user("try again");
        retry.valid = Some(false);
        let msgs = vec![
            Message::user("q"),
            Message {
                role: "system".into(),
                ..Message::user("sys")
            },
            Message {
                role: "assistant".into(),
                value: Some("t Next: caller.</s>caller: Action: f\nAction Input: {}".into()),
                ..Message::user("")
            },
            Message::observation("f", "{\"a\": 1}"),
            retry,
        ];
        assert_eq!(
            render_messages(&msgs),
            "user: q</s>assistant: t Next: caller.</s>caller: Action: f\nAction Input: {}</s>observation: {\"a\": 1}user: try again</s>"
        );
    }

    /// Pins `collab_agent_parser` (ToolBench-multiLLM `toolbench/inference/utils.py`).
    #[test]
    fn collab_parser_outcomes() {
        let (thought, call) = collab_parse("I will search. Next: caller.</s>caller: Action: search_for_x\nAction Input: {\"q\": 1}");
        // The caller step's thought keeps its marker.
        assert_eq!(thought, "I will search. Next: caller.");
        assert_eq!(
            (call.name.as_str(), call.arguments.as_str()),
            ("search_for_x", "{\"q\": 1}")
        );
        let (thought, call) =
            collab_parse("Done. Next: conclusion.</s>conclusion: Café is open</s>");
        assert_eq!(thought, "Done.");
        assert_eq!(call.name, "Finish");
        assert_eq!(
            call.arguments,
            r#"{"return_type": "give_answer", "final_answer": "Caf\u00e9 is open"}"#
        );
        let (thought, call) = collab_parse("No luck. Next: give up.");
        assert_eq!(thought, "No luck.");
        assert_eq!(call.arguments, r#"{"return_type": "give_up_and_restart"}"#);
        let (_, call) = collab_parse("rambling with no call Next: caller.</s>caller: I don't know");
        assert_eq!(
            (call.name.as_str(), call.arguments.as_str()),
            ("none", "{}")
        );
        // A leading `assistant: ` is dropped before parsing.
        let (thought, _) = collab_parse("assistant: Hmm. Next: give up.");
        assert_eq!(thought, "Hmm.");
        // A marker in the caller's output decides, the thought running up to it.
        let (thought, call) = collab_parse("Look. Next: caller.</s>caller: Next: give up");
        assert_eq!(call.arguments, r#"{"return_type": "give_up_and_restart"}"#);
        assert_eq!(thought, "Look. Next: caller.</s>caller:");
    }

    /// Pins `generate_stream`'s stop string and `prediction`'s retry rule: the text is cut
    /// at the last `</s>` and stripped; only an empty, `.` or `,` planner output is tried
    /// again, a literal `none` is kept.
    #[test]
    fn realtime_outputs_are_cut_and_retried_as_the_reference_does() {
        assert_eq!(realtime_output("  a </s> b </s> c "), "a </s> b");
        assert_eq!(
            realtime_planner(": Plan. Next: caller."),
            Some("Plan. Next: caller.".into())
        );
        assert_eq!(realtime_planner(" . "), None);
        assert_eq!(realtime_planner("</s>"), None);
        assert_eq!(realtime_planner("none"), Some("none".into()));
    }
}
