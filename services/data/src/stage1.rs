//! `prepro_raw_stage_1.py`: ToolBench's answer files (`answer/G{1,2,3}_answer/*.json`) to
//! trajectories `{"tools", "instruction", "chains"}`, leaving out the test queries
//! (`test_query_ids/*.json`) and the files with no `train_messages`.
//!
//! Files are taken in name order within each group; the script takes them in the order
//! `os.listdir` gives, which the file system decides.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{DataError, Result};
use crate::py::{first_chars, get, get_str, kind, last_chars};

/// The answer folders, in the script's order.
pub const ANSWER_GROUPS: [&str; 3] = ["G1_answer", "G2_answer", "G3_answer"];

/// The test sets whose queries are left out of training.
pub const TEST_SETS: [&str; 6] = [
    "G1_category",
    "G1_instruction",
    "G1_tool",
    "G2_category",
    "G2_instruction",
    "G3_instruction",
];

/// How many trajectories the script writes: it dumps `data[:20]`, a cut left in from
/// debugging (the seed's upstream issue #4).
pub const REFERENCE_LIMIT: usize = 20;

/// Cuts the script makes to a tool's fields, in code points.
const NAME_CHARS: usize = 64;
const DESCRIPTION_CHARS: usize = 256;
const PARAMETER_CHARS: usize = 256;

/// The test query ids: the keys of each `test_query_ids/<set>.json` object (or the
/// strings of a list: the script tests `id in list(json.load(f))`, so numbers in a list
/// never match a file's id).
pub fn test_ids(data_dir: &Path) -> Result<HashSet<String>> {
    let mut ids = HashSet::new();
    for set in TEST_SETS {
        let path = data_dir.join("test_query_ids").join(format!("{set}.json"));
        let text = std::fs::read(&path).map_err(|e| DataError::read(&path, e))?;
        let value: Value = serde_json::from_slice(&text)
            .map_err(|e| DataError::invalid(path.display().to_string(), e))?;
        match value {
            Value::Object(map) => ids.extend(map.into_iter().map(|(k, _)| k)),
            Value::Array(items) => ids.extend(
                items
                    .into_iter()
                    .filter_map(|v| v.as_str().map(str::to_string)),
            ),
            other => {
                return Err(DataError::invalid(
                    path.display().to_string(),
                    format!("{}, not an object or a list of query ids", kind(&other)),
                ))
            }
        }
    }
    Ok(ids)
}

/// The query id of an answer file: its name up to the first `_`.
pub fn query_id(file_name: &str) -> &str {
    file_name.split('_').next().unwrap_or(file_name)
}

/// The answer files to read, group by group, names sorted: every entry of each group
/// folder whose id is not a test id (the script opens each such entry, whatever it is).
pub fn answer_files(data_dir: &Path, test_ids: &HashSet<String>) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for group in ANSWER_GROUPS {
        let dir = data_dir.join("answer").join(group);
        let entries = std::fs::read_dir(&dir).map_err(|e| DataError::read(&dir, e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| DataError::read(&dir, e))?;
            let name = entry.file_name().into_string().map_err(|name| {
                DataError::invalid(
                    dir.display().to_string(),
                    format!("the file name {name:?} is not UTF-8"),
                )
            })?;
            if !test_ids.contains(query_id(&name)) {
                names.push(name);
            }
        }
        names.sort();
        files.extend(names.into_iter().map(|n| dir.join(n)));
    }
    Ok(files)
}

/// The trajectory of one answer file, or `None` when it has no `train_messages` (a run
/// that found no valid chain).
pub fn trajectory(answer: &Value) -> Result<Option<Value>, String> {
    if !answer.is_object() {
        return Err(format!("{}, not an answer object", kind(answer)));
    }
    let Some(generation) = answer.get("answer_generation") else {
        return Ok(None);
    };
    let Value::Object(generation) = generation else {
        return Err(format!("answer_generation is {}", kind(generation)));
    };
    let Some(messages) = generation.get("train_messages") else {
        return Ok(None);
    };
    let instruction = generation
        .get("query")
        .ok_or("answer_generation has no \"query\"")?;
    let functions = generation
        .get("function")
        .and_then(Value::as_array)
        .ok_or("answer_generation has no \"function\" list")?;
    let mut tools = Vec::new();
    for (i, function) in functions.iter().enumerate() {
        if let Some(tool) = tool(function).map_err(|e| format!("function[{i}]: {e}"))? {
            tools.push(tool);
        }
    }
    let chains = messages
        .as_array()
        .and_then(|m| m.last())
        .ok_or("train_messages is not a non-empty list")?;
    let mut record = Map::new();
    record.insert("tools".into(), Value::Array(tools));
    record.insert("instruction".into(), instruction.clone());
    record.insert("chains".into(), chains.clone());
    Ok(Some(Value::Object(record)))
}

