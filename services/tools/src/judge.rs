//! The pass rate's judge over an OpenAI-compatible chat endpoint, called as
//! StableToolBench's evaluator calls it (`OpenAINormalizedEvaluator.function_call`): one
//! user message (the filled template), the function forced with `tool_choice`, its
//! parameters `answer_status` (Solved / Unsolved / Unsure) and `reason`, temperature 0.2,
//! at most 1000 tokens; the verdict read from the tool call's arguments, three tries.

use std::time::Duration;

use serde_json::{json, Value};
use umi_core::agent::BoxFuture;
use umi_core::pass_rate::{AnswerStatus, Judge, JudgeCall};

use crate::http::post_json;

const ATTEMPTS: usize = 3;

pub struct OpenAiJudge {
    /// `http(s)://host:port/v1`.
    pub base: String,
    /// StableToolBench's default evaluator model: gpt-3.5-turbo-16k.
    pub model: String,
    pub api_key: Option<String>,
    pub timeout: Duration,
}

fn function(name: &str) -> Value {
    json!({
        "name": name,
        "description": "Parse the json answer with layerd nodes and return the answer_status about the answer",
        "parameters": {
            "type": "object",
            "properties": {
                "answer_status": {"type": "string", "enum": ["Unsure", "Unsolved", "Solved"]},
                "reason": {"type": "string", "description": "explain your answer."},
            },
            "required": ["answer_status", "reason"],
        },
    })
}

impl OpenAiJudge {
    async fn ask(&self, call: &JudgeCall) -> Result<AnswerStatus, String> {
        let body = json!({
            "model": self.model,
            "max_tokens": 1000,
            "temperature": 0.2,
            "tools": [{"type": "function", "function": function(call.function)}],
            "tool_choice": {"type": "function", "function": {"name": call.function}},
            "messages": [{"role": "user", "content": call.prompt}],
        })
        .to_string();
        let auth = self.api_key.as_ref().map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let url = format!("{}/chat/completions", self.base.trim_end_matches('/'));
        let reply = post_json(&url, &headers, body.as_bytes(), self.timeout, 1 << 20)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        if reply.status != 200 {
            return Err(format!("{url}: HTTP {}", reply.status));
        }
        let value: Value =
            serde_json::from_slice(&reply.body).map_err(|e| format!("{url}: {e}"))?;
        let arguments = value
            .pointer("/choices/0/message/tool_calls/0/function/arguments")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{url}: the reply calls no function"))?;
        let arguments: Value =
            serde_json::from_str(arguments).map_err(|e| format!("{url}: arguments: {e}"))?;
        arguments["answer_status"]
            .as_str()
            .and_then(AnswerStatus::parse)
            .ok_or_else(|| format!("{url}: no valid answer_status in {arguments}"))
    }
}

impl Judge for OpenAiJudge {
    fn answer_status<'a>(&'a self, call: JudgeCall) -> BoxFuture<'a, Result<AnswerStatus, String>> {
        Box::pin(async move {
            let mut last = String::new();
            for attempt in 0..ATTEMPTS {
                match self.ask(&call).await {
                    Ok(status) => return Ok(status),
                    Err(e) => last = e,
                }
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
            }
            Err(format!("the judge failed {ATTEMPTS} times: {last}"))
        })
    }
}
