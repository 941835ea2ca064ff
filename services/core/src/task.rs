//! One ToolBench query, from its `test_instructions` entry to its answer: the unit of
//! work that `umi run` and the coordinator both solve.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Serialize;
use serde_json::Value;
use tracing::Instrument;

use crate::agent::{BoxFuture, EngineKind, Generated, RoleModels, RoleRequest};
use crate::answer::answer_json;
use crate::dfs::{Outcome, Search, SearchConfig};
use crate::env::{ToolBackend, ToolEnv};
use crate::error::{CoreError, Result};
use crate::tool::ApiSpec;
use crate::trace::{Recorder, TaskTrace};

/// The longest query id taken: answer files are named after ids.
pub const MAX_ID_CHARS: usize = 128;

/// The largest query taken, its text and its tools' documentation together (as JSON):
/// every prompt of the task repeats them, so a larger one could never be served (real
/// ToolBench queries are under 40 KB). Role requests to workers are bounded accordingly
/// (`umi_rpc::MAX_ROLE_REQUEST`).
pub const MAX_QUERY_BYTES: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct Query {
    pub id: String,
    pub text: String,
    pub apis: Vec<ApiSpec>,
}

impl Query {
    /// Reads entry `index` of a query file; the error names the query and the field.
    pub fn from_json(index: usize, v: &Value) -> Result<Query> {
        let id = match v.get("query_id") {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) => s.clone(),
            _ => {
                return Err(CoreError::invalid_input(format!(
                    "query {index} has no \"query_id\""
                )))
            }
        };
        check_id(&id)?;
        let text = v
            .get("query")
            .and_then(Value::as_str)
            .ok_or_else(|| CoreError::invalid_input(format!("query {id} has no \"query\" text")))?
            .to_string();
        let list = v.get("api_list").and_then(Value::as_array).ok_or_else(|| {
            CoreError::invalid_input(format!(
                "query {id} has no \"api_list\" (retrieval of tools is not supported)"
            ))
        })?;
        let apis = Self::apis(&id, list)?;
        let query = Query { id, text, apis };
        query.check_size()?;
        Ok(query)
    }

    /// Refuses a query larger than [`MAX_QUERY_BYTES`], naming it and its size.
    pub fn check_size(&self) -> Result<()> {
        let tools = serde_json::to_vec(&self.apis).map_or(0, |v| v.len());
        let size = self.text.len() + tools;
        if size > MAX_QUERY_BYTES {
            return Err(CoreError::invalid_input(format!(
                "query {}: {size} bytes of text and tool documentation, over the {MAX_QUERY_BYTES}-byte limit",
                self.id
            )));
        }
        Ok(())
    }

    /// Parses an `api_list`, naming the query and API at fault.
    pub fn apis(id: &str, list: &[Value]) -> Result<Vec<ApiSpec>> {
        list.iter()
            .map(|api| {
                if api.get("required_parameters").is_none() {
                    let tool = api.get("tool_name").and_then(Value::as_str).unwrap_or("?");
                    let name = api.get("api_name").and_then(Value::as_str).unwrap_or("?");
                    return Err(CoreError::invalid_input(format!(
                        "query {id}: API {name:?} of tool {tool:?} has no documentation in the query file (ToolBench's tool folder is not supported)"
                    )));
                }
                serde_json::from_value::<ApiSpec>(api.clone())
                    .map_err(|e| {
                        CoreError::invalid_input(format!("query {id}: bad api_list entry: {e}"))
                    })
            })
            .collect()
    }
}

