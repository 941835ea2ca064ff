//! Function calling on the OpenAI-compatible chat endpoint, for models without a tool
//! template of their own (the bundled SmolLM2's ChatML has none): the functions are
//! listed in the system message, one JSON object a line inside `<tools></tools>`, and a
//! call is asked for as a JSON object `{"name", "arguments"}` inside
//! `<tool_call></tool_call>` tags, the convention of Hermes- and Qwen-style tool
//! templates (the one vLLM's `hermes` parser reads). Earlier calls and tool results are
//! rendered the same way, and the calls are read back from the output.
//!
//! With `tool_choice: "auto"` decoding is free: a model that writes no well-formed call
//! answers with text. A forced call is decoded under a grammar (structured output), so
//! the model cannot help but call: `tool_choice` naming a function constrains the output
//! to that function's arguments (a JSON value valid under its `parameters` schema), as
//! vLLM and StableToolBench's judge expect; `required` to one `{"name", "arguments"}`
//! object naming one of the offered functions.

use serde::Deserialize;
use serde_json::{json, Value};
use umi_engine::Constraint;

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

/// How a reply's calls are written and read back.
#[derive(Debug, Clone, PartialEq)]
pub enum Calls {
    /// Freely, in `<tool_call>` blocks among text (`tool_choice: "auto"`).
    Written,
    /// The whole output is this function's arguments (`tool_choice` naming it).
    Named(String),
    /// The whole output is one `{"name", "arguments"}` object (`tool_choice: "required"`).
    Any,
}

/// What a request offers: the functions listed in the prompt (none when `tool_choice`
/// is `none`) and how calls come back.
#[derive(Debug, Clone)]
pub struct Offer {
    pub functions: Vec<Value>,
    pub calls: Calls,
}

impl Offer {
    /// The grammar a forced call is decoded under.
    pub fn constraint(&self) -> Option<Constraint> {
        // OpenAI's arguments are a JSON object: a schema that does not say (`{}`, common
        // for functions without arguments) is made to.
        let parameters = |f: &Value| match f.get("parameters") {
            Some(Value::Object(p)) if p.contains_key("type") => Value::Object(p.clone()),
            Some(Value::Object(p)) => {
                let mut p = p.clone();
                p.insert("type".into(), json!("object"));
                Value::Object(p)
            }
            _ => json!({"type": "object"}),
        };
        match &self.calls {
            Calls::Written => None,
            Calls::Named(name) => {
                let function = self.functions.iter().find(|f| f["name"] == **name)?;
                Some(Constraint::JsonSchema(parameters(function)))
            }
            Calls::Any => {
                let one_of: Vec<Value> = self
                    .functions
                    .iter()
                    .map(|f| {
                        json!({
                            "type": "object",
                            "properties": {"name": {"const": f["name"]}, "arguments": parameters(f)},
                            "required": ["name", "arguments"],
                            "additionalProperties": false,
                        })
                    })
                    .collect();
                Some(Constraint::JsonSchema(json!({"anyOf": one_of})))
            }
        }
    }

    /// The reply's text (`None` when nothing but calls) and its calls, each `(name,
    /// arguments as a JSON text)`.
    pub fn read(&self, output: &str) -> (Option<String>, Vec<(String, String)>) {
        match &self.calls {
            Calls::Written => parse_calls(output),
            Calls::Named(name) => (None, vec![(name.clone(), output.trim().to_string())]),
            Calls::Any => {
                let call = serde_json::from_str::<Value>(output).ok().and_then(|v| {
                    Some((
                        v["name"].as_str()?.to_string(),
                        v.get("arguments")?.to_string(),
                    ))
                });
                match call {
                    Some(call) => (None, vec![call]),
                    // Cut by max_tokens before the object closed: the text as it is.
                    None => (Some(output.to_string()), vec![]),
                }
            }
        }
    }
}

