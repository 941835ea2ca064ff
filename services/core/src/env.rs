//! The tool environment of one task, `rapidapi_wrapper.step`: `Finish` handled locally,
//! other names resolved by suffix to one of the task's APIs and sent to a backend (the
//! RapidAPI service, the offline simulator, local tools), the reply turned into the
//! observation text and status code the search reacts to.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::Instrument;

use crate::agent::BoxFuture;
use crate::agents::ObservationStyle;
use crate::pyjson;
use crate::tool::{ApiSpec, ToolDoc};
use crate::trace::Recorder;

/// Observations longer than this many characters are cut (and `...` appended).
pub const MAX_OBSERVATION_CHARS: usize = 1024;

/// What a backend answered: ToolBench's `{"error", "response"}`, each kept as the JSON
/// value received. ToolBench's RapidAPI server sends strings; StableToolBench's cache and
/// simulator also send objects, lists and `null`, which the observation shows as their
/// JSON text (`json.dumps` of the value), never as a string literal of that text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiReply {
    #[serde(default = "empty_text")]
    pub error: Value,
    #[serde(default = "empty_text")]
    pub response: Value,
}

fn empty_text() -> Value {
    Value::String(String::new())
}

impl Default for ApiReply {
    fn default() -> Self {
        ApiReply {
            error: empty_text(),
            response: empty_text(),
        }
    }
}

impl ApiReply {
    /// A reply carrying `response` as a string, no error.
    pub fn text(response: impl Into<String>) -> Self {
        ApiReply {
            error: empty_text(),
            response: Value::String(response.into()),
        }
    }

    /// A reply carrying only an error message.
    pub fn failed(error: impl Into<String>) -> Self {
        ApiReply {
            error: Value::String(error.into()),
            response: empty_text(),
        }
    }

    /// A stored `{"error", "response"}` (a StableToolBench cache entry, a simulator's
    /// answer) as a reply, both values as stored; a missing field is empty. A value that
    /// is not an object is taken as the response itself.
    pub fn from_entry(entry: &Value) -> Self {
        match entry {
            Value::Object(m) => ApiReply {
                error: m.get("error").cloned().unwrap_or_else(empty_text),
                response: m.get("response").cloned().unwrap_or_else(empty_text),
            },
            other => ApiReply {
                error: empty_text(),
                response: other.clone(),
            },
        }
    }

    /// The error as text: a string as it is, anything else as its JSON text, `null`
    /// (StableToolBench's caches store it for "no error") as nothing.
    pub fn error_text(&self) -> String {
        match &self.error {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => pyjson::dumps(other),
        }
    }

    /// Whether the response is the empty string, the reference's test for "show the
    /// error instead" (`response['response'] != ""`; `null`, `{}` and `[]` are shown).
    pub fn has_response(&self) -> bool {
        self.response.as_str() != Some("")
    }

    /// The observation the agent sees, as this fork's `rapidapi_wrapper._step` returns
    /// it: `json.dumps(response)` when the response is not `""`, else
    /// `json.dumps({"message": error})`.
    pub fn observation(&self) -> String {
        if self.has_response() {
            pyjson::dumps(&self.response)
        } else {
            pyjson::dumps(&json!({"message": self.error}))
        }
    }

    /// The observation upstream ToolBench's `_step` returns: the whole reply,
    /// `json.dumps({"error": …, "response": …})`.
    pub fn whole(&self) -> String {
        pyjson::dumps(&json!({"error": self.error, "response": self.response}))
    }

    /// The status code of the reply: the reference compares the error text exactly.
    pub fn status(&self) -> Status {
        match self.error.as_str() {
            Some("API not working error...") => status::API_NOT_WORKING,
            Some("Unauthorized error...") => status::UNAUTHORIZED,
            Some("Unsubscribed error...") => status::UNSUBSCRIBED,
            Some("Too many requests error...") => status::TOO_MANY_REQUESTS,
            Some("Rate limit per minute error...") => status::RATE_LIMIT,
            Some("Message error...") => status::MESSAGE_ERROR,
            _ => status::OK,
        }
    }
}

