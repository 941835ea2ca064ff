//! `prepro_raw_stage_2.py`: a trajectory's OpenAI-style messages (`chains`) to α-UMi's
//! conversation turns: `user`, `assistant` (the thought and a `Next:` marker), `caller`
//! (`Action: ...\nAction Input: ...`), `observation` and `conclusion`.
//!
//! The script assumes a chain opens with a system and a user message and reads from the
//! third. Where it raises (a message without a `role`, an observation that parses to an
//! object with no `response`), this returns the error instead. JSON inside messages is
//! read with serde_json, which refuses what Python's `json.loads` refuses, and also
//! `NaN`/`Infinity` and lone surrogate escapes (Python takes those; such text then
//! follows the script's fallback for text that is not JSON).

use serde_json::{Map, Value};

use crate::py::{get, kind, strip_char};

const GIVE_UP_AND_RESTART: &str = "give_up_and_restart";
const FINAL_ANSWER_KEY: &str = "\"final_answer\": ";
const RESPONSE_KEY: &str = "\"response\":";

/// The stage-2 record of a stage-1 trajectory: `{"tools", "instruction",
/// "conversations"}`.
pub fn conversations(trajectory: &Value) -> Result<Value, String> {
    let instruction = get(trajectory, "instruction")?;
    let chains = get(trajectory, "chains")?;
    let Value::Array(chains) = chains else {
        return Err(format!("chains is {}, not a list", kind(chains)));
    };
    let mut turns = vec![turn("user", instruction.clone())];
    for (i, message) in chains.iter().enumerate().skip(2) {
        message_turns(message, &mut turns).map_err(|e| format!("chains[{i}]: {e}"))?;
    }
    let mut record = Map::new();
    record.insert("tools".into(), get(trajectory, "tools")?.clone());
    record.insert("instruction".into(), instruction.clone());
    record.insert("conversations".into(), Value::Array(turns));
    Ok(Value::Object(record))
}

fn turn(from: &str, value: impl Into<Value>) -> Value {
    let mut t = Map::new();
    t.insert("from".into(), from.into());
    t.insert("value".into(), value.into());
    Value::Object(t)
}

fn message_turns(message: &Value, turns: &mut Vec<Value>) -> Result<(), String> {
    let role = get(message, "role")?;
    match role.as_str() {
        Some("assistant") => assistant_turns(message, turns),
        Some("user") => {
            turns.push(turn("user", get(message, "content")?.clone()));
            Ok(())
        }
        Some("function") => {
            turns.push(turn("observation", observation(get(message, "content")?)?));
            Ok(())
        }
        _ => Ok(()),
    }
}

/// An assistant message with a function call: its thought (`content`, if any, and a
/// newline) then ` Next: caller.` and the call, ` Next: conclusion.` and the answer, or
/// ` Next: give up.`. One without a call adds nothing.
fn assistant_turns(message: &Value, turns: &mut Vec<Value>) -> Result<(), String> {
    let content = get(message, "content")?;
    let mut span = String::new();
    if !content.is_null() {
        let content = content
            .as_str()
            .ok_or_else(|| format!("content is {}, not a string", kind(content)))?;
        span.push_str(content);
        span.push('\n');
    }
    let Some(call) = message.get("function_call") else {
        return Ok(());
    };
    let name = get(call, "name")?;
    if name.as_str() == Some("Finish") {
        match finish(call, content)? {
            Finish::GiveUp => turns.push(turn("assistant", span + " Next: give up.")),
            Finish::Answer(answer) => {
                turns.push(turn("assistant", span + " Next: conclusion."));
                turns.push(turn("conclusion", answer));
            }
        }
        return Ok(());
    }
    let (Some(name), Some(arguments)) = (name.as_str(), get(call, "arguments")?.as_str()) else {
        return Err("a function call's name and arguments must be strings".into());
    };
    turns.push(turn("assistant", span + " Next: caller."));
    turns.push(turn(
        "caller",
        format!("Action: {name}\nAction Input: {arguments}"),
    ));
    Ok(())
}

