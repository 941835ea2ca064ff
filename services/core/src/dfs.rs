//! DFSDT, ToolBench's `DFS_woFilter_w2`, driving α-UMi agent steps: a pre-order tree
//! search where each agent step adds a Thought, an Action and an Action Input node; a
//! node tries up to `width` children, later ones told (by the diversity prompt) what the
//! earlier ones did; a chain ends at `max_depth`; a give-up sends the search one step up;
//! the first final answer ends it. Width 1 is the plain single-chain (ReAct) mode.

use serde::Serialize;
use serde_json::{json, Value};
use tracing::Instrument;

use crate::agent::{agent_step, BoxFuture, FunctionCall, Message, RoleModels};
use crate::env::ToolEnv;
use crate::parse::Decision;
use crate::prompt::RolePrompts;
use crate::pyjson;

pub const DIVERSITY_PROMPT: &str = "This is not the first time you try this task, all previous trails failed.\nBefore you generate my thought for this state, I will first show you your previous actions for this state, and then you must generate actions that is different from all of them. Here are some previous actions candidates:\n{previous_candidate}\nRemember you are now in the intermediate state of a trail, you will first analyze the now state and previous action candidates, then make actions that is different from all the previous.";

#[derive(Debug, Clone, Serialize)]
pub struct SearchConfig {
    /// `single_chain_max_step`: node depth at which a chain ends (3 nodes per step).
    pub single_chain_max_step: usize,
    /// `tree_beam_size`: children tried per node (1 = single chain).
    pub tree_beam_size: usize,
    /// `max_query_count`: agent steps per task before the search aborts.
    pub max_query_count: usize,
    pub answer: usize,
    pub with_filter: bool,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            single_chain_max_step: 12,
            tree_beam_size: 2,
            max_query_count: 200,
            answer: 1,
            with_filter: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeType {
    Thought,
    Action,
    ActionInput,
}

impl NodeType {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeType::Thought => "Thought",
            NodeType::Action => "Action",
            NodeType::ActionInput => "Action Input",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub node_type: NodeType,
    pub description: String,
    pub observation: Option<String>,
    pub observation_code: Option<u32>,
    pub children: Vec<usize>,
    pub father: Option<usize>,
    pub depth: usize,
    pub pruned: bool,
    pub is_terminal: bool,
    pub finished: bool,
    pub expand_num: usize,
    pub messages: Vec<Message>,
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Answered,
    GaveUp,
    /// No answer and no give-up: every chain dead-ended, or the budget ran out.
    Exhausted,
}

pub struct Search {
    pub nodes: Vec<Node>,
    pub config: SearchConfig,
    pub query_count: usize,
    pub total_tokens: usize,
    pub terminal: Vec<usize>,
    pub give_up: Vec<usize>,
    pub query: String,
    /// Why the search stopped early, if it did (a role failure); the task records it.
    pub failure: Option<String>,
}

enum Control {
    /// Pass `n > 1` up the tree (a give-up or a terminal).
    Up(usize),
    Answered,
    Abort,
}

impl Search {
    pub fn new(query: &str, config: SearchConfig) -> Self {
        let root = Node {
            node_type: NodeType::ActionInput,
            description: String::new(),
            observation: None,
            observation_code: None,
            children: vec![],
            father: None,
            depth: 0,
            pruned: false,
            is_terminal: false,
            finished: false,
            expand_num: 0,
            messages: vec![Message::user(query)],
        };
        Search {
            nodes: vec![root],
            config,
            query_count: 0,
            total_tokens: 0,
            terminal: vec![],
            give_up: vec![],
            query: query.to_string(),
            failure: None,
        }
    }

    pub fn outcome(&self) -> Outcome {
        if !self.terminal.is_empty() {
            Outcome::Answered
        } else if !self.give_up.is_empty() {
            Outcome::GaveUp
        } else {
            Outcome::Exhausted
        }
    }

    /// Runs the search from the root.
    pub async fn run(&mut self, models: &dyn RoleModels, prompts: &RolePrompts, env: &ToolEnv<'_>) {
        let _ = self.dfs(0, models, prompts, env).await;
    }

