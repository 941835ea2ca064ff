//! ToolBench's own agents, the reference runner's other backbones (`toolllama`,
//! `chatgpt_function`): the AutoGPT-style system and user messages their DFSDT search
//! starts from, ToolLLaMA's prompt (`ToolLLaMA.parse`, template
//! `tool-llama-single-round`) and ReAct parser (`react_parser`), verbatim from upstream
//! ToolBench (`toolbench/inference/Prompts/ReAct_prompts.py`,
//! `Downstream_tasks/rapidapi.py`, `toolbench/utils.py`, `inference/utils.py`).
//!
//! The α-UMi fork copies these files unchanged but starts every search from the bare
//! query and α-UMi's `observation` messages, which ToolLLaMA's parser rejects (a
//! `KeyError` at the second step) and OpenAI's API refuses; umi runs these backbones as
//! upstream ToolBench does, the way their published numbers were made.

use serde_json::Value;

use crate::agent::Message;
use crate::error::{CoreError, Result};
use crate::prompt::HistoryTurn;
use crate::pyjson;

/// `FORMAT_INSTRUCTIONS_SYSTEM_FUNCTION`.
pub const SYSTEM_TEMPLATE: &str = "You are AutoGPT, you can use many tools(functions) to do the following task.\nFirst I will give you the task description, and your task start.\nAt each step, you need to give your thought to analyze the status now and what to do next, with a function call to actually excute your step.\nAfter the call, you will get the call result, and you are now in a new state.\nThen you will analyze your status now, then decide what to do next...\nAfter many (Thought-call) pairs, you finally perform the task, then you can give your finial answer.\nRemember: \n1.the state change is irreversible, you can't go back to one of the former state, if you want to restart the task, say \"I give up and restart\".\n2.All the thought is short, at most in 5 sentence.\n3.You can do more then one trys, so if your plan is to continusly try some conditions, you can do one of the conditions per try.\nLet's Begin!\nTask description: {task_description}";

/// `FORMAT_INSTRUCTIONS_USER_FUNCTION`.
pub const USER_TEMPLATE: &str = "\n{input_description}\nBegin!\n";

/// The head of `rapidapi_wrapper.task_description`; each tool's line follows.
pub const TASK_DESCRIPTION_HEAD: &str = "You should use functions to help handle the real time user querys. Remember:\n1.ALWAYS call \"Finish\" function at the end of the task. And the final answer should contain enough information to show to the user,If you can't handle the task, or you find that function calls always fail(the function is not valid now), use function Finish->give_up_and_restart.\n2.Do not use origin tool names, use only subfunctions' names.\nYou have access of the following tools:\n";

/// ToolLLaMA's turn labels (`tool-llama-single-round`'s roles) by message role.
const TOOLLLAMA_ROLES: [(&str, &str); 4] = [
    ("system", "System"),
    ("user", "User"),
    ("function", "Function"),
    ("assistant", "Assistant"),
];

/// `rapidapi_wrapper.task_description`: the head, then one line per tool in the order of
/// the query's `api_list`, `k.<standard tool name>: <description>`, the description's
/// first 512 characters with newlines removed, stripped, `None` when empty. A tool listed
/// twice keeps its first place (the reference's dict), and the last description given.
pub fn task_description(tools: &[(String, String)]) -> String {
    let mut unique: Vec<(&str, &str)> = Vec::new();
    for (name, description) in tools {
        match unique.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = description,
            None => unique.push((name, description)),
        }
    }
    let mut text = TASK_DESCRIPTION_HEAD.to_string();
    for (k, (name, description)) in unique.iter().enumerate() {
        let head: String = description.chars().take(512).collect();
        let head = head.replace('\n', "");
        let stripped = match pyjson::strip(&head) {
            "" => "None",
            s => s,
        };
        text.push_str(&format!("{}.{name}: {stripped}\n", k + 1));
    }
    text
}

/// The search's first two messages' texts: the system message (the task description in
/// `FORMAT_INSTRUCTIONS_SYSTEM_FUNCTION`) and the user message (the query).
pub fn opening(task_description: &str, query: &str) -> (String, String) {
    (
        SYSTEM_TEMPLATE.replace("{task_description}", task_description),
        USER_TEMPLATE.replace("{input_description}", query),
    )
}

/// `process_system_message`: the ReAct format asked for, and the functions listed as
/// Python prints them (`listed`: `str(functions)`, printed once per prompt).
fn process_system_message(system: &str, listed: &str) -> String {
    let system = system.replace(
        "with a function call to actually excute your step.",
        "with a function call to actually excute your step. Your output should follow this format:\nThought:\nAction\nAction Input:\n",
    );
    format!("{system}\nSpecifically, you have access to the following APIs: {listed}")
}

/// A conversation as ToolLLaMA's prompt shows it: each message's role and content (a
/// `null` content as Python prints it, `None`). A role the template has no label for is
/// refused, naming it (the reference raises a `KeyError`).
pub fn toolllama_turns(messages: &[Message]) -> Result<Vec<HistoryTurn>> {
    messages
        .iter()
        .map(|m| {
            if !TOOLLLAMA_ROLES.iter().any(|(r, _)| *r == m.role) {
                return Err(CoreError::invalid(
                    "conversation",
                    format!(
                        "ToolLLaMA's template has no turn for a {:?} message",
                        m.role
                    ),
                ));
            }
            Ok(HistoryTurn::new(
                &m.role,
                m.content.as_deref().unwrap_or("None"),
            ))
        })
        .collect()
}