enum Finish {
    GiveUp,
    Answer(Value),
}

/// What a `Finish` call says, read as the script reads it: its arguments as JSON (or the
/// object itself); failing that, `give_up_and_restart` anywhere in the text, then the text
/// after `"final_answer": ` (stripped of spaces, `}` and `"`), then the message's content,
/// then `none`.
fn finish(call: &Value, content: &Value) -> Result<Finish, String> {
    let arguments = get(call, "arguments")?;
    let parsed = match arguments {
        Value::Object(_) => Some(arguments.clone()),
        Value::String(text) => serde_json::from_str::<Value>(text).ok(),
        _ => None,
    };
    if let Some(Value::Object(parsed)) = parsed {
        if let Some(return_type) = parsed.get("return_type") {
            if return_type.as_str() == Some(GIVE_UP_AND_RESTART) {
                return Ok(Finish::GiveUp);
            }
            return Ok(Finish::Answer(
                parsed
                    .get("final_answer")
                    .cloned()
                    .unwrap_or_else(|| "none".into()),
            ));
        }
    }
    // The script's `except` branch.
    match arguments {
        Value::String(text) => {
            if text.contains(GIVE_UP_AND_RESTART) {
                Ok(Finish::GiveUp)
            } else if let Some(at) = text.find(FINAL_ANSWER_KEY) {
                let answer = umi_core::pyjson::strip(&text[at + FINAL_ANSWER_KEY.len()..]);
                Ok(Finish::Answer(
                    strip_char(strip_char(answer, '}'), '"').into(),
                ))
            } else if content.is_null() {
                Ok(Finish::Answer("none".into()))
            } else {
                Ok(Finish::Answer(content.clone()))
            }
        }
        // `in` on the parsed object or list: a key or an element.
        Value::Object(map) if map.contains_key(GIVE_UP_AND_RESTART) => Ok(Finish::GiveUp),
        Value::Array(items) if items.iter().any(|v| v == GIVE_UP_AND_RESTART) => Ok(Finish::GiveUp),
        other => Err(format!(
            "Finish's arguments are {} the script cannot read (it crashes)",
            kind(other)
        )),
    }
}

/// An observation's text: the `response` of the content read as JSON; failing that, the
/// raw text after `"response":`, or nothing. The script raises when the content parses to
/// anything but an object with a `response` or a string.
fn observation(content: &Value) -> Result<Value, String> {
    let Value::String(raw) = content else {
        return Err(format!(
            "a function message's content is {} (the script crashes on it)",
            kind(content)
        ));
    };
    let text = match serde_json::from_str::<Value>(raw) {
        Err(_) => raw.as_str(),
        Ok(Value::Object(map)) => {
            return map.get("response").cloned().ok_or_else(|| {
                "a function message's content is JSON with no \"response\" (the script \
                 crashes on it)"
                    .to_string()
            })
        }
        // The script looks for `"response":` in the parsed string.
        Ok(Value::String(parsed)) => return Ok(after_response_key(&parsed).into()),
        Ok(other) => {
            return Err(format!(
                "a function message's content is JSON {} (the script crashes on it)",
                kind(&other)
            ))
        }
    };
    Ok(after_response_key(text).into())
}