/// One API call as the backends see it (the RapidAPI server's request fields, and what
/// a simulator needs to know about the API).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ApiCall {
    pub category: String,
    pub tool_name: String,
    pub api_name: String,
    pub tool_input: String,
    /// The model-facing function name.
    #[serde(skip)]
    pub function: String,
    /// The API's name as documented (`api_list`'s `api_name`, before standardizing).
    #[serde(skip)]
    pub documented_name: String,
    /// The API's description as documented.
    #[serde(skip)]
    pub description: String,
}

/// Where a tool reply came from, for a run's trace and report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplySource {
    /// A live tool server (ToolBench's RapidAPI service).
    Live,
    /// umi's local tools.
    Local,
    /// A StableToolBench response cache.
    Cache,
    /// A call recorded in an answer file.
    Recorded,
    /// The real API, asked by the offline simulator.
    RealApi,
    /// Invented by the miss simulator's model.
    Simulated,
    /// The miss simulator failed; the reply says so.
    SimulationFailed,
    /// Nothing recorded and nothing to ask: the miss observation.
    Missing,
    /// An input no server would take (not JSON).
    BadInput,
}

impl ReplySource {
    pub fn label(self) -> &'static str {
        match self {
            ReplySource::Live => "live",
            ReplySource::Local => "local",
            ReplySource::Cache => "cache",
            ReplySource::Recorded => "recorded",
            ReplySource::RealApi => "real_api",
            ReplySource::Simulated => "simulated",
            ReplySource::SimulationFailed => "simulation_failed",
            ReplySource::Missing => "missing",
            ReplySource::BadInput => "bad_input",
        }
    }
}

/// A reply (or a transport failure) and where it came from.
pub type SourcedReply = (Result<ApiReply, BackendFailure>, ReplySource);

/// Where API calls go. Transport failures are replies too (`error` set), as in the
/// reference, so that the search can continue.
pub trait ToolBackend: Send + Sync {
    fn call<'a>(&'a self, call: &'a ApiCall) -> BoxFuture<'a, Result<ApiReply, BackendFailure>>;

    /// `call`, saying where the reply came from. A backend of one source (a live tool
    /// server) need not say more; those of several (the offline simulator, the router
    /// in front of local tools) tell each reply's.
    fn call_sourced<'a>(&'a self, call: &'a ApiCall) -> BoxFuture<'a, SourcedReply> {
        Box::pin(async move { (self.call(call).await, ReplySource::Live) })
    }

    /// Where the replies so far came from, for a run's summary (e.g. cache hits and
    /// misses); `None` when there is nothing to say.
    fn report(&self) -> Option<String> {
        None
    }

    /// A response cache's entry for `call` exactly as stored (`{"error", "response"}`,
    /// objects and nulls kept), for `umi tools call`; None where no cache holds one.
    fn cached_entry(&self, _call: &ApiCall) -> Option<Value> {
        None
    }

    /// A tool's description from ToolBench's tool folder (`tool_description` of
    /// `<category>/<standard tool name>.json`), for ToolBench's agents' system message;
    /// None where the backend has no tool folder.
    fn tool_description(&self, _category: &str, _standard_tool_name: &str) -> Option<String> {
        None
    }
}

/// A transport-level failure (timeout, bad status, unreadable body): status 12.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendFailure(pub String);

