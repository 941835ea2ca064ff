//! One ToolBench query, from its `test_instructions` entry to its answer: the unit of
//! work that `umi run` and the coordinator both solve.

use serde::Serialize;
use serde_json::Value;
use tracing::Instrument;

use crate::agent::{BoxFuture, Generated, RoleModels, RoleRequest};
use crate::answer::answer_json;
use crate::dfs::{Outcome, Search, SearchConfig};
use crate::env::{ToolBackend, ToolEnv};
use crate::error::{CoreError, Result};
use crate::tool::ApiSpec;

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
        Ok(Query { id, text, apis })
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
}

/// Solves `query` with DFSDT in a `task` span; `method` names it in the answer (e.g.
/// DFS_woFilter_w2).
pub async fn solve(
    query: &Query,
    roles: &dyn RoleModels,
    backend: &dyn ToolBackend,
    config: SearchConfig,
    method: &str,
) -> Solved {
    let span = tracing::info_span!(
        "task",
        task_id = %query.id,
        steps = tracing::field::Empty,
        outcome = tracing::field::Empty
    );
    let env = ToolEnv::new(query.apis.clone(), backend);
    let mut search = Search::new(&query.text, config);
    let roles = TaskRoles {
        inner: roles,
        task_id: &query.id,
    };
    search.run(&roles, &env).instrument(span.clone()).await;
    span.record("steps", search.query_count);
    span.record("outcome", tracing::field::debug(search.outcome()));
    let mut answer = answer_json(&search, env.functions(), method);
    if let Some(reason) = &search.failure {
        answer["failure"] = Value::String(reason.to_string());
    }
    Solved {
        answer,
        outcome: search.outcome(),
        failure: search.failure.clone(),
        steps: search.query_count,
        tokens: search.total_tokens,
    }
}

/// The roles, with each call tagged with the task it serves.
struct TaskRoles<'r> {
    inner: &'r dyn RoleModels,
    task_id: &'r str,
}

impl RoleModels for TaskRoles<'_> {
    fn generate<'a>(&'a self, mut request: RoleRequest) -> BoxFuture<'a, Result<Generated>> {
        request.task_id = self.task_id.to_string();
        self.inner.generate(request)
    }
}

/// The method name ToolBench gives a search of this width.
pub fn method_name(width: usize) -> String {
    if width == 1 {
        "CoT@1".to_string()
    } else {
        format!("DFS_woFilter_w{width}")
    }
}
