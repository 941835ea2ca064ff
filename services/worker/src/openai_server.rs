//! OpenAI-compatible HTTP endpoints of a worker's model (`umi worker --openai-listen`):
//! `POST /v1/completions` and `POST /v1/chat/completions`, each streamed as server-sent
//! events with `"stream": true`, and `GET /v1/models`. Other clients (StableToolBench's
//! simulator or judge, an OpenAI SDK, another umi's `openai+http://` role) use the same
//! engine, batched with the role's own calls.
//!
//! Requests are checked at the edge (JSON shape, `max_tokens` within the context,
//! sampling values, body size); a configured API key is required as a bearer token.
//! Chat messages are rendered with ChatML (SmolLM2's template); α-UMi's roles use
//! `/v1/completions` with their own prompts. `min_tokens` (vLLM's extension) carries
//! ToolBench's `force_generate`.
//!
//! Structured output: `response_format` (`json_object`, `json_schema`) and vLLM's
//! `guided_json`, `guided_regex` and `guided_grammar` (Lark) constrain the text on both
//! endpoints; a chat's forced `tool_choice` is decoded under its function's schema
//! (`chat_tools`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use umi_core::presets::Sampling;
use umi_core::{CoreError, ErrorClass};
use umi_engine::{Constraint, FinishReason, GenerateOutput, StreamEvent};
use umi_rpc::http_listener::{serve_http, HttpLimits};

use crate::chat_tools::{self, Calls};
use crate::roles::{classify, RoleEngine};

/// The largest request body taken.
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// Who the endpoints answer as, and what they take.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The model name replies carry.
    pub model: String,
    /// With a key, only requests carrying `Authorization: Bearer <key>` are served.
    pub api_key: Option<String>,
    /// The most new tokens one request generates: one asking for more gets this many
    /// (and `finish_reason: "length"` when it runs out).
    pub max_tokens: Option<usize>,
}

struct Shared {
    engine: RoleEngine,
    model: String,
    api_key: Option<String>,
    max_tokens: Option<usize>,
    requests: AtomicU64,
}

/// The endpoints over `engine`.
pub fn router(engine: RoleEngine, settings: Settings) -> Router {
    let shared = Arc::new(Shared {
        engine,
        model: settings.model,
        api_key: settings.api_key,
        max_tokens: settings.max_tokens,
        requests: AtomicU64::new(0),
    });
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route_layer(middleware::from_fn_with_state(shared.clone(), require_key))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// The sampling fields both endpoints take.
#[derive(Debug, Deserialize)]
struct Options {
    max_tokens: Option<usize>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    seed: Option<u64>,
    stop: Option<OneOrMany>,
    #[serde(default)]
    stream: bool,
    /// vLLM's extension: stop tokens before this many new tokens are ignored.
    min_tokens: Option<usize>,
    /// vLLM's extension: keep only the prompt's last this many tokens.
    truncate_prompt_tokens: Option<usize>,
    /// `{"type": "text" | "json_object" | "json_schema", "json_schema": {"schema": …}}`.
    response_format: Option<Value>,
    /// vLLM's extensions: the text is a JSON value valid under this schema, matches this
    /// regular expression, or this Lark grammar.
    guided_json: Option<Value>,
    guided_regex: Option<String>,
    guided_grammar: Option<String>,
}

/// The grammar `options` ask the text to match, if any; more than one is refused.
fn constraint_of(options: &Options) -> Result<Option<Constraint>, String> {
    let format = match &options.response_format {
        None => None,
        Some(format) => match format["type"].as_str() {
            Some("text") => None,
            Some("json_object") => Some(Constraint::JsonObject),
            Some("json_schema") => match format["json_schema"].get("schema") {
                Some(schema) if schema.is_object() => Some(Constraint::JsonSchema(schema.clone())),
                Some(_) => {
                    return Err(
                        "response_format.json_schema.schema: not a JSON schema object".into(),
                    )
                }
                None if format["json_schema"].is_object() => Some(Constraint::JsonObject),
                None => {
                    return Err("response_format.json_schema: missing (it holds the schema)".into())
                }
            },
            _ => {
                return Err(format!(
                    "response_format.type: {} is not \"text\", \"json_object\" or \"json_schema\"",
                    format["type"]
                ))
            }
        },
    };
    let guided = [
        options.guided_json.clone().map(|schema| match schema {
            // vLLM takes the schema as an object or as its JSON text.
            Value::String(text) => serde_json::from_str(&text)
                .map(Constraint::JsonSchema)
                .map_err(|e| format!("guided_json: not JSON: {e}")),
            schema => Ok(Constraint::JsonSchema(schema)),
        }),
        options
            .guided_regex
            .clone()
            .map(|rx| Ok(Constraint::Regex(rx))),
        options
            .guided_grammar
            .clone()
            .map(|g| Ok(Constraint::Lark(g))),
    ];
    let mut given: Vec<Constraint> = format.into_iter().collect();
    for g in guided.into_iter().flatten() {
        given.push(g?);
    }
    if given.len() > 1 {
        return Err(
            "response_format, guided_json, guided_regex, guided_grammar: give one of them".into(),
        );
    }
    Ok(given.pop())
}

#[derive(Debug, Deserialize)]
struct CompletionRequest {
    prompt: OneOrMany,
    #[serde(flatten)]
    options: Options,
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    /// `null` on an assistant message that only called.
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<chat_tools::ToolCallIn>,
    /// The legacy single call.
    #[serde(default)]
    function_call: Option<chat_tools::CallIn>,
}

#[derive(Debug, Deserialize)]
struct ChatRequest {
    messages: Vec<ChatMessage>,
    #[serde(default)]
    tools: Vec<chat_tools::Tool>,
    #[serde(default)]
    tool_choice: Option<Value>,
    /// The legacy `functions` / `function_call` fields: refused by name (not ignored).
    #[serde(default)]
    functions: Option<Value>,
    #[serde(default)]
    function_call: Option<Value>,
    #[serde(flatten)]
    options: Options,
}

/// An error in OpenAI's shape.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let kind = if status.is_client_error() {
        "invalid_request_error"
    } else {
        "server_error"
    };
    let body =
        json!({"error": {"message": message.into(), "type": kind, "param": null, "code": null}});
    (status, Json(body)).into_response()
}