/// ToolBench's `Finish` function, shown to ToolEval (never to the α-UMi models).
pub fn finish_function() -> Value {
    json!({
        "name": "Finish",
        "description": "If you believe that you have obtained a result that can answer the task, please call this function to provide the final answer. Alternatively, if you recognize that you are unable to proceed with the task in the current state, call this function to restart. Remember: you must ALWAYS call this function at the end of your attempt, and the only part that will be shown to the user is the final answer, so it should contain sufficient information.",
        "parameters": {
            "type": "object",
            "properties": {
                "return_type": {"type": "string", "enum": ["give_answer", "give_up_and_restart"]},
                "final_answer": {"type": "string", "description": "The final answer you want to give the user. You should have this field if \"return_type\"==\"give_answer\""}
            },
            "required": ["return_type"]
        }
    })
}

/// The environment of one task.
pub struct ToolEnv<'b> {
    apis: Vec<ApiSpec>,
    docs: Vec<ToolDoc>,
    backend: &'b dyn ToolBackend,
    style: ObservationStyle,
    trace: Option<&'b Recorder>,
}

/// A status code of `step` (ToolBench's `rapidapi_wrapper.step`), named in [`status`].
pub type Status = u32;

/// ToolBench's status codes, as the search and the answer files use them.
pub mod status {
    use super::Status;

    pub const OK: Status = 0;
    /// The model named a function the task does not have.
    pub const NO_SUCH_FUNCTION: Status = 1;
    /// A `Finish` call without a valid `return_type` (or a give-answer without answer).
    pub const BAD_FINISH: Status = 2;
    /// `Finish` with a final answer: the search ends.
    pub const FINAL_ANSWER: Status = 3;
    /// `Finish` giving up: the chain is pruned and the search backs up.
    pub const GIVE_UP: Status = 4;
    pub const API_NOT_WORKING: Status = 6;
    pub const UNAUTHORIZED: Status = 7;
    pub const UNSUBSCRIBED: Status = 8;
    pub const TOO_MANY_REQUESTS: Status = 9;
    pub const RATE_LIMIT: Status = 10;
    pub const MESSAGE_ERROR: Status = 11;
    /// The backend could not be reached or answered nonsense.
    pub const TRANSPORT: Status = 12;

    /// The code's name, as metrics label it.
    pub fn name(code: Status) -> &'static str {
        match code {
            OK => "ok",
            NO_SUCH_FUNCTION => "no_such_function",
            BAD_FINISH => "bad_finish",
            FINAL_ANSWER => "final_answer",
            GIVE_UP => "give_up",
            API_NOT_WORKING => "api_not_working",
            UNAUTHORIZED => "unauthorized",
            UNSUBSCRIBED => "unsubscribed",
            TOO_MANY_REQUESTS => "too_many_requests",
            RATE_LIMIT => "rate_limit",
            MESSAGE_ERROR => "message_error",
            TRANSPORT => "transport",
            _ => "other",
        }
    }
}

/// Tool calls the agent made, by outcome (`status::name`): what operators watch for a
/// failing tool server.
pub const TOOL_CALLS_METRIC: &str = "umi_tool_calls_total";

impl<'b> ToolEnv<'b> {
    pub fn new(apis: Vec<ApiSpec>, backend: &'b dyn ToolBackend) -> Self {
        let docs = apis.iter().map(ApiSpec::doc).collect();
        ToolEnv {
            apis,
            docs,
            backend,
            style: ObservationStyle::default(),
            trace: None,
        }
    }

    /// The same environment recording each API call (its source, status and time).
    pub fn with_trace(self, trace: &'b Recorder) -> Self {
        ToolEnv {
            trace: Some(trace),
            ..self
        }
    }

    /// The same environment writing observations in `style`.
    pub fn with_observations(self, style: ObservationStyle) -> Self {
        ToolEnv { style, ..self }
    }

    /// `rapidapi_wrapper.task_description`: each of the query's tools (in `api_list`
    /// order) with its description from the backend's tool folder (empty, shown as
    /// `None`, without one).
    pub fn task_description(&self) -> String {
        let tools: Vec<(String, String)> = self
            .apis
            .iter()
            .map(|api| {
                let name = api.standard_tool_name();
                let description = self
                    .backend
                    .tool_description(&api.category_name, &name)
                    .unwrap_or_default();
                (name, description)
            })
            .collect();
        crate::toolbench::task_description(&tools)
    }

