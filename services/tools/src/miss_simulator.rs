//! Cache misses answered as StableToolBench's server answers them
//! (`server/main.py::fake_response_function_chat`): an LLM behind any OpenAI-compatible
//! chat endpoint is shown StableToolBench's system prompt (verbatim, in
//! `stabletoolbench_system_prompt.txt`; StableToolBench is Apache-2.0), then
//! `API Documentation:<doc>\nAPI Examples:<examples, first 2048 characters>\nAPI Input:<input>\n`
//! with Python's `str()` of each part: the API's documentation as the server builds its
//! `api_doc` (`tools_folder`), up to five cached replies of the same API (fewer while
//! their text is over 2048 characters), the input. It answers JSON `{"error",
//! "response"}` (`response_format: json_object`, a ```json fence tolerated), in three
//! tries `RETRY_WAIT` apart; when none gives JSON the simulation has failed, and the
//! reply is StableToolBench's `Failed to generate fake response` (`failure_reply`).

use std::time::Duration;

use serde_json::{json, Value};
use umi_core::env::ApiCall;
use umi_core::pyjson;

use crate::http::post_json;
use crate::tools_folder::{api_doc, ToolsFolder};

pub const SYSTEM_PROMPT: &str = include_str!("stabletoolbench_system_prompt.txt");

/// Cached replies shown as examples, at most.
const EXAMPLES: usize = 5;
/// The examples' text is cut to this many characters.
const EXAMPLE_CHARS: usize = 2048;
const ATTEMPTS: usize = 3;
/// The wait after a try that gave no JSON, before the next: the server's `time.sleep(1)`
/// (it also sleeps after the last try; umi answers at once).
pub const RETRY_WAIT: Duration = Duration::from_secs(1);

/// Why a simulation gave no reply (the last try's reason).
#[derive(Debug, thiserror::Error)]
#[error("no JSON reply from the simulating model in {tries} tries (last: {last})")]
pub struct SimulationFailed {
    pub tries: usize,
    pub last: String,
}

/// StableToolBench's reply when the model gave no JSON.
pub fn failure_reply() -> Value {
    json!({"error": "Failed to generate fake response", "response": ""})
}

pub struct MissSimulator {
    /// `http(s)://host:port/v1`.
    pub base: String,
    pub model: String,
    pub api_key: Option<String>,
    /// StableToolBench's default: 0.
    pub temperature: f64,
    pub timeout: Duration,
    /// The wait between two tries (`RETRY_WAIT`).
    pub retry_wait: Duration,
    /// The tools folder the API documentation is read from; without it the document is
    /// the server's empty one.
    pub tools: Option<ToolsFolder>,
}

impl MissSimulator {
    /// A simulator asking `model` at `base`, with StableToolBench's settings: no key,
    /// temperature 0, tries `RETRY_WAIT` apart, no tools folder; a 120 s timeout a try.
    pub fn new(base: String, model: String) -> Self {
        MissSimulator {
            base,
            model,
            api_key: None,
            temperature: 0.0,
            timeout: Duration::from_secs(120),
            retry_wait: RETRY_WAIT,
            tools: None,
        }
    }
}

/// `str(list(cache.items())[:n])`: a list of `(key, reply)` tuples, with `n` lowered
/// from 5 while that text is over 2048 characters.
fn examples_text(examples: &[(String, Value)]) -> String {
    let text = |n: usize| {
        let items: Vec<String> = examples[..n]
            .iter()
            .map(|(k, v)| format!("({}, {})", pyjson::repr(&json!(k)), pyjson::repr(v)))
            .collect();
        format!("[{}]", items.join(", "))
    };
    let mut n = examples.len().min(EXAMPLES);
    while n > 1 && text(n).chars().count() > EXAMPLE_CHARS {
        n -= 1;
    }
    text(n)
}

/// The user message of one simulated call: the API's document (`tools_folder::api_doc`),
/// the cached examples, the input's cache key.
pub fn user_prompt(api_doc: &Value, key: &str, examples: &[(String, Value)]) -> String {
    let examples = examples_text(examples);
    let cut = examples
        .char_indices()
        .nth(EXAMPLE_CHARS)
        .map_or(examples.as_str(), |(i, _)| &examples[..i]);
    format!(
        "API Documentation:{}\nAPI Examples:{cut}\nAPI Input:{key}\n",
        pyjson::repr(api_doc)
    )
}

