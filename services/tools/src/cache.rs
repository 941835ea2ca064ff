//! StableToolBench's tool response cache, read unchanged: `<cache>/<category>/<tool>_for_<category>/<api>.json`,
//! each file a JSON object from Python's `str()` of a tool input dict (single quotes,
//! `True`/`None`, Python's float and string repr) to the recorded `{"error", "response"}`.
//! A call is looked up exactly as StableToolBench's server (`server/main.py`) does: the
//! category through `standardize_category`, the API name through `change_name(standardize(…))`,
//! the input through `json.loads` and `str()` (an empty input is `{}`).
//!
//! Files are read when first asked for and kept: a full cache is gigabytes, a run touches
//! a small part of it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use umi_core::env::{ApiCall, ApiReply};
use umi_core::pyjson;
use umi_core::tool::{change_name, standardize};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{path}: {reason}")]
    Unusable { path: PathBuf, reason: String },
}

/// StableToolBench's `standardize_category`: spaces, commas and slashes to `_`, then
/// `__` folded to `_` in one left-to-right pass (so `___` stays `__`, as there).
pub fn standardize_category(category: &str) -> String {
    category.replace([' ', ',', '/'], "_").replace("__", "_")
}

/// The API name StableToolBench's server works with (`prepare_tool_name_and_url`):
/// `change_name(standardize(api_name))` cut at `_for_<tool_name>`. It names the cache
/// file and goes to the real API.
pub fn server_api_name(call: &ApiCall) -> String {
    let api_name = change_name(&standardize(&call.api_name));
    api_name
        .split(&format!("_for_{}", call.tool_name))
        .next()
        .unwrap_or(&api_name)
        .to_string()
}

/// What the cache holds for one call.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// The recorded `{"error", "response"}`, as stored.
    Hit(Value),
    /// No entry for this input (or no file for this API).
    Miss,
    /// The input is not JSON: the server's own reply.
    BadInput,
}

pub struct ResponseCache {
    root: PathBuf,
    files: usize,
    loaded: Mutex<HashMap<PathBuf, Arc<Map<String, Value>>>>,
    /// Held while a file is rewritten, so that two new replies of one API both land.
    saving: tokio::sync::Mutex<()>,
}

