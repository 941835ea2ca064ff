//! Role calls on in-process engines: the one implementation of render → left-truncate
//! to the input budget → sampling → generate, shared by the worker's gRPC service and by
//! `umi run` / `umi eval static` in process. Engine failures are classified here, where
//! they arise.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc::UnboundedReceiver;
use tracing::Instrument;
use umi_core::agent::{BoxFuture, Generated, PromptForm, RoleKind, RoleModels, RoleRequest};
use umi_core::constraint::Constraint;
use umi_core::presets::{CallSampling, Sampling};
use umi_core::prompt::RolePrompts;
use umi_core::{CoreError, ErrorClass};
use umi_engine::{
    EngineError, GenerateOutput, GenerateRequest, SamplingParams, StreamEvent, TextEngine,
};

use crate::sim_policy;

/// What runs a role's calls: any engine behind the one seam, a model (`Engine`) or the
/// simulated engine (`SimEngine`, a test double for load and fault runs, whose text
/// comes from `sim_policy`). Both convert into it.
pub type Backend = Arc<dyn TextEngine>;

/// One role's engine and the templates its prompts are rendered with.
#[derive(Clone)]
pub struct RoleEngine {
    engine: Backend,
    prompts: RolePrompts,
    /// The LoRA adapter the engine serves unmerged for this role (None: its weights as
    /// loaded).
    adapter: Option<String>,
}

impl RoleEngine {
    pub fn new(engine: impl Into<Backend>) -> Self {
        RoleEngine {
            engine: engine.into(),
            prompts: RolePrompts::toolbench(),
            adapter: None,
        }
    }

    /// The same engine, each call adding `adapter` (a name the engine serves; None: the
    /// weights as loaded).
    pub fn with_adapter(self, adapter: Option<String>) -> Self {
        RoleEngine { adapter, ..self }
    }

    pub fn engine(&self) -> &dyn TextEngine {
        self.engine.as_ref()
    }

    /// A shared handle to the engine (for what outlives a call: the health probe).
    pub fn engine_handle(&self) -> Backend {
        self.engine.clone()
    }

    /// A role call made ready: its prompt rendered, tokenized and cut to the last
    /// `max_input_tokens` (as the reference truncates), sampled as `sampling` says; on
    /// the simulated engine, with the text its policy writes. The work runs on the
    /// blocking pool (see [`RoleEngine::off_runtime`]).
    pub async fn prepare(
        &self,
        request: &RoleRequest,
        sampling: &Sampling,
    ) -> Result<GenerateRequest, CoreError> {
        let (request, sampling) = (request.clone(), *sampling);
        self.off_runtime(move |this| {
            let prompt = request.render(&this.prompts)?;
            let mut call = this.request(&prompt, &sampling)?;
            call.constraint = request.constraint();
            if this.engine.is_sim() {
                if request.form != PromptForm::AlphaUmi {
                    return Err(CoreError::invalid(
                        "engine",
                        "the simulated engine plays α-UMi's roles only; other agents need a model",
                    ));
                }
                call.script = Some(sim_policy::output(&request, sampling.seed));
            }
            Ok(call)
        })
        .await
    }

    /// The model request for a prompt already rendered (the static pipeline renders its
    /// own); the simulated engine has no text for those. Tokenized on the blocking pool.
    pub async fn request_for_prompt(
        &self,
        prompt: &str,
        sampling: &Sampling,
    ) -> Result<GenerateRequest, CoreError> {
        if self.engine.is_sim() {
            return Err(CoreError::invalid(
                "engine",
                "the simulated engine answers role calls only; static evaluation needs a model",
            ));
        }
        let (prompt, sampling) = (prompt.to_string(), *sampling);
        self.off_runtime(move |this| this.request(&prompt, &sampling))
            .await
    }

