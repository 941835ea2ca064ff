//! The pass rate's judge over an OpenAI-compatible chat endpoint, called as
//! StableToolBench's evaluator calls it (`OpenAINormalizedEvaluator.function_call`): one
//! user message (the filled template), the function forced with `tool_choice`, its
//! parameters `answer_status` (Solved / Unsolved / Unsure) and `reason`, temperature 0.2,
//! at most 1000 tokens; the verdict read from the tool call's arguments.
//!
//! Its timeouts and retries are StableToolBench's, three layers deep (`RetryPolicy`,
//! `Backoff`):
//! 1. each HTTP request: `timeout: 10` (s) of the evaluator's `config.yaml`
//!    (`completions_kwargs`, passed to `client.chat.completions.create`), retried by the
//!    OpenAI SDK itself (`openai/_constants.py`, `_base_client.py`): `DEFAULT_MAX_RETRIES
//!    = 2` more tries on a timeout, a failed connection or HTTP 408, 409, 429 or 5xx,
//!    after `min(INITIAL_RETRY_DELAY 0.5 s * 2^n, MAX_RETRY_DELAY 8 s)` less a random 0 to
//!    25 %;
//! 2. each function call: tenacity's `@retry(stop=stop_after_attempt(3),
//!    wait=wait_exponential(multiplier=1, min=4, max=10))` on `function_call`
//!    (`evaluators/registered_cls/tooleval.py`): three attempts on any failure, waiting
//!    `max(4, min(1 s * 2^(attempt-1), 10))`, i.e. 4 s and 4 s;
//! 3. each judgment of one answer (`check_is_solved`, both calls, and reading the verdict):
//!    `@backoff.on_exception(backoff.expo, Exception, max_time=15)` on
//!    `compute_pass_rate` (`eval_pass_rate.py`): full jitter over 1, 2, 4, 8 … s, no try
//!    begun 15 s after the first, no wait past that (`judge_with_backoff`).
//!
//! The SDK's `Retry-After` header is not read (umi's HTTP client returns no headers).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use umi_core::agent::BoxFuture;
use umi_core::pass_rate::{function_schema, AnswerStatus, Converted, Judge, JudgeCall, JudgeError};

use crate::http::{post_json, HttpError};

/// The timeouts and retries of one judge call (layers 1 and 2 above); `default()` is
/// StableToolBench's.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// One HTTP request (config.yaml `timeout: 10`).
    pub request_timeout: Duration,
    /// The SDK's retries of one request (`DEFAULT_MAX_RETRIES = 2`).
    pub sdk_retries: u32,
    /// The SDK's first wait (`INITIAL_RETRY_DELAY = 0.5`), doubled per retry …
    pub sdk_initial_wait: Duration,
    /// … up to `MAX_RETRY_DELAY = 8.0`.
    pub sdk_max_wait: Duration,
    /// tenacity's `stop_after_attempt(3)`.
    pub attempts: u32,
    /// tenacity's `wait_exponential(multiplier=1, min=4, max=10)`.
    pub wait_multiplier: Duration,
    pub wait_min: Duration,
    pub wait_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            request_timeout: Duration::from_secs(10),
            sdk_retries: 2,
            sdk_initial_wait: Duration::from_millis(500),
            sdk_max_wait: Duration::from_secs(8),
            attempts: 3,
            wait_multiplier: Duration::from_secs(1),
            wait_min: Duration::from_secs(4),
            wait_max: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The SDK's wait before its retry `n` (0-based; `_calculate_retry_timeout`), with
    /// `unit` (0 to 1) the random draw: `unit` 0 waits the whole delay, 1 three quarters.
    pub fn sdk_wait(&self, n: u32, unit: f64) -> Duration {
        let delay = self
            .sdk_initial_wait
            .mul_f64(2f64.powi(n.min(1000) as i32))
            .min(self.sdk_max_wait);
        delay.mul_f64(1.0 - 0.25 * unit.clamp(0.0, 1.0))
    }

    /// tenacity's wait after the failed attempt `attempt` (1-based).
    pub fn call_wait(&self, attempt: u32) -> Duration {
        let exp = 2f64.powi(attempt.saturating_sub(1).min(1000) as i32);
        self.wait_multiplier
            .mul_f64(exp.min(1e9))
            .min(self.wait_max)
            .max(self.wait_min)
    }
}

