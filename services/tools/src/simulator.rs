//! The offline simulator: answers API calls from recorded responses, so that benchmark
//! runs need no key and no network. Recordings come from ToolBench answer files (every
//! expanded Action → Action Input pair of the search tree with its observation) and from
//! static trajectories (each caller turn with the observation after it).

use std::collections::HashMap;

use serde_json::Value;
use umi_core::agent::BoxFuture;
use umi_core::env::{ApiCall, ApiReply, BackendFailure, ToolBackend};

#[derive(Default)]
pub struct Simulator {
    responses: HashMap<(String, String), ApiReply>,
}

/// Arguments compared by meaning: parsed and re-serialized with sorted keys, or the
/// trimmed text when it is not JSON.
fn canonical_args(text: &str) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&m[k])))
                        .collect(),
                )
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v) => sorted(&v).to_string(),
        Err(_) => text.trim().to_string(),
    }
}

impl Simulator {
    pub fn new() -> Self {
        Simulator::default()
    }

    pub fn len(&self) -> usize {
        self.responses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.responses.is_empty()
    }

    pub fn record(&mut self, function: &str, arguments: &str, reply: ApiReply) {
        self.responses
            .insert((function.to_string(), canonical_args(arguments)), reply);
    }

    /// Adds every recorded call of a ToolBench answer file. Returns how many.
    pub fn add_answer_file(&mut self, answer: &Value) -> usize {
        let mut added = 0;
        if let Some(root) = answer.pointer("/tree/tree") {
            self.walk(root, None, &mut added);
        }
        added
    }

    fn walk(&mut self, node: &Value, father: Option<&Value>, added: &mut usize) {
        let kind = node.get("node_type").and_then(Value::as_str);
        let father_kind = father
            .and_then(|f| f.get("node_type"))
            .and_then(Value::as_str);
        if let (Some("Action Input"), Some("Action"), Some(obs)) = (
            kind,
            father_kind,
            node.get("observation").and_then(Value::as_str),
        ) {
            let function = father
                .and_then(|f| f.get("description"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let arguments = node
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("");
            if function != "Finish" && !function.is_empty() {
                self.record(function, arguments, recorded_reply(obs));
                *added += 1;
            }
        }
        for child in node
            .get("children")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.walk(child, Some(node), added);
        }
    }

    /// Adds the caller → observation pairs of static trajectories. Returns how many.
    pub fn add_static_records(&mut self, records: &[umi_core::static_eval::StaticRecord]) -> usize {
        use umi_core::prompt::Role;
        let mut added = 0;
        for record in records {
            for pair in record.conversations.windows(2) {
                if pair[0].from == Role::Caller && pair[1].from == Role::Observation {
                    let (function, arguments) = umi_core::parse::parse_action(&pair[0].value);
                    self.record(
                        &function,
                        &arguments,
                        ApiReply {
                            error: String::new(),
                            response: pair[1].value.clone(),
                        },
                    );
                    added += 1;
                }
            }
        }
        added
    }

    pub fn lookup(&self, function: &str, arguments: &str) -> Option<&ApiReply> {
        self.responses
            .get(&(function.to_string(), canonical_args(arguments)))
    }
}

/// A recorded observation is the service's `{"error", "response"}` JSON, but ToolBench
/// stored it cut to 1024 characters plus `...`, which breaks the JSON: then the response
/// string is recovered up to the cut.
fn recorded_reply(obs: &str) -> ApiReply {
    if let Ok(reply) = serde_json::from_str::<ApiReply>(obs) {
        return reply;
    }
    const HEAD: &str = "{\"error\": \"\", \"response\": \"";
    if let Some(rest) = obs.strip_prefix(HEAD) {
        let rest = rest.strip_suffix("...").unwrap_or(rest);
        // Drop a trailing partial escape until the prefix parses as a JSON string.
        for cut in 0..8.min(rest.len()) {
            let Some(prefix) = rest.get(..rest.len() - cut) else {
                continue;
            };
            if let Ok(text) = serde_json::from_str::<String>(&format!("\"{prefix}\"")) {
                return ApiReply {
                    error: String::new(),
                    response: text,
                };
            }
        }
    }
    ApiReply {
        error: String::new(),
        response: obs.to_string(),
    }
}

impl ToolBackend for Simulator {
    fn call<'a>(&'a self, call: &'a ApiCall) -> BoxFuture<'a, Result<ApiReply, BackendFailure>> {
        Box::pin(async move {
            Ok(match self.lookup(&call.function, &call.tool_input) {
                Some(reply) => reply.clone(),
                None => ApiReply {
                    error: format!(
                        "No recorded response for {} with arguments {} (offline simulator)",
                        call.function,
                        call.tool_input.trim()
                    ),
                    response: String::new(),
                },
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn truncated_recordings_keep_their_response_text() {
        let obs = r#"{"error": "", "response": "[{\"id\":\"EKVF\"},{\"name\":\"Cal\u00e9..."#;
        assert_eq!(
            recorded_reply(obs).response,
            "[{\"id\":\"EKVF\"},{\"name\":\"Calé"
        );
        assert_eq!(
            recorded_reply(r#"{"error": "x", "response": "y"}"#),
            ApiReply {
                error: "x".into(),
                response: "y".into()
            }
        );
    }

    #[test]
    fn answer_file_calls_replay_and_misses_say_so() {
        let answer = json!({"tree": {"tree": {"node_type": "Action Input", "description": "", "children": [
            {"node_type": "Thought", "description": "t", "children": [
                {"node_type": "Action", "description": "search_for_x", "children": [
                    {"node_type": "Action Input", "description": "{\"b\": 2, \"a\": 1}",
                     "observation": "{\"error\": \"\", \"response\": \"found\"}", "children": []}]}]}]}}});
        let mut sim = Simulator::new();
        assert_eq!(sim.add_answer_file(&answer), 1);
        // Same arguments in another key order and spacing.
        assert_eq!(
            sim.lookup("search_for_x", "{\"a\":1,\"b\":2}")
                .unwrap()
                .response,
            "found"
        );
        assert!(sim.lookup("search_for_x", "{\"a\": 2}").is_none());
    }
}
