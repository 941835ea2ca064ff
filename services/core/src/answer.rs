//! The answer file of one query, in the format the reference's real-time code writes
//! (`DFS_tree_search.to_json(answer=True, process=True)` plus the query; what ToolEval's
//! `convert_to_answer_format.py` reads), named `<query_id>_DFS_woFilter_w2.json`.

use serde_json::{json, Map, Value};

use crate::agent::Message;
use crate::dfs::{Node, NodeType, Outcome, Search};
use crate::task::{fnv1a, mix64};

/// `forward_args.prompt_type`: the reference's default template names, whose texts are
/// umi's (`crate::prompt`).
fn prompt_type() -> Value {
    json!({
        "planner": "toolbench_planner",
        "caller": "toolbench_caller",
        "summarizer": "toolbench_summarizer",
    })
}

/// `tree_node.to_json`: `is_terminal` is always written false, `observation` only when
/// not empty, `io_state` (`{}`) on Action Input nodes.
fn node_json(search: &Search, id: usize, recursive: bool) -> Value {
    let n: &Node = &search.nodes[id];
    let mut m = Map::new();
    m.insert("is_terminal".into(), json!(false));
    m.insert("pruned".into(), json!(n.pruned));
    m.insert("finished".into(), json!(n.finished));
    m.insert("depth".into(), json!(n.depth));
    m.insert("node_type".into(), json!(n.node_type.as_str()));
    m.insert("description".into(), json!(n.description));
    m.insert("Elo".into(), json!(1000.0));
    if let Some(obs) = n.observation.as_deref().filter(|o| !o.is_empty()) {
        m.insert("observation".into(), json!(obs));
    }
    if let Some(code) = n.observation_code {
        m.insert("observation_code".into(), json!(code));
    }
    m.insert("child_count".into(), json!(n.children.len()));
    m.insert("expand_num".into(), json!(n.expand_num));
    if n.node_type == NodeType::ActionInput {
        m.insert("io_state".into(), json!({}));
    }
    if recursive {
        let children: Vec<Value> = n
            .children
            .iter()
            .map(|&c| node_json(search, c, true))
            .collect();
        m.insert("children".into(), Value::Array(children));
    }
    Value::Object(m)
}

/// Node ids from the root's child down to `id`.
fn path_to(search: &Search, id: usize) -> Vec<usize> {
    let mut path = vec![id];
    let mut at = id;
    while let Some(f) = search.nodes[at].father {
        if f == 0 {
            break;
        }
        path.push(f);
        at = f;
    }
    path.reverse();
    path
}

/// `sift_first_invalid_message`: every valid message, and of the spent (`valid: false`)
/// retry prompts only the last.
fn sift_spent(messages: Vec<Message>) -> Vec<Message> {
    let last_spent = messages.iter().rposition(|m| m.valid == Some(false));
    messages
        .into_iter()
        .enumerate()
        .filter(|(i, m)| m.valid != Some(false) || Some(*i) == last_spent)
        .map(|(_, m)| m)
        .collect()
}

/// `get_train_messages_from_this_node`: one message list per step on the path to `id`,
/// top down. An Action Input node gives its messages cut back to its last assistant
/// message; a Thought node its messages without trailing user turns, kept only if they
/// then end with an assistant message; both sifted of spent retry prompts but the last.
fn train_messages(search: &Search, id: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for n in path_to(search, id) {
        let node = &search.nodes[n];
        let mut messages = node.messages.clone();
        match node.node_type {
            NodeType::ActionInput => {
                while messages.last().is_some_and(|m| m.role != "assistant") {
                    messages.pop();
                }
            }
            NodeType::Thought => {
                while messages.last().is_some_and(|m| m.role == "user") {
                    messages.pop();
                }
            }
            NodeType::Action => continue,
        }
        let messages = sift_spent(messages);
        let keep = node.node_type == NodeType::ActionInput
            || messages.last().is_some_and(|m| m.role == "assistant");
        if keep {
            out.push(json!(messages));
        }
    }
    out
}

/// The give-up chain reported when no chain answered: the reference draws one at random;
/// umi draws from the search's seed and the query, so a rerun picks the same one.
fn chosen_give_up(search: &Search) -> Option<usize> {
    if search.give_up.is_empty() {
        return None;
    }
    let draw = mix64(search.config.seed ^ fnv1a(search.query.bytes()));
    Some(search.give_up[(draw % search.give_up.len() as u64) as usize])
}

/// The outcome an answer file records, read back from `answer_generation` as
/// [`answer_json`] writes it (`valid_data` false: exhausted; else by `finish_type`); None
/// for a file that is not such an answer.
pub fn recorded_outcome(answer: &Value) -> Option<Outcome> {
    let generation = answer.get("answer_generation")?;
    let valid = generation.get("valid_data")?.as_bool()?;
    Some(match (valid, generation.get("finish_type")?.as_str()?) {
        (false, _) => Outcome::Exhausted,
        (true, "give_up") => Outcome::GaveUp,
        (true, _) => Outcome::Answered,
    })
}