/// ToolLLaMA's prompt (`ToolLLaMA.parse`): each message as `<Label>: <content>\n` (the
/// system message through `process_system_message` when there are functions; spent
/// retry prompts included, as the reference does not filter them), then `Assistant:\n`.
/// `turns` are the messages as `toolllama_turns` gives them (a search has one system
/// message; requests off the wire are held to that, `umi_rpc::wire`, so the function list
/// is never repeated); a role the template has no label for is shown as it is.
pub fn toolllama_prompt(turns: &[HistoryTurn], functions: &[Value]) -> String {
    let listed = (!functions.is_empty()).then(|| pyjson::repr(&Value::Array(functions.to_vec())));
    let mut prompt = String::new();
    for turn in turns {
        let label = TOOLLLAMA_ROLES
            .iter()
            .find(|(r, _)| *r == turn.label)
            .map_or(turn.label.as_str(), |(_, l)| l);
        prompt.push_str(label);
        prompt.push_str(": ");
        if let (true, Some(listed)) = (label == "System", &listed) {
            prompt.push_str(&process_system_message(&turn.value, listed));
        } else {
            prompt.push_str(&turn.value);
        }
        prompt.push('\n');
    }
    prompt.push_str("Assistant:\n");
    prompt
}

/// `react_parser`: the thought, action and action input of a ReAct text, cut exactly as
/// the reference's `str.find` slices cut it (a missing marker's `-1` included).
pub fn react_parser(text: &str) -> (String, String, String) {
    let chars: Vec<char> = text.chars().collect();
    let find = |needle: &str| -> isize {
        text.find(needle)
            .map_or(-1, |byte| text[..byte].chars().count() as isize)
    };
    let len = |s: &str| s.chars().count() as isize;
    let thought = py_slice(
        &chars,
        find("Thought: ") + len("Thought: "),
        find("\nAction: "),
    );
    let action = py_slice(
        &chars,
        find("Action: ") + len("Action: "),
        find("\nAction Input: "),
    );
    let input_start = find("Action Input: ") + len("Action Input: ");
    let action_input = py_slice(&chars, input_start, chars.len() as isize);
    (thought, action, action_input)
}

/// Python's `s[start:end]` on characters (negative indices from the end, clamped).
fn py_slice(chars: &[char], start: isize, end: isize) -> String {
    let n = chars.len() as isize;
    let at = |i: isize| -> usize {
        let i = if i < 0 { i + n } else { i };
        i.clamp(0, n) as usize
    };
    let (s, e) = (at(start), at(end));
    if s >= e {
        return String::new();
    }
    chars[s..e].iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Pins `react_parser` on well-formed and broken texts (values from CPython).
    #[test]
    fn react_parser_slices_as_python_does() {
        let (t, a, i) =
            react_parser("Thought: I search.\nAction: search_for_x\nAction Input: {\"q\": 1}");
        assert_eq!(
            (t.as_str(), a.as_str(), i.as_str()),
            ("I search.", "search_for_x", "{\"q\": 1}")
        );
        // No markers at all: thought = s[8:-1], action = s[7:-1], input = s[13:].
        let (t, a, i) = react_parser("just some words here");
        assert_eq!(
            (t.as_str(), a.as_str(), i.as_str()),
            ("e words her", "me words her", "ds here")
        );
        // A thought with no "Thought: " prefix.
        let (t, a, _) = react_parser("Plan é\nAction: f\nAction Input: {}");
        assert_eq!((t.as_str(), a.as_str()), ("", "f"));
    }

    #[test]
    fn task_description_lists_each_tool_once_with_its_cut_description() {
        let tools = vec![
            ("weather".to_string(), "Weather\nfor all ".to_string()),
            ("maps".to_string(), "   ".to_string()),
            ("weather".to_string(), "Weather, again".to_string()),
        ];
        assert_eq!(
            task_description(&tools),
            format!("{TASK_DESCRIPTION_HEAD}1.weather: Weather, again\n2.maps: None\n")
        );
    }

    #[test]
    fn toolllama_prompt_labels_turns_and_lists_functions_in_the_system_message() {
        let functions = vec![json!({"name": "f", "parameters": {"required": []}})];
        let turns = vec![
            HistoryTurn::new(
                "system",
                "do it with a function call to actually excute your step.",
            ),
            HistoryTurn::new("user", "q"),
            HistoryTurn::new("assistant", "t"),
            HistoryTurn::new("function", "{\"error\": \"\"}"),
        ];
        assert_eq!(
            toolllama_prompt(&turns, &functions),
            "System: do it with a function call to actually excute your step. Your output should follow this format:\nThought:\nAction\nAction Input:\n\nSpecifically, you have access to the following APIs: [{'name': 'f', 'parameters': {'required': []}}]\nUser: q\nAssistant: t\nFunction: {\"error\": \"\"}\nAssistant:\n"
        );
    }
}
