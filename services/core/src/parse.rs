//! Reading the roles' outputs: the planner's decision, the caller's API call, and the
//! evaluator's view of a whole prediction, each exactly as the reference reads them.

use serde::{Deserialize, Serialize};

pub const GIVE_UP: &str = "Next: give up.";
pub const CONCLUSION: &str = "Next: conclusion.";
pub const CALLER: &str = "Next: caller.";

/// What the planner decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Caller,
    Conclusion,
    GiveUp,
}

/// The static pipeline's clean-up of every role's output: a leading `": "` is dropped,
/// and an output that is empty, `.` or `,` (after stripping) becomes `none`.
pub fn postprocess(text: &str) -> String {
    let text = text.strip_prefix(": ").unwrap_or(text);
    match crate::pyjson::strip(text) {
        "" | "." | "," => "none".to_string(),
        _ => text.to_string(),
    }
}

/// `generate_stream`'s stop string: the decoded text is cut at the last `</s>` in it.
pub const STOP_STRING: &str = "</s>";

/// The real-time pipeline's clean-up of a role's decoded text: cut at the stop string,
/// then stripped (Python's `strip`).
pub fn realtime_output(text: &str) -> &str {
    let text = text.rfind(STOP_STRING).map_or(text, |at| &text[..at]);
    crate::pyjson::strip(text)
}

/// The real-time planner's reading of its output (`CollbaAgentV3.prediction`): a leading
/// `": "` dropped; `None` (try again) when what is left is empty, `.` or `,`. A literal
/// `none` is a valid output, as in the reference.
pub fn realtime_planner(text: &str) -> Option<String> {
    let text = realtime_output(text);
    let text = text.strip_prefix(": ").unwrap_or(text);
    match crate::pyjson::strip(text) {
        "" | "." | "," => None,
        _ => Some(text.to_string()),
    }
}

/// Cuts the planner output right after its first marker, looked for in the order give
/// up, conclusion, caller. With no marker it is a caller step and `fallback` is appended
/// (`"Next: caller."` in the static pipeline, `" Next: caller."` in real time).
pub fn cut_planner(text: &str, fallback: &str) -> (String, Decision) {
    for (marker, decision) in [
        (GIVE_UP, Decision::GiveUp),
        (CONCLUSION, Decision::Conclusion),
        (CALLER, Decision::Caller),
    ] {
        if let Some(at) = text.find(marker) {
            return (text[..at + marker.len()].to_string(), decision);
        }
    }
    (format!("{text}{fallback}"), Decision::Caller)
}

/// Action name and raw input text of a caller output: text after the last `Action:` (up
/// to `Action Input:`) and after the last `Action Input:`, stripped; `none` and `{}` when
/// absent.
pub fn parse_action(text: &str) -> (String, String) {
    let input = match text.rfind("Action Input:") {
        Some(at) => crate::pyjson::strip(&text[at + "Action Input:".len()..]).to_string(),
        None => "{}".to_string(),
    };
    let action = match text.rfind("Action:") {
        Some(at) => {
            let rest = &text[at + "Action:".len()..];
            let rest = match rest.find("Action Input:") {
                Some(end) => &rest[..end],
                None => rest,
            };
            crate::pyjson::strip(rest).to_string()
        }
        None => "none".to_string(),
    };
    (action, input)
}

/// Leniently extracts the JSON object a model meant as its API arguments: the first
/// balanced `{...}` (ignoring code fences and trailing chatter), or an error saying why.
pub fn lenient_json_object(text: &str) -> Result<serde_json::Value, String> {
    let start = text
        .find('{')
        .ok_or_else(|| format!("no JSON object in {text:?}"))?;
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in text[start..].char_indices() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    let candidate = &text[start..start + i + 1];
                    return serde_json::from_str(candidate)
                        .map_err(|e| format!("invalid JSON {candidate:?}: {e}"));
                }
            }
            _ => {}
        }
    }
    Err(format!("unbalanced JSON object in {text:?}"))
}

/// The evaluator's plan labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Plan {
    Call,
    Finish,
    #[serde(rename = "give up")]
    GiveUp,
}

/// A prediction or reference as `evaluate-multi_agent.py::parse_output` reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub plan: Plan,
    pub action: String,
    pub action_input: String,
    pub answer: String,
}

