//! DFSDT, ToolBench's `DFS_woFilter_w2`, driving α-UMi agent steps: a pre-order tree
//! search where each agent step adds a Thought, an Action and an Action Input node; a
//! node tries up to `width` children, later ones told (by the diversity prompt) what the
//! earlier ones did; a chain ends at `max_depth`; a give-up sends the search one step up;
//! the first final answer ends it. Width 1 is the plain single-chain (ReAct) mode.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::Instrument;

use crate::agent::{BoxFuture, FunctionCall, Message, RoleModels};
use crate::agents::AgentKind;
use crate::env::{status, ToolEnv};
use crate::error::CoreError;
use crate::parse::Decision;
use crate::pyjson;

pub const DIVERSITY_PROMPT: &str = "This is not the first time you try this task, all previous trails failed.\nBefore you generate my thought for this state, I will first show you your previous actions for this state, and then you must generate actions that is different from all of them. Here are some previous actions candidates:\n{previous_candidate}\nRemember you are now in the intermediate state of a trail, you will first analyze the now state and previous action candidates, then make actions that is different from all the previous.";

/// The reference's `final_answer_back_length`: how far a final answer marks its chain
/// finished.
const FINAL_ANSWER_BACK_LENGTH: usize = 2;

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
    /// Seeds the choice among give-up chains when no chain answered (the reference picks
    /// one with Python's `random`); with the query, it makes the choice reproducible.
    pub seed: u64,
    /// Which agent takes the steps.
    pub agent: AgentKind,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            single_chain_max_step: 12,
            tree_beam_size: 2,
            max_query_count: crate::presets::REFERENCE_MAX_STEPS,
            answer: 1,
            with_filter: false,
            seed: crate::presets::DEFAULT_SEED,
            agent: AgentKind::AlphaUmi,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The reference's `now_expand_num`: visits so far, each visited node numbered by it.
    pub visits: usize,
    pub query: String,
    /// Why the search stopped early, if it did (a role failure); the task records it.
    pub failure: Option<CoreError>,
}

enum Control {
    /// Pass `n > 1` up the tree (a give-up or a terminal).
    Up(usize),
    Answered,
    Abort,
}

