//! The offline simulator: answers API calls from recorded responses, so that benchmark
//! runs need no key and no network. Recordings come from ToolBench answer files (every
//! expanded Action → Action Input pair of the search tree with its observation) and from
//! static trajectories (each caller turn with the observation after it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use umi_core::agent::BoxFuture;
use umi_core::env::{ApiCall, ApiReply, BackendFailure, ReplySource, SourcedReply, ToolBackend};

use crate::cache::{bad_input_reply, Lookup, ResponseCache};
use crate::miss_simulator::{failure_reply, MissSimulator};
use crate::real_api::RealApi;

/// Recorded responses: StableToolBench response caches first (looked up as its server
/// does), then the calls of answer files and static records (by function and
/// arguments). What neither has goes, in StableToolBench's server's order, to the real
/// API when one is set, then to the miss simulator when one is set; else it is a miss,
/// said in the observation.
#[derive(Default)]
pub struct Simulator {
    caches: Vec<ResponseCache>,
    responses: HashMap<(String, String), ApiReply>,
    /// Asked before the miss simulator, as StableToolBench's server asks `toolbench_url`.
    real_api: Option<RealApi>,
    /// Invents the replies nothing recorded, as StableToolBench does.
    miss_simulator: Option<MissSimulator>,
    /// Replies of the real API and the miss simulator are saved into the first cache
    /// (failed simulations never are).
    save_new: bool,
    cache_hits: AtomicUsize,
    recorded_hits: AtomicUsize,
    real_hits: AtomicUsize,
    simulated: AtomicUsize,
    failed_simulations: AtomicUsize,
    misses: AtomicUsize,
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

    /// Recorded calls (answer files and static records).
    pub fn len(&self) -> usize {
        self.responses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.responses.is_empty() && self.caches.is_empty()
    }

    pub fn has_cache(&self) -> bool {
        !self.caches.is_empty()
    }

    /// Adds a StableToolBench response cache, looked up before the recorded calls.
    pub fn add_cache(&mut self, cache: ResponseCache) {
        self.caches.push(cache);
    }

    /// Sends what nothing recorded to the real API first; its reply is used when
    /// StableToolBench's server would use it (`real_api::check_result`).
    pub fn answer_from_real_api(&mut self, api: RealApi) {
        self.real_api = Some(api);
    }

    /// Answers what nothing recorded (nor the real API) with `simulator`.
    pub fn simulate_misses(&mut self, simulator: MissSimulator) {
        self.miss_simulator = Some(simulator);
    }

    /// With `save`, each reply of the real API and each successful simulation is written
    /// into the first response cache (which must exist), as the server's `is_save` does.
    pub fn save_new_replies(&mut self, save: bool) {
        self.save_new = save;
    }

    /// The recorded reply to `call`, counted by where it came from: a cache, then the
    /// recorded calls (an input that is not JSON gets StableToolBench's parse error).
    fn recorded(&self, call: &ApiCall) -> Option<(ApiReply, ReplySource)> {
        for cache in &self.caches {
            match cache.lookup(call) {
                Lookup::Hit(entry) => {
                    self.cache_hits.fetch_add(1, Ordering::Relaxed);
                    return Some((ApiReply::from_entry(&entry), ReplySource::Cache));
                }
                Lookup::BadInput => {
                    self.misses.fetch_add(1, Ordering::Relaxed);
                    return Some((bad_input_reply(), ReplySource::BadInput));
                }
                Lookup::Miss => {}
            }
        }
        let reply = self.lookup(&call.function, &call.tool_input)?.clone();
        self.recorded_hits.fetch_add(1, Ordering::Relaxed);
        Some((reply, ReplySource::Recorded))
    }

    fn missed(&self, call: &ApiCall) -> ApiReply {
        self.misses.fetch_add(1, Ordering::Relaxed);
        ApiReply::failed(format!(
            "No recorded response for {} with arguments {} (offline simulator)",
            call.function,
            call.tool_input.trim()
        ))
    }

    /// The reply to `call` from the recordings, or the miss observation.
    pub fn answer(&self, call: &ApiCall) -> ApiReply {
        self.recorded(call)
            .map(|(reply, _)| reply)
            .unwrap_or_else(|| self.missed(call))
    }

    /// The reply to `call` in StableToolBench's server's order: recorded (a cache, then
    /// recorded answers); else the real API's, when one is set and the server would use
    /// it; else invented by the miss simulator, when one is set; else the miss
    /// observation. New replies are saved when asked, a failed simulation never (the
    /// server saves its "Failed to generate fake response"; umi asks again next time).
    pub async fn reply(&self, call: &ApiCall) -> ApiReply {
        self.sourced_reply(call).await.0
    }

