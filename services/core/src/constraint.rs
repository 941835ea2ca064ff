//! Grammars a model's text may be held to (structured output; the engine decodes under
//! them), and the one umi writes for α-UMi's caller (`--constrain caller`, off by
//! default: the reference decodes freely).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::agent::{BoxFuture, Generated, RoleKind, RoleModels, RoleRequest};
use crate::error::Result;
use crate::tool::ToolDoc;

/// What a request's text must match.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Constraint {
    /// Any JSON object (OpenAI's `response_format: json_object`).
    JsonObject,
    /// A JSON value valid under this JSON schema.
    JsonSchema(Value),
    /// Text matching this regular expression as a whole.
    Regex(String),
    /// A Lark grammar (llguidance's dialect).
    Lark(String),
}

/// The caller's output held to its training form: `Action: <one of the offered tools>`,
/// then `\nAction Input: ` and a JSON object whose keys are among that tool's parameters
/// (any JSON values, any subset: the tool docs mark none as required, and the reference's
/// callers leave some out). `Finish` is the planner's to choose, not the caller's. None
/// when no tool is offered.
pub fn caller_grammar(tools: &[ToolDoc]) -> Option<Constraint> {
    let mut alternatives = Vec::new();
    let mut rules = String::new();
    for (i, tool) in tools.iter().filter(|t| t.name() != "Finish").enumerate() {
        let properties: Map<String, Value> = match tool.doc().get("input") {
            Some(Value::Object(params)) => params.keys().map(|k| (k.clone(), json!({}))).collect(),
            _ => Map::new(),
        };
        let schema =
            json!({"type": "object", "properties": properties, "additionalProperties": false});
        // A JSON string is a Lark string literal (same quotes and escapes), but for DEL,
        // which JSON leaves as it is and Lark refuses.
        let name = Value::String(tool.name().to_string())
            .to_string()
            .replace('\u{7f}', "\\u007f");
        alternatives.push(format!("{name} \"\\nAction Input: \" input{i}"));
        rules.push_str(&format!("input{i}: %json {schema}\n"));
    }
    if alternatives.is_empty() {
        return None;
    }
    Some(Constraint::Lark(format!(
        "start: \"Action: \" call\ncall: {}\n{rules}",
        alternatives.join("\n    | ")
    )))
}

/// Roles whose caller decodes under its tools' grammar (`--constrain caller`): each
/// caller request is marked, and whatever serves it (an engine in process, a worker over
/// gRPC, an OpenAI-compatible server that takes Lark grammars) applies the grammar.
pub struct ConstrainCaller(pub Arc<dyn RoleModels>);

impl RoleModels for ConstrainCaller {
    fn generate<'a>(&'a self, mut request: RoleRequest) -> BoxFuture<'a, Result<Generated>> {
        if request.role == RoleKind::Caller {
            request.constrain_call = true;
        }
        self.0.generate(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(doc: Value) -> ToolDoc {
        ToolDoc::try_from(doc).unwrap()
    }

    #[test]
    fn the_caller_grammar_offers_each_tool_with_its_own_parameters() {
        let tools = [
            tool(
                json!({"Name": "search_for_web", "function": "…", "input": {"q": "string, the query", "n": "integer, "}}),
            ),
            tool(json!({"Name": "list_all_for_geo", "function": "…", "input": {}})),
            tool(json!({"Name": "Finish", "function": "…"})),
        ];
        let Some(Constraint::Lark(grammar)) = caller_grammar(&tools) else {
            panic!("no grammar")
        };
        assert_eq!(
            grammar,
            "start: \"Action: \" call\n\
             call: \"search_for_web\" \"\\nAction Input: \" input0\n    | \"list_all_for_geo\" \"\\nAction Input: \" input1\n\
             input0: %json {\"type\":\"object\",\"properties\":{\"q\":{},\"n\":{}},\"additionalProperties\":false}\n\
             input1: %json {\"type\":\"object\",\"properties\":{},\"additionalProperties\":false}\n"
        );
        assert_eq!(caller_grammar(&tools[2..]), None);
        assert_eq!(caller_grammar(&[]), None);
        // Quotes and newlines are escaped as JSON escapes them; DEL, which JSON leaves
        // bare and Lark refuses, too.
        let odd = [tool(json!({"Name": "a\"b\nc\u{7f}", "input": {}}))];
        let Some(Constraint::Lark(grammar)) = caller_grammar(&odd) else {
            panic!("no grammar")
        };
        assert!(
            grammar.contains("call: \"a\\\"b\\nc\\u007f\" "),
            "{grammar}"
        );
    }

    /// Records each request's grammar.
    #[derive(Default)]
    struct Grammars(std::sync::Mutex<Vec<(RoleKind, Option<Constraint>)>>);

    impl RoleModels for Grammars {
        fn generate<'a>(&'a self, request: RoleRequest) -> BoxFuture<'a, Result<Generated>> {
            self.0
                .lock()
                .unwrap()
                .push((request.role, request.constraint()));
            Box::pin(async { Ok(Generated::default()) })
        }
    }

    #[test]
    fn only_the_callers_requests_are_constrained() {
        let tools = vec![tool(json!({"Name": "f_for_t", "input": {"a": "string, "}}))];
        let seen = Arc::new(Grammars::default());
        let roles = ConstrainCaller(seen.clone());
        for role in RoleKind::ALL {
            let request = RoleRequest::alpha_umi(role, tools.clone(), vec![], None);
            crate::testing::block_on(roles.generate(request)).unwrap();
        }
        let seen = seen.0.lock().unwrap().clone();
        assert_eq!(
            seen,
            [
                (RoleKind::Planner, None),
                (RoleKind::Caller, caller_grammar(&tools)),
                (RoleKind::Summarizer, None),
            ]
        );
        // Unmarked, a caller request is free.
        let free = RoleRequest::alpha_umi(RoleKind::Caller, tools, vec![], None);
        assert_eq!(free.constraint(), None);
    }
}