/// `backoff.on_exception(backoff.expo, Exception, max_time=15)` around one judgment
/// (layer 3); `default()` is StableToolBench's.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// `max_time=15`: no try begins later than this after the first.
    pub max_time: Duration,
    /// `backoff.expo`'s `factor=1` (s), times `base=2` to the n.
    pub factor: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            max_time: Duration::from_secs(15),
            factor: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    /// The wait after the failed try that began `elapsed` after the first, the `n`-th
    /// (0-based) wait: `full_jitter(expo)`, `unit` (0 to 1) the random draw (1: the
    /// whole `factor * 2^n`), never past `max_time` (`_next_wait`).
    pub fn wait(&self, n: u32, unit: f64, elapsed: Duration) -> Duration {
        let expo = self.factor.mul_f64(2f64.powi(n.min(60) as i32));
        expo.mul_f64(unit.clamp(0.0, 1.0))
            .min(self.max_time.saturating_sub(elapsed))
    }
}

/// A draw in [0, 1) for the jitters (the process's random hasher keys; no seeding, as the
/// reference's `random` module is not seeded for them).
fn unit_random() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// One judgment of `converted` (`Converted::judge`: one or two calls) retried as
/// `compute_pass_rate` is: on any error, after `Backoff::wait`; the error of the last try
/// once a failed try had begun `max_time` after the first.
pub async fn judge_with_backoff(
    converted: &Converted,
    judge: &dyn Judge,
    backoff: &Backoff,
) -> Result<AnswerStatus, JudgeError> {
    let start = Instant::now();
    let mut n = 0;
    loop {
        let elapsed = start.elapsed();
        match converted.judge(judge).await {
            Ok(status) => return Ok(status),
            Err(e) if elapsed >= backoff.max_time => {
                return Err(JudgeError::RetriedFor {
                    seconds: elapsed.as_secs_f64(),
                    last: Box::new(e),
                })
            }
            Err(e) => {
                let wait = backoff.wait(n, unit_random(), elapsed);
                tracing::debug!(error = %e, wait_s = wait.as_secs_f64(), "judgment failed, retrying");
                tokio::time::sleep(wait).await;
                n += 1;
            }
        }
    }
}

pub struct OpenAiJudge {
    /// `http(s)://host:port/v1`.
    pub base: String,
    /// StableToolBench's default evaluator model: gpt-3.5-turbo-16k.
    pub model: String,
    pub api_key: Option<String>,
    pub retry: RetryPolicy,
}

/// Whether the SDK retries a request that failed so (`_should_retry`, and its retries of
/// `APITimeoutError` and `APIConnectionError`).
fn sdk_retries(failure: &Failure) -> bool {
    match failure {
        Failure::Http(HttpError::Timeout | HttpError::Connect(_) | HttpError::Malformed(_)) => true,
        Failure::Http(_) => false,
        Failure::Status(status) => matches!(status, 408 | 409 | 429) || *status >= 500,
    }
}

enum Failure {
    Http(HttpError),
    Status(u16),
}

impl OpenAiJudge {
    /// The request of one call, as `function_call` builds it (less `timeout`, which is
    /// the client's).
    pub fn request_body(&self, call: &JudgeCall) -> Value {
        json!({
            "model": self.model,
            "max_tokens": 1000,
            "temperature": 0.2,
            "tools": [{"type": "function", "function": function_schema(call.function, call.reason)}],
            "tool_choice": {"type": "function", "function": {"name": call.function}},
            "messages": [{"role": "user", "content": call.prompt}],
        })
    }

    fn url(&self) -> String {
        format!("{}/chat/completions", self.base.trim_end_matches('/'))
    }

    /// One request with the SDK's own retries (layer 1): the reply's body.
    async fn post(&self, body: &[u8]) -> Result<Vec<u8>, JudgeError> {
        let auth = self.api_key.as_ref().map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let url = self.url();
        let mut retry = 0;
        loop {
            let failure =
                match post_json(&url, &headers, body, self.retry.request_timeout, 1 << 20).await {
                    Ok(reply) if (200..300).contains(&reply.status) => return Ok(reply.body),
                    Ok(reply) => Failure::Status(reply.status),
                    Err(e) => Failure::Http(e),
                };
            if retry >= self.retry.sdk_retries || !sdk_retries(&failure) {
                return Err(match failure {
                    Failure::Http(e) => JudgeError::Unreachable {
                        url,
                        detail: e.to_string(),
                    },
                    Failure::Status(status) => JudgeError::Status { url, status },
                });
            }
            tokio::time::sleep(self.retry.sdk_wait(retry, unit_random())).await;
            retry += 1;
        }
    }

