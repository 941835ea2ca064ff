//! Sends each call to the backend that serves its tool: local tools by name, everything
//! else to the fallback (the simulator or the RapidAPI service).

use serde_json::Value;
use umi_core::agent::BoxFuture;
use umi_core::env::{ApiCall, ApiReply, BackendFailure, ToolBackend};
use umi_core::tool::standardize;

use crate::local::{LocalTools, TOOL_NAME};

pub struct Router {
    local: LocalTools,
    fallback: Box<dyn ToolBackend>,
}

impl Router {
    pub fn new(fallback: Box<dyn ToolBackend>) -> Self {
        Router {
            local: LocalTools,
            fallback,
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

    fn report(&self) -> Option<String> {
        self.fallback.report()
    }

    fn cached_entry(&self, call: &ApiCall) -> Option<Value> {
        if call.tool_name == standardize(TOOL_NAME) {
            None
        } else {
            self.fallback.cached_entry(call)
        }
    }
}
