//! Tool documentation as the models see it (`{"Name", "function", "input"}`), and how
//! ToolBench derives it from a query's `api_list`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::CoreError;
use crate::pyjson;

/// One tool's model-facing doc. The JSON object is kept as given (key order included)
/// because the prompt shows it through `json.dumps`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub struct ToolDoc {
    name: String,
    doc: Value,
}

impl ToolDoc {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn doc(&self) -> &Value {
        &self.doc
    }

    /// `json.dumps(tool)` as the reference writes it into `{doc}`.
    pub fn render(&self) -> String {
        pyjson::dumps(&self.doc)
    }
}

impl TryFrom<Value> for ToolDoc {
    type Error = CoreError;

    fn try_from(doc: Value) -> Result<Self, CoreError> {
        let name = doc
            .get("Name")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                CoreError::invalid(
                    "tool doc",
                    format!("no string \"Name\" in {}", pyjson::dumps(&doc)),
                )
            })?
            .to_string();
        if !doc.is_object() {
            return Err(CoreError::invalid("tool doc", "not a JSON object"));
        }
        Ok(ToolDoc { name, doc })
    }
}

impl From<ToolDoc> for Value {
    fn from(t: ToolDoc) -> Value {
        t.doc
    }
}

/// `{doc}`: each tool's JSON followed by a newline.
pub fn render_docs(tools: &[ToolDoc]) -> String {
    tools.iter().map(|t| t.render() + "\n").collect()
}

/// `{tool_names}`: the names joined by `", "`.
pub fn tool_names(tools: &[ToolDoc]) -> String {
    tools
        .iter()
        .map(ToolDoc::name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// One entry of a ToolBench query's `api_list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiSpec {
    pub category_name: String,
    pub tool_name: String,
    pub api_name: String,
    #[serde(default)]
    pub api_description: Option<String>,
    #[serde(default)]
    pub required_parameters: Vec<ApiParam>,
    #[serde(default)]
    pub optional_parameters: Vec<ApiParam>,
    #[serde(default)]
    pub method: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiParam {
    pub name: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub default: Option<Value>,
}

/// ToolBench's `standardize`: non-word characters become `_` (its regex keeps `^` too),
/// runs of `_` collapse,
/// lowercase, `_` trimmed, and a leading digit gets a `get_` prefix.
pub fn standardize(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        let keep = c.is_ascii_alphanumeric()
            || c == '_'
            || c == '^'
            || ('\u{4e00}'..='\u{9fa5}').contains(&c);
        let c = if keep { c } else { '_' };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    let out = out.to_lowercase();
    let out = out.trim_matches('_').to_string();
    if out.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        format!("get_{out}")
    } else {
        out
    }
}

/// ToolBench's `change_name`: names that are Python keywords get an `is_` prefix.
fn change_name(name: &str) -> String {
    match name {
        "from" | "class" | "return" | "false" | "true" | "id" | "and" => format!("is_{name}"),
        _ => name.to_string(),
    }
}

/// Keeps the last `n` characters (Python's `s[-n:]`).
fn last_chars(s: &str, n: usize) -> &str {
    let count = s.chars().count();
    if count <= n {
        return s;
    }
    let skip = s.char_indices().nth(count - n).map_or(0, |(i, _)| i);
    &s[skip..]
}

fn first_chars(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}

impl ApiSpec {
    /// The function name the models call: `<api>_for_<tool>`, last 64 characters.
    pub fn function_name(&self) -> String {
        let full = format!(
            "{}_for_{}",
            change_name(&standardize(&self.api_name)),
            standardize(&self.tool_name)
        );
        last_chars(&full, 64).to_string()
    }

    /// The model-facing doc, as the real-time pipeline builds it (`../alpha-umi.md` 5.3):
    /// description with the raw API name replaced by the function name, cut to 256
    /// characters; parameters listed only when there is a required one.
    pub fn doc(&self) -> ToolDoc {
        let name = self.function_name();
        let description = self
            .api_description
            .as_deref()
            .unwrap_or("")
            .trim()
            .replace(&self.api_name, &name);
        let mut input = Map::new();
        if !self.required_parameters.is_empty() {
            for p in self
                .required_parameters
                .iter()
                .chain(&self.optional_parameters)
            {
                let kind = match p.kind.as_str() {
                    "NUMBER" => "integer",
                    "STRING" => "string",
                    "BOOLEAN" => "boolean",
                    _ => "string",
                };
                let desc = p.description.as_deref().unwrap_or("").trim();
                let text = if desc.is_empty() {
                    kind.to_string()
                } else {
                    format!("{kind}, {}", last_chars(desc, 256))
                };
                input.insert(p.name.clone(), Value::String(text));
            }
        }
        let mut doc = Map::new();
        doc.insert("Name".into(), Value::String(name.clone()));
        doc.insert(
            "function".into(),
            Value::String(first_chars(&description, 256).to_string()),
        );
        doc.insert("input".into(), Value::Object(input));
        ToolDoc {
            name,
            doc: Value::Object(doc),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn standardize_follows_toolbench() {
        assert_eq!(standardize("Get Weather-Data (v2)"), "get_weather_data_v2");
        assert_eq!(standardize("3D Models"), "get_3d_models");
        assert_eq!(standardize("__Hello__World__"), "hello_world");
    }

    #[test]
    fn function_names_take_the_last_64_chars_and_rename_keywords() {
        let api = ApiSpec {
            category_name: "Data".into(),
            tool_name: "My Tool".into(),
            api_name: "from".into(),
            api_description: None,
            required_parameters: vec![],
            optional_parameters: vec![],
            method: None,
        };
        assert_eq!(api.function_name(), "is_from_for_my_tool");
        let long = ApiSpec {
            api_name: "a".repeat(70),
            ..api
        };
        assert_eq!(long.function_name().len(), 64);
        assert!(long.function_name().ends_with("_for_my_tool"));
    }

    #[test]
    fn doc_lists_parameters_only_with_a_required_one() {
        let param = |name: &str, kind: &str, desc: &str| ApiParam {
            name: name.into(),
            kind: kind.into(),
            description: Some(desc.into()),
            default: None,
        };
        let api = ApiSpec {
            category_name: "Video".into(),
            tool_name: "youtube search".into(),
            api_name: "Search".into(),
            api_description: Some(" Search videos ".into()),
            required_parameters: vec![param("q", "STRING", "query")],
            optional_parameters: vec![param("n", "NUMBER", "")],
            method: Some("GET".into()),
        };
        assert_eq!(
            api.doc().render(),
            r#"{"Name": "search_for_youtube_search", "function": "search_for_youtube_search videos", "input": {"q": "string, query", "n": "integer"}}"#
        );
        let no_required = ApiSpec {
            required_parameters: vec![],
            ..api
        };
        assert_eq!(no_required.doc().doc()["input"], json!({}));
    }

    #[test]
    fn a_doc_without_a_name_is_rejected() {
        let err = ToolDoc::try_from(json!({"function": "x"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("Name"), "{err}");
    }
}
