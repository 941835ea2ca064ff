//! The static evaluation's runner: a shard's records run concurrently (their calls
//! batch in the engine), a record's steps in order (each step's prompt extends the
//! previous one's, which the prefix cache reuses), every call seeded by its step (so the
//! outputs depend neither on the concurrency nor on the sharding) and journaled (so an
//! interrupted run resumes where it stopped).

use std::sync::Mutex;
use std::time::Instant;

use futures::future::BoxFuture;
use futures::StreamExt;
use umi_core::agent::RoleKind;
use umi_core::constraint::{caller_grammar, Constraint};
use umi_core::error::CoreError;
use umi_core::parse::Decision;
use umi_core::prompt::RolePrompts;
use umi_core::static_backbone::BackboneSample;
use umi_core::static_eval::Sample;

use crate::journal::{Journal, JournalError};

/// What makes the static pipeline's calls: one rendered prompt for `role`, sampled with
/// the base seed plus `seed_offset` (the step's index), decoded under `constraint` if
/// one is given.
pub trait PromptModels: Sync {
    fn call<'a>(
        &'a self,
        role: RoleKind,
        prompt: &'a str,
        seed_offset: u64,
        constraint: Option<Constraint>,
    ) -> BoxFuture<'a, Result<String, CoreError>>;
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Call(#[from] CoreError),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// The steps one shard runs: those of records K, K+N, K+2N, ... (shard K of N), grouped
/// by record, in order. A record's steps stay in one shard, so that each step's prompt
/// extends the previous one's in that shard's prefix cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    records: Vec<Vec<usize>>,
}

impl Shard {
    /// Shard `shard` of `shards` of `samples` (consecutive samples of one instruction
    /// are one record).
    pub fn of(samples: &[Sample], shards: (usize, usize)) -> Shard {
        let record_of: Vec<usize> = samples
            .iter()
            .scan((0usize, None::<&str>), |(n, last), s| {
                if last.is_some_and(|l| l != s.instruction) {
                    *n += 1;
                }
                *last = Some(&s.instruction);
                Some(*n)
            })
            .collect();
        Shard::of_records(&record_of, shards)
    }

    /// Shard `shard` of `shards` of steps whose records are `record_of` (one per step,
    /// a record's steps consecutive).
    pub fn of_records(record_of: &[usize], (shard, shards): (usize, usize)) -> Shard {
        let mine = |i: usize| record_of[i] % shards == shard;
        let mut records: Vec<Vec<usize>> = Vec::new();
        for i in (0..record_of.len()).filter(|&i| mine(i)) {
            match records.last_mut() {
                Some(steps) if record_of[steps[0]] == record_of[i] => steps.push(i),
                _ => records.push(vec![i]),
            }
        }
        Shard { records }
    }

    /// How many steps the shard runs.
    pub fn steps(&self) -> usize {
        self.records.iter().map(Vec::len).sum()
    }
}

/// One run of the static pipeline.
pub struct StaticRun<'a> {
    pub prompts: &'a RolePrompts,
    /// The models, or none: each role replays the reference's output (the oracle, which
    /// checks the pipeline).
    pub models: Option<&'a dyn PromptModels>,
    /// Records run at once.
    pub concurrency: usize,
    /// The caller decodes under its tools' grammar (`--constrain caller`).
    pub constrain_caller: bool,
}