impl Parsed {
    /// A give-up or a finish: no call (`none`, `{}`).
    fn without_call(plan: Plan, answer: String) -> Self {
        Parsed {
            plan,
            action: "none".into(),
            action_input: "{}".into(),
            answer,
        }
    }

    fn call(text: &str) -> Self {
        let (action, action_input) = parse_action(text);
        Parsed {
            plan: Plan::Call,
            action,
            action_input,
            answer: String::new(),
        }
    }
}

pub fn parse_output(text: &str) -> Parsed {
    if text.contains("Next: give up") {
        return Parsed::without_call(Plan::GiveUp, String::new());
    }
    if text.contains("Next: conclusion") {
        let answer = if text.contains("conclusion:") {
            match text.rfind("conclusion: ") {
                Some(at) => &text[at + "conclusion: ".len()..],
                None => text,
            }
        } else {
            text
        };
        return Parsed::without_call(Plan::Finish, answer.replace("</s>", ""));
    }
    // Python's text.split("</s>")[1]: the part after the first </s>; with none, the
    // reference raises IndexError, which here yields an empty call.
    Parsed::call(text.split("</s>").nth(1).unwrap_or(""))
}

/// `evaluate-backbone.py`'s reading of a single-model output.
pub fn parse_backbone_output(text: &str) -> Parsed {
    if text.contains("conclusion: give up") {
        return Parsed::without_call(Plan::GiveUp, String::new());
    }
    if let Some(at) = text.rfind("conclusion: ") {
        return Parsed::without_call(Plan::Finish, text[at + "conclusion: ".len()..].to_string());
    }
    Parsed::call(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planner_cut_checks_give_up_then_conclusion_then_caller() {
        let (cut, d) = cut_planner(
            "try X. Next: caller. Next: give up. trailing",
            "Next: caller.",
        );
        assert_eq!(d, Decision::GiveUp);
        assert_eq!(cut, "try X. Next: caller. Next: give up.");
        let (cut, d) = cut_planner("done\n Next: conclusion.junk", "Next: caller.");
        assert_eq!(
            (cut.as_str(), d),
            ("done\n Next: conclusion.", Decision::Conclusion)
        );
        let (cut, d) = cut_planner("call it", " Next: caller.");
        assert_eq!(
            (cut.as_str(), d),
            ("call it Next: caller.", Decision::Caller)
        );
    }

    #[test]
    fn postprocess_rules() {
        assert_eq!(postprocess(": hi"), "hi");
        assert_eq!(postprocess(" . "), "none");
        assert_eq!(postprocess(""), "none");
        assert_eq!(realtime_output("  x  "), "x");
        assert_eq!(realtime_planner(" , "), None);
    }

    #[test]
    fn caller_output_parsing() {
        assert_eq!(
            parse_action("Action: search_for_yt\nAction Input: {\n  \"q\": \"comedy\"\n}"),
            (
                "search_for_yt".to_string(),
                "{\n  \"q\": \"comedy\"\n}".to_string()
            )
        );
        assert_eq!(
            parse_action("I will search."),
            ("none".to_string(), "{}".to_string())
        );
        assert_eq!(
            parse_action("Action: a\nAction: b"),
            ("b".to_string(), "{}".to_string())
        );
    }

    #[test]
    fn lenient_json_finds_the_object() {
        let v = lenient_json_object("```json\n{\"q\": \"a}b\", \"n\": {\"x\": 1}}\n``` then more")
            .unwrap();
        assert_eq!(v["q"], "a}b");
        assert!(lenient_json_object("no json").is_err());
        assert!(lenient_json_object("{\"a\": 1").is_err());
    }

    #[test]
    fn evaluator_parsing() {
        let call = parse_output(
            "asssitant: go Next: caller.</s>caller: Action: f\nAction Input: {\"a\": 1}",
        );
        assert_eq!(
            (call.plan, call.action.as_str(), call.action_input.as_str()),
            (Plan::Call, "f", "{\"a\": 1}")
        );
        let fin = parse_output("assistant: ok Next: conclusion.</s>conclusion: The answer</s>");
        assert_eq!(
            (fin.plan, fin.answer.as_str()),
            (Plan::Finish, "The answer")
        );
        assert_eq!(parse_output("hmm Next: give up.").plan, Plan::GiveUp);
        let no_sep = parse_output("Action: f");
        assert_eq!((no_sep.plan, no_sep.action.as_str()), (Plan::Call, "none"));
    }
}