fn after_response_key(text: &str) -> &str {
    match text.find(RESPONSE_KEY) {
        Some(at) => &text[at + RESPONSE_KEY.len()..],
        None => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(messages: Value) -> Vec<(String, Value)> {
        let mut all = vec![json!({"role": "system"}), json!({"role": "user"})];
        all.extend(messages.as_array().unwrap().iter().cloned());
        let record =
            conversations(&json!({"tools": [], "instruction": "q", "chains": all})).unwrap();
        record["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["from"].as_str().unwrap().to_string(), t["value"].clone()))
            .collect()
    }

    fn call(content: Value, name: &str, arguments: Value) -> Value {
        json!({"role": "assistant", "content": content,
               "function_call": {"name": name, "arguments": arguments}})
    }

    #[test]
    fn calls_observations_and_answers_become_turns() {
        let turns = chain(json!([
            call(json!("think"), "t_for_x", json!("{\"a\": 1}")),
            {"role": "function", "content": "{\"error\": \"\", \"response\": \"ok\"}"},
            {"role": "user", "content": "retry"},
            call(Value::Null, "Finish",
                 json!("{\"return_type\": \"give_answer\", \"final_answer\": \"done\"}")),
        ]));
        let expected: Vec<(String, Value)> = vec![
            ("user".into(), json!("q")),
            ("assistant".into(), json!("think\n Next: caller.")),
            (
                "caller".into(),
                json!("Action: t_for_x\nAction Input: {\"a\": 1}"),
            ),
            ("observation".into(), json!("ok")),
            ("user".into(), json!("retry")),
            ("assistant".into(), json!(" Next: conclusion.")),
            ("conclusion".into(), json!("done")),
        ];
        assert_eq!(turns, expected);
    }

    #[test]
    fn finish_is_read_the_scripts_ways() {
        let answer = |arguments: Value, content: Value| {
            let turns = chain(json!([call(content, "Finish", arguments)]));
            turns[1..].to_vec()
        };
        let give_up = vec![("assistant".to_string(), json!(" Next: give up."))];
        assert_eq!(
            answer(
                json!("{\"return_type\": \"give_up_and_restart\"}"),
                Value::Null
            ),
            give_up
        );
        assert_eq!(
            answer(json!({"return_type": "give_up_and_restart"}), Value::Null),
            give_up
        );
        // Not JSON (a raw newline in a string): the text after "final_answer": , stripped
        // of spaces, then `}`, then `"` (what Python gives: 'a \\"b\\"\n').
        let cut = answer(
            json!("{\"return_type\": \"give_answer\", \"final_answer\": \"a \\\"b\\\"\n}"),
            Value::Null,
        );
        assert_eq!(cut[1], ("conclusion".into(), json!("a \\\"b\\\"\n")));
        // JSON without return_type: the except branch; no final_answer: the content.
        let content = answer(json!("{\"x\": 1}"), json!("said"));
        assert_eq!(
            content[0],
            ("assistant".into(), json!("said\n Next: conclusion."))
        );
        assert_eq!(content[1], ("conclusion".into(), json!("said")));
        let none = answer(json!("{\"return_type\": \"give_answer\"}"), Value::Null);
        assert_eq!(none[1], ("conclusion".into(), json!("none")));
    }

    #[test]
    fn observations_fall_back_to_the_raw_text_after_response() {
        let obs = |content: &str| {
            let turns = chain(json!([{"role": "function", "content": content}]));
            turns[1].1.clone()
        };
        assert_eq!(obs("{\"response\": {\"a\": 1}}"), json!({"a": 1}));
        assert_eq!(
            obs("{\"error\": \"\", \"response\": \"cut"),
            json!(" \"cut")
        );
        assert_eq!(obs("plain text"), json!(""));
        assert_eq!(obs("\"x \\\"response\\\": y\""), json!(" y"));
    }

    #[test]
    fn what_the_script_crashes_on_is_an_error_naming_the_message() {
        let record = |messages: Value| {
            let mut all = vec![json!({"role": "system"}), json!({"role": "user"})];
            all.extend(messages.as_array().unwrap().iter().cloned());
            conversations(&json!({"tools": [], "instruction": "q", "chains": all}))
        };
        let err =
            record(json!([{"role": "function", "content": "{\"error\": \"x\"}"}])).unwrap_err();
        assert!(err.starts_with("chains[2]: "), "{err}");
        assert!(err.contains("no \"response\""), "{err}");
        assert!(record(json!([{"content": "x"}]))
            .unwrap_err()
            .contains("no key \"role\""));
        assert!(record(json!([{"role": "function", "content": "[1]"}])).is_err());
    }
}