fn status_of(e: &CoreError) -> StatusCode {
    match e.class() {
        ErrorClass::InvalidRequest => StatusCode::BAD_REQUEST,
        ErrorClass::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorClass::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        ErrorClass::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(key) = &shared.api_key else {
        return true;
    };
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.as_bytes(), key.as_bytes()))
}

/// Refuses a request without the configured key before any work.
async fn require_key(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> Response {
    if !authorized(&shared, request.headers()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "a valid API key is required (Authorization: Bearer …)",
        );
    }
    next.run(request).await
}

/// Compares without stopping at the first difference (no timing hint about the key).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A JSON body, or the error naming what is wrong with it.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("request body: {e}"))
}

async fn completions(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let request: CompletionRequest = match parse(&body) {
        Ok(r) => r,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let mut prompts = request.prompt.into_vec();
    if prompts.len() != 1 {
        return error(
            StatusCode::BAD_REQUEST,
            "prompt: give one prompt (a string)",
        );
    }
    let prompt = prompts.remove(0);
    run(&shared, prompt, request.options, Kind::Completion).await
}

async fn chat_completions(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let request: ChatRequest = match parse(&body) {
        Ok(r) => r,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    if request.messages.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "messages: at least one message is needed",
        );
    }
    if let Some(m) = request.messages.iter().find(|m| {
        !matches!(
            m.role.as_str(),
            "system" | "user" | "assistant" | "tool" | "function"
        )
    }) {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "messages: unknown role {:?} (system, user, assistant, tool or function)",
                m.role
            ),
        );
    }
    if request.functions.is_some() || request.function_call.is_some() {
        return error(
            StatusCode::BAD_REQUEST,
            "functions/function_call: the legacy function-calling fields are not taken; send the functions as tools (and tool_choice)",
        );
    }
    let offer = match chat_tools::check(&request.tools, request.tool_choice.as_ref()) {
        Ok(offer) => offer,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let prompt = chat_prompt(&request.messages, &offer.functions);
    let kind = if offer.functions.is_empty() {
        Kind::Chat
    } else {
        Kind::ChatWithTools(offer)
    };
    run(&shared, prompt, request.options, kind).await
}