    /// Runs `work` (rendering and tokenizing untrusted text, up to the gRPC message
    /// limit: milliseconds to seconds of CPU) on tokio's blocking pool, so a large
    /// prompt cannot stall the async runtime, which also serves other calls and renews
    /// the worker's etcd lease. The result is the same as running it in place.
    async fn off_runtime(
        &self,
        work: impl FnOnce(&RoleEngine) -> Result<GenerateRequest, CoreError> + Send + 'static,
    ) -> Result<GenerateRequest, CoreError> {
        let this = self.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| work(&this)))
            .await
            .map_err(|e| {
                CoreError::new(ErrorClass::Internal, format!("preparing a request: {e}"))
            })?
    }

    /// The one place a rendered prompt becomes a request: tokenized by the engine, cut
    /// from the left to the input budget, with the role's sampling.
    fn request(&self, prompt: &str, sampling: &Sampling) -> Result<GenerateRequest, CoreError> {
        let prompt = self
            .engine
            .truncated_prompt(prompt, sampling.max_input_tokens)
            .map_err(classify)?;
        Ok(GenerateRequest {
            adapter: self.adapter.clone(),
            max_new_tokens: sampling.max_new_tokens,
            min_new_tokens: sampling.min_new_tokens,
            sampling: SamplingParams {
                temperature: sampling.temperature,
                top_p: sampling.top_p,
                top_k: sampling.top_k,
                seed: sampling.seed,
            },
            ..GenerateRequest::new(prompt)
        })
    }

    pub async fn generate(&self, call: GenerateRequest) -> Result<GenerateOutput, CoreError> {
        self.engine.generate(call).await.map_err(classify)
    }

    /// Generates, streaming text as it is produced; the last event is `Done`.
    pub fn stream(
        &self,
        call: GenerateRequest,
    ) -> Result<UnboundedReceiver<Result<StreamEvent, EngineError>>, CoreError> {
        self.engine.stream(call).map_err(classify)
    }
}

/// An engine failure, classified: a prompt or setting the engine refuses is invalid
/// (any replica would refuse it), a stopped engine is unavailable, a full queue is
/// resource exhaustion (another replica or a later try may take it), the rest internal.
pub fn classify(e: EngineError) -> CoreError {
    let class = match &e {
        EngineError::InvalidArgument { .. } | EngineError::PromptTooLong { .. } => {
            ErrorClass::InvalidRequest
        }
        EngineError::Shutdown => ErrorClass::Unavailable,
        EngineError::Overloaded { .. } => ErrorClass::ResourceExhausted,
        _ => ErrorClass::Internal,
    };
    CoreError::new(class, e.to_string())
}

/// The three roles on in-process engines (one engine per distinct checkpoint may serve
/// several roles), sampling with one setting; a call is seeded by `CallSampling::for_call`
/// (the base seed plus its request's `seed_offset`, or without one the number of such
/// calls made before it).
pub struct EngineRoles {
    planner: RoleEngine,
    caller: RoleEngine,
    summarizer: RoleEngine,
    sampling: CallSampling,
    usage: Usage,
}

/// Tokens of the calls made so far: prompt tokens, how many of them the prefix cache
/// served (the rest were computed), and generated tokens.
#[derive(Debug, Default)]
struct Usage {
    calls: AtomicU64,
    prompt: AtomicU64,
    cached: AtomicU64,
    generated: AtomicU64,
}

/// A snapshot of `EngineRoles`' token accounting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct TokenUsage {
    pub calls: u64,
    pub prompt_tokens: u64,
    /// Prompt tokens served from the prefix cache instead of being computed.
    pub cached_tokens: u64,
    pub generated_tokens: u64,
}

/// `96 model calls: 110720 prompt tokens, 84388 served by the prefix cache, 26332
/// computed (24% of a pipeline without prefix reuse); 12208 generated`.
impl std::fmt::Display for TokenUsage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} model calls: {} prompt tokens, {} served by the prefix cache, {} computed ({:.0}% of a pipeline without prefix reuse); {} generated",
            self.calls,
            self.prompt_tokens,
            self.cached_tokens,
            self.prompt_tokens - self.cached_tokens,
            self.computed_share() * 100.0,
            self.generated_tokens
        )
    }
}

impl TokenUsage {
    /// Prompt tokens computed (prefilled), as a share of all prompt tokens: what a
    /// pipeline without prefix reuse (the reference's) would compute is 1.
    pub fn computed_share(&self) -> f64 {
        if self.prompt_tokens == 0 {
            return 0.0;
        }
        (self.prompt_tokens - self.cached_tokens) as f64 / self.prompt_tokens as f64
    }
}

