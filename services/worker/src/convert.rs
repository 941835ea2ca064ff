//! Between the core's types and the wire's.

use umi_core::agent::{RoleKind, RoleRequest};
use umi_core::prompt::HistoryTurn;
use umi_core::tool::ToolDoc;

use crate::pb;

pub fn role_to_pb(role: RoleKind) -> pb::Role {
    match role {
        RoleKind::Planner => pb::Role::Planner,
        RoleKind::Caller => pb::Role::Caller,
        RoleKind::Summarizer => pb::Role::Summarizer,
    }
}

pub fn role_from_pb(role: pb::Role) -> Option<RoleKind> {
    match role {
        pb::Role::Planner => Some(RoleKind::Planner),
        pb::Role::Caller => Some(RoleKind::Caller),
        pb::Role::Summarizer => Some(RoleKind::Summarizer),
        pb::Role::Unspecified => None,
    }
}

pub fn request_to_pb(request: &RoleRequest, sampling: pb::Sampling) -> pb::GenerateRequest {
    pb::GenerateRequest {
        role: role_to_pb(request.role) as i32,
        tools_json: request.tools.iter().map(|t| t.doc().to_string()).collect(),
        history: request
            .history
            .iter()
            .map(|t| pb::HistoryTurn {
                label: t.label.clone(),
                value: t.value.clone(),
            })
            .collect(),
        thought: request.thought.clone(),
        sampling: Some(sampling),
        task_id: request.task_id.clone(),
    }
}

/// Validates a request off the wire, naming what is wrong.
pub fn request_from_pb(request: &pb::GenerateRequest) -> Result<RoleRequest, String> {
    let role = pb::Role::try_from(request.role)
        .ok()
        .and_then(role_from_pb)
        .ok_or_else(|| format!("role {} is not planner, caller or summarizer", request.role))?;
    let tools = request
        .tools_json
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let value: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| format!("tools_json[{i}] is not valid JSON: {e}"))?;
            ToolDoc::try_from(value).map_err(|e| format!("tools_json[{i}]: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RoleRequest {
        role,
        tools,
        history: request
            .history
            .iter()
            .map(|t| HistoryTurn::new(&t.label, &t.value))
            .collect(),
        thought: request.thought.clone(),
        task_id: request.task_id.clone(),
    })
}
