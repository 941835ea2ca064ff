//! Tool documentation as the models see it (`{"Name", "function", "input"}`), and how
//! ToolBench derives it from a query's `api_list`.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

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
    /// The description exactly as both docs show it, for an API rebuilt from an answer
    /// file's function spec: its raw API name is lost, so the name's replacement in the
    /// description cannot be redone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shown_description: Option<String>,
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
pub fn change_name(name: &str) -> String {
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

/// Keeps the first `n` characters (Python's `s[:n]`).
fn first_chars(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}

/// Cut of every description the reference writes (`description_max_length`).
const DESCRIPTION_CHARS: usize = 256;

/// The reference's `map_type`: ToolBench parameter types as JSON-schema types.
fn schema_type(kind: &str) -> &'static str {
    match kind {
        "NUMBER" => "integer",
        "BOOLEAN" => "boolean",
        _ => "string",
    }
}

impl ApiParam {
    /// The description as written; a missing one reads as empty (the reference would
    /// crash on it).
    fn text(&self) -> &str {
        self.description.as_deref().unwrap_or("")
    }
}

impl ApiSpec {
    /// The function name the models call: `<api>_for_<tool>`, last 64 characters.
    pub fn function_name(&self) -> String {
        let full = format!("{}_for_{}", self.pure_api_name(), self.standard_tool_name());
        last_chars(&full, 64).to_string()
    }

    /// `change_name(standardize(api_name))`: the API name the RapidAPI service is sent.
    pub fn pure_api_name(&self) -> String {
        change_name(&standardize(&self.api_name))
    }

    /// `standardize(tool_name)`: the tool's file name in ToolBench's tool folder.
    pub fn standard_tool_name(&self) -> String {
        standardize(&self.tool_name)
    }

    /// The API description as both docs show it (`rapidapi_wrapper.api_json_to_openai_json`):
    /// stripped, the raw API name replaced by the function name, first 256 characters;
    /// `None` when blank.
    fn shown_description(&self) -> Option<String> {
        if let Some(shown) = &self.shown_description {
            return (!shown.is_empty()).then(|| shown.clone());
        }
        let description = pyjson::strip(self.api_description.as_deref().unwrap_or(""));
        if description.is_empty() {
            return None;
        }
        let replaced = description.replace(&self.api_name, &self.function_name());
        Some(first_chars(&replaced, DESCRIPTION_CHARS).to_string())
    }

    /// Parameters are documented only when the API has a required one (both docs).
    fn documented_parameters(&self) -> impl Iterator<Item = (&ApiParam, bool)> {
        let listed = !self.required_parameters.is_empty();
        self.required_parameters
            .iter()
            .map(|p| (p, true))
            .chain(self.optional_parameters.iter().map(|p| (p, false)))
            .filter(move |_| listed)
    }

    /// The model-facing doc, as the real-time pipeline builds it (`../alpha-umi.md` 5.3):
    /// the shown description (`""` when blank); each parameter under its original name
    /// as `<type>, <description[-256:]>`, the description untrimmed (the reference strips
    /// it only to test for blankness), or `<type>` alone when blank.
    pub fn doc(&self) -> ToolDoc {
        let name = self.function_name();
        let mut input = Map::new();
        for (p, _) in self.documented_parameters() {
            let kind = schema_type(&p.kind);
            let text = if pyjson::strip(p.text()).is_empty() {
                kind.to_string()
            } else {
                format!("{kind}, {}", last_chars(p.text(), DESCRIPTION_CHARS))
            };
            input.insert(p.name.clone(), Value::String(text));
        }
        let mut doc = Map::new();
        doc.insert("Name".into(), Value::String(name.clone()));
        doc.insert(
            "function".into(),
            Value::String(self.shown_description().unwrap_or_default()),
        );
        doc.insert("input".into(), Value::Object(input));
        ToolDoc {
            name,
            doc: Value::Object(doc),
        }
    }