    /// The model-facing docs (`{doc}`).
    pub fn docs(&self) -> &[ToolDoc] {
        &self.docs
    }

    /// OpenAI-style function specs (what ToolEval reads), `Finish` last.
    pub fn functions(&self) -> Vec<Value> {
        let mut out: Vec<Value> = self.apis.iter().map(ApiSpec::function_spec).collect();
        out.push(finish_function());
        out
    }

    /// Runs one call; returns the observation text (already cut) and the status.
    pub async fn step(&self, name: &str, arguments: &str) -> (String, Status) {
        let (text, status) = if name == "Finish" {
            finish(arguments)
        } else {
            let (text, code) = self.call_api(name, arguments).await;
            metrics::counter!(TOOL_CALLS_METRIC, "outcome" => status::name(code)).increment(1);
            (text, code)
        };
        (truncate_observation(&text), status)
    }

    async fn call_api(&self, name: &str, arguments: &str) -> (String, Status) {
        // The reference takes the first function whose name ends with the called name.
        let Some(api) = self.apis.iter().find(|a| a.function_name().ends_with(name)) else {
            let text = pyjson::dumps(
                &json!({"error": format!("No such function name: {name}"), "response": ""}),
            );
            return (text, status::NO_SUCH_FUNCTION);
        };
        let call = ApiCall {
            category: api.category_name.clone(),
            tool_name: api.standard_tool_name(),
            api_name: api.pure_api_name(),
            tool_input: arguments.to_string(),
            function: api.function_name(),
            documented_name: api.api_name.clone(),
            description: api.api_description.clone().unwrap_or_default(),
        };
        let span = tracing::info_span!("tool_call", function = %call.function, status = tracing::field::Empty);
        let at = self.trace.map(Recorder::now);
        let (reply, source) = self
            .backend
            .call_sourced(&call)
            .instrument(span.clone())
            .await;
        let code = reply.as_ref().map_or(status::TRANSPORT, ApiReply::status);
        span.record("status", code);
        if let (Some(trace), Some(at)) = (self.trace, at) {
            trace.tool_call(&call.function, source, code, at);
        }
        let reply = match reply {
            Ok(reply) => reply,
            Err(BackendFailure(error)) => {
                return (
                    pyjson::dumps(&json!({"error": error, "response": ""})),
                    status::TRANSPORT,
                );
            }
        };
        let text = match self.style {
            ObservationStyle::Response => reply.observation(),
            ObservationStyle::WholeReply => reply.whole(),
        };
        (text, code)
    }
}

/// `Finish`'s observations, verbatim from the reference (no spaces after the colons;
/// the two errors are not even JSON).
pub mod finish_reply {
    pub const NO_RETURN_TYPE: &str = "{error:\"must have \"return_type\"\"}";
    pub const GIVE_UP: &str = "{\"response\":\"chose to give up and restart\"}";
    pub const NO_FINAL_ANSWER: &str = "{error:\"must have \"final_answer\"\"}";
    pub const ANSWERED: &str = "{\"response\":\"successfully giving the final answer.\"}";
    /// The reference builds this text for an unknown `return_type` but forgets to return
    /// it (and then crashes on `None`); umi returns it.
    pub const BAD_RETURN_TYPE: &str = "{error:\"\"return_type\" is not a valid choice\"}";
}

