//! A role played by an OpenAI-compatible server (`--planner-endpoint openai+http://host:port/v1`):
//! vLLM or TGI serving an α-UMi checkpoint, or another umi worker's `--openai-listen`.
//! The α-UMi prompt is rendered here (`RoleRequest::render`, the one renderer) and sent
//! to `/v1/completions` with the role's sampling: temperature, top-p, the call's seed
//! (`CallSampling::for_call`, the rule of every role source),
//! `max_tokens`, `min_tokens` (ToolBench's `force_generate`, vLLM's extension) and
//! `truncate_prompt_tokens` (the reference keeps the prompt's last tokens; vLLM's
//! extension, also honoured by umi's worker). The reply's text is the role's output.
//! The openai-functions agent's requests (`PromptForm::Functions`) go to
//! `/v1/chat/completions` instead, with the conversation and the functions as tools.

use std::time::Duration;

use serde_json::{json, Value};
use umi_core::agent::{
    BoxFuture, ChatReply, FunctionCall, Generated, Message, PromptForm, RoleModels, RoleRequest,
};
use umi_core::constraint::Constraint;
use umi_core::presets::{CallSampling, Sampling};
use umi_core::prompt::RolePrompts;
use umi_core::{CoreError, ErrorClass, Result};
use umi_tools::http::{get_with_headers, post_json, HttpError};

/// The scheme prefix that marks an OpenAI-compatible endpoint among role endpoints.
pub const SCHEME_PREFIX: &str = "openai+";

/// The largest completion reply read.
const MAX_REPLY_BYTES: usize = 16 << 20;

pub struct OpenAiRole {
    /// `http(s)://host:port/v1`.
    base: String,
    model: String,
    api_key: Option<String>,
    sampling: CallSampling,
    prompts: RolePrompts,
    timeout: Duration,
}

/// The http(s) base URL of an `openai+http(s)://…` endpoint, or `None` for another kind.
pub fn base_url(endpoint: &str) -> Option<&str> {
    endpoint
        .strip_prefix(SCHEME_PREFIX)
        .filter(|rest| rest.starts_with("http://") || rest.starts_with("https://"))
}

fn unavailable(base: &str, e: impl std::fmt::Display) -> CoreError {
    CoreError::new(ErrorClass::Unavailable, format!("{base}: {e}"))
}

fn classify_http(base: &str, e: HttpError) -> CoreError {
    match e {
        HttpError::Timeout => CoreError::new(ErrorClass::DeadlineExceeded, format!("{base}: {e}")),
        HttpError::Url { .. } | HttpError::Invalid(_) => {
            CoreError::new(ErrorClass::InvalidRequest, format!("{base}: {e}"))
        }
        other => unavailable(base, other),
    }
}