/// Checks the offered tools and the choice among them.
pub fn check(tools: &[Tool], choice: Option<&Value>) -> Result<Offer, String> {
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
    let functions: Vec<Value> = tools.iter().map(|t| t.function.clone()).collect();
    let calls = match choice {
        None => Calls::Written,
        Some(Value::String(c)) if c == "auto" => Calls::Written,
        Some(Value::String(c)) if c == "none" => {
            return Ok(Offer {
                functions: vec![],
                calls: Calls::Written,
            })
        }
        Some(Value::String(c)) if c == "required" => Calls::Any,
        Some(named) if named["type"] == "function" && named["function"]["name"].is_string() => {
            let name = named["function"]["name"].as_str().unwrap_or_default();
            if !functions.iter().any(|f| f["name"] == name) {
                return Err(format!(
                    "tool_choice: names the function {name:?}, which tools do not offer"
                ));
            }
            Calls::Named(name.to_string())
        }
        Some(other) => {
            return Err(format!(
                "tool_choice: {other} is not \"auto\", \"none\", \"required\" or {{\"type\": \"function\", \"function\": {{\"name\": …}}}}"
            ))
        }
    };
    if calls != Calls::Written && functions.is_empty() {
        return Err("tool_choice: forces a call, but no tools are offered".into());
    }
    if let Some((i, _)) = functions.iter().enumerate().find(|(_, f)| {
        f.get("parameters")
            .is_some_and(|p| !p.is_object() && !p.is_null())
    }) {
        return Err(format!(
            "tools[{i}].function.parameters: not a JSON schema object"
        ));
    }
    Ok(Offer { functions, calls })
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

    fn tool(kind: &str, function: Value) -> Tool {
        Tool {
            kind: kind.into(),
            function,
        }
    }

    #[test]
    fn choices_are_read_and_bad_ones_refused_by_name() {
        let f = || tool("function", json!({"name": "f"}));
        assert_eq!(check(&[f()], None).unwrap().calls, Calls::Written);
        assert_eq!(check(&[f()], None).unwrap().functions.len(), 1);
        assert!(check(&[f()], Some(&json!("none")))
            .unwrap()
            .functions
            .is_empty());
        assert_eq!(
            check(&[f()], Some(&json!("required"))).unwrap().calls,
            Calls::Any
        );
        let forced = json!({"type": "function", "function": {"name": "f"}});
        assert_eq!(
            check(&[f()], Some(&forced)).unwrap().calls,
            Calls::Named("f".into())
        );
        let other = json!({"type": "function", "function": {"name": "g"}});
        let err = check(&[f()], Some(&other)).unwrap_err();
        assert!(
            err.contains("\"g\"") && err.contains("tool_choice"),
            "{err}"
        );
        let err = check(&[], Some(&json!("required"))).unwrap_err();
        assert!(err.contains("no tools"), "{err}");
        let err = check(&[f()], Some(&json!("sometimes"))).unwrap_err();
        assert!(err.starts_with("tool_choice"), "{err}");
        assert!(check(&[tool("retrieval", json!({"name": "f"}))], None).is_err());
        let bad = tool("function", json!({"name": "f", "parameters": "x"}));
        let err = check(&[bad], None).unwrap_err();
        assert!(err.starts_with("tools[0].function.parameters"), "{err}");
    }

    #[test]
    fn a_forced_call_is_decoded_under_its_functions_schema_and_read_back() {
        let params = json!({"type": "object", "properties": {"city": {"type": "string"}}});
        let tools = [
            tool("function", json!({"name": "weather", "parameters": params})),
            tool("function", json!({"name": "time"})),
        ];
        let named = json!({"type": "function", "function": {"name": "weather"}});
        let offer = check(&tools, Some(&named)).unwrap();
        assert_eq!(offer.constraint(), Some(Constraint::JsonSchema(params)));
        assert_eq!(
            offer.read("{\"city\": \"Paris\"}"),
            (
                None,
                vec![("weather".into(), "{\"city\": \"Paris\"}".into())]
            )
        );
        let any = check(&tools, Some(&json!("required"))).unwrap();
        let Some(Constraint::JsonSchema(schema)) = any.constraint() else {
            panic!("no schema")
        };
        assert_eq!(
            schema["anyOf"][1]["properties"]["name"],
            json!({"const": "time"})
        );
        assert_eq!(
            schema["anyOf"][1]["properties"]["arguments"],
            json!({"type": "object"})
        );
        assert_eq!(
            any.read("{\"name\": \"time\", \"arguments\": {}}"),
            (None, vec![("time".into(), "{}".into())])
        );
        // Cut before the object closed: text, no call.
        assert_eq!(any.read("{\"name\": \"ti").1.len(), 0);
        assert_eq!(check(&tools, None).unwrap().constraint(), None);
        // A schema that names no type (`{}`) still asks for an object.
        let untyped = [tool(
            "function",
            json!({"name": "ping", "parameters": {"properties": {}}}),
        )];
        let named = json!({"type": "function", "function": {"name": "ping"}});
        assert_eq!(
            check(&untyped, Some(&named)).unwrap().constraint(),
            Some(Constraint::JsonSchema(
                json!({"properties": {}, "type": "object"})
            ))
        );
    }
}