/// The conversation in the model's ChatML, the functions (if any) listed in the system
/// message, calls and tool results as `chat_tools` writes them.
fn chat_prompt(messages: &[ChatMessage], functions: &[Value]) -> String {
    let turn = |role: &str, text: &str| format!("<|im_start|>{role}\n{text}<|im_end|>\n");
    let mut prompt = String::new();
    let tools = (!functions.is_empty()).then(|| chat_tools::tools_block(functions));
    if let Some(block) = &tools {
        if messages.first().is_none_or(|m| m.role != "system") {
            prompt.push_str(&turn("system", block.trim_start()));
        }
    }
    for (i, m) in messages.iter().enumerate() {
        let content = m.content.as_deref().unwrap_or("");
        let text = match m.role.as_str() {
            "system" if i == 0 => format!("{content}{}", tools.as_deref().unwrap_or("")),
            "assistant" => {
                let calls = m
                    .tool_calls
                    .iter()
                    .map(|c| &c.function)
                    .chain(m.function_call.iter())
                    .map(chat_tools::render_call);
                std::iter::once(content.to_string())
                    .chain(calls)
                    .filter(|t| !t.is_empty())
                    .collect::<Vec<_>>()
                    .join("\n")
            }
            "tool" | "function" => chat_tools::render_result(content),
            _ => content.to_string(),
        };
        let role = match m.role.as_str() {
            "tool" | "function" => "user",
            role => role,
        };
        prompt.push_str(&turn(role, &text));
    }
    prompt.push_str("<|im_start|>assistant\n");
    prompt
}

async fn models(State(shared): State<Arc<Shared>>) -> Response {
    Json(json!({"object": "list", "data": [{"id": shared.model, "object": "model", "owned_by": "umi"}]}))
        .into_response()
}

enum Kind {
    Completion,
    Chat,
    /// A chat offered functions: calls in the output are answered as `tool_calls`.
    ChatWithTools(chat_tools::Offer),
}

/// OpenAI's defaults: 16 new tokens, temperature 1; the prompt kept whole unless it
/// leaves no room in the context for the new tokens (then refused). At most `cap` new
/// tokens.
fn sampling_of(
    options: &Options,
    context_len: usize,
    cap: Option<usize>,
) -> Result<Sampling, String> {
    let max_new_tokens = options
        .max_tokens
        .unwrap_or(16)
        .min(cap.unwrap_or(usize::MAX));
    if max_new_tokens == 0 || max_new_tokens >= context_len {
        return Err(format!(
            "max_tokens: {max_new_tokens} is not between 1 and the context length {context_len}"
        ));
    }
    let temperature = options.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(format!("temperature: {temperature} is not between 0 and 2"));
    }
    if let Some(p) = options.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
        return Err(format!("top_p: {p} is not in (0, 1]"));
    }
    let room = context_len - max_new_tokens;
    Ok(Sampling {
        temperature,
        top_p: options.top_p.filter(|p| *p < 1.0),
        top_k: None,
        seed: options.seed.unwrap_or(0),
        max_input_tokens: options.truncate_prompt_tokens.map_or(room, |k| k.min(room)),
        max_new_tokens,
        min_new_tokens: options.min_tokens.unwrap_or(0).min(max_new_tokens),
    })
}

