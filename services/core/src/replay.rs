//! Replay roles (`umi run --roles replay`), the real-time counterpart of the static
//! evaluation's oracle: each role replays a recorded trajectory, a ToolBench answer
//! file's chosen chain (`answer_generation.train_messages[-1]`), turned into α-UMi role
//! outputs: the planner's thought with `Next: caller.` / `Next: conclusion.` /
//! `Next: give up.`, the caller's `Action:` / `Action Input:`, the summarizer's final
//! answer. The real search, environment and answer writer run on them; with the offline
//! simulator answering from the same recordings, a recorded answer is reached again.
//!
//! A role finds its place from the history it is given: the query picks the recording,
//! the number of assistant turns the step. Off the recorded path (a retry prompt after a
//! backtrack, a call that differs from the recording, past its end, an unknown query) the
//! planner gives up, so the search ends without inventing anything.

use std::collections::HashMap;

use serde_json::Value;

use crate::agent::{
    collab_parse, BoxFuture, FunctionCall, Generated, RoleKind, RoleModels, RoleRequest,
};
use crate::error::Result;
use crate::parse::{lenient_json_object, CALLER, CONCLUSION, GIVE_UP};
use crate::prompt::HistoryTurn;

/// One recorded agent step.
#[derive(Debug, Clone, PartialEq)]
struct Step {
    thought: String,
    call: FunctionCall,
}

/// What the planner says off the recorded path.
const OFF_RECORD: &str = "No recorded step for this state.";

/// Recorded trajectories by query text.
#[derive(Debug, Default)]
pub struct ReplayRoles {
    by_query: HashMap<String, Vec<Step>>,
}

impl ReplayRoles {
    pub fn new() -> Self {
        ReplayRoles::default()
    }

    /// Recorded queries.
    pub fn len(&self) -> usize {
        self.by_query.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_query.is_empty()
    }

    /// The calls of the longest recorded chain (what the search depth must allow).
    pub fn longest(&self) -> usize {
        self.by_query.values().map(Vec::len).max().unwrap_or(0)
    }

    /// Adds the chosen chain of a ToolBench answer file; returns whether it had one (an
    /// answer file with `valid_data: false` has none: its query is replayed as a give-up).
    pub fn add_answer_file(&mut self, answer: &Value) -> bool {
        let generation = &answer["answer_generation"];
        let Some(query) = generation["query"].as_str() else {
            return false;
        };
        let chain = generation["train_messages"]
            .as_array()
            .and_then(|steps| steps.last())
            .and_then(Value::as_array);
        let steps = chain.map(|messages| steps_of(messages)).unwrap_or_default();
        let recorded = !steps.is_empty();
        self.by_query.insert(query.to_string(), steps);
        recorded
    }

    /// The output of `request`'s role at its place in its query's recording.
    fn output(&self, request: &RoleRequest) -> String {
        let place = self.place(&request.history, request.role);
        match (request.role, place) {
            (RoleKind::Planner, Some(step)) => planner_output(step),
            (RoleKind::Planner, None) => format!("{OFF_RECORD} {GIVE_UP}"),
            (RoleKind::Caller, Some(step)) => {
                format!(
                    "Action: {}\nAction Input: {}",
                    step.call.name, step.call.arguments
                )
            }
            (RoleKind::Summarizer, Some(step)) => final_answer(&step.call.arguments),
            // The planner gave up off the record: the other roles are not asked then.
            (_, None) => String::new(),
        }
    }

    /// The recorded step the history has reached, if the history followed the recording.
    fn place(&self, history: &[HistoryTurn], role: RoleKind) -> Option<&Step> {
        let steps = self.by_query.get(&history.first()?.value)?;
        let mut done = Vec::new();
        for turn in &history[1..] {
            match turn.label.as_str() {
                "assistant" => done.push(collab_parse(&turn.value).1),
                // A retry prompt: the search backed up, off the recorded path.
                "user" => return None,
                _ => {}
            }
        }
        // The caller and summarizer see the planner's turn of this step last.
        if role != RoleKind::Planner {
            done.pop()?;
        }
        let followed = done.iter().zip(steps).all(|(made, recorded)| {
            made.name == recorded.call.name && made.arguments == recorded.call.arguments
        });
        if followed {
            steps.get(done.len())
        } else {
            None
        }
    }
}

/// The steps of a recorded conversation: each assistant message with a function call,
/// the thoughts of call-less assistant messages before it prepended to its own.
fn steps_of(messages: &[Value]) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut pending: Vec<String> = Vec::new();
    for m in messages.iter().filter(|m| m["role"] == "assistant") {
        let content = m["content"].as_str().map(clean).unwrap_or_default();
        if !content.is_empty() {
            pending.push(content);
        }
        let Some(call) = m.get("function_call").filter(|c| c.is_object()) else {
            continue;
        };
        steps.push(Step {
            thought: std::mem::take(&mut pending).join(" "),
            call: FunctionCall {
                name: clean(call["name"].as_str().unwrap_or("")),
                arguments: call["arguments"]
                    .as_str()
                    .unwrap_or("{}")
                    .trim()
                    .to_string(),
            },
        });
    }
    steps
}

