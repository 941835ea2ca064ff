//! Sends each call to the backend that serves its tool: local tools by name, everything
//! else to the fallback (the simulator or the RapidAPI service).

use serde_json::Value;
use umi_core::agent::BoxFuture;
use umi_core::env::{ApiCall, ApiReply, BackendFailure, SourcedReply, ToolBackend};
use umi_core::tool::standardize;

use crate::local::{LocalTools, TOOL_NAME};
use crate::tools_folder::ToolsFolder;

pub struct Router {
    local: LocalTools,
    fallback: Box<dyn ToolBackend>,
    /// ToolBench's tools folder, for the tools' descriptions.
    tools: Option<ToolsFolder>,
}

impl Router {
    pub fn new(fallback: Box<dyn ToolBackend>) -> Self {
        Router {
            local: LocalTools,
            fallback,
            tools: None,
        }
    }

    /// The same router describing tools from `folder` (ToolBench's agents' system
    /// message lists each tool with its description).
    pub fn with_tools_folder(self, folder: ToolsFolder) -> Self {
        Router {
            tools: Some(folder),
            ..self
        }
    }
}

impl ToolBackend for Router {
    fn call<'a>(&'a self, call: &'a ApiCall) -> BoxFuture<'a, Result<ApiReply, BackendFailure>> {
        if call.tool_name == standardize(TOOL_NAME) {
            self.local.call(call)
        } else {
            self.fallback.call(call)
        }
    }

    fn call_sourced<'a>(&'a self, call: &'a ApiCall) -> BoxFuture<'a, SourcedReply> {
        if call.tool_name == standardize(TOOL_NAME) {
            self.local.call_sourced(call)
        } else {
            self.fallback.call_sourced(call)
        }
    }

    fn report(&self) -> Option<String> {
        self.fallback.report()
    }

    fn tool_description(&self, category: &str, standard_tool_name: &str) -> Option<String> {
        self.tools
            .as_ref()?
            .tool_description(category, standard_tool_name)
    }

    fn cached_entry(&self, call: &ApiCall) -> Option<Value> {
        if call.tool_name == standardize(TOOL_NAME) {
            None
        } else {
            self.fallback.cached_entry(call)
        }
    }
}
