//! The answer file of one query, in ToolBench's format (`<query_id>_DFS_woFilter_w2.json`,
//! what ToolEval's `convert_to_answer_format.py` reads).

use serde_json::{json, Map, Value};

use crate::dfs::{Node, NodeType, Outcome, Search};

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
    if let Some(obs) = &n.observation {
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

pub fn answer_json(search: &Search, functions: Vec<Value>, prompt_type: &str) -> Value {
    let outcome = search.outcome();
    let chosen = match outcome {
        Outcome::Answered => search.terminal.first().copied(),
        Outcome::GaveUp => search.give_up.first().copied(),
        Outcome::Exhausted => None,
    };
    let mut generation = Map::new();
    generation.insert("valid_data".into(), json!(chosen.is_some()));
    generation.insert("query_count".into(), json!(search.query_count));
    generation.insert("total_tokens".into(), json!(search.total_tokens));
    let final_answer = chosen
        .map(|id| search.nodes[id].description.clone())
        .unwrap_or_default();
    generation.insert("final_answer".into(), json!(final_answer));
    generation.insert(
        "finish_type".into(),
        json!(if outcome == Outcome::Answered {
            "give_answer"
        } else {
            "give_up"
        }),
    );
    generation.insert("function".into(), Value::Array(functions));
    generation.insert("chain".into(), json!([]));
    if let Some(id) = chosen {
        let train_messages: Vec<Value> = path_to(search, id)
            .into_iter()
            .filter(|&n| search.nodes[n].node_type == NodeType::ActionInput)
            .map(|n| json!(search.nodes[n].messages))
            .collect();
        generation.insert("train_messages".into(), Value::Array(train_messages));
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
    let max_length = search.nodes.iter().map(|n| n.depth).max().unwrap_or(0);
    let c = &search.config;
    json!({
        "win": outcome == Outcome::Answered,
        "tree": {"size": search.nodes.len(), "max_length": max_length, "tree": node_json(search, 0, true)},
        "forward_args": {
            "single_chain_max_step": c.single_chain_max_step,
            "tree_beam_size": c.tree_beam_size,
            "max_query_count": c.max_query_count,
            "answer": c.answer,
            "with_filter": c.with_filter,
            "prompt_type": prompt_type,
        },
        "compare_candidates": compare,
        "answer_generation": generation,
    })
}
