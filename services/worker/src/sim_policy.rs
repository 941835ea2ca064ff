//! What the simulated engine "writes" for a role call (a test double, never a model):
//! valid α-UMi role outputs from a seeded policy over the call's structured state, so the
//! real search, tools and answer writer run under load. The planner calls tools one to
//! three times (fixed per task), then concludes, or now and then gives up; the caller
//! names one of the task's APIs with arguments from its documentation; the summarizer
//! answers. The same task, call and seed always give the same text.

use serde_json::{Map, Value};
use umi_core::agent::{RoleKind, RoleRequest};
use umi_core::parse::{CALLER, CONCLUSION, GIVE_UP};
use umi_core::task::{fnv1a, mix64};

/// The share of planner decisions, once its tool calls are made, that give up.
const GIVE_UP_SHARE: f64 = 0.15;

/// The role output for `request`, seeded by `seed` (the call's own seed).
pub fn output(request: &RoleRequest, seed: u64) -> String {
    let mut rng = SplitMix(seed ^ fnv1a(request.task_id.bytes()).rotate_left(17));
    match request.role {
        RoleKind::Planner => planner(request, &mut rng),
        RoleKind::Caller => caller(request, &mut rng),
        RoleKind::Summarizer => summarizer(&mut rng),
    }
}

fn planner(request: &RoleRequest, rng: &mut SplitMix) -> String {
    let calls_made = request
        .history
        .iter()
        .filter(|t| t.label == "observation")
        .count();
    // A task's call budget depends on the task alone, so every branch of its tree agrees.
    let wanted = 1 + (fnv1a(request.task_id.bytes()) % 3) as usize;
    let api = pick_api(request, rng).unwrap_or("the tools");
    if calls_made < wanted {
        let thought = prose(rng, 24, 48);
        format!("To answer, I should call {api} next: {thought} {CALLER}")
    } else if rng.unit() < GIVE_UP_SHARE {
        let thought = prose(rng, 16, 32);
        format!("The results so far do not answer the query: {thought} {GIVE_UP}")
    } else {
        let thought = prose(rng, 16, 32);
        format!("I have what the user asked for: {thought} {CONCLUSION}")
    }
}

fn caller(request: &RoleRequest, rng: &mut SplitMix) -> String {
    let Some(name) = pick_api(request, rng) else {
        return "Action: Finish\nAction Input: {\"return_type\": \"give_up_and_restart\"}"
            .to_string();
    };
    let doc = request
        .tools
        .iter()
        .find(|t| t.name() == name)
        .map(|t| t.doc());
    let mut args = Map::new();
    if let Some(Value::Object(inputs)) = doc.and_then(|d| d.get("input")) {
        for (param, description) in inputs {
            let kind = description.as_str().unwrap_or("string");
            args.insert(param.clone(), example_value(kind, rng));
        }
    }
    let input = Value::Object(args).to_string();
    format!("Action: {name}\nAction Input: {input}")
}

fn summarizer(rng: &mut SplitMix) -> String {
    format!(
        "Here is what I found for you. {} {}",
        prose(rng, 40, 80),
        "I hope this helps."
    )
}

/// One of the task's APIs (not `Finish`), at random.
fn pick_api<'r>(request: &'r RoleRequest, rng: &mut SplitMix) -> Option<&'r str> {
    let apis: Vec<&str> = request
        .tools
        .iter()
        .map(|t| t.name())
        .filter(|n| *n != "Finish")
        .collect();
    if apis.is_empty() {
        return None;
    }
    Some(apis[rng.below(apis.len())])
}

/// A value of the documented type (`"integer, the page"` → a number).
fn example_value(doc: &str, rng: &mut SplitMix) -> Value {
    let kind = doc
        .split(',')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match kind.as_str() {
        "integer" | "number" | "float" => Value::from(1 + rng.below(20) as u64),
        "boolean" | "bool" => Value::Bool(rng.below(2) == 1),
        _ => Value::String(WORDS[rng.below(WORDS.len())].to_string()),
    }
}

const WORDS: &[&str] = &[
    "result",
    "search",
    "weather",
    "city",
    "price",
    "latest",
    "information",
    "list",
    "details",
    "data",
    "check",
    "source",
    "answer",
    "user",
    "query",
    "found",
    "value",
    "market",
    "music",
    "news",
    "recent",
    "total",
    "name",
    "location",
    "today",
];

/// Between `min` and `max` words of filler prose ending in a period.
fn prose(rng: &mut SplitMix, min: usize, max: usize) -> String {
    let n = min + rng.below(max - min + 1);
    let words: Vec<&str> = (0..n).map(|_| WORDS[rng.below(WORDS.len())]).collect();
    format!("{}.", words.join(" "))
}

/// SplitMix64: a small, fast, seedable generator, the same on every platform.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use umi_core::agent::collab_parse;
    use umi_core::parse::{cut_planner, parse_action, Decision};
    use umi_core::prompt::HistoryTurn;
    use umi_core::tool::ToolDoc;

    use super::*;

    fn request(role: RoleKind, observations: usize) -> RoleRequest {
        let tools = vec![
            ToolDoc::try_from(json!({"Name": "get_weather_for_weather", "function": "w",
                "input": {"city": "string, the city", "days": "integer, how many"}}))
            .unwrap(),
            ToolDoc::try_from(json!({"Name": "Finish", "function": "f", "input": {}})).unwrap(),
        ];
        let mut history = vec![HistoryTurn::new("user", "What is the weather?")];
        for _ in 0..observations {
            history.push(HistoryTurn::new("assistant", "call"));
            history.push(HistoryTurn::new("observation", "{}"));
        }
        RoleRequest {
            task_id: "task-7".into(),
            ..RoleRequest::alpha_umi(role, tools, history, None)
        }
    }

    #[test]
    fn the_planner_calls_first_then_ends_and_its_output_parses() {
        let (_, first) = cut_planner(&output(&request(RoleKind::Planner, 0), 1), "");
        assert_eq!(first, Decision::Caller);
        let ends: Vec<Decision> = (0..200)
            .map(|seed| cut_planner(&output(&request(RoleKind::Planner, 3), seed), "").1)
            .collect();
        assert!(ends.iter().all(|d| *d != Decision::Caller));
        let gave_up = ends.iter().filter(|d| **d == Decision::GiveUp).count();
        assert!((10..60).contains(&gave_up), "{gave_up} of 200 gave up");
    }

    #[test]
    fn the_caller_names_a_real_api_with_documented_arguments() {
        let text = output(&request(RoleKind::Caller, 0), 5);
        let (name, input) = parse_action(&text);
        assert_eq!(name, "get_weather_for_weather");
        let args: Value = serde_json::from_str(&input).unwrap();
        assert!(args["city"].is_string() && args["days"].is_u64(), "{args}");
        let value = format!("x Next: caller.</s>caller: {text}");
        assert_eq!(collab_parse(&value).1.name, "get_weather_for_weather");
    }

    #[test]
    fn the_same_call_and_seed_give_the_same_text() {
        let r = request(RoleKind::Summarizer, 1);
        assert_eq!(output(&r, 9), output(&r, 9));
        assert_ne!(output(&r, 9), output(&r, 10));
    }
}
