//! Between the core's types and the wire's: roles, requests, sampling, and error
//! classes (a gRPC status code is classified here, once).

use tonic::Code;
use umi_core::agent::{PromptForm, RoleKind, RoleRequest};
use umi_core::presets::Sampling;
use umi_core::prompt::HistoryTurn;
use umi_core::tool::ToolDoc;
use umi_core::{CoreError, ErrorClass};

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

/// A request as the wire carries it; a function-calling chat has no wire form (workers
/// serve rendered prompts only), refused here by name.
pub fn request_to_pb(
    request: &RoleRequest,
    sampling: &Sampling,
) -> Result<pb::GenerateRequest, CoreError> {
    let form = match request.form {
        PromptForm::AlphaUmi => pb::PromptForm::AlphaUmi,
        PromptForm::ToolLlama => pb::PromptForm::ToolLlama,
        PromptForm::Functions => return Err(RoleRequest::chat_has_no_prompt()),
    };
    Ok(pb::GenerateRequest {
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
        sampling: Some(sampling_to_pb(sampling)),
        task_id: request.task_id.clone(),
        form: form as i32,
        functions_json: request.functions.iter().map(|f| f.to_string()).collect(),
        constrain_call: request.constrain_call,
    })
}

pub fn sampling_to_pb(s: &Sampling) -> pb::Sampling {
    pb::Sampling {
        temperature: s.temperature,
        top_p: s.top_p,
        top_k: s.top_k.map(|k| k as u32),
        seed: s.seed,
        max_new_tokens: s.max_new_tokens as u32,
        min_new_tokens: s.min_new_tokens as u32,
        max_input_tokens: s.max_input_tokens as u32,
    }
}

/// A request's sampling (absent: the wire's defaults); at least one new token.
pub fn sampling_from_pb(s: Option<pb::Sampling>) -> Sampling {
    let s = s.unwrap_or_default();
    Sampling {
        temperature: s.temperature,
        top_p: s.top_p,
        top_k: s.top_k.map(|k| k as usize),
        seed: s.seed,
        max_input_tokens: s.max_input_tokens as usize,
        max_new_tokens: s.max_new_tokens.max(1) as usize,
        min_new_tokens: s.min_new_tokens as usize,
    }
}

