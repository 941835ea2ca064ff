//! Local tools that need no network, so the embedded demo does something true end to end:
//! arithmetic, text statistics and calendar arithmetic. They are described as ToolBench
//! APIs (category `Local`, tool `umi local`) and called like any other.

use serde_json::{json, Value};
use umi_core::agent::BoxFuture;
use umi_core::env::{ApiCall, ApiReply, BackendFailure, ReplySource, SourcedReply, ToolBackend};
use umi_core::tool::{ApiParam, ApiSpec};

pub const TOOL_NAME: &str = "umi local";

fn param(name: &str, kind: &str, description: &str) -> ApiParam {
    ApiParam {
        name: name.into(),
        kind: kind.into(),
        description: Some(description.into()),
        default: None,
    }
}

fn api(name: &str, description: &str, required: Vec<ApiParam>) -> ApiSpec {
    ApiSpec {
        category_name: "Local".into(),
        tool_name: TOOL_NAME.into(),
        api_name: name.into(),
        api_description: Some(description.into()),
        required_parameters: required,
        optional_parameters: vec![],
        method: Some("GET".into()),
        shown_description: None,
    }
}

/// The APIs this backend serves, as they appear in a query's `api_list`.
pub fn apis() -> Vec<ApiSpec> {
    vec![
        api(
            "calculator",
            "Evaluates an arithmetic expression with + - * / ^ and parentheses, e.g. (3 + 4) * 2.",
            vec![param(
                "expression",
                "STRING",
                "The arithmetic expression to evaluate.",
            )],
        ),
        api(
            "text_stats",
            "Counts the characters, words and sentences of a text.",
            vec![param("text", "STRING", "The text to measure.")],
        ),
        api(
            "days_between",
            "Number of days from one calendar date to another (YYYY-MM-DD).",
            vec![
                param("start", "STRING", "First date, YYYY-MM-DD."),
                param("end", "STRING", "Second date, YYYY-MM-DD."),
            ],
        ),
    ]
}

pub struct LocalTools;

impl LocalTools {
    pub fn answer(api_name: &str, input: &str) -> ApiReply {
        let args = match umi_core::parse::lenient_json_object(input) {
            Ok(v) => v,
            Err(e) => return ApiReply::failed(format!("Tool input parse error...\n{e}")),
        };
        let text = |k: &str| args.get(k).and_then(Value::as_str).map(str::to_string);
        let result = match api_name {
            "calculator" => text("expression")
                .ok_or("missing \"expression\"".to_string())
                .and_then(|e| evaluate(&e))
                .map(|v| json!({"result": v})),
            "text_stats" => text("text").ok_or("missing \"text\"".to_string()).map(|t| {
                json!({
                    "characters": t.chars().count(),
                    "words": t.split_whitespace().count(),
                    "sentences": t.split(['.', '!', '?']).filter(|s| !s.trim().is_empty()).count(),
                })
            }),
            "days_between" => match (text("start"), text("end")) {
                (Some(a), Some(b)) => {
                    days(&a).and_then(|x| days(&b).map(|y| json!({"days": y - x})))
                }
                _ => Err("need \"start\" and \"end\"".to_string()),
            },
            other => Err(format!("unknown local API {other:?}")),
        };
        match result {
            // As ToolBench's server answers: the result's text.
            Ok(v) => ApiReply::text(v.to_string()),
            Err(e) => ApiReply::failed(format!("Function executing error...\n{e}")),
        }
    }
}

impl ToolBackend for LocalTools {
    fn call<'a>(&'a self, call: &'a ApiCall) -> BoxFuture<'a, Result<ApiReply, BackendFailure>> {
        Box::pin(async move { Ok(LocalTools::answer(&call.api_name, &call.tool_input)) })
    }