    /// An API rebuilt from the function spec an answer file lists (`function_spec`'s
    /// inverse), for rerunning a recorded query: the tool name from the description's
    /// `subfunction for tool "…"` (else the name's part after its last `_for_`), types
    /// back to ToolBench's, `example_value` as the default. What the spec lost stays lost:
    /// the category (empty), raw API and parameter names (their standardized forms),
    /// descriptions past 256 characters.
    pub fn from_function_spec(spec: &Value) -> Option<ApiSpec> {
        const TOOL: &str = "This is the subfunction for tool \"";
        const DESCRIPTION: &str = "The description of this function is: \"";
        let name = spec.get("name")?.as_str()?;
        let text = spec
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("");
        let tool = match text
            .strip_prefix(TOOL)
            .and_then(|rest| rest.split_once('"'))
        {
            Some((tool, _)) => tool.to_string(),
            None => name.rsplit_once("_for_").map_or("", |(_, t)| t).to_string(),
        };
        let api_name = name
            .strip_suffix(&format!("_for_{tool}"))
            .unwrap_or(name)
            .to_string();
        let function = format!("{api_name}_for_{tool}");
        let shown = text
            .split_once(DESCRIPTION)
            .map_or(String::new(), |(_, d)| {
                d.strip_suffix('"').unwrap_or(d).to_string()
            });
        // The original's guess: the function's name back to the API's.
        let api_description = shown.replace(&function, &api_name);
        let parameters = spec.get("parameters");
        let listed = |key: &str| -> Vec<ApiParam> {
            let properties = parameters.and_then(|p| p.get("properties"));
            parameters
                .and_then(|p| p.get(key))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(|n| {
                    let p = properties.and_then(|ps| ps.get(n));
                    let kind = match p.and_then(|p| p.get("type")).and_then(Value::as_str) {
                        Some("integer" | "number") => "NUMBER",
                        Some("boolean") => "BOOLEAN",
                        _ => "STRING",
                    };
                    ApiParam {
                        name: n.to_string(),
                        kind: kind.into(),
                        description: p
                            .and_then(|p| p.get("description"))
                            .and_then(Value::as_str)
                            .map(str::to_string),
                        default: Some(
                            p.and_then(|p| p.get("example_value"))
                                .cloned()
                                .unwrap_or_else(|| json!("")),
                        ),
                    }
                })
                .collect()
        };
        Some(ApiSpec {
            category_name: String::new(),
            tool_name: tool,
            api_name,
            api_description: Some(api_description),
            required_parameters: listed("required"),
            optional_parameters: listed("optional"),
            method: None,
            shown_description: Some(shown),
        })
    }