impl OpenAiRole {
    /// A role on the server at `base` (`http(s)://host:port/v1`). Without `model`, the
    /// server's first model (`GET /models`) is used.
    pub async fn connect(
        base: &str,
        model: Option<String>,
        api_key: Option<String>,
        sampling: Sampling,
        timeout: Duration,
    ) -> Result<Self> {
        let base = base.trim_end_matches('/').to_string();
        let model = match model {
            Some(m) => m,
            None => first_model(&base, api_key.as_deref()).await?,
        };
        Ok(OpenAiRole {
            base,
            model,
            api_key,
            sampling: CallSampling::new(sampling),
            prompts: RolePrompts::toolbench(),
            timeout,
        })
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// The request for one role call. No `stop` strings: a role stops where α-UMi's
    /// reference `generate` stops, at the model's end-of-sequence token, which the server
    /// honours by default (the `</s>` text cut is applied to the reply, as in process).
    fn body(&self, prompt: &str, s: &Sampling) -> Value {
        let mut body = json!({
            "model": self.model,
            "prompt": prompt,
            "max_tokens": s.max_new_tokens,
            "temperature": s.temperature,
            "seed": s.seed,
            "min_tokens": s.min_new_tokens,
        });
        if let Some(p) = s.top_p {
            body["top_p"] = json!(p);
        }
        if s.max_input_tokens > 0 {
            body["truncate_prompt_tokens"] = json!(s.max_input_tokens);
        }
        body
    }

    async fn complete(&self, request: RoleRequest) -> Result<Generated> {
        let sampling = self.sampling.for_call(request.seed_offset);
        if request.form == PromptForm::Functions {
            return self.chat(&request, &sampling).await;
        }
        let prompt = request.render(&self.prompts)?;
        let mut body = self.body(&prompt, &sampling);
        // A grammar goes as vLLM's guided fields (umi's workers take them too).
        match request.constraint() {
            Some(Constraint::Lark(grammar)) => body["guided_grammar"] = json!(grammar),
            Some(Constraint::Regex(rx)) => body["guided_regex"] = json!(rx),
            Some(Constraint::JsonSchema(schema)) => body["guided_json"] = schema,
            Some(Constraint::JsonObject) => {
                body["response_format"] = json!({"type": "json_object"})
            }
            None => {}
        }
        let (url, value) = self.post("completions", &body).await?;
        let text = value
            .pointer("/choices/0/text")
            .and_then(Value::as_str)
            .ok_or_else(|| unavailable(&url, "the reply has no choices[0].text"))?;
        Ok(Generated {
            text: text.to_string(),
            prompt_tokens: usage(&value, "prompt_tokens"),
            cached_tokens: cached_tokens(&value),
            generated_tokens: usage(&value, "completion_tokens"),
            ..Generated::default()
        })
    }

    /// The openai-functions agent's step (`ChatGPTFunction.parse`): the conversation and
    /// the functions sent as `chatgpt_function` sends them (`max_tokens` from the
    /// sampling, 1024 by default; no penalties; the server's own temperature), in today's
    /// `tools` form, which vLLM,
    /// TGI and OpenAI all take (the legacy `functions` field is OpenAI's alone); the
    /// reply's first call read back as ToolBench's `function_call`.
    async fn chat(&self, request: &RoleRequest, s: &Sampling) -> Result<Generated> {
        let tools: Vec<Value> = request
            .functions
            .iter()
            .map(|f| json!({"type": "function", "function": f}))
            .collect();
        let mut body = json!({
            "model": self.model,
            "messages": chat_messages(&request.chat),
            "max_tokens": s.max_new_tokens,
            "frequency_penalty": 0,
            "presence_penalty": 0,
            "seed": s.seed,
        });
        if !tools.is_empty() {
            body["tools"] = Value::Array(tools);
        }
        let (url, value) = self.post("chat/completions", &body).await?;
        let message = value
            .pointer("/choices/0/message")
            .ok_or_else(|| unavailable(&url, "the reply has no choices[0].message"))?;
        let reply = chat_reply(message);
        Ok(Generated {
            text: reply.content.clone().unwrap_or_default(),
            prompt_tokens: usage(&value, "prompt_tokens"),
            cached_tokens: cached_tokens(&value),
            generated_tokens: usage(&value, "completion_tokens"),
            chat: Some(reply),
            ..Generated::default()
        })
    }

    /// POSTs `body` to `<base>/<path>`; the reply's JSON, or its error classified.
    async fn post(&self, path: &str, body: &Value) -> Result<(String, Value)> {
        let auth = self.api_key.as_ref().map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let url = format!("{}/{path}", self.base);
        let reply = post_json(
            &url,
            &headers,
            body.to_string().as_bytes(),
            self.timeout,
            MAX_REPLY_BYTES,
        )
        .await
        .map_err(|e| classify_http(&self.base, e))?;
        let value: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        if reply.status != 200 {
            let message = value
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("no error message");
            let class = match reply.status {
                429 => ErrorClass::ResourceExhausted,
                400..=499 => ErrorClass::InvalidRequest,
                _ => ErrorClass::Unavailable,
            };
            return Err(CoreError::new(
                class,
                format!("{url}: HTTP {}: {message}", reply.status),
            ));
        }
        Ok((url, value))
    }
}

/// A chat reply's message as ToolBench reads it: its content (`None` when `null`) and its
/// first call (`tool_calls`, else the legacy `function_call`). A call without a name (or
/// a `null` one, as some servers write "no call") is no call: an empty name would reach
/// the first API by ToolBench's suffix match.
fn chat_reply(message: &Value) -> ChatReply {
    let content = message
        .get("content")
        .and_then(Value::as_str)
        .map(str::to_string);
    let function_call = message
        .pointer("/tool_calls/0/function")
        .or_else(|| message.get("function_call"))
        .and_then(|f| {
            Some(FunctionCall {
                name: f.get("name")?.as_str()?.to_string(),
                arguments: match &f["arguments"] {
                    Value::String(text) => text.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                },
            })
        });
    ChatReply {
        content,
        function_call,
    }
}

/// A reply's `usage` count (0 when the server gives none).
fn usage(reply: &Value, key: &str) -> usize {
    reply
        .pointer(&format!("/usage/{key}"))
        .and_then(Value::as_u64)
        .unwrap_or(0) as usize
}

/// Prompt tokens the server's prefix cache served (`usage.prompt_tokens_details
/// .cached_tokens`, as OpenAI and vLLM report them), 0 where it does not say.
fn cached_tokens(reply: &Value) -> usize {
    usage(reply, "prompt_tokens_details/cached_tokens")
}

/// ToolBench's messages in the chat API's `tools` form: each assistant call gets an id
/// (`call_<n>`, numbered in the conversation) and the `function` message after it
/// becomes a `tool` message answering that id.
fn chat_messages(messages: &[Message]) -> Vec<Value> {
    let mut calls = 0;
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        out.push(match (m.role.as_str(), &m.function_call) {
            ("assistant", Some(call)) => {
                calls += 1;
                json!({"role": "assistant", "content": m.content, "tool_calls": [{
                    "id": format!("call_{calls}"),
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }]})
            }
            ("function", _) => json!({
                "role": "tool",
                "tool_call_id": format!("call_{calls}"),
                "content": m.content.as_deref().unwrap_or(""),
            }),
            (role, _) => json!({"role": role, "content": m.content}),
        });
    }
    out
}