async fn run(shared: &Shared, prompt: String, options: Options, kind: Kind) -> Response {
    let context_len = shared.engine.engine().info().context_len;
    let sampling = match sampling_of(&options, context_len, shared.max_tokens) {
        Ok(s) => s,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let mut request = match shared.engine.request_for_prompt(&prompt, &sampling).await {
        Ok(r) => r,
        Err(e) => return error(status_of(&e), e.message()),
    };
    let format = match constraint_of(&options) {
        Ok(format) => format,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let forced = match &kind {
        Kind::ChatWithTools(offer) => offer.constraint(),
        _ => None,
    };
    request.constraint = match (format, forced) {
        (Some(_), Some(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "response_format: a forced tool_choice already decides the output's form; give one of them",
            )
        }
        (format, forced) => format.or(forced),
    };
    request.stop_strings = options.stop.map(OneOrMany::into_vec).unwrap_or_default();
    if let Err(message) = umi_engine::generate::check_stop_strings(&request.stop_strings) {
        return error(StatusCode::BAD_REQUEST, message);
    }
    let n = shared.requests.fetch_add(1, Ordering::Relaxed);
    let head = Head {
        id: match kind {
            Kind::Completion => format!("cmpl-{n}"),
            Kind::Chat | Kind::ChatWithTools(_) => format!("chatcmpl-{n}"),
        },
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        model: shared.model.clone(),
        kind,
    };
    if options.stream {
        return match shared.engine.stream(request) {
            // The headers wait for the first event, so a request the engine refuses at
            // its prefill (a grammar it cannot compile, a prompt too long) is answered
            // with its status, not a 200 whose stream then fails.
            Ok(mut events) => match events.recv().await {
                Some(Err(e)) => {
                    let e = classify(e);
                    error(status_of(&e), e.message())
                }
                first => stream(head, first, events),
            },
            Err(e) => error(status_of(&e), e.message()),
        };
    }
    match shared.engine.generate(request).await {
        Ok(out) => Json(head.whole(&out)).into_response(),
        Err(e) => error(status_of(&e), e.message()),
    }
}

/// What every response object of one request shares.
struct Head {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
}

fn finish_reason(out: &GenerateOutput) -> &'static str {
    match out.finish_reason {
        FinishReason::Length => "length",
        _ => "stop",
    }
}

impl Head {
    fn object(&self, chunk: bool) -> &'static str {
        match (&self.kind, chunk) {
            (Kind::Completion, _) => "text_completion",
            (Kind::Chat | Kind::ChatWithTools(_), false) => "chat.completion",
            (Kind::Chat | Kind::ChatWithTools(_), true) => "chat.completion.chunk",
        }
    }

    fn usage(out: &GenerateOutput) -> Value {
        json!({
            "prompt_tokens": out.prompt_tokens,
            "completion_tokens": out.generated_tokens(),
            "total_tokens": out.prompt_tokens + out.generated_tokens(),
        })
    }

    fn whole(&self, out: &GenerateOutput) -> Value {
        let choice = match &self.kind {
            Kind::Completion => {
                json!({"index": 0, "text": out.text, "logprobs": null, "finish_reason": finish_reason(out)})
            }
            Kind::Chat => {
                json!({"index": 0, "message": {"role": "assistant", "content": out.text}, "finish_reason": finish_reason(out)})
            }
            Kind::ChatWithTools(offer) => {
                let (content, calls) = offer.read(&out.text);
                let reason = self.reason(out, !calls.is_empty());
                let mut message = json!({"role": "assistant", "content": content});
                if !calls.is_empty() {
                    message["tool_calls"] = Value::Array(self.tool_calls(calls, false));
                }
                json!({"index": 0, "message": message, "finish_reason": reason})
            }
        };
        json!({"id": self.id, "object": self.object(false), "created": self.created, "model": self.model, "choices": [choice], "usage": Self::usage(out)})
    }

    /// Calls in OpenAI's shape (a streamed delta's also carry their `index`).
    fn tool_calls(&self, calls: Vec<(String, String)>, streamed: bool) -> Vec<Value> {
        calls
            .into_iter()
            .enumerate()
            .map(|(i, (name, arguments))| {
                let mut call = json!({"id": self.call_id(i), "type": "function",
                    "function": {"name": name, "arguments": arguments}});
                if streamed {
                    call["index"] = json!(i);
                }
                call
            })
            .collect()
    }

    fn call_id(&self, i: usize) -> String {
        format!("call_{}_{i}", self.id)
    }

    /// The finish reason: `tool_calls` when the model chose to call; a call it was told
    /// to make ends with `stop`, as OpenAI's do.
    fn reason(&self, out: &GenerateOutput, called: bool) -> &'static str {
        match (&self.kind, finish_reason(out)) {
            (Kind::ChatWithTools(offer), "stop")
                if called && !matches!(offer.calls, Calls::Named(_)) =>
            {
                "tool_calls"
            }
            (_, reason) => reason,
        }
    }

    /// One streamed chunk of a choice's `delta` (or, for a completion, its text).
    fn chunk(&self, delta: Value, reason: Option<&str>) -> Value {
        let choice = match &self.kind {
            Kind::Completion => {
                let text = delta["content"].as_str().unwrap_or_default();
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": reason})
            }
            Kind::Chat | Kind::ChatWithTools(_) => {
                json!({"index": 0, "delta": delta, "finish_reason": reason})
            }
        };
        json!({"id": self.id, "object": self.object(true), "created": self.created, "model": self.model, "choices": [choice]})
    }

    /// The chunks that carry new text. A named call's text is its arguments, streamed
    /// as they come; other calls are read from the whole output, so a chat with tools
    /// holds its text back for [`Head::last`].
    fn text(&self, text: &str) -> Option<Value> {
        match &self.kind {
            Kind::ChatWithTools(offer) => match offer.calls {
                Calls::Named(_) => Some(self.chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": text}}]}),
                    None,
                )),
                _ => None,
            },
            _ => Some(self.chunk(json!({"content": text}), None)),
        }
    }

    /// The chunks that open a chat's stream: the role (and a named call's name).
    fn first(&self) -> Option<Value> {
        match &self.kind {
            Kind::Completion => None,
            Kind::ChatWithTools(chat_tools::Offer {
                calls: Calls::Named(name),
                ..
            }) => Some(self.chunk(
                json!({"role": "assistant", "content": null, "tool_calls": [
                    {"index": 0, "id": self.call_id(0), "type": "function",
                     "function": {"name": name, "arguments": ""}}]}),
                None,
            )),
            _ => Some(self.chunk(json!({"role": "assistant", "content": ""}), None)),
        }
    }

    /// The chunks that end the stream: text and calls held back, then the finish reason
    /// with the usage.
    fn last(&self, out: &GenerateOutput) -> Vec<Value> {
        let mut chunks = Vec::new();
        let called = match &self.kind {
            // Its call went out as it was generated.
            Kind::ChatWithTools(offer) if matches!(offer.calls, Calls::Named(_)) => true,
            Kind::ChatWithTools(offer) => {
                let (content, calls) = offer.read(&out.text);
                if let Some(content) = content {
                    chunks.push(self.chunk(json!({"content": content}), None));
                }
                let called = !calls.is_empty();
                if called {
                    let calls = self.tool_calls(calls, true);
                    chunks.push(self.chunk(json!({"tool_calls": calls}), None));
                }
                called
            }
            Kind::Completion | Kind::Chat => false,
        };
        let delta = match self.kind {
            Kind::Completion => json!({"content": ""}),
            _ => json!({}),
        };
        let mut end = self.chunk(delta, Some(self.reason(out, called)));
        end["usage"] = Self::usage(out);
        chunks.push(end);
        chunks
    }
}