    fn call_sourced<'a>(&'a self, call: &'a ApiCall) -> BoxFuture<'a, SourcedReply> {
        Box::pin(async move { (self.call(call).await, ReplySource::Local) })
    }
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date (proleptic Gregorian).
/// Years `days_between` takes, either side of year 0.
const MAX_YEAR: i64 = 1_000_000;

fn days(date: &str) -> Result<i64, String> {
    let parts: Vec<i64> = date
        .trim()
        .split('-')
        .map(|p| p.parse::<i64>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("bad date {date:?}"))?;
    let [y, m, d] = parts[..] else {
        return Err(format!("bad date {date:?}"));
    };
    // Years far out of range would overflow the day arithmetic below.
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || !(-MAX_YEAR..=MAX_YEAR).contains(&y) {
        return Err(format!("bad date {date:?}"));
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Ok(era * 146_097 + doe - 719_468)
}

/// The longest expression the calculator takes, in bytes.
pub const MAX_EXPRESSION_BYTES: usize = 10_000;
/// How deeply parentheses, signs and powers may nest: the parser recurses once per level,
/// and a model (or an attacker) can write thousands of `(`.
pub const MAX_NESTING: usize = 100;

/// Recursive-descent evaluation of + - * / ^ ( ) over f64. Too long or too deeply
/// nested input is an error (an observation for the model), never a stack overflow.
pub fn evaluate(expr: &str) -> Result<f64, String> {
    if expr.len() > MAX_EXPRESSION_BYTES {
        return Err(format!(
            "the expression is {} bytes long; at most {MAX_EXPRESSION_BYTES} are evaluated",
            expr.len()
        ));
    }
    struct P<'a> {
        s: &'a [u8],
        i: usize,
        depth: usize,
    }
    impl P<'_> {
        /// Runs `f` one nesting level deeper, refusing past `MAX_NESTING`.
        fn nested(
            &mut self,
            f: impl FnOnce(&mut Self) -> Result<f64, String>,
        ) -> Result<f64, String> {
            if self.depth >= MAX_NESTING {
                return Err(format!(
                    "the expression nests deeper than {MAX_NESTING} levels at position {}",
                    self.i
                ));
            }
            self.depth += 1;
            let v = f(self);
            self.depth -= 1;
            v
        }
        fn ws(&mut self) {
            while self.s.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
                self.i += 1;
            }
        }
        fn peek(&mut self) -> Option<u8> {
            self.ws();
            self.s.get(self.i).copied()
        }
        fn expr(&mut self) -> Result<f64, String> {
            let mut v = self.term()?;
            while let Some(op @ (b'+' | b'-')) = self.peek() {
                self.i += 1;
                let r = self.term()?;
                v = if op == b'+' { v + r } else { v - r };
            }
            Ok(v)
        }
        fn term(&mut self) -> Result<f64, String> {
            let mut v = self.power()?;
            while let Some(op @ (b'*' | b'/')) = self.peek() {
                self.i += 1;
                let r = self.power()?;
                if op == b'/' && r == 0.0 {
                    return Err("division by zero".into());
                }
                v = if op == b'*' { v * r } else { v / r };
            }
            Ok(v)
        }
        fn power(&mut self) -> Result<f64, String> {
            let base = self.unary()?;
            if self.peek() == Some(b'^') {
                self.i += 1;
                return Ok(base.powf(self.nested(Self::power)?));
            }
            Ok(base)
        }
        fn unary(&mut self) -> Result<f64, String> {
            match self.peek() {
                // A sign applies to a whole power, as in Python: -2^2 is -4.
                Some(b'-') => {
                    self.i += 1;
                    Ok(-self.nested(Self::power)?)
                }
                Some(b'(') => {
                    self.i += 1;
                    let v = self.nested(Self::expr)?;
                    if self.peek() != Some(b')') {
                        return Err("missing )".into());
                    }
                    self.i += 1;
                    Ok(v)
                }
                _ => {
                    let start = self.i;
                    while self
                        .s
                        .get(self.i)
                        .is_some_and(|c| c.is_ascii_digit() || *c == b'.')
                    {
                        self.i += 1;
                    }
                    std::str::from_utf8(&self.s[start..self.i])
                        .ok()
                        .and_then(|t| t.parse().ok())
                        .ok_or_else(|| format!("expected a number at position {start}"))
                }
            }
        }
    }
    let mut p = P {
        s: expr.as_bytes(),
        i: 0,
        depth: 0,
    };
    let v = p.expr()?;
    if p.peek().is_some() {
        return Err(format!("unexpected text at position {}", p.i));
    }
    if !v.is_finite() {
        return Err(format!("the result is not a finite number ({v})"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calculator() {
        assert_eq!(evaluate("(3 + 4) * 2").unwrap(), 14.0);
        assert_eq!(evaluate("2 ^ 3 ^ 2").unwrap(), 512.0);
        assert_eq!(evaluate("-1.5 + 10 / 4").unwrap(), 1.0);
        assert_eq!(evaluate("-2^2").unwrap(), -4.0);
        assert_eq!(evaluate("2^-1").unwrap(), 0.5);
        assert!(evaluate("10^400").unwrap_err().contains("not a finite"));
        assert!(evaluate("1 / 0").is_err());
        assert!(evaluate("2 +").is_err());
    }

    #[test]
    fn deep_or_long_expressions_are_errors_not_crashes() {
        // About 10,000 nested parentheses overflowed the stack and aborted the process.
        let deep = format!("{}1{}", "(".repeat(4000), ")".repeat(4000));
        let err = evaluate(&deep).unwrap_err();
        assert!(err.contains("nests deeper than 100"), "{err}");
        assert!(evaluate(&"-".repeat(5000))
            .unwrap_err()
            .contains("nests deeper"));
        assert!(evaluate(&"2^".repeat(3000))
            .unwrap_err()
            .contains("nests deeper"));
        let nested_ok = format!("{}1{}", "(".repeat(50), ")".repeat(50));
        assert_eq!(evaluate(&nested_ok).unwrap(), 1.0);
        let long = "1+".repeat(6000) + "1";
        assert!(evaluate(&long).unwrap_err().contains("at most 10000"));
        // Through the tool, as a model's call: an observation, not a crash.
        let reply = LocalTools::answer(
            "calculator",
            &serde_json::json!({ "expression": "(".repeat(20_000) }).to_string(),
        );
        assert!(
            reply.error_text().starts_with("Function executing error"),
            "{}",
            reply.error
        );
    }

    #[test]
    fn far_years_are_refused_not_overflowed() {
        let reply = LocalTools::answer(
            "days_between",
            r#"{"start": "9223372036854775807-01-01", "end": "-9223372036854775807-12-31"}"#,
        );
        assert!(reply.error_text().contains("bad date"), "{reply:?}");
        let ok = LocalTools::answer(
            "days_between",
            r#"{"start": "0001-01-01", "end": "999999-12-31"}"#,
        );
        assert!(ok.error_text().is_empty(), "{ok:?}");
    }

    #[test]
    fn tools_answer_and_reject_bad_input() {
        assert_eq!(
            LocalTools::answer("calculator", r#"{"expression": "6*7"}"#).response,
            r#"{"result":42.0}"#
        );
        assert_eq!(
            LocalTools::answer(
                "days_between",
                r#"{"start": "2024-02-28", "end": "2024-03-01"}"#
            )
            .response,
            r#"{"days":2}"#
        );
        assert_eq!(
            LocalTools::answer("text_stats", r#"{"text": "Hi there. Bye!"}"#).response,
            r#"{"characters":14,"words":3,"sentences":2}"#
        );
        assert!(LocalTools::answer("calculator", "nonsense")
            .error_text()
            .starts_with("Tool input parse error"));
    }
}