async fn first_model(base: &str, api_key: Option<&str>) -> Result<String> {
    let auth = api_key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let reply = get_with_headers(&format!("{base}/models"), &headers, Duration::from_secs(10))
        .await
        .map_err(|e| classify_http(base, e))?;
    let value: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    value
        .pointer("/data/0/id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            unavailable(
                base,
                format!(
                    "GET /models (HTTP {}) names no model: give the model name",
                    reply.status
                ),
            )
        })
}

impl RoleModels for OpenAiRole {
    fn generate<'a>(&'a self, request: RoleRequest) -> BoxFuture<'a, Result<Generated>> {
        let role = request.role;
        Box::pin(async move {
            self.complete(request)
                .await
                .map_err(|e| CoreError::role(role, e.class(), 1, e.message()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chat_reply_reads_its_first_call_and_no_call_from_a_nameless_one() {
        let reply = chat_reply(&json!({"content": null, "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}}]}));
        assert_eq!(reply.content, None);
        let call = reply.function_call.unwrap();
        assert_eq!((call.name.as_str(), call.arguments.as_str()), ("f", "{}"));
        let legacy = chat_reply(
            &json!({"content": "x", "function_call": {"name": "h", "arguments": {"a": 1}}}),
        );
        assert_eq!(legacy.function_call.unwrap().arguments, "{\"a\":1}");
        for none in [
            json!({"content": "just text", "function_call": null}),
            json!({"content": "t", "tool_calls": [{"function": {"arguments": "{}"}}]}),
        ] {
            let reply = chat_reply(&none);
            assert!(reply.function_call.is_none(), "{none}");
        }
    }

    #[test]
    fn only_openai_http_endpoints_have_a_base() {
        assert_eq!(
            base_url("openai+http://h:8000/v1"),
            Some("http://h:8000/v1")
        );
        assert_eq!(base_url("openai+https://h/v1"), Some("https://h/v1"));
        assert_eq!(base_url("http://h:50051"), None);
        assert_eq!(base_url("openai+ftp://h"), None);
    }
}