/// A recorded text made safe to replay: the markers the agent's parser reacts to (and
/// `</s>`) are taken out, whitespace runs folded.
fn clean(text: &str) -> String {
    let mut text = text.replace("</s>", " ");
    for marker in [
        "Next: give up",
        "Next: conclusion",
        "Next: caller",
        "Action Input:",
        "Action:",
    ] {
        text = text.replace(marker, "");
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn planner_output(step: &Step) -> String {
    let decision = if step.call.name != "Finish" {
        CALLER
    } else if finish_gives_answer(&step.call.arguments) {
        CONCLUSION
    } else {
        GIVE_UP
    };
    format!("{} {decision}", step.thought)
        .trim_start()
        .to_string()
}

fn finish_arguments(arguments: &str) -> Option<Value> {
    serde_json::from_str(arguments)
        .ok()
        .or_else(|| lenient_json_object(arguments).ok())
}

fn finish_gives_answer(arguments: &str) -> bool {
    finish_arguments(arguments).is_some_and(|v| v["return_type"] == "give_answer")
}

/// The final answer of a recorded `Finish` call.
fn final_answer(arguments: &str) -> String {
    let answer = finish_arguments(arguments)
        .and_then(|v| v["final_answer"].as_str().map(str::to_string))
        .unwrap_or_default();
    answer.replace("</s>", " ")
}

impl RoleModels for ReplayRoles {
    fn generate<'a>(&'a self, request: RoleRequest) -> BoxFuture<'a, Result<Generated>> {
        let text = self.output(&request);
        Box::pin(async move {
            Ok(Generated {
                text,
                ..Generated::default()
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::dfs::{Outcome, Search, SearchConfig};
    use crate::env::{ApiCall, ApiReply, BackendFailure, ToolBackend, ToolEnv};
    use crate::testing::{block_on, weather_api};

    struct Sunny;
    impl ToolBackend for Sunny {
        fn call<'a>(
            &'a self,
            _: &'a ApiCall,
        ) -> BoxFuture<'a, std::result::Result<ApiReply, BackendFailure>> {
            Box::pin(async { Ok(ApiReply::text("sunny")) })
        }
    }

    fn recording(finish: &str) -> Value {
        json!({"answer_generation": {"query": "Weather in Paris?", "train_messages": [[
            {"role": "system", "content": "..."},
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "I should look it up.", "function_call": {"name": "current_for_weather_api", "arguments": "{\n  \"city\": \"Paris\"\n}"}},
            {"role": "function", "name": "current_for_weather_api", "content": "{\"error\": \"\", \"response\": \"sunny\"}"},
            {"role": "assistant", "content": null, "function_call": {"name": "Finish", "arguments": finish}},
        ]]}})
    }

    fn run(roles: &ReplayRoles) -> Search {
        let env = ToolEnv::new(vec![weather_api()], &Sunny);
        let mut search = Search::new(
            "Weather in Paris?",
            SearchConfig::default(),
            vec![crate::agent::Message::user("Weather in Paris?")],
        );
        block_on(search.run(roles, &env));
        search
    }

    #[test]
    fn a_recorded_answer_is_reached_again() {
        let mut roles = ReplayRoles::new();
        assert!(roles.add_answer_file(&recording(
            "{\"return_type\": \"give_answer\", \"final_answer\": \"It is sunny.\"}"
        )));
        let search = run(&roles);
        assert_eq!(search.outcome(), Outcome::Answered);
        assert_eq!(search.query_count, 2);
        let terminal = &search.nodes[search.terminal[0]];
        assert_eq!(
            terminal.description,
            r#"{"return_type": "give_answer", "final_answer": "It is sunny."}"#
        );
        // The caller's call is the recording's, its thought the recorded content.
        assert_eq!(
            search.nodes[1].description,
            "I should look it up. Next: caller."
        );
        assert_eq!(search.nodes[3].description, "{\n  \"city\": \"Paris\"\n}");
    }

    #[test]
    fn a_recorded_give_up_gives_up_and_unknown_queries_give_up_at_once() {
        let mut roles = ReplayRoles::new();
        roles.add_answer_file(&recording("{\"return_type\": \"give_up_and_restart\"}"));
        let search = run(&roles);
        assert_eq!(search.outcome(), Outcome::GaveUp);
        let empty = ReplayRoles::new();
        let search = run(&empty);
        assert_eq!(search.outcome(), Outcome::GaveUp);
        assert_eq!(search.nodes[1].description, OFF_RECORD);
    }
}
