//! The step of StableToolBench's server between its cache and its simulation
//! (`server/main.py`, `get_virtual_response`): the call is sent to the real API
//! (`toolbench_url`, ToolBench's RapidAPI service) with the body and headers the server
//! builds, and its reply is used only when the status is 200 and `check_result` accepts
//! it; anything else falls through to the simulation.
//!
//! Where the server itself fails (the connection fails, a 200 whose body is not JSON:
//! its `requests` call raises and the request ends in an HTTP 500), umi falls through to
//! the simulation too, so that the order is cache → real API → simulation throughout.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::Mutex;
use tokio::time::Instant;
use umi_core::env::ApiCall;
use umi_core::pyjson;

use crate::cache::{server_api_name, standardize_category};
use crate::http::{post_json, HttpError, DEFAULT_MAX_BODY};
use crate::rapidapi::default_pacing;

/// Why the real API's reply was not used.
#[derive(Debug, thiserror::Error)]
pub enum RealApiFailure {
    #[error("{0}")]
    Http(#[from] HttpError),
    #[error("status {0}")]
    Status(u16),
    #[error("the reply is not JSON")]
    NotJson,
    /// `check_result` refused it (an error set, a rate limit, an authorization failure…).
    #[error("refused by check_result: {0}")]
    Refused(String),
}

pub struct RealApi {
    pub url: String,
    pub key: String,
    pub timeout: Duration,
    /// Minimum time between two calls (`rapidapi::default_pacing` unless told).
    pub pacing: Duration,
    pub max_response_bytes: usize,
    next_call: Mutex<Option<Instant>>,
}

impl RealApi {
    pub fn new(url: String, key: String) -> Self {
        let pacing = default_pacing(&url);
        RealApi {
            url,
            key,
            timeout: Duration::from_secs(30),
            pacing,
            max_response_bytes: DEFAULT_MAX_BODY,
            next_call: Mutex::new(None),
        }
    }

    /// The body the server posts for `call`, whose input parsed to `tool_input`: the
    /// category standardized, the tool name cut at its first `_for_`, the API name as it
    /// names the cache file, the input as JSON (not text), `strip` empty.
    pub fn request_body(&self, call: &ApiCall, tool_input: &Value) -> Value {
        let tool = call
            .tool_name
            .split("_for_")
            .next()
            .unwrap_or(&call.tool_name);
        json!({
            "category": standardize_category(&call.category),
            "tool_name": tool,
            "api_name": server_api_name(call),
            "tool_input": tool_input,
            "strip": "",
            "toolbench_key": self.key,
        })
    }

    async fn pace(&self) {
        let mut next = self.next_call.lock().await;
        if let Some(at) = *next {
            tokio::time::sleep_until(at).await;
        }
        *next = Some(Instant::now() + self.pacing);
    }

    /// The real API's reply to `call`, when the server would use it.
    pub async fn ask(&self, call: &ApiCall, tool_input: &Value) -> Result<Value, RealApiFailure> {
        self.pace().await;
        let body = self.request_body(call, tool_input).to_string();
        let response = post_json(
            &self.url,
            &[("accept", "application/json"), ("toolbench_key", &self.key)],
            body.as_bytes(),
            self.timeout,
            self.max_response_bytes,
        )
        .await?;
        if response.status != 200 {
            return Err(RealApiFailure::Status(response.status));
        }
        let reply: Value =
            serde_json::from_slice(&response.body).map_err(|_| RealApiFailure::NotJson)?;
        if check_result(&reply) {
            Ok(reply)
        } else {
            Err(RealApiFailure::Refused(pyjson::repr(&reply)))
        }
    }
}

/// The server's `check_result`: whether a real reply is used. `error` must be the empty
/// string and `response` present; the response's Python `str()` is then refused when it
/// is empty or names a rate limit, a timeout, a missing API, a server error, an
/// authorization failure, a parameter or parse problem, or a 50x/429 status, unless it
/// says `got an unexpected keyword argument` (kept: the call itself was wrong).
pub fn check_result(reply: &Value) -> bool {
    let Some(reply) = reply.as_object() else {
        return false;
    };
    if reply.get("error") != Some(&Value::String(String::new())) {
        return false;
    }
    let Some(response) = reply.get("response") else {
        return false;
    };
    let response = match response {
        Value::String(s) => s.clone(),
        other => pyjson::repr(other),
    };
    let lower = response.to_lowercase();
    let any = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    if lower.contains("got an unexpected keyword argument") {
        return true;
    }
    // The server also looks for "API doesn't exists" in the lower-cased text, which
    // never holds it: only the exact text of `{'message': "API doesn't exists"}` counts.
    let unavailable = any(&[
        "rate limit",
        "time out",
        "timed out",
        "does not exist",
        "404",
        "504",
        "500",
        "internal error",
    ]) || response == "{'message': \"API doesn't exists\"}"
        || response.contains("Service Not Found");
    let unauthorized = any(&[
        "authoriz",
        "authenticat",
        "unauthorized",
        "blocked user",
        "unsubscribe",
        "blocked",
        "401",
        "403",
        "credential",
        "unauthenticated",
        "disabled for your subscription",
        "invalid consumer key",
    ]) || response.contains("ACCESS_DENIED");
    let malformed = any(&["parameter", "parse", "is not defined"]);
    let status = response.contains("status_code=50") || response.contains("status_code=429");
    !(unavailable || unauthorized || malformed || response.is_empty() || status)
}
