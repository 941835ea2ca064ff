//! A client of ToolBench's RapidAPI service (`POST /rapidapi`), as the reference calls it:
//! the request body and `toolbench_key` header, a pause between calls (the service allows
//! 30 per minute) and a longer one after a rate-limit reply, a 30 s timeout; failures
//! become observations, not errors.

use std::time::Duration;

use serde_json::json;
use tokio::sync::Mutex;
use tokio::time::Instant;
use umi_core::agent::BoxFuture;
use umi_core::env::{ApiCall, ApiReply, BackendFailure, ToolBackend};

use crate::http::{post_json, HttpError, DEFAULT_MAX_BODY};

/// The service's error text for a per-minute rate limit (status 10).
const RATE_LIMITED: &str = "Rate limit per minute error...";

/// ToolBench's public RapidAPI server, the reference's default.
pub const TOOLBENCH_SERVER: &str = "http://8.130.32.149:8080/rapidapi";

/// The pause between calls a server gets unless told otherwise: the reference's 2 s for
/// ToolBench's public server (it allows 30 calls a minute), none for any other (a
/// StableToolBench server or a mirror: calls then run concurrently).
pub fn default_pacing(url: &str) -> Duration {
    if url.trim_end_matches('/') == TOOLBENCH_SERVER {
        Duration::from_secs(2)
    } else {
        Duration::ZERO
    }
}

pub struct RapidApi {
    pub url: String,
    pub key: String,
    pub timeout: Duration,
    /// Minimum time between two calls.
    pub pacing: Duration,
    /// The pause after a `Rate limit per minute error...` reply (the reference sleeps
    /// 10 s); later calls wait for its end too.
    pub rate_limit_pause: Duration,
    /// The largest reply body read; a larger one is a failed call.
    pub max_response_bytes: usize,
    /// The earliest moment the next call may start.
    next_call: Mutex<Option<Instant>>,
}

impl RapidApi {
    pub fn new(url: String, key: String) -> Self {
        let pacing = default_pacing(&url);
        RapidApi {
            url,
            key,
            timeout: Duration::from_secs(30),
            pacing,
            rate_limit_pause: Duration::from_secs(10),
            max_response_bytes: DEFAULT_MAX_BODY,
            next_call: Mutex::new(None),
        }
    }

    async fn pace(&self) {
        let mut next = self.next_call.lock().await;
        if let Some(at) = *next {
            tokio::time::sleep_until(at).await;
        }
        *next = Some(Instant::now() + self.pacing);
    }

    async fn request(&self, call: &ApiCall) -> Result<ApiReply, BackendFailure> {
        self.pace().await;
        let body = json!({
            "category": call.category,
            "tool_name": call.tool_name,
            "api_name": call.api_name,
            "tool_input": call.tool_input,
            "strip": "truncate",
            "toolbench_key": self.key,
        });
        let response = post_json(
            &self.url,
            &[("toolbench_key", &self.key)],
            body.to_string().as_bytes(),
            self.timeout,
            self.max_response_bytes,
        )
        .await
        // The observation says what the reference's does (any exception of the request
        // is "request time out", an unreadable body "request invalid, data error"); the
        // detail goes to the log.
        .map_err(|e| {
            tracing::warn!(url = %self.url, error = %e, "RapidAPI request failed");
            match e {
                HttpError::TooLarge { .. } | HttpError::Invalid(_) => {
                    BackendFailure("request invalid, data error".into())
                }
                _ => BackendFailure("request time out".into()),
            }
        })?;
        if response.status != 200 {
            return Err(BackendFailure(format!(
                "request invalid, data error. status_code={}",
                response.status
            )));
        }
        let value: serde_json::Value = serde_json::from_slice(&response.body)
            .map_err(|_| BackendFailure("request invalid, data error".into()))?;
        // Kept as received: the observation is `json.dumps` of the value.
        let reply = ApiReply::from_entry(&value);
        if reply.error.as_str() == Some(RATE_LIMITED) {
            let resume = Instant::now() + self.rate_limit_pause;
            {
                let mut next = self.next_call.lock().await;
                *next = Some(next.map_or(resume, |at| at.max(resume)));
            }
            tokio::time::sleep_until(resume).await;
        }
        Ok(reply)
    }
}

impl ToolBackend for RapidApi {
    fn call<'a>(&'a self, call: &'a ApiCall) -> BoxFuture<'a, Result<ApiReply, BackendFailure>> {
        Box::pin(self.request(call))
    }
}