/// Validates a request off the wire, naming what is wrong.
pub fn request_from_pb(request: &pb::GenerateRequest) -> Result<RoleRequest, CoreError> {
    let role = pb::Role::try_from(request.role)
        .ok()
        .and_then(role_from_pb)
        .ok_or_else(|| {
            CoreError::invalid_input(format!(
                "role {} is not planner, caller or summarizer",
                request.role
            ))
        })?;
    let tools = request
        .tools_json
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                CoreError::invalid_input(format!("tools_json[{i}] is not valid JSON: {e}"))
            })?;
            ToolDoc::try_from(value).map_err(|e| e.context(format!("tools_json[{i}]")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let form = match pb::PromptForm::try_from(request.form) {
        Ok(pb::PromptForm::AlphaUmi) => PromptForm::AlphaUmi,
        Ok(pb::PromptForm::ToolLlama) => PromptForm::ToolLlama,
        Err(_) => {
            return Err(CoreError::invalid_input(format!(
                "prompt form {} is not α-UMi's (0) or ToolLLaMA's (1)",
                request.form
            )))
        }
    };
    // ToolLLaMA's prompt lists the functions in each system turn: a search has one.
    if form == PromptForm::ToolLlama
        && request
            .history
            .iter()
            .filter(|t| t.label == "system")
            .count()
            > 1
    {
        return Err(CoreError::invalid_input(
            "history: a ToolLLaMA conversation has one system message",
        ));
    }
    let functions = request
        .functions_json
        .iter()
        .enumerate()
        .map(|(i, text)| {
            serde_json::from_str(text).map_err(|e| {
                CoreError::invalid_input(format!("functions_json[{i}] is not valid JSON: {e}"))
            })
        })
        .collect::<Result<Vec<serde_json::Value>, _>>()?;
    Ok(RoleRequest {
        form,
        functions,
        chat: vec![],
        role,
        tools,
        history: request
            .history
            .iter()
            .map(|t| HistoryTurn::new(&t.label, &t.value))
            .collect(),
        thought: request.thought.clone(),
        task_id: request.task_id.clone(),
        // The offset is already in the wire's seed.
        seed_offset: Some(0),
        constrain_call: request.constrain_call,
    })
}

/// The class of a failed gRPC call, decided from its status code.
pub fn classify(code: Code) -> ErrorClass {
    match code {
        Code::DeadlineExceeded => ErrorClass::DeadlineExceeded,
        Code::ResourceExhausted => ErrorClass::ResourceExhausted,
        Code::InvalidArgument
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::NotFound
        | Code::AlreadyExists => ErrorClass::InvalidRequest,
        Code::Internal | Code::DataLoss => ErrorClass::Internal,
        Code::Ok | Code::Unavailable | Code::Unknown | Code::Aborted | Code::Cancelled => {
            ErrorClass::Unavailable
        }
    }
}

/// A core error as a server answers it: its class as the status code.
pub fn status_from(error: &CoreError) -> tonic::Status {
    let code = match error.class() {
        ErrorClass::Unavailable => Code::Unavailable,
        ErrorClass::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorClass::ResourceExhausted => Code::ResourceExhausted,
        ErrorClass::InvalidRequest => Code::InvalidArgument,
        ErrorClass::Internal => Code::Internal,
    };
    tonic::Status::new(code, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_class_survives_the_wire() {
        for class in [
            ErrorClass::Unavailable,
            ErrorClass::DeadlineExceeded,
            ErrorClass::ResourceExhausted,
            ErrorClass::InvalidRequest,
            ErrorClass::Internal,
        ] {
            let status = status_from(&CoreError::new(class, "x"));
            assert_eq!(classify(status.code()), class);
        }
    }

    /// A ToolLLaMA request keeps its form and functions across the wire; one with several
    /// system turns (each would repeat the function list), an unknown form, a function
    /// that is not JSON, or a chat with functions (no wire form) is refused, named.
    #[test]
    fn toolllama_requests_cross_the_wire_and_bad_ones_are_refused() {
        let turn = |label: &str| HistoryTurn::new(label, "x");
        let request = RoleRequest {
            form: PromptForm::ToolLlama,
            functions: vec![serde_json::json!({"name": "f"})],
            ..RoleRequest::alpha_umi(
                RoleKind::Planner,
                vec![],
                vec![turn("system"), turn("user")],
                None,
            )
        };
        let s = umi_core::presets::REALTIME;
        let wire = request_to_pb(&request, &s).unwrap();
        let back = request_from_pb(&wire).unwrap();
        assert_eq!(
            (back.form, &back.functions),
            (PromptForm::ToolLlama, &request.functions)
        );
        assert!(!back.constrain_call);
        // `--constrain caller` crosses too.
        let constrained = RoleRequest {
            constrain_call: true,
            ..RoleRequest::alpha_umi(RoleKind::Caller, vec![], vec![turn("user")], None)
        };
        let back = request_from_pb(&request_to_pb(&constrained, &s).unwrap()).unwrap();
        assert!(back.constrain_call);

        let mut twice = wire.clone();
        twice.history.push(pb::HistoryTurn {
            label: "system".into(),
            value: "y".into(),
        });
        let err = request_from_pb(&twice).unwrap_err().to_string();
        assert!(err.contains("one system message"), "{err}");
        let mut unknown = wire.clone();
        unknown.form = 7;
        assert!(request_from_pb(&unknown)
            .unwrap_err()
            .to_string()
            .contains("prompt form 7"));
        let mut bad = wire;
        bad.functions_json = vec!["{".into()];
        assert!(request_from_pb(&bad)
            .unwrap_err()
            .to_string()
            .contains("functions_json[0]"));

        let chat = RoleRequest {
            form: PromptForm::Functions,
            ..request
        };
        assert!(request_to_pb(&chat, &s)
            .unwrap_err()
            .to_string()
            .contains("openai-functions"));
    }

    #[test]
    fn sampling_survives_the_wire() {
        let s = umi_core::presets::STATIC;
        assert_eq!(sampling_from_pb(Some(sampling_to_pb(&s))), s);
    }
}