    /// [`Simulator::reply`], and where it came from.
    pub async fn sourced_reply(&self, call: &ApiCall) -> (ApiReply, ReplySource) {
        if let Some(recorded) = self.recorded(call) {
            return recorded;
        }
        if self.real_api.is_none() && self.miss_simulator.is_none() {
            return (self.missed(call), ReplySource::Missing);
        }
        // The server parses the input first: `{}` for an empty one, its parse error else.
        let parsed = if call.tool_input.is_empty() {
            Some(Value::Object(serde_json::Map::new()))
        } else {
            serde_json::from_str::<Value>(&call.tool_input).ok()
        };
        let (Some(input), Some(key)) = (parsed, ResponseCache::key_of(&call.tool_input)) else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return (bad_input_reply(), ReplySource::BadInput);
        };
        let cache = self.caches.first();
        if let Some(api) = &self.real_api {
            match api.ask(call, &input).await {
                Ok(real) => {
                    self.real_hits.fetch_add(1, Ordering::Relaxed);
                    self.save(call, &real).await;
                    return (ApiReply::from_entry(&real), ReplySource::RealApi);
                }
                Err(e) => {
                    tracing::debug!(function = %call.function, error = %e, "the real API's reply is not used")
                }
            }
        }
        let Some(simulator) = &self.miss_simulator else {
            return (self.missed(call), ReplySource::Missing);
        };
        let examples = cache.map(|c| c.examples(call)).unwrap_or_default();
        match simulator.simulate(call, &key, &examples).await {
            Ok(invented) => {
                self.simulated.fetch_add(1, Ordering::Relaxed);
                self.save(call, &invented).await;
                (ApiReply::from_entry(&invented), ReplySource::Simulated)
            }
            Err(e) => {
                self.failed_simulations.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(function = %call.function, error = %e, "simulation failed (not saved)");
                (
                    ApiReply::from_entry(&failure_reply()),
                    ReplySource::SimulationFailed,
                )
            }
        }
    }

    /// Writes a new reply into the first cache, when asked to.
    async fn save(&self, call: &ApiCall, reply: &Value) {
        let Some(cache) = self.caches.first().filter(|_| self.save_new) else {
            return;
        };
        if let Err(e) = cache.save(call, reply).await {
            tracing::warn!(api = %call.function, error = %e, "could not save a reply into the cache");
        }
    }

    pub fn record(&mut self, function: &str, arguments: &str, reply: ApiReply) {
        self.responses
            .insert((function.to_string(), canonical_args(arguments)), reply);
    }

    /// Adds every recorded call of a ToolBench answer file. Returns how many. A call is
    /// recorded under the function it reached: ToolBench takes the first function of the
    /// file's list whose name ends with the name the model called.
    pub fn add_answer_file(&mut self, answer: &Value) -> usize {
        let functions: Vec<&str> = answer
            .pointer("/answer_generation/function")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|f| f["name"].as_str())
            .filter(|name| *name != "Finish")
            .collect();
        let mut added = 0;
        if let Some(root) = answer.pointer("/tree/tree") {
            self.walk(root, None, &functions, &mut added);
        }
        added
    }

    fn walk(
        &mut self,
        node: &Value,
        father: Option<&Value>,
        functions: &[&str],
        added: &mut usize,
    ) {
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
                let reached = functions
                    .iter()
                    .find(|f| f.ends_with(function))
                    .copied()
                    .unwrap_or(function);
                self.record(reached, arguments, recorded_reply(obs));
                *added += 1;
            }
        }
        for child in node
            .get("children")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.walk(child, Some(node), functions, added);
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
                    self.record(&function, &arguments, ApiReply::text(pair[1].value.clone()));
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

/// A recorded observation as the reply that gives it again. Upstream ToolBench's answer
/// files store the service's whole `{"error", "response"}`; α-UMi's fork (and umi) store
/// what `_step` shows: `json.dumps(response)` (a string literal, or an object's JSON) or
/// `json.dumps({"message": error})`. Either is read back so that the observation comes out
/// as recorded, not encoded a second time. ToolBench cut observations to 1024 characters
/// plus `...`, which breaks the JSON: then a string response is recovered up to the cut.
fn recorded_reply(obs: &str) -> ApiReply {
    match serde_json::from_str::<Value>(obs) {
        Ok(entry @ Value::Object(_))
            if entry.get("error").is_some() && entry.get("response").is_some() =>
        {
            return ApiReply::from_entry(&entry);
        }
        Ok(Value::Object(m)) if m.len() == 1 && m.contains_key("message") => {
            return ApiReply {
                error: m["message"].clone(),
                response: Value::String(String::new()),
            };
        }
        // `json.dumps(response)`: the response as it was (an empty string would have
        // shown the error instead, so it is kept as text).
        Ok(value) if value.as_str() != Some("") => {
            return ApiReply {
                error: Value::String(String::new()),
                response: value,
            };
        }
        _ => {}
    }
    // A cut `{"error": E, "response": "…` (upstream ToolBench) or `"…` (the fork's).
    let (error, rest) = match obs.strip_prefix("{\"error\": \"") {
        Some(tail) => match cut_error(tail) {
            Some(split) => split,
            None => return ApiReply::text(obs),
        },
        None => match obs.strip_prefix('"') {
            Some(rest) => (String::new(), rest),
            None => return ApiReply::text(obs),
        },
    };
    let rest = rest.strip_suffix("...").unwrap_or(rest);
    // Drop a trailing partial escape until the prefix parses as a JSON string.
    for cut in 0..8.min(rest.len()) {
        let Some(prefix) = rest.get(..rest.len() - cut) else {
            continue;
        };
        if let Ok(text) = serde_json::from_str::<String>(&format!("\"{prefix}\"")) {
            return ApiReply {
                error: Value::String(error),
                response: Value::String(text),
            };
        }
    }
    ApiReply::text(obs)
}

