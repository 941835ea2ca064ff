//! A scripted OpenAI-compatible chat endpoint (a test double, not a model) that replays
//! recorded ToolBench searches: given the answer files of a ChatGPT run, it answers each
//! `/chat/completions` request with the assistant message the recording's tree has next
//! at the conversation's place, so an agent that searches as ToolBench does walks the
//! recorded tree again, node for node.
//!
//! The place: the conversation's user message names the query; DFS is pre-order, so the
//! conversation's path runs through the newest child asked for at each node it passes
//! (each assistant message is checked against that child: a conversation that strayed
//! from the recording is answered with HTTP 500, naming where), and the reply is that
//! node's next child not yet asked for; past the recorded children, a `Finish` give-up
//! (as `scripts/make_toolbench_agents_fixture.py` replies to ToolBench's own search).

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

#[derive(Default)]
struct State {
    /// Recorded tree roots by query text.
    trees: HashMap<String, Value>,
    /// Children asked for so far, by node (its path of child indices, with the query).
    asked: HashMap<(String, Vec<usize>), usize>,
    /// Requests answered.
    served: usize,
}

pub struct TreeChat {
    /// `http://127.0.0.1:PORT/v1`.
    pub base: String,
    state: Arc<Mutex<State>>,
}

impl TreeChat {
    /// Serves the trees of `answer_files` on a loopback port until the test ends.
    pub fn start(answer_files: &[Value]) -> TreeChat {
        let mut state = State::default();
        for answer in answer_files {
            let query = answer["answer_generation"]["query"].as_str().unwrap();
            state
                .trees
                .insert(query.to_string(), answer["tree"]["tree"].clone());
        }
        let state = Arc::new(Mutex::new(state));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}/v1", listener.local_addr().unwrap());
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let body = super::read_request_body(&mut stream)
                    .and_then(|b| serde_json::from_slice(&b).ok())
                    .unwrap_or(Value::Null);
                let (status, reply) = match answer(&shared, &body) {
                    Ok(message) => (
                        "200 OK",
                        json!({"id": "replay", "object": "chat.completion", "model": "replayed",
                            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}),
                    ),
                    Err(why) => (
                        "500 Internal Server Error",
                        json!({"error": {"message": why, "type": "server_error"}}),
                    ),
                };
                let reply = reply.to_string();
                let head = format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", reply.len());
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        TreeChat { base, state }
    }

    /// Requests answered so far.
    pub fn served(&self) -> usize {
        self.state.lock().unwrap().served
    }
}

/// The recorded reply to a chat request, or why there is none.
fn answer(state: &Mutex<State>, body: &Value) -> Result<Value, String> {
    let messages = body["messages"].as_array().ok_or("no messages")?;
    let user = messages
        .iter()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .ok_or("no user message")?;
    let query = user
        .strip_prefix('\n')
        .and_then(|q| q.strip_suffix("\nBegin!\n"))
        .ok_or("the user message is not ToolBench's")?;
    let mut state = state.lock().unwrap();
    state.served += 1;
    let root = state
        .trees
        .get(query)
        .ok_or_else(|| format!("no recording of the query {query:?}"))?
        .clone();
    let mut node = &root;
    let mut path: Vec<usize> = Vec::new();
    for m in messages.iter().filter(|m| m["role"] == "assistant") {
        let key = (query.to_string(), path.clone());
        let newest = state.asked.get(&key).copied().unwrap_or(0);
        let child = newest
            .checked_sub(1)
            .and_then(|i| node["children"].get(i))
            .ok_or_else(|| format!("{path:?}: the conversation passes a child never asked for"))?;
        path.push(newest - 1);
        node = child;
        if node["node_type"] == "Thought" {
            check(
                m["content"].as_str() == node["description"].as_str(),
                &path,
                "content",
            )?;
            match node["children"].get(0) {
                Some(next) if m.get("tool_calls").is_some() => {
                    path.push(0);
                    node = next;
                }
                _ => continue,
            }
        } else {
            check(m["content"].is_null(), &path, "content (null)")?;
        }
        let call = &m["tool_calls"][0]["function"];
        let name_ok = call["name"] == node["description"]
            || call["name"] == "invalid_hallucination_function_name";
        check(name_ok, &path, "function name")?;
        let input = node["children"]
            .get(0)
            .ok_or_else(|| format!("{path:?}: an Action without its input"))?;
        check(
            call["arguments"] == input["description"],
            &path,
            "arguments",
        )?;
        path.push(0);
        node = input;
    }
    let key = (query.to_string(), path.clone());
    let next = state.asked.get(&key).copied().unwrap_or(0);
    state.asked.insert(key, next + 1);
    let Some(child) = node["children"].get(next) else {
        return Ok(
            json!({"role": "assistant", "content": null, "tool_calls": [{
            "id": "call_replayed", "type": "function", "function": {
                "name": "Finish", "arguments": "{\"return_type\": \"give_up_and_restart\"}"}}]}),
        );
    };
    let (content, action) = if child["node_type"] == "Thought" {
        (child["description"].clone(), child["children"].get(0))
    } else {
        (Value::Null, Some(child))
    };
    let mut message = json!({"role": "assistant", "content": content});
    if let Some(action) = action {
        let input = &action["children"][0]["description"];
        message["tool_calls"] = json!([{"id": "call_replayed", "type": "function",
            "function": {"name": action["description"], "arguments": input}}]);
    }
    Ok(message)
}

fn check(ok: bool, path: &[usize], what: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{path:?}: the conversation's {what} differs from the recording"
        ))
    }
}
