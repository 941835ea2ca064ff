//! The agents DFSDT can drive, and everything that differs between them: α-UMi's three
//! roles (the default, `crate::agent`) and the reference runner's other backbones,
//! ToolLLaMA and an OpenAI-style function-calling chat (`crate::toolbench`). The search,
//! the tools and the answer file's layout are the same for all; an agent decides the
//! opening messages, one step, and the shape of the messages it leaves (α-UMi's carry a
//! `value` and `observation` turns; ToolBench's are the OpenAI chat's, with `function`
//! turns, as upstream ToolBench writes them and its converter reads them).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agent::{
    agent_step, FunctionCall, Message, PromptForm, RoleKind, RoleModels, RoleRequest,
};
use crate::env::ToolEnv;
use crate::error::Result;
use crate::parse::{realtime_output, Decision};
use crate::toolbench;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentKind {
    /// α-UMi: planner, caller and summarizer (`CollbaAgentV3`).
    #[default]
    AlphaUmi,
    /// ToolLLaMA (`toolllama`): one model, ToolBench's ReAct prompt and parser, played by
    /// the planner's model.
    ToolLlama,
    /// An OpenAI-compatible chat with function calling (`chatgpt_function`), played by
    /// the planner's endpoint.
    OpenAiFunctions,
}

/// How the observation of a call is written: the α-UMi fork shows the reply's
/// `response` (or `{"message": error}`); upstream ToolBench the whole
/// `{"error", "response"}` reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ObservationStyle {
    #[default]
    Response,
    WholeReply,
}

/// One agent step: the assistant message as the search stores it (its `content` becomes
/// a Thought node, its `function_call` an Action and Action Input), and what it cost.
#[derive(Debug, Clone)]
pub struct Reply {
    pub message: Message,
    /// α-UMi's planner decision (for the step's span).
    pub decision: Option<Decision>,
    pub tokens: usize,
}

impl AgentKind {
    pub const ALL: [AgentKind; 3] = [
        AgentKind::AlphaUmi,
        AgentKind::ToolLlama,
        AgentKind::OpenAiFunctions,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AgentKind::AlphaUmi => "alpha-umi",
            AgentKind::ToolLlama => "toolllama",
            AgentKind::OpenAiFunctions => "openai-functions",
        }
    }

    /// The agent named `name` (`as_str`'s names).
    pub fn parse(name: &str) -> Option<AgentKind> {
        AgentKind::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// Whether its messages are upstream ToolBench's (system and user opening, `function`
    /// observations, no `value`).
    pub fn toolbench_messages(self) -> bool {
        self != AgentKind::AlphaUmi
    }

    pub fn observation_style(self) -> ObservationStyle {
        if self.toolbench_messages() {
            ObservationStyle::WholeReply
        } else {
            ObservationStyle::Response
        }
    }

    /// The root's messages: α-UMi's bare query (the fork's `DFS.start`), or upstream
    /// ToolBench's system message (the task description) and user message.
    pub fn opening(self, query: &str, env: &ToolEnv<'_>) -> Vec<Message> {
        if !self.toolbench_messages() {
            return vec![Message::user(query)];
        }
        let (system, user) = toolbench::opening(&env.task_description(), query);
        vec![
            Message::plain("system", &system),
            Message::plain("user", &user),
        ]
    }

    /// A user message (the diversity prompt) in this agent's shape.
    pub fn user_message(self, text: &str) -> Message {
        if self.toolbench_messages() {
            Message::plain("user", text)
        } else {
            Message::user(text)
        }
    }

    /// The message recording a call's observation.
    pub fn observation_message(self, function: &str, text: &str) -> Message {
        if self.toolbench_messages() {
            Message {
                name: Some(function.into()),
                ..Message::plain("function", text)
            }
        } else {
            Message::observation(function, text)
        }
    }

    /// One step on `messages` (the node's conversation, spent retry prompts marked).
    pub async fn step(
        self,
        models: &dyn RoleModels,
        env: &ToolEnv<'_>,
        messages: &[Message],
    ) -> Result<Reply> {
        match self {
            AgentKind::AlphaUmi => {
                let step = agent_step(models, env.docs(), messages).await?;
                Ok(Reply {
                    message: Message {
                        role: "assistant".into(),
                        content: Some(step.thought),
                        function_call: Some(step.call),
                        value: Some(step.value),
                        name: None,
                        valid: None,
                    },
                    decision: Some(step.decision),
                    tokens: step.tokens,
                })
            }
            AgentKind::ToolLlama => toolllama_step(models, env, messages).await,
            AgentKind::OpenAiFunctions => chat_step(models, env, messages).await,
        }
    }
}

impl std::fmt::Display for AgentKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request of a single-model agent, made to the planner's model.
fn single_model_request(form: PromptForm, functions: Vec<Value>) -> RoleRequest {
    RoleRequest {
        form,
        functions,
        ..RoleRequest::alpha_umi(RoleKind::Planner, vec![], vec![], None)
    }
}

/// `ToolLLaMA.parse`: the whole conversation (spent retry prompts too) in ToolLLaMA's
/// template, the output cut at `</s>` and stripped, read by `react_parser`; the message
/// keeps the thought as its content (upstream ToolBench's; StableToolBench later keeps
/// the whole output).
async fn toolllama_step(
    models: &dyn RoleModels,
    env: &ToolEnv<'_>,
    messages: &[Message],
) -> Result<Reply> {
    let request = RoleRequest {
        history: toolbench::toolllama_turns(messages)?,
        ..single_model_request(PromptForm::ToolLlama, env.functions())
    };
    let out = models.generate(request).await?;
    let (thought, name, arguments) = toolbench::react_parser(realtime_output(&out.text));
    Ok(Reply {
        message: Message {
            function_call: Some(FunctionCall { name, arguments }),
            ..Message::plain("assistant", &thought)
        },
        decision: None,
        tokens: out.prompt_tokens + out.generated_tokens,
    })
}

/// `ChatGPTFunction.parse`: the conversation without spent retry prompts, with the
/// function list; the reply's message kept as the endpoint gave it (a called name's
/// dotted prefix dropped, as the reference does). A reply with neither content nor a
/// call counts as an empty thought (the reference would expand the same node again).
async fn chat_step(
    models: &dyn RoleModels,
    env: &ToolEnv<'_>,
    messages: &[Message],
) -> Result<Reply> {
    let chat = messages
        .iter()
        .filter(|m| m.valid != Some(false))
        .cloned()
        .collect();
    let request = RoleRequest {
        chat,
        ..single_model_request(PromptForm::Functions, env.functions())
    };
    let out = models.generate(request).await?;
    let reply = out.chat.unwrap_or_default();
    let function_call = reply.function_call.map(|mut call| {
        if let Some((_, last)) = call.name.rsplit_once('.') {
            call.name = last.to_string();
        }
        call
    });
    let content = match (&reply.content, &function_call) {
        (None, None) => Some(String::new()),
        _ => reply.content,
    };
    Ok(Reply {
        message: Message {
            role: "assistant".into(),
            content,
            function_call,
            value: None,
            name: None,
            valid: None,
        },
        decision: None,
        tokens: out.prompt_tokens + out.generated_tokens,
    })
}