impl StaticRun<'_> {
    /// Runs `shard`'s steps of `samples`, taking the calls `journal` holds from it and
    /// recording the others there; each finished step is routed and finished in
    /// `samples` once every record is done, and `on_step` is told of it as it ends.
    pub async fn run(
        &self,
        samples: &mut [Sample],
        shard: Shard,
        journal: &mut Journal,
        mut on_step: impl FnMut(),
    ) -> Result<(), EvalError> {
        let journal = Mutex::new(journal);
        let calls = StepCalls {
            models: self.models,
            prompts: self.prompts,
            journal: &journal,
            constrain_caller: self.constrain_caller,
        };
        let samples_ref = &*samples;
        let outputs = self
            .records(
                shard,
                |steps| calls.record(samples_ref, steps),
                &mut on_step,
            )
            .await?;
        for (i, out) in outputs {
            let s = &mut samples[i];
            *s = out.routed;
            if let Some(answer) = out.answer {
                s.finish(&answer);
            }
        }
        Ok(())
    }

    /// Runs `shard`'s steps of the single-LLM baseline: one call per step, the model's
    /// (the planner's engine plays the backbone) or the reference's (`--roles oracle`),
    /// journaled as the multi-agent calls are.
    pub async fn run_backbone(
        &self,
        samples: &mut [BackboneSample],
        shard: Shard,
        journal: &mut Journal,
        mut on_step: impl FnMut(),
    ) -> Result<(), EvalError> {
        let journal = Mutex::new(journal);
        let calls = StepCalls {
            models: self.models,
            prompts: self.prompts,
            journal: &journal,
            constrain_caller: self.constrain_caller,
        };
        let calls = &calls;
        let samples_ref = &*samples;
        let step = |steps: Vec<usize>| async move {
            let mut done = Vec::with_capacity(steps.len());
            for i in steps {
                let s = &samples_ref[i];
                let output = calls
                    .call(
                        BACKBONE_STAGE,
                        i,
                        RoleKind::Planner,
                        &s.model_input,
                        None,
                        || s.reference.clone(),
                    )
                    .await?;
                done.push((i, output));
            }
            Ok(done)
        };
        let outputs = self.records(shard, step, &mut on_step).await?;
        for (i, output) in outputs {
            samples[i].finish(&output);
        }
        Ok(())
    }

    /// Runs `record` on each of the shard's records, `concurrency` at once, and collects
    /// what their steps produced (by step index), telling `on_step` of each.
    async fn records<T, F, Fut>(
        &self,
        shard: Shard,
        record: F,
        on_step: &mut impl FnMut(),
    ) -> Result<Vec<(usize, T)>, EvalError>
    where
        F: FnMut(Vec<usize>) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<(usize, T)>, EvalError>>,
    {
        let mut finished = futures::stream::iter(shard.records)
            .map(record)
            .buffer_unordered(self.concurrency.max(1));
        let mut outputs = Vec::new();
        while let Some(record) = finished.next().await {
            for step in record? {
                outputs.push(step);
                on_step();
            }
        }
        Ok(outputs)
    }
}

/// The journal's name for a backbone step's call.
const BACKBONE_STAGE: &str = "backbone";

/// What one step produced: its sample routed by the planner's output, and the caller's
/// or summarizer's output when the planner did not give up.
struct StepOutputs {
    routed: Sample,
    answer: Option<String>,
}

/// Makes (or takes from the journal) the calls of a record's steps.
struct StepCalls<'a, 'j> {
    models: Option<&'a dyn PromptModels>,
    prompts: &'a RolePrompts,
    journal: &'a Mutex<&'j mut Journal>,
    constrain_caller: bool,
}

impl<'j> StepCalls<'_, 'j> {
    async fn record(
        &self,
        samples: &[Sample],
        steps: Vec<usize>,
    ) -> Result<Vec<(usize, StepOutputs)>, EvalError> {
        let mut done = Vec::with_capacity(steps.len());
        for i in steps {
            let sample = &samples[i];
            let planner = self
                .output("planner", i, sample, RoleKind::Planner, &sample.model_input)
                .await?;
            // Routing is a pure function of the sample and the planner's output: the
            // routed copy replaces the sample once every record is done.
            let mut routed = sample.clone();
            routed.route(&planner, self.prompts);
            let answer = match (
                routed.decision,
                &routed.model_input_for_caller,
                &routed.model_input_for_summarizer,
            ) {
                (Some(Decision::GiveUp), _, _) | (_, None, None) => None,
                (_, Some(input), _) => Some(
                    self.output("answer", i, &routed, RoleKind::Caller, input)
                        .await?,
                ),
                (_, None, Some(input)) => Some(
                    self.output("answer", i, &routed, RoleKind::Summarizer, input)
                        .await?,
                ),
            };
            done.push((i, StepOutputs { routed, answer }));
        }
        Ok(done)
    }

    /// One call's output: journaled by an earlier run, or made now (the model's, seeded by
    /// the step's index, or the reference's) and journaled.
    async fn output(
        &self,
        stage: &str,
        step: usize,
        sample: &Sample,
        role: RoleKind,
        input: &str,
    ) -> Result<String, EvalError> {
        let constraint = match role {
            RoleKind::Caller if self.constrain_caller => caller_grammar(&sample.tools),
            _ => None,
        };
        self.call(stage, step, role, input, constraint, || {
            sample.oracle_output()
        })
        .await
    }

    /// One call's output, the reference's being `oracle`.
    async fn call(
        &self,
        stage: &str,
        step: usize,
        role: RoleKind,
        input: &str,
        constraint: Option<Constraint>,
        oracle: impl FnOnce() -> String,
    ) -> Result<String, EvalError> {
        let journaled = self.lock().get(stage, step).map(str::to_string);
        if let Some(output) = journaled {
            return Ok(output);
        }
        let t = Instant::now();
        let output = match self.models {
            None => oracle(),
            Some(m) => m.call(role, input, step as u64, constraint).await?,
        };
        self.lock()
            .record(stage, step, &output, t.elapsed().as_secs_f64())?;
        Ok(output)
    }

    /// The journal; a panic elsewhere while holding it leaves its lines whole (each is one
    /// write), so a poisoned lock is still usable.
    fn lock(&self) -> std::sync::MutexGuard<'_, &'j mut Journal> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }
}