    /// One attempt of `function_call`: the called function's arguments.
    async fn ask(&self, call: &JudgeCall) -> Result<Value, JudgeError> {
        let body = self.request_body(call).to_string();
        let reply = self.post(body.as_bytes()).await?;
        let bad_reply = |detail: String| JudgeError::Reply {
            url: self.url(),
            detail,
        };
        let value: Value = serde_json::from_slice(&reply).map_err(|e| bad_reply(e.to_string()))?;
        let arguments = value
            .pointer("/choices/0/message/tool_calls/0/function/arguments")
            .and_then(Value::as_str)
            .ok_or_else(|| bad_reply("the reply calls no function".into()))?;
        serde_json::from_str(arguments).map_err(|e| bad_reply(format!("arguments: {e}")))
    }

    /// `function_call` with tenacity's retries (layer 2).
    async fn function_call(&self, call: &JudgeCall) -> Result<Value, JudgeError> {
        let attempts = self.retry.attempts.max(1);
        let mut attempt = 1;
        loop {
            match self.ask(call).await {
                Ok(arguments) => return Ok(arguments),
                Err(e) if attempt >= attempts => {
                    return Err(JudgeError::Attempts {
                        attempts,
                        last: Box::new(e),
                    })
                }
                Err(e) => {
                    tracing::debug!(error = %e, attempt, "judge call failed, retrying");
                    tokio::time::sleep(self.retry.call_wait(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }
}

impl Judge for OpenAiJudge {
    fn call<'a>(&'a self, call: JudgeCall) -> BoxFuture<'a, Result<Value, JudgeError>> {
        Box::pin(async move { self.function_call(&call).await })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn fixture(path: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/pass-rate")
            .join(path)
    }

    fn expected() -> Value {
        serde_json::from_slice(&std::fs::read(fixture("expected.json")).unwrap()).unwrap()
    }

    /// What a scripted judge (a test double) answers a request: an HTTP status and, for
    /// 200, the verdict; `None` holds the connection open without answering.
    type Reply = Option<(u16, &'static str)>;

    /// A scripted judge over HTTP (a test double): answers the n-th request with
    /// `script[n]` (the last one after), records each request's arrival and body.
    async fn scripted_judge(script: Vec<Reply>) -> (String, Arc<Mutex<Vec<(Instant, Value)>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let log = log.clone();
                let script = script.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 65536];
                    let body = loop {
                        let n = sock.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        got.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&got).into_owned();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let len: usize = text
                                .lines()
                                .find_map(|l| {
                                    let (k, v) = l.split_once(':')?;
                                    k.eq_ignore_ascii_case("content-length")
                                        .then(|| v.trim().parse().ok())?
                                })
                                .unwrap_or(0);
                            if got.len() >= end + 4 + len {
                                break got[end + 4..end + 4 + len].to_vec();
                            }
                        }
                    };
                    let request: Value = serde_json::from_slice(&body).unwrap();
                    let n = {
                        let mut log = log.lock().unwrap();
                        log.push((Instant::now(), request.clone()));
                        log.len() - 1
                    };
                    let Some((status, verdict)) = script[n.min(script.len() - 1)] else {
                        std::future::pending::<()>().await;
                        return;
                    };
                    let function = request["tool_choice"]["function"]["name"].clone();
                    let arguments =
                        json!({"answer_status": verdict, "reason": "scripted"}).to_string();
                    let reply = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": null,
                        "tool_calls": [{"id": "c", "type": "function", "function": {"name": function, "arguments": arguments}}]}}]})
                    .to_string();
                    let head = format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", reply.len());
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(reply.as_bytes()).await;
                });
            }
        });
        (base, seen)
    }

    fn judge(base: String, retry: RetryPolicy) -> OpenAiJudge {
        OpenAiJudge {
            base,
            model: "gpt-3.5-turbo-16k".into(),
            api_key: None,
            retry,
        }
    }

    fn call() -> JudgeCall {
        JudgeCall::new("check_answer_status", "Query:\nq\nAnswer:\na".into(), true)
    }

    /// The constants are StableToolBench's, as its objects hold them (tenacity's
    /// decorator, config.yaml, `backoff.expo`, the OpenAI SDK's delays).
    #[test]
    fn the_retry_constants_are_stabletoolbenchs() {
        let reference = &expected()["retry"];
        let secs = |v: &Value| -> Vec<f64> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        };
        let policy = RetryPolicy::default();
        assert_eq!(
            policy.request_timeout.as_secs_f64(),
            reference["request_timeout_s"].as_f64().unwrap()
        );
        assert_eq!(
            policy.attempts as u64,
            reference["function_call_attempts"].as_u64().unwrap()
        );
        let waits: Vec<f64> = (1..policy.attempts)
            .map(|a| policy.call_wait(a).as_secs_f64())
            .collect();
        assert_eq!(waits, secs(&reference["function_call_waits_s"]));
        assert_eq!(
            policy.sdk_retries as u64,
            reference["sdk_max_retries"].as_u64().unwrap()
        );
        for (unit, key) in [
            (0.0, "sdk_waits_s_no_jitter"),
            (1.0, "sdk_waits_s_full_jitter"),
        ] {
            let waits: Vec<f64> = (0..policy.sdk_retries)
                .map(|n| policy.sdk_wait(n, unit).as_secs_f64())
                .collect();
            assert_eq!(waits, secs(&reference[key]), "{key}");
        }
        let backoff = Backoff::default();
        assert_eq!(
            backoff.max_time.as_secs_f64(),
            reference["backoff_max_time_s"].as_f64().unwrap()
        );
        let expo: Vec<f64> = (0..6)
            .map(|n| backoff.wait(n, 1.0, Duration::ZERO).as_secs_f64())
            .collect();
        let mut want = secs(&reference["backoff_expo_s"]);
        // No wait past max_time: the 16 s and 32 s of expo are cut to 15.
        for w in want.iter_mut() {
            *w = w.min(15.0);
        }
        assert_eq!(expo, want);
        assert_eq!(
            backoff.wait(3, 1.0, Duration::from_secs(12)),
            Duration::from_secs(3)
        );
    }

    /// The request is the one StableToolBench's evaluator sends (its `timeout` is the
    /// client's, not the body's).
    #[tokio::test]
    async fn the_request_is_the_evaluators() {
        let reference = &expected()["judged"]["7"]["requests"][0];
        let (base, seen) = scripted_judge(vec![Some((200, "Solved"))]).await;
        let call = JudgeCall::new(
            "check_answer_status",
            reference["messages"][0]["content"].as_str().unwrap().into(),
            true,
        );
        let judge = judge(base, RetryPolicy::default());
        assert_eq!(judge.answer_status(call).await, Ok(AnswerStatus::Solved));
        let mut want = reference.clone();
        want.as_object_mut().unwrap().remove("timeout");
        assert_eq!(seen.lock().unwrap()[0].1, want);
    }

    /// Every request of the preference fixture (tests/fixtures/preference: StableToolBench's
    /// `annotate_preference` recorded, `check_task_solvable` and `select_better_answer`
    /// among them) is the body this judge sends for the same call.
    #[test]
    fn the_preference_requests_are_the_evaluators() {
        let path = fixture("../preference/expected.json");
        let expected: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let judge = judge("http://127.0.0.1:9/v1".into(), RetryPolicy::default());
        let mut functions = std::collections::BTreeSet::new();
        for rounds in expected["judged"].as_object().unwrap().values() {
            for round in rounds.as_array().unwrap() {
                for reference in round["requests"].as_array().unwrap() {
                    let function = match reference["tool_choice"]["function"]["name"].as_str() {
                        Some("check_answer_status") => "check_answer_status",
                        Some("parse_answer_status") => "parse_answer_status",
                        Some("check_task_solvable") => "check_task_solvable",
                        Some("select_better_answer") => "select_better_answer",
                        other => panic!("unknown function {other:?}"),
                    };
                    let prompt = reference["messages"][0]["content"].as_str().unwrap();
                    let reason = function == "select_better_answer";
                    let body = judge.request_body(&JudgeCall::new(function, prompt.into(), reason));
                    let mut want = reference.clone();
                    want.as_object_mut().unwrap().remove("timeout");
                    assert_eq!(body, want, "{function}");
                    functions.insert(function);
                }
            }
        }
        assert_eq!(functions.len(), 4, "{functions:?}");
    }

    /// Two server errors, then a verdict: the SDK layer's retries, after waits of 0.5 s
    /// then 1 s, each less up to a quarter (StableToolBench's own constants).
    #[tokio::test]
    async fn a_failing_judge_is_retried_with_growing_waits() {
        let (base, seen) = scripted_judge(vec![
            Some((500, "")),
            Some((503, "")),
            Some((200, "Unsure")),
        ])
        .await;
        let judge = judge(base, RetryPolicy::default());
        assert_eq!(judge.answer_status(call()).await, Ok(AnswerStatus::Unsure));
        let at: Vec<Instant> = seen.lock().unwrap().iter().map(|(t, _)| *t).collect();
        assert_eq!(at.len(), 3);
        let (first, second) = (at[1] - at[0], at[2] - at[1]);
        assert!(first >= Duration::from_millis(375), "{first:?}");
        assert!(second >= Duration::from_millis(750), "{second:?}");
        assert!(second > first, "{first:?} {second:?}");
    }

    /// A judge that never answers times out per request; the SDK's retries and
    /// tenacity's attempts (waiting its minimum, growing no further) are all spent, then
    /// the error. The policy is StableToolBench's shape with shorter times.
    #[tokio::test]
    async fn a_silent_judge_times_out_and_every_layer_retries() {
        let (base, seen) = scripted_judge(vec![None]).await;
        let quick = RetryPolicy {
            request_timeout: Duration::from_millis(100),
            sdk_initial_wait: Duration::from_millis(5),
            sdk_max_wait: Duration::from_millis(80),
            wait_multiplier: Duration::from_millis(10),
            wait_min: Duration::from_millis(40),
            wait_max: Duration::from_millis(100),
            ..RetryPolicy::default()
        };
        let judge = judge(base, quick);
        let started = Instant::now();
        let err = judge.answer_status(call()).await.unwrap_err();
        assert!(
            matches!(&err, JudgeError::Attempts { attempts: 3, last } if matches!(**last, JudgeError::Unreachable { .. })),
            "{err:?}"
        );
        assert!(err.to_string().contains("time out"), "{err}");
        let at: Vec<Instant> = seen.lock().unwrap().iter().map(|(t, _)| *t).collect();
        // 3 attempts of 1 + 2 requests each.
        assert_eq!(at.len(), 9);
        // Between attempts: the request's 100 ms timeout, then tenacity's 40 ms.
        assert!(at[3] - at[2] >= Duration::from_millis(140));
        assert!(started.elapsed() >= Duration::from_millis(9 * 100 + 2 * 40));
    }

    /// A refused request (HTTP 400) is not retried by the SDK but by tenacity; a reply
    /// without a reason is an error for the outer backoff, as `ret['reason']` is.
    #[tokio::test]
    async fn client_errors_are_retried_per_attempt() {
        let (base, seen) = scripted_judge(vec![
            Some((400, "")),
            Some((400, "")),
            Some((200, "Solved")),
        ])
        .await;
        let quick = RetryPolicy {
            wait_multiplier: Duration::from_millis(10),
            wait_min: Duration::from_millis(40),
            wait_max: Duration::from_millis(100),
            ..RetryPolicy::default()
        };
        let judge = judge(base, quick);
        assert_eq!(judge.answer_status(call()).await, Ok(AnswerStatus::Solved));
        let at: Vec<Instant> = seen.lock().unwrap().iter().map(|(t, _)| *t).collect();
        assert_eq!(at.len(), 3);
        assert!(at[1] - at[0] >= Duration::from_millis(40));
    }

    /// A scripted judge (a test double) failing `failures` times, then Solved.
    struct Flaky {
        failures: usize,
        calls: Mutex<Vec<Instant>>,
    }

    impl Judge for Flaky {
        fn call<'a>(&'a self, _call: JudgeCall) -> BoxFuture<'a, Result<Value, JudgeError>> {
            let mut calls = self.calls.lock().unwrap();
            calls.push(Instant::now());
            let n = calls.len();
            let failures = self.failures;
            Box::pin(async move {
                if n <= failures {
                    Err(JudgeError::Unreachable {
                        url: "flaky".into(),
                        detail: format!("failure {n}"),
                    })
                } else {
                    Ok(json!({"answer_status": "Solved", "reason": "scripted"}))
                }
            })
        }
    }

    fn answered() -> Converted {
        let name = "8_DFS_woFilter_w2.json";
        let file: Value =
            serde_json::from_slice(&std::fs::read(fixture("answers").join(name)).unwrap()).unwrap();
        umi_core::pass_rate::convert(&file, "DFS_woFilter_w2")
    }

    /// The outer backoff retries a whole judgment until a try that began after
    /// `max_time` fails.
    #[tokio::test]
    async fn judgments_are_retried_until_max_time() {
        let backoff = Backoff {
            max_time: Duration::from_millis(150),
            factor: Duration::from_millis(20),
        };
        let flaky = Flaky {
            failures: 2,
            calls: Mutex::default(),
        };
        let converted = answered();
        assert_eq!(
            judge_with_backoff(&converted, &flaky, &backoff).await,
            Ok(AnswerStatus::Solved)
        );
        assert_eq!(flaky.calls.lock().unwrap().len(), 3);

        let failing = Flaky {
            failures: usize::MAX,
            calls: Mutex::default(),
        };
        let started = Instant::now();
        let err = judge_with_backoff(&converted, &failing, &backoff)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, JudgeError::RetriedFor { last, .. } if last.to_string().contains("failure")),
            "{err}"
        );
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(failing.calls.lock().unwrap().len() >= 2);
    }
}