impl Search {
    /// A search for `query` whose root holds `opening` (`AgentKind::opening`).
    pub fn new(query: &str, config: SearchConfig, opening: Vec<Message>) -> Self {
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
            messages: opening,
        };
        Search {
            nodes: vec![root],
            config,
            query_count: 0,
            total_tokens: 0,
            terminal: vec![],
            give_up: vec![],
            visits: 0,
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
    pub async fn run(&mut self, models: &dyn RoleModels, env: &ToolEnv<'_>) {
        let _ = self.dfs(0, models, env).await;
    }

    fn dfs<'a>(
        &'a mut self,
        id: usize,
        models: &'a dyn RoleModels,
        env: &'a ToolEnv<'a>,
    ) -> BoxFuture<'a, Control> {
        Box::pin(async move {
            self.nodes[id].expand_num = self.visits;
            self.visits += 1;
            let node = &self.nodes[id];
            if node.depth >= self.config.single_chain_max_step || node.pruned || node.is_terminal {
                if node.is_terminal {
                    self.terminal.push(id);
                    return Control::Up(2);
                }
                self.nodes[id].pruned = true;
                if self.nodes[id].observation_code == Some(status::GIVE_UP) {
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
                let agent = self.config.agent;
                let reply = agent
                    .step(models, env, &messages)
                    .instrument(step_span.clone())
                    .await;
                self.query_count += 1;
                let reply = match reply {
                    Ok(reply) => reply,
                    Err(e) => {
                        self.failure = Some(e);
                        return Control::Abort;
                    }
                };
                if let Some(decision) = reply.decision {
                    step_span.record("decision", tracing::field::debug(decision));
                }
                if let Some(call) = &reply.message.function_call {
                    step_span.record("function", call.name.as_str());
                }
                self.total_tokens += reply.tokens;
                if self.query_count >= self.config.max_query_count {
                    return Control::Abort;
                }
                if let Some(i) = diversity_index {
                    messages[i].valid = Some(false);
                }
                self.nodes[id].messages = messages.clone();

                // As the reference: a content makes a Thought node, a call an Action and
                // an Action Input node below it; the last node made takes the message.
                let (message, decision) = (reply.message, reply.decision);
                let mut last = id;
                if let Some(content) = &message.content {
                    last = self.add_child(last, NodeType::Thought, content.clone(), &messages);
                }
                let next = match message.function_call.clone() {
                    None => {
                        self.nodes[last].messages.push(message);
                        last
                    }
                    Some(call) => self.take_call(last, call, message, &messages, env).await,
                };
                debug_assert!(
                    decision != Some(Decision::GiveUp)
                        || matches!(
                            self.nodes[next].observation_code,
                            Some(status::GIVE_UP | status::BAD_FINISH)
                        )
                );
                match self.dfs(next, models, env).await {
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

    /// Makes a step's call: its Action and Action Input nodes below `last`, the tool's
    /// observation (a hallucinated name renamed in the message, as the reference does),
    /// the message and the observation message appended to the input node's messages.
    /// Returns the Action Input node.
    async fn take_call(
        &mut self,
        last: usize,
        call: FunctionCall,
        mut message: Message,
        messages: &[Message],
        env: &ToolEnv<'_>,
    ) -> usize {
        let agent = self.config.agent;
        let action = self.add_child(last, NodeType::Action, call.name.clone(), messages);
        let (observation, code) = env.step(&call.name, &call.arguments).await;
        if code == status::NO_SUCH_FUNCTION {
            if let Some(c) = message.function_call.as_mut() {
                c.name = "invalid_hallucination_function_name".into();
            }
        }
        let shown_name = message
            .function_call
            .as_ref()
            .map_or(call.name.clone(), |c| c.name.clone());
        let mut child_messages = messages.to_vec();
        child_messages.push(message);
        child_messages.push(agent.observation_message(&shown_name, &observation));
        let input = self.add_child(
            action,
            NodeType::ActionInput,
            call.arguments.clone(),
            &child_messages,
        );
        {
            let n = &mut self.nodes[input];
            n.observation = Some(observation);
            n.observation_code = Some(code);
            match code {
                status::GIVE_UP => n.pruned = true,
                status::FINAL_ANSWER => n.is_terminal = true,
                _ => {}
            }
        }
        if code == status::FINAL_ANSWER {
            self.make_finish(input, FINAL_ANSWER_BACK_LENGTH);
        }
        input
    }

    /// `tree_node.make_finish`: marks `id` and its ancestors finished, up to and
    /// including the `inter_val + 1`-th Action Input node counted from `id` itself.
    fn make_finish(&mut self, id: usize, inter_val: usize) {
        let mut left = inter_val as isize;
        let mut at = Some(id);
        while let Some(n) = at {
            let node = &mut self.nodes[n];
            node.finished = true;
            if node.node_type == NodeType::ActionInput {
                left -= 1;
            }
            if left < 0 {
                break;
            }
            at = node.father;
        }
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
        let mut text = pyjson::dumps_indented(&Value::Array(candidates), 2) + "\n";
        if let Some(obs) = &node.observation {
            text.push_str(&format!("again, your former observation: {obs}\n"));
        }
        Some(
            self.config
                .agent
                .user_message(&DIVERSITY_PROMPT.replace("{previous_candidate}", &text)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{Generated, RoleKind, RoleRequest};
    use crate::env::{ApiCall, ApiReply, BackendFailure, ToolBackend};
    use crate::error::ErrorClass;
    use crate::prompt::RolePrompts;
    use crate::testing::{block_on, weather_api};
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// Test double for the role models: replays scripted outputs per role and records
    /// every prompt it was given.
    struct ScriptedRoles {
        outputs: Mutex<Vec<(RoleKind, VecDeque<&'static str>)>>,
        prompts: Mutex<Vec<(RoleKind, String)>>,
    }

    impl ScriptedRoles {
        fn new(
            planner: &[&'static str],
            caller: &[&'static str],
            summarizer: &[&'static str],
        ) -> Self {
            ScriptedRoles {
                outputs: Mutex::new(vec![
                    (RoleKind::Planner, planner.iter().copied().collect()),
                    (RoleKind::Caller, caller.iter().copied().collect()),
                    (RoleKind::Summarizer, summarizer.iter().copied().collect()),
                ]),
                prompts: Mutex::new(vec![]),
            }
        }

        fn planner_prompts(&self) -> Vec<String> {
            let prompts = self.prompts.lock().unwrap();
            prompts
                .iter()
                .filter(|(r, _)| *r == RoleKind::Planner)
                .map(|(_, p)| p.clone())
                .collect()
        }
    }

    impl RoleModels for ScriptedRoles {
        fn generate<'a>(&'a self, request: RoleRequest) -> BoxFuture<'a, crate::Result<Generated>> {
            let role = request.role;
            self.prompts.lock().unwrap().push((
                role,
                request
                    .render(&RolePrompts::toolbench())
                    .unwrap_or_default(),
            ));
            let mut outputs = self.outputs.lock().unwrap();
            let text = outputs
                .iter_mut()
                .find(|(r, _)| *r == role)
                .and_then(|(_, q)| q.pop_front());
            let result = text
                .map(|t| Generated {
                    text: t.to_string(),
                    ..Generated::default()
                })
                .ok_or_else(|| {
                    CoreError::role(role, ErrorClass::Unavailable, 1, "script exhausted")
                });
            Box::pin(async move { result })
        }
    }

    /// Test double for a tool backend: answers every call with a fixed text.
    struct FixedReply;

    impl ToolBackend for FixedReply {
        fn call<'a>(
            &'a self,
            _call: &'a ApiCall,
        ) -> BoxFuture<'a, Result<ApiReply, BackendFailure>> {
            Box::pin(async { Ok(ApiReply::text("{'temp': 21}")) })
        }
    }

    const CALL: &str = "Action: current_for_weather_api\nAction Input: {\"city\": \"Paris\"}";

    fn search(roles: &ScriptedRoles, width: usize) -> Search {
        let env = ToolEnv::new(vec![weather_api()], &FixedReply);
        let mut search = Search::new(
            "Weather in Paris?",
            SearchConfig {
                tree_beam_size: width,
                ..SearchConfig::default()
            },
            vec![Message::user("Weather in Paris?")],
        );
        block_on(search.run(roles, &env));
        search
    }

    #[test]
    fn call_then_conclusion_answers_in_two_steps() {
        let roles = ScriptedRoles::new(
            &[
                "I need the weather. Next: caller.",
                "I know. Next: conclusion.",
            ],
            &[CALL],
            &["21 degrees in Paris."],
        );
        let s = search(&roles, 2);
        assert_eq!(s.outcome(), Outcome::Answered);
        assert_eq!(s.query_count, 2);
        // root, then Thought/Action/Action Input twice.
        assert_eq!(s.nodes.len(), 7);
        let terminal = &s.nodes[s.terminal[0]];
        assert_eq!(terminal.depth, 6);
        assert_eq!(terminal.observation_code, Some(status::FINAL_ANSWER));
        assert_eq!(
            terminal.description,
            r#"{"return_type": "give_answer", "final_answer": "21 degrees in Paris."}"#
        );
        assert_eq!(s.nodes[3].observation.as_deref(), Some(r#""{'temp': 21}""#));
        // The second planner prompt shows the first step exactly as the model was trained on.
        let second = &roles.planner_prompts()[1];
        assert!(second.contains(&format!(
            "user: Weather in Paris?</s>assistant: I need the weather. Next: caller.</s>caller: {}</s>observation: \"{{'temp': 21}}\"\nYou are the assistant",
            CALL.replace("\\n", "\n")
        )), "{second}");
    }

    #[test]
    fn a_give_up_backtracks_and_the_retry_sees_the_diversity_prompt() {
        let roles = ScriptedRoles::new(
            &[
                "Try it. Next: caller.",
                "Hopeless. Next: give up.",
                "Other idea. Next: conclusion.",
            ],
            &[CALL],
            &["It is 21 degrees."],
        );
        let s = search(&roles, 2);
        assert_eq!(s.outcome(), Outcome::Answered);
        assert_eq!(s.give_up.len(), 1);
        let prompts = roles.planner_prompts();
        assert_eq!(prompts.len(), 3);
        assert!(!prompts[1].contains("This is not the first time"));
        let retry = &prompts[2];
        assert!(
            retry.contains("user: This is not the first time you try this task"),
            "{retry}"
        );
        assert!(
            retry.contains("\"name\": \"current_for_weather_api\""),
            "{retry}"
        );
        assert!(
            retry.contains("\"mento-carlo-action-value\": 0.0"),
            "{retry}"
        );
        // The spent diversity message is kept but marked invalid on the root.
        assert_eq!(s.nodes[0].messages.last().unwrap().valid, Some(false));
    }

    /// Pins `DFS.py`/`Tree.py` as the answer file shows them: `expand_num` is the global
    /// visit counter, a final answer marks its chain finished up to the third Action
    /// Input node (`make_finish(2)`), `max_length` counts the root's level, and
    /// `train_messages` keeps one list per Action Input step, cut at its assistant
    /// message, with the spent retry prompt (`valid: false`) kept as the last one.
    #[test]
    fn answer_file_fields_follow_the_reference_tree() {
        let roles = ScriptedRoles::new(
            &[
                "Try it. Next: caller.",
                "Hopeless. Next: give up.",
                "Other idea. Next: caller.",
                "I know. Next: conclusion.",
            ],
            &[CALL, CALL],
            &["21 degrees."],
        );
        let s = search(&roles, 2);
        assert_eq!(s.outcome(), Outcome::Answered);
        let answer = crate::answer::answer_json(&s, vec![]);
        let expand: Vec<usize> = s.nodes.iter().map(|n| n.expand_num).collect();
        assert_eq!(expand, [0, 0, 0, 1, 0, 0, 2, 0, 0, 3, 0, 0, 4]);
        let finished: Vec<usize> = (0..s.nodes.len())
            .filter(|&i| s.nodes[i].finished)
            .collect();
        assert_eq!(finished, [0, 7, 8, 9, 10, 11, 12]);
        assert_eq!(answer["tree"]["max_length"], 7);
        assert_eq!(answer["tree"]["size"], 13);
        let generation = &answer["answer_generation"];
        assert_eq!(generation["finish_type"], "give_answer");
        let train = generation["train_messages"].as_array().unwrap();
        assert_eq!(train.len(), 2);
        let roles_of = |i: usize| -> Vec<String> {
            train[i]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["role"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(roles_of(0), ["user", "user", "assistant"]);
        assert_eq!(
            roles_of(1),
            ["user", "user", "assistant", "observation", "assistant"]
        );
        assert_eq!(train[1][1]["valid"], false);
        // The caller step's thought keeps its marker, as `collab_agent_parser` leaves it.
        assert_eq!(train[1][2]["content"], "Other idea. Next: caller.");
        assert_eq!(s.nodes[7].description, "Other idea. Next: caller.");
    }

    /// Pins `to_json(answer=True)` when nothing answered: with give-ups, one of them is
    /// reported (`finish_type: give_up`); with none, `valid_data` is false and the
    /// reference's default `finish_type`, `give_answer`, stays.
    #[test]
    fn unanswered_searches_report_as_the_reference() {
        let roles = ScriptedRoles::new(&["No. Next: give up."; 4], &[], &[]);
        let s = search(&roles, 2);
        let generation = &crate::answer::answer_json(&s, vec![])["answer_generation"];
        assert_eq!(generation["valid_data"], true);
        assert_eq!(generation["finish_type"], "give_up");
        assert_eq!(
            generation["final_answer"],
            r#"{"return_type": "give_up_and_restart"}"#
        );
        let roles = ScriptedRoles::new(
            &["a Next: caller."; 30],
            &["Action: no_such_api\nAction Input: {}"; 30],
            &[],
        );
        let s = search(&roles, 1);
        let answer = crate::answer::answer_json(&s, vec![]);
        let generation = &answer["answer_generation"];
        assert_eq!(answer["win"], false);
        // A single chain (CoT@1) also lists its try, node by node, for ToolEval's
        // converter (`process_invalid_data` reads `trys[*].chain`).
        let chain = answer["trys"][0]["chain"].as_array().unwrap();
        let types: Vec<&str> = chain
            .iter()
            .map(|n| n["node_type"].as_str().unwrap())
            .collect();
        assert_eq!(types.len(), 12);
        assert_eq!(types[..3], ["Thought", "Action", "Action Input"]);
        assert_eq!(answer["trys"][0]["win"], false);
        assert_eq!(generation["valid_data"], false);
        assert_eq!(generation["finish_type"], "give_answer");
        assert!(generation.get("train_messages").is_none());
    }

    /// The reference reports a random give-up chain when nothing answered; umi draws it
    /// from the seed and the query: the same seed, the same chain; other seeds, the other.
    #[test]
    fn the_reported_give_up_is_drawn_from_the_seed() {
        let roles = ScriptedRoles::new(
            &["A. Next: caller.", "B. Next: give up.", "C. Next: give up."],
            &[CALL],
            &[],
        );
        let mut s = search(&roles, 2);
        assert_eq!(s.give_up.len(), 2);
        let steps = |s: &Search| {
            crate::answer::answer_json(s, vec![])["answer_generation"]["train_messages"]
                .as_array()
                .unwrap()
                .len()
        };
        let mut seen = std::collections::HashSet::new();
        for seed in 0..16 {
            s.config.seed = seed;
            let first = steps(&s);
            assert_eq!(steps(&s), first);
            seen.insert(first);
        }
        assert_eq!(seen, [1, 2].into_iter().collect());
    }

    #[test]
    fn hallucinated_functions_are_renamed_and_chains_end_at_max_depth() {
        let roles = ScriptedRoles::new(
            &["a Next: caller."; 30],
            &["Action: no_such_api\nAction Input: {}"; 30],
            &[],
        );
        let s = search(&roles, 1);
        // Width 1: one chain of 4 steps (depth 12), then nothing else to try.
        assert_eq!(s.query_count, 4);
        assert_eq!(s.outcome(), Outcome::Exhausted);
        let first_input = &s.nodes[3];
        assert_eq!(first_input.observation_code, Some(status::NO_SUCH_FUNCTION));
        let call = first_input
            .messages
            .iter()
            .rev()
            .find(|m| m.role == "assistant")
            .unwrap();
        assert_eq!(
            call.function_call.as_ref().unwrap().name,
            "invalid_hallucination_function_name"
        );
    }

    /// A ToolBench agent's reply without a call leaves a Thought node alone, holding the
    /// message, and the next step grows below it (one level a step).
    #[test]
    fn a_reply_without_a_call_is_a_thought_and_the_search_goes_on_below_it() {
        let roles = ScriptedRoles::new(&["just thinking"; 5], &[], &[]);
        let env = ToolEnv::new(vec![weather_api()], &FixedReply);
        let config = SearchConfig {
            single_chain_max_step: 3,
            tree_beam_size: 1,
            agent: AgentKind::OpenAiFunctions,
            ..SearchConfig::default()
        };
        let opening = AgentKind::OpenAiFunctions.opening("q", &env);
        let mut s = Search::new("q", config, opening);
        block_on(s.run(&roles, &env));
        assert_eq!(s.query_count, 3);
        let depths: Vec<(usize, NodeType)> =
            s.nodes.iter().map(|n| (n.depth, n.node_type)).collect();
        assert_eq!(
            depths[1..],
            [
                (1, NodeType::Thought),
                (2, NodeType::Thought),
                (3, NodeType::Thought)
            ]
        );
        let last = s.nodes[3].messages.last().unwrap();
        assert_eq!(
            (last.role.as_str(), last.content.as_deref()),
            ("assistant", Some(""))
        );
        assert_eq!(s.nodes[3].messages[0].role, "system");
        assert!(s.nodes[3].pruned);
    }

    #[test]
    fn the_step_budget_aborts_the_search() {
        let roles = ScriptedRoles::new(&["a Next: caller."; 30], &[CALL; 30], &[]);
        let env = ToolEnv::new(vec![weather_api()], &FixedReply);
        let mut s = Search::new(
            "q",
            SearchConfig {
                max_query_count: 3,
                ..SearchConfig::default()
            },
            vec![Message::user("q")],
        );
        block_on(s.run(&roles, &env));
        assert_eq!(s.query_count, 3);
        assert_eq!(s.outcome(), Outcome::Exhausted);
    }

    #[test]
    fn a_failing_role_is_recorded_not_a_panic() {
        let roles = ScriptedRoles::new(&[], &[], &[]);
        let s = search(&roles, 2);
        let failure = s.failure.expect("the failure was not recorded");
        assert_eq!(failure.class(), ErrorClass::Unavailable);
        assert_eq!(
            failure.to_string(),
            "planner: unavailable: script exhausted"
        );
    }
}