/// A function spec as the tool doc the prompts show: `{"Name", "function", "input"}`,
/// each parameter as `type, description` (or the bare type if it has no description);
/// `None` for `Finish`.
fn tool(function: &Value) -> Result<Option<Value>, String> {
    let name = get_str(function, "name")?;
    if name == "Finish" {
        return Ok(None);
    }
    let description = get_str(function, "description")?;
    let properties = get(get(function, "parameters")?, "properties")?;
    let Value::Object(properties) = properties else {
        return Err(format!("parameters.properties is {}", kind(properties)));
    };
    let mut input = Map::new();
    for (arg, spec) in properties {
        let at = |e: String| format!("parameter {arg:?}: {e}");
        let arg_type = get(spec, "type").map_err(at)?;
        let text = match spec.get("description") {
            Some(description) => {
                let arg_type = arg_type
                    .as_str()
                    .ok_or_else(|| at("type is not a string".into()))?;
                let description = description
                    .as_str()
                    .ok_or_else(|| at("description is not a string".into()))?;
                Value::String(format!(
                    "{arg_type}, {}",
                    last_chars(description, PARAMETER_CHARS)
                ))
            }
            None => arg_type.clone(),
        };
        input.insert(arg.clone(), text);
    }
    let mut doc = Map::new();
    doc.insert("Name".into(), last_chars(name, NAME_CHARS).into());
    doc.insert(
        "function".into(),
        first_chars(description, DESCRIPTION_CHARS).into(),
    );
    doc.insert("input".into(), Value::Object(input));
    Ok(Some(Value::Object(doc)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(functions: Value) -> Value {
        json!({"answer_generation": {
            "query": "q",
            "function": functions,
            "train_messages": [[{"role": "system"}], [{"role": "system"}, {"role": "user"}]],
        }})
    }

    #[test]
    fn tools_are_cut_as_the_script_cuts_them_and_finish_is_left_out() {
        let long = "n".repeat(70) + "é";
        let r = trajectory(&answer(json!([
            {"name": long, "description": "d".repeat(300),
             "parameters": {"properties": {
                 "a": {"type": "string", "description": "x".repeat(250) + "0123456789"},
                 "b": {"type": ["string", "null"]}}}},
            {"name": "Finish", "description": "f", "parameters": {}},
        ])))
        .unwrap()
        .unwrap();
        let tool = &r["tools"][0];
        assert_eq!(tool["Name"].as_str().unwrap().chars().count(), 64);
        assert!(tool["Name"].as_str().unwrap().ends_with('é'));
        assert_eq!(tool["function"].as_str().unwrap().len(), 256);
        let a = tool["input"]["a"].as_str().unwrap();
        assert_eq!(a.len(), "string, ".len() + 256);
        assert!(a.ends_with("0123456789"));
        assert_eq!(tool["input"]["b"], json!(["string", "null"]));
        assert_eq!(r["tools"].as_array().unwrap().len(), 1);
        assert_eq!(r["chains"], json!([{"role": "system"}, {"role": "user"}]));
        let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["tools", "instruction", "chains"]);
    }

    #[test]
    fn a_run_without_train_messages_is_not_a_trajectory() {
        assert_eq!(trajectory(&json!({"win": false})), Ok(None));
        assert_eq!(
            trajectory(&json!({"answer_generation": {"valid_data": false}})),
            Ok(None)
        );
    }

    #[test]
    fn a_broken_function_is_named() {
        let err = trajectory(&answer(json!([{"name": "t", "parameters": {}}]))).unwrap_err();
        assert_eq!(err, "function[0]: no key \"description\"");
    }

    #[test]
    fn ids_are_the_names_up_to_the_first_underscore() {
        assert_eq!(query_id("10_ChatGPT_DFS_woFilter_w2.json"), "10");
        assert_eq!(query_id("x.json"), "x.json");
    }
}
