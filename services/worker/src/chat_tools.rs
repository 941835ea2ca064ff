//! Function calling on the OpenAI-compatible chat endpoint, for models without a tool
//! template of their own (the bundled SmolLM2's ChatML has none): the functions are
//! listed in the system message, one JSON object a line inside `<tools></tools>`, and a
//! call is asked for as a JSON object `{"name", "arguments"}` inside
//! `<tool_call></tool_call>` tags, the convention of Hermes- and Qwen-style tool
//! templates (the one vLLM's `hermes` parser reads). Earlier calls and tool results are
//! rendered the same way, and the calls are read back from the output.
//!
//! Decoding is not constrained: a model that writes no well-formed call answers with
//! text, and a request that forces a call (`tool_choice` naming a function, or
//! `required`) is refused rather than answered without one.

use serde::Deserialize;
use serde_json::{json, Value};

/// A function the request offers (`tools[i].function`).
#[derive(Debug, Clone, Deserialize)]
pub struct Tool {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: Value,
}

/// A call in an assistant message of the conversation (`tool_calls[i].function`, or the
/// legacy `function_call`).
#[derive(Debug, Clone, Deserialize)]
pub struct CallIn {
    pub name: String,
    #[serde(default)]
    pub arguments: Value,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ToolCallIn {
    pub function: CallIn,
}

/// Checks the offered tools and the choice among them; the functions to list (none when
/// `tool_choice` is `none`).
pub fn check(tools: &[Tool], choice: Option<&Value>) -> Result<Vec<Value>, String> {
    for (i, tool) in tools.iter().enumerate() {
        if tool.kind != "function" {
            return Err(format!(
                "tools[{i}].type: {:?} is not \"function\"",
                tool.kind
            ));
        }
        if !tool.function["name"].is_string() {
            return Err(format!("tools[{i}].function has no \"name\""));
        }
    }
    match choice {
        None => {}
        Some(Value::String(c)) if c == "auto" => {}
        Some(Value::String(c)) if c == "none" => return Ok(vec![]),
        Some(other) => {
            return Err(format!(
                "tool_choice: {other} forces a call, which needs constrained decoding; this endpoint takes \"auto\" or \"none\""
            ))
        }
    }
    Ok(tools.iter().map(|t| t.function.clone()).collect())
}

/// The system message's addition listing `functions`.
pub fn tools_block(functions: &[Value]) -> String {
    let mut text = String::from(
        "\n\n# Tools\n\nYou may call the functions below. Their signatures, one a line, inside <tools></tools>:\n<tools>\n",
    );
    for f in functions {
        text.push_str(&f.to_string());
        text.push('\n');
    }
    text.push_str("</tools>\n\nTo call one, answer with a JSON object holding its name and its arguments inside <tool_call></tool_call>:\n<tool_call>\n{\"name\": <function name>, \"arguments\": <the arguments as a JSON object>}\n</tool_call>");
    text
}

/// An earlier call, as the model would have written it.
pub fn render_call(call: &CallIn) -> String {
    // Arguments arrive as a JSON text (OpenAI's form) or an object.
    let arguments = match &call.arguments {
        Value::String(text) => serde_json::from_str(text).unwrap_or_else(|_| json!(text)),
        other => other.clone(),
    };
    format!(
        "<tool_call>\n{}\n</tool_call>",
        json!({"name": call.name, "arguments": arguments})
    )
}

/// A tool's result, as the model is shown it.
pub fn render_result(content: &str) -> String {
    format!("<tool_response>\n{content}\n</tool_response>")
}

/// The calls in a model's output, each `(name, arguments as a JSON text)`, and the text
/// around them (`None` when nothing else is left). A block that is not a well-formed
/// call (or not closed) stays in the text.
pub fn parse_calls(output: &str) -> (Option<String>, Vec<(String, String)>) {
    const OPEN: &str = "<tool_call>";
    const CLOSE: &str = "</tool_call>";
    let mut calls = Vec::new();
    let mut text = String::new();
    let mut rest = output;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        let Some(end) = after.find(CLOSE) else {
            break;
        };
        let call = serde_json::from_str::<Value>(after[..end].trim())
            .ok()
            .and_then(|v| {
                let name = v.get("name")?.as_str()?.to_string();
                let arguments = match v.get("arguments") {
                    None | Some(Value::Null) => "{}".to_string(),
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                };
                Some((name, arguments))
            });
        match call {
            Some(call) => {
                text.push_str(&rest[..start]);
                calls.push(call);
            }
            None => text.push_str(&rest[..start + OPEN.len() + end + CLOSE.len()]),
        }
        rest = &after[end + CLOSE.len()..];
    }
    text.push_str(rest);
    let text = text.trim();
    ((!text.is_empty()).then(|| text.to_string()), calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_read_back_and_the_rest_is_the_content() {
        let (content, calls) = parse_calls(
            "Let me look.\n<tool_call>\n{\"name\": \"search\", \"arguments\": {\"q\": \"é\"}}\n</tool_call>",
        );
        assert_eq!(content.as_deref(), Some("Let me look."));
        assert_eq!(calls, [("search".to_string(), "{\"q\":\"é\"}".to_string())]);
        // Only a call: no content.
        let (content, calls) =
            parse_calls("<tool_call>{\"name\": \"f\", \"arguments\": \"{}\"}</tool_call>");
        assert_eq!((content, calls.len()), (None, 1));
        // A malformed or unclosed block is text.
        let (content, calls) = parse_calls("<tool_call>{not json}</tool_call> and <tool_call>{");
        assert!(calls.is_empty());
        assert_eq!(
            content.as_deref(),
            Some("<tool_call>{not json}</tool_call> and <tool_call>{")
        );
    }

    #[test]
    fn a_rendered_call_reads_back_as_itself() {
        let call = CallIn {
            name: "weather".into(),
            arguments: json!("{\"city\": \"Paris\"}"),
        };
        let (_, calls) = parse_calls(&render_call(&call));
        assert_eq!(
            calls,
            [("weather".to_string(), "{\"city\":\"Paris\"}".to_string())]
        );
    }

    #[test]
    fn forced_calls_and_other_tool_kinds_are_refused() {
        let tool = |kind: &str| Tool {
            kind: kind.into(),
            function: json!({"name": "f"}),
        };
        assert_eq!(check(&[tool("function")], None).unwrap().len(), 1);
        assert!(check(&[tool("function")], Some(&json!("none")))
            .unwrap()
            .is_empty());
        let forced = json!({"type": "function", "function": {"name": "f"}});
        let err = check(&[tool("function")], Some(&forced)).unwrap_err();
        assert!(err.contains("tool_choice"), "{err}");
        assert!(check(&[tool("retrieval")], None).is_err());
    }
}
