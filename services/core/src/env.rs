//! The tool environment of one task, `rapidapi_wrapper.step`: `Finish` handled locally,
//! other names resolved by suffix to one of the task's APIs and sent to a backend (the
//! RapidAPI service, the offline simulator, local tools), the reply turned into the
//! observation text and status code the search reacts to.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::Instrument;

use crate::agent::BoxFuture;
use crate::pyjson;
use crate::tool::{standardize, ApiSpec, ToolDoc};

/// Observations longer than this many characters are cut (and `...` appended).
pub const MAX_OBSERVATION_CHARS: usize = 1024;

/// What a backend answered: ToolBench's `{"error", "response"}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiReply {
    pub error: String,
    pub response: String,
}

/// One API call as the backends see it (the RapidAPI server's request fields).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiCall {
    pub category: String,
    pub tool_name: String,
    pub api_name: String,
    pub tool_input: String,
    /// The model-facing function name.
    #[serde(skip)]
    pub function: String,
}

/// Where API calls go. Transport failures are replies too (`error` set), as in the
/// reference, so that the search can continue.
pub trait ToolBackend: Send + Sync {
    fn call<'a>(&'a self, call: &'a ApiCall) -> BoxFuture<'a, Result<ApiReply, BackendFailure>>;
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
        }
    }

    /// The model-facing docs (`{doc}`).
    pub fn docs(&self) -> &[ToolDoc] {
        &self.docs
    }

    /// OpenAI-style function specs (what ToolEval reads), `Finish` last.
    pub fn functions(&self) -> Vec<Value> {
        let mut out: Vec<Value> = self
            .apis
            .iter()
            .map(|api| {
                let mut properties = serde_json::Map::new();
                let mut required = Vec::new();
                for (p, is_required) in api
                    .required_parameters
                    .iter()
                    .map(|p| (p, true))
                    .chain(api.optional_parameters.iter().map(|p| (p, false)))
                {
                    let name = standardize(&p.name);
                    let kind = match p.kind.as_str() {
                        "NUMBER" => "integer",
                        "BOOLEAN" => "boolean",
                        _ => "string",
                    };
                    let mut spec = json!({"type": kind, "description": p.description.clone().unwrap_or_default()});
                    if let Some(d) = &p.default {
                        spec["example_value"] = d.clone();
                    }
                    properties.insert(name.clone(), spec);
                    if is_required {
                        required.push(Value::String(name));
                    }
                }
                let optional: Vec<Value> =
                    api.optional_parameters.iter().map(|p| Value::String(standardize(&p.name))).collect();
                json!({
                    "name": api.function_name(),
                    "description": api.doc().doc()["function"],
                    "parameters": {"type": "object", "properties": properties, "required": required, "optional": optional}
                })
            })
            .collect();
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
            tool_name: standardize(&api.tool_name),
            api_name: api.api_name.clone(),
            tool_input: arguments.to_string(),
            function: api.function_name(),
        };
        let span = tracing::info_span!("tool_call", function = %call.function, status = tracing::field::Empty);
        let reply = match self.backend.call(&call).instrument(span.clone()).await {
            Ok(reply) => reply,
            Err(BackendFailure(error)) => {
                span.record("status", status::TRANSPORT);
                return (
                    pyjson::dumps(&json!({"error": error, "response": ""})),
                    status::TRANSPORT,
                );
            }
        };
        let code = reply_status(&reply.error);
        span.record("status", code);
        // This fork shows the response as a JSON string literal, or the error message.
        let text = if reply.response.is_empty() {
            pyjson::dumps(&json!({"message": reply.error}))
        } else {
            pyjson::dumps(&Value::String(reply.response))
        };
        (text, code)
    }
}

fn reply_status(error: &str) -> Status {
    if error.starts_with("API not working error") {
        status::API_NOT_WORKING
    } else if error.starts_with("Unauthorized error") {
        status::UNAUTHORIZED
    } else if error.starts_with("Unsubscribed error") {
        status::UNSUBSCRIBED
    } else if error.starts_with("Too many requests error") {
        status::TOO_MANY_REQUESTS
    } else if error.starts_with("Rate limit per minute error") {
        status::RATE_LIMIT
    } else if error.starts_with("Message error") {
        status::MESSAGE_ERROR
    } else {
        status::OK
    }
}

/// `Finish`: parsed leniently (Python `json.loads(strict=False)`, control characters
/// allowed in strings).
fn finish(arguments: &str) -> (String, Status) {
    let parsed: Option<Value> = serde_json::from_str(arguments)
        .ok()
        .or_else(|| crate::parse::lenient_json_object(&arguments.replace(['\n', '\t'], " ")).ok());
    let return_type = parsed
        .as_ref()
        .and_then(|v| v.get("return_type"))
        .and_then(Value::as_str);
    match return_type {
        None => (
            pyjson::dumps(&json!({"error": "must have \"return_type\""})),
            status::BAD_FINISH,
        ),
        Some("give_up_and_restart") => (
            pyjson::dumps(&json!({"response": "chose to give up and restart"})),
            status::GIVE_UP,
        ),
        Some("give_answer") => {
            if parsed
                .as_ref()
                .and_then(|v| v.get("final_answer"))
                .is_none()
            {
                (
                    pyjson::dumps(&json!({"error": "must have \"final_answer\""})),
                    status::BAD_FINISH,
                )
            } else {
                (
                    pyjson::dumps(&json!({"response": "successfully giving the final answer."})),
                    status::FINAL_ANSWER,
                )
            }
        }
        Some(other) => (
            pyjson::dumps(&json!({"error": format!("\"return_type\" is not valid: {other}")})),
            status::BAD_FINISH,
        ),
    }
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
                    "unauthorized" => Ok(ApiReply {
                        error: "Unauthorized error...".into(),
                        response: String::new(),
                    }),
                    _ => Ok(ApiReply {
                        error: String::new(),
                        response: format!("{{'got': '{}'}}", call.tool_input),
                    }),
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