/// A model answer as StableToolBench reads it: a ```json fence dropped, then JSON.
fn read_answer(text: &str) -> Option<Value> {
    let text = if text.contains("```json") {
        text.replace("```json", "")
            .replace("```", "")
            .trim()
            .to_string()
    } else {
        text.to_string()
    };
    serde_json::from_str(&text).ok()
}

impl MissSimulator {
    /// The reply for `call` (whose cache key is `key`), invented by the model; an error
    /// when no try gave JSON (the endpoint unreachable, an HTTP error, a body that is not
    /// a completion, a message that is not JSON).
    pub async fn simulate(
        &self,
        call: &ApiCall,
        key: &str,
        examples: &[(String, Value)],
    ) -> Result<Value, SimulationFailed> {
        let doc = api_doc(self.tools.as_ref(), call);
        let body = json!({
            "model": self.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": user_prompt(&doc, key, examples)},
            ],
            "max_tokens": 1024,
            "temperature": self.temperature,
            "response_format": {"type": "json_object"},
        })
        .to_string();
        let auth = self.api_key.as_ref().map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let url = format!("{}/chat/completions", self.base.trim_end_matches('/'));
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            if attempt > 1 {
                tokio::time::sleep(self.retry_wait).await;
            }
            let reply = post_json(&url, &headers, body.as_bytes(), self.timeout, 1 << 20).await;
            let answer = match reply {
                Err(e) => Err(e.to_string()),
                Ok(r) if r.status != 200 => Err(format!("status {}", r.status)),
                Ok(r) => serde_json::from_slice::<Value>(&r.body)
                    .ok()
                    .and_then(|v| {
                        v.pointer("/choices/0/message/content")?
                            .as_str()
                            .map(str::to_string)
                    })
                    .ok_or_else(|| "no completion message".to_string())
                    .and_then(|text| read_answer(&text).ok_or_else(|| "not JSON".to_string())),
            };
            match answer {
                Ok(v) => return Ok(v),
                Err(reason) => {
                    tracing::warn!(attempt, url, %reason, "the simulating model gave no JSON reply");
                    last = reason;
                }
            }
        }
        Err(SimulationFailed {
            tries: ATTEMPTS,
            last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_is_stabletoolbenchs() {
        assert!(SYSTEM_PROMPT.starts_with("\nImagine you are an API Server"));
        let doc = json!({"tool_description": "", "api_info": [{"name": "Top Headlines", "description": "News now"}]});
        let examples = vec![(
            "{'country': 'fr'}".to_string(),
            json!({"error": "", "response": "it's news"}),
        )];
        assert_eq!(
            user_prompt(&doc, "{'country': 'de'}", &examples),
            "API Documentation:{'tool_description': '', 'api_info': [{'name': 'Top Headlines', 'description': 'News now'}]}\nAPI Examples:[(\"{'country': 'fr'}\", {'error': '', 'response': \"it's news\"})]\nAPI Input:{'country': 'de'}\n"
        );
        // Long examples: fewer of them, and the text cut to 2048 characters.
        let long: Vec<(String, Value)> = (0..5)
            .map(|i| {
                (
                    format!("{{'i': {i}}}"),
                    json!({"response": "x".repeat(3000)}),
                )
            })
            .collect();
        let prompt = user_prompt(&doc, "{}", &long);
        let shown = prompt
            .split("API Examples:")
            .nth(1)
            .unwrap()
            .split("\nAPI Input:")
            .next()
            .unwrap();
        assert_eq!(shown.chars().count(), 2048);
        assert_eq!(shown.matches("{'i': ").count(), 1);
    }

    #[test]
    fn answers_in_a_fence_are_read() {
        assert_eq!(
            read_answer("```json\n{\"error\": \"\", \"response\": \"ok\"}\n```"),
            Some(json!({"error": "", "response": "ok"}))
        );
        assert_eq!(read_answer("not json"), None);
    }
}