pub fn answer_json(search: &Search, functions: Vec<Value>) -> Value {
    let answered = search
        .terminal
        .iter()
        .copied()
        .find(|&id| !search.nodes[id].pruned);
    let (chosen, finish_type) = match (answered, chosen_give_up(search)) {
        (Some(id), _) => (Some(id), "give_answer"),
        (None, Some(id)) => (Some(id), "give_up"),
        // Neither: the reference leaves its default, `give_answer`, with valid_data false.
        (None, None) => (None, "give_answer"),
    };
    let mut generation = Map::new();
    generation.insert("valid_data".into(), json!(chosen.is_some()));
    generation.insert("query_count".into(), json!(search.query_count));
    generation.insert("total_tokens".into(), json!(search.total_tokens));
    let final_answer = chosen
        .map(|id| search.nodes[id].description.clone())
        .unwrap_or_default();
    generation.insert("final_answer".into(), json!(final_answer));
    generation.insert("finish_type".into(), json!(finish_type));
    generation.insert("function".into(), Value::Array(functions));
    generation.insert("chain".into(), json!([]));
    if let Some(id) = chosen {
        generation.insert(
            "train_messages".into(),
            Value::Array(train_messages(search, id)),
        );
    }
    generation.insert("query".into(), json!(search.query));
    let compare: Vec<Value> = search
        .terminal
        .iter()
        .filter(|&&id| !search.nodes[id].pruned)
        .map(|&id| {
            Value::Array(
                path_to(search, id)
                    .into_iter()
                    .map(|n| node_json(search, n, false))
                    .collect(),
            )
        })
        .collect();
    // Width 1 is ToolBench's single chain (CoT@1): its converter reads an unsolved
    // query's `trys`, each try the node path of one chain (`to_json_single`).
    let trys = (search.config.tree_beam_size == 1).then(|| {
        let last = search.nodes.len() - 1;
        let chain: Vec<Value> = if last == 0 {
            vec![]
        } else {
            path_to(search, last)
                .into_iter()
                .map(|n| node_json(search, n, false))
                .collect()
        };
        json!([{"chain": chain, "win": !search.terminal.is_empty()}])
    });
    // `get_max_depth`: levels of the tree, the root's counted.
    let max_length = search.nodes.iter().map(|n| n.depth).max().unwrap_or(0) + 1;
    let c = &search.config;
    let mut answer = json!({
        "win": !search.terminal.is_empty(),
        "tree": {"size": search.nodes.len(), "max_length": max_length, "tree": node_json(search, 0, true)},
        "forward_args": {
            "single_chain_max_step": c.single_chain_max_step,
            "tree_beam_size": c.tree_beam_size,
            "max_query_count": c.max_query_count,
            "answer": c.answer,
            "with_filter": c.with_filter,
        },
        "compare_candidates": compare,
        "answer_generation": generation,
    });
    // The fork's search records α-UMi's templates; upstream ToolBench's has no such key.
    if !c.agent.toolbench_messages() {
        answer["forward_args"]["prompt_type"] = prompt_type();
    }
    if let Some(trys) = trys {
        answer["try_count"] = json!(1);
        answer["trys"] = trys;
    }
    answer
}

/// The system message `toolbench_roles` adds: ToolBench's converters start reading a
/// conversation at its third message, after a system and a user message.
pub const TOOLBENCH_SYSTEM: &str = "This task was solved by α-UMi: a planner, a caller and a summarizer, each prompted with α-UMi's own templates (not this message).";

/// An answer file in the message roles upstream ToolBench's and StableToolBench's
/// converters read (`umi run --answer-format toolbench`): each train conversation gets a
/// leading `system` message and its observations become `function` messages (`role`,
/// `name`, `content`). α-UMi's own converter reads the default format instead (it
/// rejects `function`; the others reject `observation`).
pub fn toolbench_roles(answer: &mut Value) {
    let Some(conversations) = answer
        .pointer_mut("/answer_generation/train_messages")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for conversation in conversations.iter_mut().filter_map(Value::as_array_mut) {
        for m in conversation.iter_mut() {
            if m["role"] == "observation" {
                *m = json!({"role": "function", "name": m["name"], "content": m["content"]});
            }
        }
        if conversation.first().is_none_or(|m| m["role"] != "system") {
            conversation.insert(0, json!({"role": "system", "content": TOOLBENCH_SYSTEM}));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spent_retry_prompts_are_dropped_but_the_last() {
        let spent = |t: &str| Message {
            valid: Some(false),
            ..Message::user(t)
        };
        let kept = sift_spent(vec![
            Message::user("q"),
            spent("d1"),
            Message::observation("f", "o"),
            spent("d2"),
            Message::user("u"),
        ]);
        let texts: Vec<&str> = kept.iter().map(|m| m.shown()).collect();
        assert_eq!(texts, ["q", "o", "d2", "u"]);
    }

    #[test]
    fn toolbench_roles_turn_observations_into_function_messages_after_a_system_one() {
        let mut answer = json!({"answer_generation": {"train_messages": [[
            {"role": "user", "content": "q", "value": "q"},
            {"role": "assistant", "content": "t", "function_call": {"name": "f", "arguments": "{}"}, "value": "v"},
            {"role": "observation", "name": "f", "content": "o", "value": "o"},
        ]]}});
        toolbench_roles(&mut answer);
        let c = &answer["answer_generation"]["train_messages"][0];
        assert_eq!(c[0]["role"], "system");
        assert_eq!(c[1]["role"], "user");
        assert_eq!(c[2]["role"], "assistant");
        assert_eq!(
            c[3],
            json!({"role": "function", "name": "f", "content": "o"})
        );
    }
}