    fn dfs<'a>(
        &'a mut self,
        id: usize,
        models: &'a dyn RoleModels,
        prompts: &'a RolePrompts,
        env: &'a ToolEnv<'a>,
    ) -> BoxFuture<'a, Control> {
        Box::pin(async move {
            let node = &self.nodes[id];
            if node.depth >= self.config.single_chain_max_step || node.pruned || node.is_terminal {
                if node.is_terminal {
                    self.terminal.push(id);
                    return Control::Up(2);
                }
                self.nodes[id].pruned = true;
                if self.nodes[id].observation_code == Some(4) {
                    self.give_up.push(id);
                    return Control::Up(2);
                }
                return Control::Up(1);
            }
            for _ in 0..self.config.tree_beam_size {
                let mut messages = self.nodes[id].messages.clone();
                let diversity = self.diversity_message(id);
                let diversity_index = diversity.map(|m| {
                    messages.push(m);
                    messages.len() - 1
                });
                let step_span = tracing::info_span!(
                    "search_step",
                    node = id,
                    depth = self.nodes[id].depth,
                    query_count = self.query_count + 1,
                    decision = tracing::field::Empty,
                    function = tracing::field::Empty,
                );
                let step = agent_step(models, prompts, env.docs(), &messages)
                    .instrument(step_span.clone())
                    .await;
                self.query_count += 1;
                let step = match step {
                    Ok(step) => step,
                    Err(e) => {
                        self.failure = Some(e);
                        return Control::Abort;
                    }
                };
                step_span.record("decision", tracing::field::debug(step.decision));
                step_span.record("function", step.call.name.as_str());
                self.total_tokens += step.tokens;
                if self.query_count >= self.config.max_query_count {
                    return Control::Abort;
                }
                if let Some(i) = diversity_index {
                    messages[i].valid = Some(false);
                }
                self.nodes[id].messages = messages.clone();
                self.nodes[id].expand_num += 1;

                let (observation, status) = env.step(&step.call.name, &step.call.arguments).await;
                let mut call = step.call.clone();
                if status == 1 {
                    call.name = "invalid_hallucination_function_name".into();
                }
                let assistant = Message {
                    role: "assistant".into(),
                    content: Some(step.thought.clone()),
                    value: step.value.clone(),
                    name: None,
                    function_call: Some(FunctionCall {
                        name: call.name.clone(),
                        arguments: call.arguments.clone(),
                    }),
                    valid: None,
                };
                let thought =
                    self.add_child(id, NodeType::Thought, step.thought.clone(), &messages);
                let action =
                    self.add_child(thought, NodeType::Action, step.call.name.clone(), &messages);
                let mut child_messages = messages.clone();
                child_messages.push(assistant);
                child_messages.push(Message::observation(&call.name, &observation));
                let input = self.add_child(
                    action,
                    NodeType::ActionInput,
                    step.call.arguments.clone(),
                    &child_messages,
                );
                {
                    let n = &mut self.nodes[input];
                    n.observation = Some(observation);
                    n.observation_code = Some(status);
                    match status {
                        4 => n.pruned = true,
                        3 => {
                            n.is_terminal = true;
                            n.finished = true;
                        }
                        _ => {}
                    }
                }
                debug_assert!(step.decision != Decision::GiveUp || status == 4 || status == 2);
                match self.dfs(input, models, prompts, env).await {
                    Control::Abort => return Control::Abort,
                    Control::Answered => return Control::Answered,
                    _ if self.terminal.len() >= self.config.answer => return Control::Answered,
                    Control::Up(n) if n > 1 => return Control::Up(n - 1),
                    Control::Up(_) => continue,
                }
            }
            Control::Up(1)
        })
    }

    fn add_child(
        &mut self,
        father: usize,
        node_type: NodeType,
        description: String,
        messages: &[Message],
    ) -> usize {
        let depth = self.nodes[father].depth + 1;
        self.nodes.push(Node {
            node_type,
            description,
            observation: None,
            observation_code: None,
            children: vec![],
            father: Some(father),
            depth,
            pruned: false,
            is_terminal: false,
            finished: false,
            expand_num: 0,
            messages: messages.to_vec(),
        });
        let id = self.nodes.len() - 1;
        self.nodes[father].children.push(id);
        id
    }

    /// The diversity prompt listing what earlier children of `id` did, or `None` for a
    /// first child.
    fn diversity_message(&self, id: usize) -> Option<Message> {
        let node = &self.nodes[id];
        let candidates: Vec<Value> = node
            .children
            .iter()
            .filter_map(|&child| {
                // Follow first children down to the first Action Input node.
                let mut at = child;
                while self.nodes[at].node_type != NodeType::ActionInput {
                    at = *self.nodes[at].children.first()?;
                }
                let n = &self.nodes[at];
                let function = n
                    .father
                    .map(|f| self.nodes[f].description.clone())
                    .unwrap_or_default();
                Some(json!({
                    "name": function,
                    "arguments": n.description,
                    "function_output": n.observation.clone().unwrap_or_default(),
                    "mento-carlo-action-value": 0.0,
                }))
            })
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let mut text = python_indent2(&Value::Array(candidates)) + "\n";
        if let Some(obs) = &node.observation {
            text.push_str(&format!("again, your former observation: {obs}\n"));
        }
        Some(Message::user(
            &DIVERSITY_PROMPT.replace("{previous_candidate}", &text),
        ))
    }
}

/// `json.dumps(value, indent=2)`: Python's indented layout (`,` at line ends, `": "`),
/// ASCII-escaped.
fn python_indent2(value: &Value) -> String {
    fn write(v: &Value, indent: usize, out: &mut String) {
        let pad = |n: usize| " ".repeat(n);
        match v {
            Value::Array(items) if !items.is_empty() => {
                out.push_str("[\n");
                for (i, item) in items.iter().enumerate() {
                    out.push_str(&pad(indent + 2));
                    write(item, indent + 2, out);
                    out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
                }
                out.push_str(&pad(indent));
                out.push(']');
            }
            Value::Object(map) if !map.is_empty() => {
                out.push_str("{\n");
                for (i, (k, item)) in map.iter().enumerate() {
                    out.push_str(&pad(indent + 2));
                    pyjson::write_str(k, out);
                    out.push_str(": ");
                    write(item, indent + 2, out);
                    out.push_str(if i + 1 < map.len() { ",\n" } else { "\n" });
                }
                out.push_str(&pad(indent));
                out.push('}');
            }
            other => out.push_str(&pyjson::dumps(other)),
        }
    }
    let mut out = String::new();
    write(value, 0, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indent2_matches_python() {
        let v = json!([{"name": "f", "arguments": "{}", "function_output": "é", "mento-carlo-action-value": 0.0}]);
        assert_eq!(
            python_indent2(&v),
            "[\n  {\n    \"name\": \"f\",\n    \"arguments\": \"{}\",\n    \"function_output\": \"\\u00e9\",\n    \"mento-carlo-action-value\": 0.0\n  }\n]"
        );
    }
}