/// A cut reply's error string and what follows `", "response": "`: the first such
/// place where the text before it is a whole JSON string.
fn cut_error(tail: &str) -> Option<(String, &str)> {
    const SEP: &str = "\", \"response\": \"";
    tail.match_indices(SEP).find_map(|(at, _)| {
        let error = serde_json::from_str::<String>(&format!("\"{}\"", &tail[..at])).ok()?;
        Some((error, &tail[at + SEP.len()..]))
    })
}

impl ToolBackend for Simulator {
    fn call<'a>(&'a self, call: &'a ApiCall) -> BoxFuture<'a, Result<ApiReply, BackendFailure>> {
        Box::pin(async move { Ok(self.reply(call).await) })
    }

    fn call_sourced<'a>(&'a self, call: &'a ApiCall) -> BoxFuture<'a, SourcedReply> {
        Box::pin(async move {
            let (reply, source) = self.sourced_reply(call).await;
            (Ok(reply), source)
        })
    }

    fn report(&self) -> Option<String> {
        let count = |c: &AtomicUsize| c.load(Ordering::Relaxed);
        let mut text = format!(
            "tool calls: {} from the response cache, {} from recorded answers, {} without a recorded response",
            count(&self.cache_hits),
            count(&self.recorded_hits),
            count(&self.misses)
        );
        if self.real_api.is_some() {
            text.push_str(&format!(", {} from the real API", count(&self.real_hits)));
        }
        if self.miss_simulator.is_some() {
            text.push_str(&format!(
                ", {} simulated, {} failed simulations (not saved)",
                count(&self.simulated),
                count(&self.failed_simulations)
            ));
        }
        Some(text)
    }

    fn cached_entry(&self, call: &ApiCall) -> Option<Value> {
        self.caches
            .iter()
            .find_map(|cache| match cache.lookup(call) {
                Lookup::Hit(entry) => Some(entry),
                Lookup::Miss | Lookup::BadInput => None,
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
                error: json!("x"),
                response: json!("y")
            }
        );
        // A cut reply that carries an error keeps it, and with it its status.
        let obs = r#"{"error": "Message error...", "response": "{'result': [{'title': 'Fi\"do'..."#;
        let reply = recorded_reply(obs);
        assert_eq!(reply.error, json!("Message error..."));
        assert_eq!(reply.response, json!("{'result': [{'title': 'Fi\"do'"));
        assert_eq!(reply.status(), umi_core::env::status::MESSAGE_ERROR);
    }

    /// A recorded call is found under the function it reached: ToolBench matches the
    /// called name to the first function whose name ends with it.
    #[test]
    fn recorded_calls_are_kept_under_the_function_they_reached() {
        let answer = json!({
            "answer_generation": {"function": [{"name": "match_history_for_dota"}, {"name": "Finish"}]},
            "tree": {"tree": {"node_type": "Action Input", "children": [
                {"node_type": "Action", "description": "dota", "children": [
                    {"node_type": "Action Input", "description": "{}", "observation": "{\"error\": \"\", \"response\": \"won\"}", "children": []}]}]}}});
        let mut sim = Simulator::new();
        assert_eq!(sim.add_answer_file(&answer), 1);
        assert_eq!(
            sim.lookup("match_history_for_dota", "{}")
                .map(|r| r.response.clone()),
            Some(json!("won"))
        );
    }

    /// Observations as α-UMi's fork and umi record them (`json.dumps` of the response, or
    /// of `{"message": error}`) give the same observation again, not a re-encoded one.
    #[test]
    fn recorded_observations_come_out_as_recorded() {
        for obs in [
            r#""{'temp': 21}""#,
            r#"{"items": [1, 2], "ok": true}"#,
            r#"{"message": "Unauthorized error..."}"#,
            "null",
            r#"[1, "two"]"#,
        ] {
            assert_eq!(recorded_reply(obs).observation(), obs);
        }
        // A string literal cut at 1024 characters: its text up to the cut.
        assert_eq!(
            recorded_reply(r#""{'temp': 21, 'wind..."#).response,
            json!("{'temp': 21, 'wind")
        );
        assert_eq!(recorded_reply("plain text").response, json!("plain text"));
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
            json!("found")
        );
        assert!(sim.lookup("search_for_x", "{\"a\": 2}").is_none());
    }
}