/// `Finish`: the arguments as `json.loads(strict=False)` reads them (control characters
/// allowed in strings), else the reference's substring fallbacks: `"return_type": "…"`
/// and everything after `"final_answer": "`.
fn finish(arguments: &str) -> (String, Status) {
    let parsed = serde_json::from_str::<Value>(arguments)
        .ok()
        .or_else(|| serde_json::from_str::<Value>(&escape_controls(arguments)).ok())
        .filter(Value::is_object);
    let (return_type, has_answer) = match &parsed {
        Some(v) => (
            v.get("return_type").map(|t| match t {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
            v.get("final_answer").is_some(),
        ),
        None => finish_fallback(arguments),
    };
    let (text, code) = match return_type.as_deref() {
        None => (finish_reply::NO_RETURN_TYPE, status::BAD_FINISH),
        Some("give_up_and_restart") => (finish_reply::GIVE_UP, status::GIVE_UP),
        Some("give_answer") if has_answer => (finish_reply::ANSWERED, status::FINAL_ANSWER),
        Some("give_answer") => (finish_reply::NO_FINAL_ANSWER, status::BAD_FINISH),
        Some(_) => (finish_reply::BAD_RETURN_TYPE, status::BAD_FINISH),
    };
    (text.to_string(), code)
}

/// The reference's substring reading of `Finish` arguments that are not JSON.
fn finish_fallback(arguments: &str) -> (Option<String>, bool) {
    const RETURN_TYPE: &str = "\"return_type\": \"";
    let return_type = arguments.find(RETURN_TYPE).map(|at| {
        if arguments.contains("\"return_type\": \"give_answer\"") {
            "give_answer".to_string()
        } else if arguments.contains("\"return_type\": \"give_up_and_restart\"") {
            "give_up_and_restart".to_string()
        } else {
            // `s[s.find(key) + len(key):s.find('",')]`: empty when `",` comes first
            // or is missing.
            let start = at + RETURN_TYPE.len();
            match arguments.find("\",") {
                Some(end) if end > start => arguments[start..end].to_string(),
                _ => String::new(),
            }
        }
    });
    (return_type, arguments.contains("\"final_answer\": \""))
}

/// Raw control characters inside JSON strings escaped, as `json.loads(strict=False)`
/// accepts them (outside strings they are whitespace and stay).
fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        if in_string && !escaped && (c as u32) < 0x20 {
            out.push_str(&format!("\\u{:04x}", c as u32));
            continue;
        }
        if c == '"' && !escaped {
            in_string = !in_string;
        }
        escaped = in_string && !escaped && c == '\\';
        out.push(c);
    }
    out
}