impl ResponseCache {
    /// Opens a cache folder; a folder with no `<category>/<tool>/<api>.json` file is an
    /// error naming it.
    pub fn open(root: &Path) -> Result<Self, CacheError> {
        let unusable = |reason: String| CacheError::Unusable {
            path: root.to_path_buf(),
            reason,
        };
        let files = count_api_files(root).map_err(|e| unusable(e.to_string()))?;
        if files == 0 {
            return Err(unusable(
                "no <category>/<tool>_for_<category>/<api>.json files: not a StableToolBench tool response cache".into(),
            ));
        }
        Ok(ResponseCache {
            root: root.to_path_buf(),
            files,
            loaded: Mutex::new(HashMap::new()),
            saving: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether `path` is laid out as a response cache (a folder of folders of folders
    /// holding `.json` files), as opposed to answer files or static records.
    pub fn looks_like_cache(path: &Path) -> bool {
        path.is_dir() && count_api_files(path).is_ok_and(|n| n > 0)
    }

    /// API files in the cache.
    pub fn files(&self) -> usize {
        self.files
    }

    /// The file StableToolBench keeps `call`'s API in (`prepare_tool_name_and_url`);
    /// None for a category that would name no folder inside the cache (`..`, `.`, empty:
    /// the category comes from a query's `api_list`, which a tenant writes).
    pub fn file_of(&self, call: &ApiCall) -> Option<PathBuf> {
        let category = standardize_category(&call.category);
        if !is_folder_name(&category) {
            return None;
        }
        let suffix = format!("_for_{category}");
        let tool = if call.tool_name.ends_with(&suffix) {
            call.tool_name.clone()
        } else {
            format!("{}{suffix}", standardize(&call.tool_name))
        };
        Some(
            self.root
                .join(category)
                .join(tool)
                .join(format!("{}.json", server_api_name(call))),
        )
    }

    /// The cache key of a tool input: `str(json.loads(input))`, `{}` for an empty one.
    pub fn key_of(tool_input: &str) -> Option<String> {
        if tool_input.is_empty() {
            return Some("{}".into());
        }
        serde_json::from_str::<Value>(tool_input)
            .ok()
            .map(|v| pyjson::repr(&v))
    }

    pub fn lookup(&self, call: &ApiCall) -> Lookup {
        let Some(key) = Self::key_of(&call.tool_input) else {
            return Lookup::BadInput;
        };
        let Some(file) = self.file_of(call) else {
            return Lookup::Miss;
        };
        match self.entries(&file) {
            Some(entries) => entries.get(&key).cloned().map_or(Lookup::Miss, Lookup::Hit),
            None => Lookup::Miss,
        }
    }

    /// The recorded entries of `call`'s API, in file order (the in-context examples
    /// StableToolBench's simulator shows).
    pub fn examples(&self, call: &ApiCall) -> Vec<(String, Value)> {
        self.file_of(call)
            .and_then(|file| self.entries(&file))
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// Records `reply` for `call` as StableToolBench's server saves a new response: the
    /// API's whole file rewritten (`json.dump(cache, indent=4)`), here atomically
    /// (`umi_durable::write`), folders made as needed, on a blocking thread.
    pub async fn save(&self, call: &ApiCall, reply: &Value) -> std::io::Result<()> {
        let Some(key) = Self::key_of(&call.tool_input) else {
            return Ok(());
        };
        let Some(file) = self.file_of(call) else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "category {:?} names no folder inside the cache",
                    call.category
                ),
            ));
        };
        let _saving = self.saving.lock().await;
        let mut entries = self
            .entries(&file)
            .map(|m| (*m).clone())
            .unwrap_or_default();
        entries.insert(key, reply.clone());
        let text = pyjson::dumps_indented(&Value::Object(entries.clone()), 4);
        let target = file.clone();
        tokio::task::spawn_blocking(move || {
            if let Some(dir) = target.parent() {
                std::fs::create_dir_all(dir)?;
            }
            umi_durable::write(&target, text.as_bytes()).map_err(std::io::Error::from)
        })
        .await
        .map_err(std::io::Error::other)??;
        if let Ok(mut loaded) = self.loaded.lock() {
            loaded.insert(file, Arc::new(entries));
        }
        Ok(())
    }

    /// A file's entries, read once; a missing or unreadable file has none (an unreadable
    /// one logged: a miss it causes is not the cache's answer).
    fn entries(&self, file: &Path) -> Option<Arc<Map<String, Value>>> {
        if let Some(map) = self.loaded.lock().ok()?.get(file) {
            return Some(map.clone());
        }
        let read = match std::fs::read(file) {
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "cache file unreadable: a miss");
                return None;
            }
        };
        let map = match serde_json::from_slice::<Map<String, Value>>(&read) {
            Ok(map) => Arc::new(map),
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "unreadable cache file skipped");
                Arc::new(Map::new())
            }
        };
        self.loaded
            .lock()
            .ok()?
            .insert(file.to_path_buf(), map.clone());
        Some(map)
    }
}

/// Whether `part` names a folder inside its parent (not `.`, `..`, empty, no separator).
pub fn is_folder_name(part: &str) -> bool {
    !part.is_empty() && part != "." && part != ".." && !part.contains(['/', '\\', '\0'])
}

/// StableToolBench's reply to an input that is not JSON.
pub fn bad_input_reply() -> ApiReply {
    ApiReply::failed("Tool input parse error...\n")
}

/// The `<category>/<tool>_for_<category>/<api>.json` files under `root`.
fn count_api_files(root: &Path) -> std::io::Result<usize> {
    let mut n = 0;
    for category in std::fs::read_dir(root)? {
        let category = category?.path();
        let Some(suffix) = category
            .file_name()
            .map(|c| format!("_for_{}", c.to_string_lossy()))
            .filter(|_| category.is_dir())
        else {
            continue;
        };
        for tool in std::fs::read_dir(&category)? {
            let tool = tool?.path();
            let named = tool
                .file_name()
                .is_some_and(|t| t.to_string_lossy().ends_with(&suffix));
            if !named || !tool.is_dir() {
                continue;
            }
            for api in std::fs::read_dir(&tool)? {
                let api = api?.path();
                if api.extension().is_some_and(|e| e == "json") && api.is_file() {
                    n += 1;
                }
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_standardize_as_stabletoolbench_does() {
        assert_eq!(standardize_category("News, Media"), "News_Media");
        assert_eq!(standardize_category("Video, Images"), "Video_Images");
        assert_eq!(
            standardize_category("Artificial Intelligence/Machine Learning"),
            "Artificial_Intelligence_Machine_Learning"
        );
        assert_eq!(standardize_category("Data"), "Data");
    }

    #[test]
    fn keys_are_pythons_str_of_the_input() {
        assert_eq!(ResponseCache::key_of("").as_deref(), Some("{}"));
        assert_eq!(
            ResponseCache::key_of(r#"{"q": "rock", "n": 5, "all": true}"#).as_deref(),
            Some("{'q': 'rock', 'n': 5, 'all': True}")
        );
        assert_eq!(ResponseCache::key_of("not json"), None);
    }
}