impl EngineRoles {
    pub fn new(
        planner: impl Into<Backend>,
        caller: impl Into<Backend>,
        summarizer: impl Into<Backend>,
        sampling: Sampling,
    ) -> Self {
        EngineRoles {
            planner: RoleEngine::new(planner),
            caller: RoleEngine::new(caller),
            summarizer: RoleEngine::new(summarizer),
            sampling: CallSampling::new(sampling),
            usage: Usage::default(),
        }
    }

    /// `role`'s calls run with the adapter its engine serves unmerged as `name`.
    pub fn with_adapter(mut self, role: RoleKind, name: &str) -> Self {
        let engine = match role {
            RoleKind::Planner => &mut self.planner,
            RoleKind::Caller => &mut self.caller,
            RoleKind::Summarizer => &mut self.summarizer,
        };
        engine.adapter = Some(name.to_string());
        self
    }

    /// The tokens of every call made so far.
    pub fn usage(&self) -> TokenUsage {
        let u = &self.usage;
        TokenUsage {
            calls: u.calls.load(Ordering::Relaxed),
            prompt_tokens: u.prompt.load(Ordering::Relaxed),
            cached_tokens: u.cached.load(Ordering::Relaxed),
            generated_tokens: u.generated.load(Ordering::Relaxed),
        }
    }

    pub fn role(&self, role: RoleKind) -> &RoleEngine {
        match role {
            RoleKind::Planner => &self.planner,
            RoleKind::Caller => &self.caller,
            RoleKind::Summarizer => &self.summarizer,
        }
    }

    /// One call on a rendered prompt, seeded with the base seed + `seed_offset` (the
    /// static pipeline seeds each step by its index, so shards and resumed runs agree).
    pub async fn call_prompt(
        &self,
        role: RoleKind,
        prompt: &str,
        seed_offset: u64,
        constraint: Option<Constraint>,
    ) -> Result<GenerateOutput, CoreError> {
        let engine = self.role(role);
        let sampling = self.sampling.for_call(Some(seed_offset));
        self.call(role, async {
            let mut request = engine.request_for_prompt(prompt, &sampling).await?;
            request.constraint = constraint;
            engine.generate(request).await
        })
        .await
    }

    /// Runs one call, naming the role in its error and counting its tokens.
    async fn call(
        &self,
        role: RoleKind,
        call: impl std::future::Future<Output = Result<GenerateOutput, CoreError>>,
    ) -> Result<GenerateOutput, CoreError> {
        let started = Instant::now();
        let out = call
            .await
            .map_err(|e| CoreError::role(role, e.class(), 1, e.message()))?;
        let u = &self.usage;
        u.calls.fetch_add(1, Ordering::Relaxed);
        u.prompt
            .fetch_add(out.prompt_tokens as u64, Ordering::Relaxed);
        u.cached
            .fetch_add(out.cached_tokens as u64, Ordering::Relaxed);
        u.generated
            .fetch_add(out.generated_tokens() as u64, Ordering::Relaxed);
        tracing::debug!(
            role = role.as_str(),
            prompt_tokens = out.prompt_tokens,
            cached_tokens = out.cached_tokens,
            generated_tokens = out.generated_tokens(),
            latency_ms = started.elapsed().as_millis() as u64,
            "role call"
        );
        Ok(out)
    }
}

impl RoleModels for EngineRoles {
    fn generate<'a>(&'a self, request: RoleRequest) -> BoxFuture<'a, Result<Generated, CoreError>> {
        Box::pin(async move {
            let role = request.role;
            let engine = self.role(role);
            let sampling = self.sampling.for_call(request.seed_offset);
            let span = tracing::info_span!("role_call", role = role.as_str());
            let out = self
                .call(role, async {
                    let call = engine.prepare(&request, &sampling).await?;
                    engine.generate(call).await
                })
                .instrument(span)
                .await?;
            Ok(Generated {
                generated_tokens: out.generated_tokens(),
                prompt_tokens: out.prompt_tokens,
                cached_tokens: out.cached_tokens,
                text: out.text,
                simulated: engine.engine().is_sim(),
                chat: None,
            })
        })
    }
}
