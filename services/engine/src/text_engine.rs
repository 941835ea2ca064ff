//! `TextEngine`, the one seam between the engines and their users: the model engine
//! (`Engine`) and the simulated one (`SimEngine`, a test double) both implement it, so a
//! worker holds either as `Arc<dyn TextEngine>` and prepares every request the same way.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedReceiver;

use umi_core::agent::EngineKind;

use crate::engine::{Engine, ModelInfo, StreamEvent};
use crate::error::Result;
use crate::generate::{GenerateOutput, GenerateRequest, Prompt};
use crate::liveness::Liveness;
use crate::sim::SimEngine;

/// A future an engine hands back, boxed so `TextEngine` stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What generates text: a handle to an engine's inference thread.
///
/// Both engines check a request's settings (`GenerateRequest::validate`) when it is
/// submitted, before it takes a queue slot, and refuse the same requests the same way.
pub trait TextEngine: Send + Sync {
    /// Static facts about what is served (for the simulated engine, its profile's).
    fn info(&self) -> &ModelInfo;

    /// A model, or the simulated engine: what answer files and responses report.
    fn kind(&self) -> EngineKind;

    /// `text` in this engine's tokens (the model's tokenizer, or the simulated engine's
    /// byte pieces).
    fn tokenize(&self, text: &str) -> Result<Vec<u32>>;

    /// Generates to completion.
    fn generate(&self, request: GenerateRequest) -> BoxFuture<'_, Result<GenerateOutput>>;

    /// Generates, streaming text as it is produced; the last event is `Done`. Dropping
    /// the receiver cancels the request.
    fn stream(&self, request: GenerateRequest) -> Result<UnboundedReceiver<Result<StreamEvent>>>;

    /// Whether the inference thread still works: exited, or stuck (requests wait and
    /// it has not gone on for `stall_after`), or alive.
    fn liveness(&self, stall_after: std::time::Duration) -> Liveness;

    fn is_sim(&self) -> bool {
        self.kind() == EngineKind::Sim
    }

    /// `text` as tokens, only the last `keep_last` of them (0 keeps all), as α-UMi's
    /// pipelines truncate from the left.
    fn truncated_prompt(&self, text: &str, keep_last: usize) -> Result<Prompt> {
        let mut ids = self.tokenize(text)?;
        if keep_last > 0 && ids.len() > keep_last {
            ids.drain(..ids.len() - keep_last);
        }
        Ok(Prompt::Tokens(ids))
    }
}

impl TextEngine for Engine {
    fn info(&self) -> &ModelInfo {
        Engine::info(self)
    }

    fn kind(&self) -> EngineKind {
        EngineKind::Model
    }

    fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer().encode(text)
    }

    fn generate(&self, request: GenerateRequest) -> BoxFuture<'_, Result<GenerateOutput>> {
        Box::pin(Engine::generate(self, request))
    }

    fn stream(&self, request: GenerateRequest) -> Result<UnboundedReceiver<Result<StreamEvent>>> {
        Engine::stream(self, request)
    }

    fn liveness(&self, stall_after: std::time::Duration) -> Liveness {
        Engine::liveness(self, stall_after)
    }
}

impl TextEngine for SimEngine {
    fn info(&self) -> &ModelInfo {
        SimEngine::info(self)
    }

    fn kind(&self) -> EngineKind {
        EngineKind::Sim
    }

    fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.profile().tokens(text))
    }

    fn generate(&self, request: GenerateRequest) -> BoxFuture<'_, Result<GenerateOutput>> {
        Box::pin(SimEngine::generate(self, request))
    }

    fn stream(&self, request: GenerateRequest) -> Result<UnboundedReceiver<Result<StreamEvent>>> {
        SimEngine::stream(self, request)
    }

    fn liveness(&self, stall_after: std::time::Duration) -> Liveness {
        SimEngine::liveness(self, stall_after)
    }
}

impl From<Engine> for Arc<dyn TextEngine> {
    fn from(engine: Engine) -> Self {
        Arc::new(engine)
    }
}

impl From<SimEngine> for Arc<dyn TextEngine> {
    fn from(engine: SimEngine) -> Self {
        Arc::new(engine)
    }
}