/// Cuts to `MAX_OBSERVATION_CHARS` characters plus `...`.
pub fn truncate_observation(text: &str) -> String {
    match text.char_indices().nth(MAX_OBSERVATION_CHARS) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{block_on, weather_api};

    struct Echo;
    impl ToolBackend for Echo {
        fn call<'a>(
            &'a self,
            call: &'a ApiCall,
        ) -> BoxFuture<'a, Result<ApiReply, BackendFailure>> {
            Box::pin(async move {
                match call.tool_input.as_str() {
                    "timeout" => Err(BackendFailure("request time out".into())),
                    "unauthorized" => Ok(ApiReply::failed("Unauthorized error...")),
                    // Only starts like a status text: the reference compares exactly.
                    "unauthorized-ish" => Ok(ApiReply::failed("Unauthorized error... (more)")),
                    "object" => Ok(ApiReply::from_entry(
                        &json!({"error": null, "response": {"temp": "21°", "ok": true}}),
                    )),
                    "null" => Ok(ApiReply::from_entry(
                        &json!({"error": "", "response": null}),
                    )),
                    _ => Ok(ApiReply::text(format!("{{'got': '{}'}}", call.tool_input))),
                }
            })
        }
    }

    #[test]
    fn finish_and_suffix_resolution_and_statuses() {
        let env = ToolEnv::new(vec![weather_api()], &Echo);
        assert_eq!(
            block_on(env.step("Finish", r#"{"return_type": "give_up_and_restart"}"#)).1,
            4
        );
        assert_eq!(
            block_on(env.step(
                "Finish",
                r#"{"return_type": "give_answer", "final_answer": "x"}"#
            ))
            .1,
            3
        );
        assert_eq!(
            block_on(env.step("Finish", r#"{"final_answer": "x"}"#)).1,
            2
        );
        assert_eq!(block_on(env.step("Finish", "not json")).1, 2);
        // Suffix match: "weather_api" resolves to current_for_weather_api.
        let (obs, status) = block_on(env.step("weather_api", "{\"city\": \"Paris\"}"));
        assert_eq!(status, 0);
        assert_eq!(obs, r#""{'got': '{\"city\": \"Paris\"}'}""#);
        let (obs, status) = block_on(env.step("made_up", "{}"));
        assert_eq!(
            (obs.as_str(), status),
            (
                r#"{"error": "No such function name: made_up", "response": ""}"#,
                1
            )
        );
        let (obs, status) = block_on(env.step("current_for_weather_api", "timeout"));
        assert_eq!(
            (obs.as_str(), status),
            (r#"{"error": "request time out", "response": ""}"#, 12)
        );
        let (obs, status) = block_on(env.step("current_for_weather_api", "unauthorized"));
        assert_eq!(
            (obs.as_str(), status),
            (r#"{"message": "Unauthorized error..."}"#, 7)
        );
        let (obs, status) = block_on(env.step("current_for_weather_api", "unauthorized-ish"));
        assert_eq!(
            (obs.as_str(), status),
            (r#"{"message": "Unauthorized error... (more)"}"#, 0)
        );
        // Objects and null as received, through json.dumps (not as string literals).
        let (obs, _) = block_on(env.step("current_for_weather_api", "object"));
        assert_eq!(obs, r#"{"temp": "21\u00b0", "ok": true}"#);
        let (obs, _) = block_on(env.step("current_for_weather_api", "null"));
        assert_eq!(obs, "null");
    }

    /// Pins `rapidapi_wrapper._step`'s Finish branch: its observation texts byte for
    /// byte, `json.loads(strict=False)` (raw newlines inside strings), and the substring
    /// fallbacks for arguments that are not JSON.
    #[test]
    fn finish_observations_are_the_references_verbatim() {
        let env = ToolEnv::new(vec![weather_api()], &Echo);
        let step = |args: &str| block_on(env.step("Finish", args));
        assert_eq!(
            step(r#"{"return_type": "give_up_and_restart"}"#),
            (
                r#"{"response":"chose to give up and restart"}"#.to_string(),
                4
            )
        );
        assert_eq!(
            step("{\"return_type\": \"give_answer\",\n \"final_answer\": \"line\nbreak\"}"),
            (
                r#"{"response":"successfully giving the final answer."}"#.to_string(),
                3
            )
        );
        assert_eq!(
            step(r#"{"return_type": "give_answer"}"#),
            (r#"{error:"must have "final_answer""}"#.to_string(), 2)
        );
        assert_eq!(
            step("no json at all"),
            (r#"{error:"must have "return_type""}"#.to_string(), 2)
        );
        // Not JSON (an unescaped quote), read through the substring fallbacks.
        assert_eq!(
            step(r#"{"return_type": "give_answer", "final_answer": "a "quoted" word"}"#).1,
            3
        );
        assert_eq!(step(r#"{"return_type": "maybe", "x": 1"#).1, 2);
    }

    #[test]
    fn long_observations_are_cut_to_1024_chars() {
        let long = "é".repeat(2000);
        let cut = truncate_observation(&long);
        assert_eq!(cut.chars().count(), 1027);
        assert!(cut.ends_with("..."));
        assert_eq!(truncate_observation("short"), "short");
    }

    #[test]
    fn functions_end_with_finish() {
        let env = ToolEnv::new(vec![weather_api()], &Echo);
        let f = env.functions();
        assert_eq!(f[0]["name"], "current_for_weather_api");
        assert_eq!(f[0]["parameters"]["required"][0], "city");
        assert_eq!(f.last().unwrap()["name"], "Finish");
    }
}
