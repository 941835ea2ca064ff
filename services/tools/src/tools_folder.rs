//! The API documentation StableToolBench's server shows its simulating model
//! (`server/main.py`, `get_virtual_response`, the `api_doc` it builds before
//! `fake_response_function_chat`), read from a tools folder in ToolBench's
//! `toolenv/tools` layout: `<standard_category>/<tool>.json`, each with
//! `tool_description` and `api_list` (`name`, `description`, …).
//!
//! As there: the file is `<standardize_category(category)>/<standardize(tool).split("_for_")[0]>.json`;
//! the document is `{'tool_description': <the file's>, 'api_info': [{'name', 'description'}
//! of each `api_list` entry whose standardized name is the call's API name]}` (an empty
//! list when none matches). Without a folder, or when the file is missing, unreadable, or
//! lacks a key the server reads, it is `{'tool_description': '', 'api_info': ''}`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use umi_core::env::ApiCall;
use umi_core::tool::standardize;

use crate::cache::{server_api_name, standardize_category};

#[derive(Debug, thiserror::Error)]
pub enum ToolsFolderError {
    #[error("{path}: not a folder (expected ToolBench's toolenv/tools: <category>/<tool>.json)")]
    NotAFolder { path: PathBuf },
}

/// The document the server sends when it has none: both fields empty strings.
pub fn empty_api_doc() -> Value {
    json!({"tool_description": "", "api_info": ""})
}

/// A tools folder, its files read when first needed and kept.
pub struct ToolsFolder {
    root: PathBuf,
    /// Each tool file read so far: its JSON, or None when it could not be read.
    loaded: Mutex<HashMap<PathBuf, Option<Arc<Value>>>>,
}

impl ToolsFolder {
    pub fn open(root: &Path) -> Result<Self, ToolsFolderError> {
        if !root.is_dir() {
            return Err(ToolsFolderError::NotAFolder {
                path: root.to_path_buf(),
            });
        }
        Ok(ToolsFolder {
            root: root.to_path_buf(),
            loaded: Mutex::new(HashMap::new()),
        })
    }

    /// The file the server reads `call`'s tool from (the tool's standardized name cut at
    /// its first `_for_`).
    /// None for a category naming no folder inside it (`..`).
    pub fn file_of(&self, call: &ApiCall) -> Option<PathBuf> {
        let tool = standardize(&call.tool_name);
        let tool = tool.split("_for_").next().unwrap_or(&tool);
        let category = standardize_category(&call.category);
        crate::cache::is_folder_name(&category)
            .then(|| self.root.join(category).join(format!("{tool}.json")))
    }

    /// The server's `api_doc` for `call`.
    pub fn api_doc(&self, call: &ApiCall) -> Value {
        let Some(file) = self.file_of(call) else {
            return empty_api_doc();
        };
        let Some(tool) = self.tool(&file) else {
            tracing::debug!(file = %file.display(), "no tool file: the empty API document");
            return empty_api_doc();
        };
        let api_name = standardize(&server_api_name(call));
        match doc_of(&tool, &api_name) {
            Some(doc) => {
                if doc["api_info"].as_array().is_some_and(Vec::is_empty) {
                    tracing::debug!(file = %file.display(), api = %api_name, "no API of that name in the tool file");
                }
                doc
            }
            None => {
                tracing::debug!(file = %file.display(), "tool file lacks what the document needs: the empty API document");
                empty_api_doc()
            }
        }
    }

    /// A tool's `tool_description`, as ToolBench's runner reads it for its agents' system
    /// message: `<category>/<standard tool name>.json` (the category as given, or as
    /// StableToolBench folders name it), else that file in any category folder (the
    /// runner's white list is keyed by tool alone; a query rebuilt from an answer file
    /// has no category). None when no such file has one.
    pub fn tool_description(&self, category: &str, standard_tool_name: &str) -> Option<String> {
        use crate::cache::is_folder_name;
        if !is_folder_name(standard_tool_name) {
            return None;
        }
        let file_name = format!("{standard_tool_name}.json");
        let described = |folder: &Path| {
            let tool = self.tool(&folder.join(&file_name))?;
            tool.get("tool_description")?.as_str().map(str::to_string)
        };
        let named = [category.to_string(), standardize_category(category)]
            .into_iter()
            .filter(|c| is_folder_name(c))
            .find_map(|c| described(&self.root.join(c)));
        if named.is_some() {
            return named;
        }
        // Only on a miss: every category folder, in name order.
        let mut others: Vec<PathBuf> = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        others.sort();
        others.iter().find_map(|folder| described(folder))
    }

    fn tool(&self, file: &Path) -> Option<Arc<Value>> {
        if let Some(tool) = self.loaded.lock().ok()?.get(file) {
            return tool.clone();
        }
        let tool = std::fs::read(file)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .map(Arc::new);
        self.loaded
            .lock()
            .ok()?
            .insert(file.to_path_buf(), tool.clone());
        tool
    }
}

/// The server's `api_doc` for `call`: from `folder` when given, else the empty one.
pub fn api_doc(folder: Option<&ToolsFolder>, call: &ApiCall) -> Value {
    folder.map_or_else(empty_api_doc, |f| f.api_doc(call))
}

/// The document built from a tool file, or None where the server's code raises (and
/// keeps its empty document): not an object, no `tool_description` or `api_list`, an
/// `api_list` it cannot walk, an entry without a string `name`, a matching entry without
/// `description`.
fn doc_of(tool: &Value, api_name: &str) -> Option<Value> {
    let tool = tool.as_object()?;
    let description = tool.get("tool_description")?.clone();
    let apis: &[Value] = match tool.get("api_list")? {
        Value::Array(apis) => apis,
        // Python walks a string's characters and a dict's keys: only an empty one passes.
        Value::String(s) if s.is_empty() => &[],
        Value::Object(m) if m.is_empty() => &[],
        _ => return None,
    };
    let mut info = Vec::new();
    for api in apis {
        let api = api.as_object()?;
        let name = api.get("name")?.as_str()?;
        if standardize(name) == api_name {
            info.push(json!({"name": name, "description": api.get("description")?.clone()}));
        }
    }
    Some(json!({"tool_description": description, "api_info": info}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_follow_the_servers_reading() {
        let tool = json!({"tool_description": "T", "api_list": [
            {"name": "Top Headlines", "description": "D1"},
            {"name": "top-headlines", "description": null},
            {"name": "Other"},
        ]});
        assert_eq!(
            doc_of(&tool, "top_headlines"),
            Some(json!({"tool_description": "T", "api_info": [
                {"name": "Top Headlines", "description": "D1"},
                {"name": "top-headlines", "description": null},
            ]}))
        );
        assert_eq!(
            doc_of(&tool, "nothing"),
            Some(json!({"tool_description": "T", "api_info": []}))
        );
        // A matching entry without description, a nameless entry: the server raises.
        assert_eq!(doc_of(&tool, "other"), None);
        assert_eq!(
            doc_of(
                &json!({"tool_description": "T", "api_list": [{"x": 1}]}),
                "a"
            ),
            None
        );
        assert_eq!(doc_of(&json!({"api_list": []}), "a"), None);
        assert_eq!(doc_of(&json!({"tool_description": "T"}), "a"), None);
        assert_eq!(doc_of(&json!([1]), "a"), None);
        assert_eq!(
            doc_of(&json!({"tool_description": "T", "api_list": ""}), "a"),
            Some(json!({"tool_description": "T", "api_info": []}))
        );
        assert_eq!(
            doc_of(&json!({"tool_description": "T", "api_list": "ab"}), "a"),
            None
        );
    }
}
