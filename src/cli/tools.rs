//! `umi tools call`: one tool call, answered as a run would answer it (local tools, then
//! the configured backend: response caches, recorded answers, or the RapidAPI service),
//! printed as its `{"error", "response"}` JSON, to check a cache or a server by hand.

use clap::{Args, Subcommand};
use serde_json::json;
use umi_core::env::ApiCall;
use umi_core::env::ToolBackend;
use umi_core::tool::ApiSpec;

use super::args::tools::ToolArgs;

#[derive(Subcommand, Debug)]
pub enum ToolsCommand {
    /// Make one tool call and print the reply.
    Call(CallArgs),
}

#[derive(Args, Debug)]
pub struct CallArgs {
    #[command(flatten)]
    pub tools: ToolArgs,
    /// The category, as a query's `api_list` names it (`category_name`).
    #[arg(long)]
    pub category: String,
    /// The tool, as `api_list` names it (`tool_name`).
    #[arg(long)]
    pub tool: String,
    /// The API, as `api_list` names it (`api_name`).
    #[arg(long)]
    pub api: String,
    /// The tool input, a JSON object as a caller would write it.
    #[arg(long, default_value = "{}")]
    pub input: String,
}

pub async fn run(command: ToolsCommand) -> anyhow::Result<()> {
    match command {
        ToolsCommand::Call(a) => call(a).await,
    }
}

async fn call(a: CallArgs) -> anyhow::Result<()> {
    let api = ApiSpec {
        category_name: a.category,
        tool_name: a.tool,
        api_name: a.api,
        api_description: None,
        required_parameters: vec![],
        optional_parameters: vec![],
        method: None,
        shown_description: None,
    };
    // The request fields the environment would send for this API.
    let call = ApiCall {
        category: api.category_name.clone(),
        tool_name: api.standard_tool_name(),
        api_name: api.pure_api_name(),
        tool_input: a.input,
        function: api.function_name(),
        documented_name: api.api_name.clone(),
        description: String::new(),
    };
    let backend = a.tools.backend()?;
    let reply = backend
        .call(&call)
        .await
        .unwrap_or_else(|failure| umi_core::env::ApiReply::failed(failure.0));
    // A cached entry is printed as stored (objects and nulls kept); anything else as the
    // reply a run's observation is made from.
    let printed = backend
        .cached_entry(&call)
        .unwrap_or_else(|| json!({"error": reply.error, "response": reply.response}));
    println!("{printed}");
    if let Some(report) = backend.report() {
        eprintln!("{report}");
    }
    Ok(())
}