fn event(value: &Value) -> String {
    format!("data: {value}\n\n")
}

/// Server-sent events: the text as it is generated, the end, then `data: [DONE]`. A
/// client that hangs up cancels the generation (the engine's receiver is dropped).
fn stream(
    head: Head,
    first: Option<Result<StreamEvent, umi_engine::EngineError>>,
    mut events: tokio::sync::mpsc::UnboundedReceiver<Result<StreamEvent, umi_engine::EngineError>>,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(16);
    tokio::spawn(async move {
        if let Some(first) = head.first() {
            if tx.send(Ok(event(&first))).await.is_err() {
                return;
            }
        }
        let mut waiting = first;
        loop {
            let e = match waiting.take() {
                Some(e) => e,
                None => match events.recv().await {
                    Some(e) => e,
                    None => break,
                },
            };
            let text = match e {
                Ok(StreamEvent::Text { text, .. }) => match head.text(&text) {
                    Some(chunk) => event(&chunk),
                    None => continue,
                },
                Ok(StreamEvent::Done(out)) => {
                    let last: String = head.last(&out).iter().map(event).collect();
                    format!("{last}data: [DONE]\n\n")
                }
                Err(e) => {
                    let e = classify(e);
                    let kind = match e.class() {
                        ErrorClass::InvalidRequest => "invalid_request_error",
                        _ => "server_error",
                    };
                    event(&json!({"error": {"message": e.message(), "type": kind}}))
                }
            };
            if tx.send(Ok(text)).await.is_err() {
                return;
            }
        }
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// Serves `router` on `listener` until `shutdown` completes (in-flight requests finish),
/// within `umi_rpc::http_listener`'s limits (headers within 10 s, 256 connections).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_within(listener, router, HttpLimits::default(), shutdown).await
}

/// As [`serve`], within `limits`.
pub async fn serve_within(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_http(listener, router, limits, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(max_tokens: Option<usize>, temperature: Option<f64>) -> Options {
        Options {
            max_tokens,
            temperature,
            top_p: None,
            seed: None,
            stop: None,
            stream: false,
            min_tokens: Some(1),
            truncate_prompt_tokens: Some(100),
            response_format: None,
            guided_json: None,
            guided_regex: None,
            guided_grammar: None,
        }
    }

    #[test]
    fn response_formats_and_vllms_guided_fields_name_their_grammar() {
        let with = |fields: Value| {
            let mut o = options(None, None);
            let given: Options = serde_json::from_value(fields).unwrap();
            o.response_format = given.response_format;
            o.guided_json = given.guided_json;
            o.guided_regex = given.guided_regex;
            o.guided_grammar = given.guided_grammar;
            constraint_of(&o)
        };
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        assert_eq!(with(json!({})), Ok(None));
        assert_eq!(with(json!({"response_format": {"type": "text"}})), Ok(None));
        assert_eq!(
            with(json!({"response_format": {"type": "json_object"}})),
            Ok(Some(Constraint::JsonObject))
        );
        assert_eq!(
            with(
                json!({"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}})
            ),
            Ok(Some(Constraint::JsonSchema(schema.clone())))
        );
        assert_eq!(
            with(json!({"guided_json": schema.to_string()})),
            Ok(Some(Constraint::JsonSchema(schema)))
        );
        assert_eq!(
            with(json!({"guided_regex": "a+"})),
            Ok(Some(Constraint::Regex("a+".into())))
        );
        let err = with(json!({"response_format": {"type": "yaml"}})).unwrap_err();
        assert!(err.starts_with("response_format.type: \"yaml\""), "{err}");
        let err = with(json!({"response_format": {"type": "json_schema"}})).unwrap_err();
        assert!(err.starts_with("response_format.json_schema"), "{err}");
        let err = with(json!({"response_format": {"type": "json_object"}, "guided_regex": "a"}))
            .unwrap_err();
        assert!(err.contains("give one"), "{err}");
        assert!(with(json!({"guided_json": "{not json"})).is_err());
    }

    #[test]
    fn sampling_is_checked_at_the_edge() {
        let s = sampling_of(&options(Some(64), Some(0.0)), 2048, None).unwrap();
        assert_eq!(
            (s.max_new_tokens, s.max_input_tokens, s.min_new_tokens),
            (64, 100, 1)
        );
        assert!(sampling_of(&options(Some(0), None), 2048, None).is_err());
        assert!(sampling_of(&options(Some(4096), None), 2048, None).is_err());
        let err = sampling_of(&options(None, Some(7.0)), 2048, None).unwrap_err();
        assert!(err.contains("temperature"), "{err}");
        // A worker's cap: asking for more gets the cap.
        let s = sampling_of(&options(Some(1000), None), 2048, Some(256)).unwrap();
        assert_eq!(s.max_new_tokens, 256);
    }

    #[test]
    fn stop_strings_are_bounded() {
        use umi_engine::generate::check_stop_strings;
        assert!(check_stop_strings(&vec!["Next:".to_string(); 16]).is_ok());
        let err = check_stop_strings(&vec!["x".to_string(); 17]).unwrap_err();
        assert!(err.contains("17 strings"), "{err}");
        assert!(check_stop_strings(&["y".repeat(257)]).is_err());
        assert!(check_stop_strings(&[String::new()]).is_err());
    }

    /// The ChatML prompt of a conversation with functions: the tools listed in the system
    /// message, an earlier call and its result as `chat_tools` writes them.
    #[test]
    fn a_chat_with_tools_renders_calls_and_results() {
        let request: ChatRequest = serde_json::from_value(json!({
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function",
                    "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            ],
            "tools": [{"type": "function", "function": {"name": "weather", "parameters": {}}}],
        }))
        .unwrap();
        let functions = chat_tools::check(&request.tools, None).unwrap().functions;
        let prompt = chat_prompt(&request.messages, &functions);
        let expected = format!(
            "<|im_start|>system\nBe brief.{}<|im_end|>\n<|im_start|>user\nWeather?<|im_end|>\n\
             <|im_start|>assistant\n<tool_call>\n{{\"name\":\"weather\",\"arguments\":{{\"city\":\"Paris\"}}}}\n</tool_call><|im_end|>\n\
             <|im_start|>user\n<tool_response>\nsunny\n</tool_response><|im_end|>\n<|im_start|>assistant\n",
            chat_tools::tools_block(&functions)
        );
        assert_eq!(prompt, expected);
        // Without tools the conversation is plain ChatML.
        let plain = chat_prompt(&request.messages[..2], &[]);
        assert_eq!(
            plain,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWeather?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn keys_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret!"));
    }
}