impl Query {
    /// The query of a ToolBench answer file (`answer_generation.query`), its APIs rebuilt
    /// from the file's function list (`ApiSpec::from_function_spec`, `Finish` left out),
    /// under `id`: for rerunning or replaying recorded queries.
    pub fn from_answer_file(id: &str, answer: &Value) -> Result<Query> {
        check_id(id)?;
        let generation = &answer["answer_generation"];
        let text = generation["query"].as_str().ok_or_else(|| {
            CoreError::invalid_input(format!(
                "answer file {id}: no \"answer_generation.query\" (not a ToolBench answer file)"
            ))
        })?;
        let functions = generation["function"].as_array().ok_or_else(|| {
            CoreError::invalid_input(format!(
                "answer file {id}: no \"answer_generation.function\" list"
            ))
        })?;
        let apis = functions
            .iter()
            .filter(|f| f["name"] != "Finish")
            .map(|f| {
                ApiSpec::from_function_spec(f).ok_or_else(|| {
                    CoreError::invalid_input(format!(
                        "answer file {id}: a function without a name: {f}"
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let query = Query {
            id: id.to_string(),
            text: text.to_string(),
            apis,
        };
        query.check_size()?;
        Ok(query)
    }
}

/// Reads the entries of a query file: each as `Query::from_json` does, and no id twice
/// (the second answer file would overwrite the first, and a rerun would skip both).
pub fn queries_from_json(values: &[Value]) -> Result<Vec<Query>> {
    let queries = values
        .iter()
        .enumerate()
        .map(|(i, v)| Query::from_json(i, v))
        .collect::<Result<Vec<_>>>()?;
    let mut seen = std::collections::HashSet::new();
    let mut twice: Vec<&str> = queries
        .iter()
        .filter(|q| !seen.insert(q.id.as_str()))
        .map(|q| q.id.as_str())
        .collect();
    if !twice.is_empty() {
        twice.sort_unstable();
        twice.dedup();
        return Err(CoreError::invalid_input(format!(
            "query ids {twice:?} appear more than once (each query needs its own id: answer files are named after it)"
        )));
    }
    Ok(queries)
}

/// An id answer files can be named after: letters, digits, `_`, `-` and `.` (not only
/// dots), at most `MAX_ID_CHARS`, so no id reaches outside the output directory.
pub fn check_id(id: &str) -> Result<()> {
    let ok_chars = id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if id.is_empty()
        || id.chars().count() > MAX_ID_CHARS
        || !ok_chars
        || id.chars().all(|c| c == '.')
    {
        return Err(CoreError::invalid_input(format!(
            "query id {id:?} is not usable as a file name: use at most {MAX_ID_CHARS} letters, digits, '_', '-' or '.'"
        )));
    }
    Ok(())
}

/// How a query ended.
#[derive(Debug, Clone, Serialize)]
pub struct Solved {
    /// The ToolBench answer file's content (with a `failure` field when a role or tool
    /// could not be reached).
    pub answer: Value,
    pub outcome: Outcome,
    /// Why the search stopped early (a role call failed), classified.
    #[serde(skip)]
    pub failure: Option<CoreError>,
    pub steps: usize,
    pub tokens: usize,
    /// Its role and tool calls, timed.
    #[serde(skip)]
    pub trace: TaskTrace,
}

/// Solves `query` with DFSDT in a `task` span.
pub async fn solve(
    query: &Query,
    roles: &dyn RoleModels,
    backend: &dyn ToolBackend,
    config: SearchConfig,
) -> Solved {
    let span = tracing::info_span!(
        "task",
        task_id = %query.id,
        steps = tracing::field::Empty,
        outcome = tracing::field::Empty
    );
    let agent = config.agent;
    let recorder = Recorder::new();
    let env = ToolEnv::new(query.apis.clone(), backend)
        .with_observations(agent.observation_style())
        .with_trace(&recorder);
    let mut search = Search::new(&query.text, config, agent.opening(&query.text, &env));
    let roles = TaskRoles {
        inner: roles,
        task_id: &query.id,
        seed_base: seed_base(&query.text),
        calls: AtomicU64::new(0),
        simulated: AtomicBool::new(false),
        trace: &recorder,
    };
    search.run(&roles, &env).instrument(span.clone()).await;
    span.record("steps", search.query_count);
    span.record("outcome", tracing::field::debug(search.outcome()));
    let mut answer = answer_json(&search, env.functions());
    if let Some(reason) = &search.failure {
        answer["failure"] = Value::String(reason.to_string());
    }
    if roles.simulated.load(Ordering::Relaxed) {
        // Never mistaken for a model's answer.
        answer["engine"] = Value::String(EngineKind::Sim.label().into());
    }
    Solved {
        answer,
        outcome: search.outcome(),
        failure: search.failure.clone(),
        steps: search.query_count,
        tokens: search.total_tokens,
        trace: recorder.finish(),
    }
}

/// The roles, with each call tagged with the task it serves and seeded by the task:
/// a task's calls are made one after another, so their numbering is the same in every
/// run, with any concurrency, in process or on a cluster.
struct TaskRoles<'r> {
    inner: &'r dyn RoleModels,
    task_id: &'r str,
    seed_base: u64,
    calls: AtomicU64,
    /// Some call was answered by the simulated engine.
    simulated: AtomicBool,
    trace: &'r Recorder,
}

impl RoleModels for TaskRoles<'_> {
    fn generate<'a>(&'a self, mut request: RoleRequest) -> BoxFuture<'a, Result<Generated>> {
        request.task_id = self.task_id.to_string();
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        request.seed_offset = Some(self.seed_base.wrapping_add(n));
        let role = request.role;
        let at = self.trace.now();
        Box::pin(async move {
            let out = self.inner.generate(request).await;
            self.trace.role_call(role, at, out.as_ref().ok());
            let out = out?;
            if out.simulated {
                self.simulated.store(true, Ordering::Relaxed);
            }
            Ok(out)
        })
    }
}

/// A task's seed base, from its query text: the same for a query solved here or by a
/// coordinator, whose task ids differ from the query's.
fn seed_base(text: &str) -> u64 {
    fnv1a(text.bytes())
}

/// FNV-1a, 64 bits: stable across builds and platforms (task seeds, task-id digests).
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// SplitMix64's finalizer: spreads every input bit over the whole output (FNV-1a alone
/// barely mixes its last bytes into the high ones). Stable across builds and platforms.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The method name ToolBench gives a search of this width.
pub fn method_name(width: usize) -> String {
    if width == 1 {
        "CoT@1".to_string()
    } else {
        format!("DFS_woFilter_w{width}")
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry(id: Value) -> Value {
        json!({"query_id": id, "query": "q", "api_list": []})
    }

    #[test]
    fn ids_that_would_leave_the_output_directory_are_refused() {
        for bad in ["../../x", "/abs/path", "a/b", "..", "", "a\\b", "x\u{0}"] {
            let err = Query::from_json(0, &entry(json!(bad))).unwrap_err();
            assert!(
                err.to_string().contains("not usable as a file name"),
                "{bad:?}: {err}"
            );
        }
        let long = "1".repeat(MAX_ID_CHARS + 1);
        assert!(Query::from_json(0, &entry(json!(long))).is_err());
        for good in [json!(42), json!("G1_query-7.v2")] {
            assert!(Query::from_json(0, &entry(good)).is_ok());
        }
    }

    #[test]
    fn a_query_file_with_an_id_twice_is_refused_naming_it() {
        let values = [entry(json!(1)), entry(json!(2)), entry(json!("1"))];
        let err = queries_from_json(&values).unwrap_err().to_string();
        assert!(
            err.contains(r#"["1"]"#) && err.contains("more than once"),
            "{err}"
        );
        assert_eq!(queries_from_json(&values[..2]).unwrap().len(), 2);
    }

    #[test]
    fn a_query_past_the_size_limit_is_refused_naming_it() {
        let mut big = entry(json!("big"));
        big["query"] = json!("x".repeat(MAX_QUERY_BYTES + 1));
        let err = Query::from_json(0, &big).unwrap_err().to_string();
        assert!(err.contains("query big") && err.contains("limit"), "{err}");
        let mut fits = entry(json!("fits"));
        fits["query"] = json!("x".repeat(MAX_QUERY_BYTES / 2));
        assert!(Query::from_json(0, &fits).is_ok());
        // The same limit for queries read back from answer files.
        let answer = json!({"answer_generation": {
            "query": "x".repeat(MAX_QUERY_BYTES + 1), "function": []}});
        let err = Query::from_answer_file("big", &answer)
            .unwrap_err()
            .to_string();
        assert!(err.contains("query big") && err.contains("limit"), "{err}");
    }
}