    /// The OpenAI-style function spec the answer file lists (what ToolEval's judge reads):
    /// the description wrapped as `This is the subfunction for tool "<tool>", you can use
    /// this tool.The description of this function is: "<description>"`; parameters under
    /// `change_name(standardize(name))` with the description's first 256 characters and
    /// the default as `example_value` unless it is the empty string (Python
    /// `len(str(default)) != 0`: `null` and `0` are kept).
    pub fn function_spec(&self) -> Value {
        let mut description = format!(
            "This is the subfunction for tool \"{}\", you can use this tool.",
            self.standard_tool_name()
        );
        if let Some(shown) = self.shown_description() {
            description.push_str(&format!("The description of this function is: \"{shown}\""));
        }
        let mut properties = Map::new();
        let (mut required, mut optional) = (Vec::new(), Vec::new());
        for (p, is_required) in self.documented_parameters() {
            let name = change_name(&standardize(&p.name));
            let mut spec = Map::new();
            spec.insert("type".into(), json!(schema_type(&p.kind)));
            spec.insert(
                "description".into(),
                json!(first_chars(p.text(), DESCRIPTION_CHARS)),
            );
            let default = p.default.clone().unwrap_or(Value::Null);
            if default != json!("") {
                spec.insert("example_value".into(), default);
            }
            properties.insert(name.clone(), Value::Object(spec));
            if is_required {
                required.push(Value::String(name));
            } else {
                optional.push(Value::String(name));
            }
        }
        json!({
            "name": self.function_name(),
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": required,
                "optional": optional,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            shown_description: None,
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
            shown_description: None,
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
        assert_eq!(
            no_required.function_spec()["parameters"],
            json!({"type": "object", "properties": {}, "required": [], "optional": []})
        );
    }

    /// Pins `api_json_to_openai_json`: a parameter description is stripped only to test
    /// for blankness, then written whole (its last 256 characters); the function spec
    /// renames keywords, cuts descriptions to their first 256 characters and drops only an
    /// empty-string default.
    #[test]
    fn parameter_descriptions_keep_their_whitespace_and_specs_follow_the_reference() {
        let param = |name: &str, desc: &str, default: Value| ApiParam {
            name: name.into(),
            kind: "STRING".into(),
            description: Some(desc.into()),
            default: Some(default),
        };
        let api = ApiSpec {
            category_name: "Data".into(),
            tool_name: "My Tool".into(),
            api_name: "Get".into(),
            api_description: Some("".into()),
            required_parameters: vec![param("id", " the id\n", json!(""))],
            optional_parameters: vec![param("Page Size", &"x".repeat(300), Value::Null)],
            method: None,
            shown_description: None,
        };
        let doc = api.doc();
        assert_eq!(doc.doc()["function"], "");
        assert_eq!(doc.doc()["input"]["id"], "string,  the id\n");
        assert_eq!(
            doc.doc()["input"]["Page Size"],
            format!("string, {}", "x".repeat(256))
        );
        assert_eq!(
            api.function_spec(),
            json!({
                "name": "get_for_my_tool",
                "description": "This is the subfunction for tool \"my_tool\", you can use this tool.",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "is_id": {"type": "string", "description": " the id\n"},
                        "page_size": {"type": "string", "description": "x".repeat(256), "example_value": null},
                    },
                    "required": ["is_id"],
                    "optional": ["page_size"],
                }
            })
        );
    }

    #[test]
    fn function_specs_rebuild_the_api_they_were_made_from() {
        let param = |name: &str, kind: &str, default: Value| ApiParam {
            name: name.into(),
            kind: kind.into(),
            description: Some(format!("the {name}")),
            default: Some(default),
        };
        let api = ApiSpec {
            category_name: String::new(),
            tool_name: "weather_api".into(),
            api_name: "current".into(),
            api_description: Some("current gives the weather now".into()),
            required_parameters: vec![param("city", "STRING", json!("Paris"))],
            optional_parameters: vec![param("days", "NUMBER", json!(""))],
            method: None,
            shown_description: None,
        };
        let spec = api.function_spec();
        let rebuilt = ApiSpec::from_function_spec(&spec).unwrap();
        let shown = "current_for_weather_api gives the weather now";
        assert_eq!(rebuilt.shown_description.as_deref(), Some(shown));
        assert_eq!(
            ApiSpec {
                shown_description: None,
                ..rebuilt.clone()
            },
            api
        );
        assert_eq!(rebuilt.function_spec(), spec);
        assert_eq!(rebuilt.doc(), api.doc());
        // A raw name that is not its standardized one ("Transitaire" → `transitaire`) is
        // not replaced in the description; the rebuilt API shows it as recorded.
        let api = ApiSpec {
            api_name: "Transitaire".into(),
            api_description: Some("Récupère un transitaire donnée".into()),
            ..api
        };
        let spec = api.function_spec();
        let rebuilt = ApiSpec::from_function_spec(&spec).unwrap();
        assert_eq!(rebuilt.function_spec(), spec);
        assert_eq!(rebuilt.doc(), api.doc());
    }

    #[test]
    fn a_doc_without_a_name_is_rejected() {
        let err = ToolDoc::try_from(json!({"function": "x"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("Name"), "{err}");
    }
}
