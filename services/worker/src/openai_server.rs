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
use umi_engine::{FinishReason, GenerateOutput, StreamEvent};
use umi_rpc::http_listener::{serve_http, HttpLimits};

use crate::chat_tools;
use crate::roles::{classify, RoleEngine};

/// The largest request body taken.
pub const MAX_BODY_BYTES: usize = 4 << 20;

struct Shared {
    engine: RoleEngine,
    model: String,
    api_key: Option<String>,
    requests: AtomicU64,
}

/// The endpoints over `engine`, answering as model `model`; with `api_key`, only
/// requests carrying `Authorization: Bearer <api_key>` are served.
pub fn router(engine: RoleEngine, model: String, api_key: Option<String>) -> Router {
    let shared = Arc::new(Shared {
        engine,
        model,
        api_key,
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
    let functions = match chat_tools::check(&request.tools, request.tool_choice.as_ref()) {
        Ok(f) => f,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    if !functions.is_empty() && request.options.stream {
        return error(
            StatusCode::BAD_REQUEST,
            "stream: streaming with tools is not served yet; ask without \"stream\"",
        );
    }
    let prompt = chat_prompt(&request.messages, &functions);
    let kind = if functions.is_empty() {
        Kind::Chat
    } else {
        Kind::ChatWithTools
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

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Completion,
    Chat,
    /// A chat offered functions: calls in the output are answered as `tool_calls`.
    ChatWithTools,
}

/// OpenAI's defaults: 16 new tokens, temperature 1; the prompt kept whole unless it
/// leaves no room in the context for the new tokens (then refused).
fn sampling_of(options: &Options, context_len: usize) -> Result<Sampling, String> {
    let max_new_tokens = options.max_tokens.unwrap_or(16);
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
    let sampling = match sampling_of(&options, context_len) {
        Ok(s) => s,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let mut request = match shared.engine.request_for_prompt(&prompt, &sampling).await {
        Ok(r) => r,
        Err(e) => return error(status_of(&e), e.message()),
    };
    request.stop_strings = options.stop.map(OneOrMany::into_vec).unwrap_or_default();
    if let Err(message) = umi_engine::generate::check_stop_strings(&request.stop_strings) {
        return error(StatusCode::BAD_REQUEST, message);
    }
    let n = shared.requests.fetch_add(1, Ordering::Relaxed);
    let head = Head {
        id: match kind {
            Kind::Completion => format!("cmpl-{n}"),
            Kind::Chat | Kind::ChatWithTools => format!("chatcmpl-{n}"),
        },
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        model: shared.model.clone(),
        kind,
    };
    if options.stream {
        return match shared.engine.stream(request) {
            Ok(events) => stream(head, events),
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
        match (self.kind, chunk) {
            (Kind::Completion, _) => "text_completion",
            (Kind::Chat | Kind::ChatWithTools, false) => "chat.completion",
            (Kind::Chat | Kind::ChatWithTools, true) => "chat.completion.chunk",
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
        let choice = match self.kind {
            Kind::Completion => {
                json!({"index": 0, "text": out.text, "logprobs": null, "finish_reason": finish_reason(out)})
            }
            Kind::Chat => {
                json!({"index": 0, "message": {"role": "assistant", "content": out.text}, "finish_reason": finish_reason(out)})
            }
            Kind::ChatWithTools => {
                let (content, calls) = chat_tools::parse_calls(&out.text);
                let mut message = json!({"role": "assistant", "content": content});
                let mut reason = finish_reason(out);
                if !calls.is_empty() {
                    let calls: Vec<Value> = calls
                        .into_iter()
                        .enumerate()
                        .map(|(i, (name, arguments))| {
                            json!({"id": format!("call_{}_{i}", self.id), "type": "function",
                                "function": {"name": name, "arguments": arguments}})
                        })
                        .collect();
                    message["tool_calls"] = Value::Array(calls);
                    reason = "tool_calls";
                }
                json!({"index": 0, "message": message, "finish_reason": reason})
            }
        };
        json!({"id": self.id, "object": self.object(false), "created": self.created, "model": self.model, "choices": [choice], "usage": Self::usage(out)})
    }

    /// One streamed chunk: new text, or (with `done`) the end and its reason.
    fn chunk(&self, text: &str, done: Option<&GenerateOutput>) -> Value {
        let reason = done.map(finish_reason);
        let choice = match self.kind {
            Kind::Completion => {
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": reason})
            }
            Kind::Chat | Kind::ChatWithTools => {
                let delta = if done.is_some() {
                    json!({})
                } else {
                    json!({"content": text})
                };
                json!({"index": 0, "delta": delta, "finish_reason": reason})
            }
        };
        let mut chunk = json!({"id": self.id, "object": self.object(true), "created": self.created, "model": self.model, "choices": [choice]});
        if let Some(out) = done {
            chunk["usage"] = Self::usage(out);
        }
        chunk
    }
}

fn event(value: &Value) -> String {
    format!("data: {value}\n\n")
}

/// Server-sent events: the text as it is generated, the end, then `data: [DONE]`. A
/// client that hangs up cancels the generation (the engine's receiver is dropped).
fn stream(
    head: Head,
    mut events: tokio::sync::mpsc::UnboundedReceiver<Result<StreamEvent, umi_engine::EngineError>>,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(16);
    tokio::spawn(async move {
        if head.kind != Kind::Completion {
            let mut first = head.chunk("", None);
            first["choices"][0]["delta"] = json!({"role": "assistant", "content": ""});
            if tx.send(Ok(event(&first))).await.is_err() {
                return;
            }
        }
        while let Some(e) = events.recv().await {
            let text = match e {
                Ok(StreamEvent::Text { text, .. }) => event(&head.chunk(&text, None)),
                Ok(StreamEvent::Done(out)) => {
                    format!("{}data: [DONE]\n\n", event(&head.chunk("", Some(&out))))
                }
                Err(e) => {
                    let e = classify(e);
                    event(&json!({"error": {"message": e.message(), "type": "server_error"}}))
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
        }
    }

    #[test]
    fn sampling_is_checked_at_the_edge() {
        let s = sampling_of(&options(Some(64), Some(0.0)), 2048).unwrap();
        assert_eq!(
            (s.max_new_tokens, s.max_input_tokens, s.min_new_tokens),
            (64, 100, 1)
        );
        assert!(sampling_of(&options(Some(0), None), 2048).is_err());
        assert!(sampling_of(&options(Some(4096), None), 2048).is_err());
        let err = sampling_of(&options(None, Some(7.0)), 2048).unwrap_err();
        assert!(err.contains("temperature"), "{err}");
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
        let functions = chat_tools::check(&request.tools, None).unwrap();
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
