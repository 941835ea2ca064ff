//! The static runner over the first records of the bundled static test file: outputs
//! that depend neither on the concurrency nor on the sharding, every call journaled and
//! taken from the journal on resume, each call seeded by its step.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use futures::executor::block_on;
use futures::future::BoxFuture;
use umi_core::agent::RoleKind;
use umi_core::constraint::{caller_grammar, Constraint};
use umi_core::error::CoreError;
use umi_core::prompt::RolePrompts;
use umi_core::static_eval::{build_samples, parse_records, Sample};
use umi_eval::{Journal, PromptModels, Shard, StaticRun};

fn samples(records: usize) -> Vec<Sample> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../data/toolbench-static/out_of_domain.json");
    let mut records_ = parse_records(&std::fs::read_to_string(path).unwrap()).unwrap();
    records_.truncate(records);
    build_samples(&records_, &RolePrompts::toolbench()).unwrap()
}

/// Answers the planner with a call to the caller, and every other role with its seed:
/// the outputs name the step that asked.
#[derive(Default)]
struct Seeded {
    calls: Mutex<Vec<(RoleKind, u64)>>,
    /// Each call's role and grammar.
    grammars: Mutex<Vec<(RoleKind, Option<Constraint>)>>,
}

impl PromptModels for Seeded {
    fn call<'a>(
        &'a self,
        role: RoleKind,
        _prompt: &'a str,
        seed_offset: u64,
        constraint: Option<Constraint>,
    ) -> BoxFuture<'a, Result<String, CoreError>> {
        self.calls.lock().unwrap().push((role, seed_offset));
        self.grammars.lock().unwrap().push((role, constraint));
        Box::pin(async move {
            Ok(match role {
                RoleKind::Planner => "I call a tool.\nNext: caller.".to_string(),
                _ => format!("Action: tool_{seed_offset}\nAction Input: {{}}"),
            })
        })
    }
}

fn run(
    models: Option<&dyn PromptModels>,
    journal: &Path,
    shard: (usize, usize),
    concurrency: usize,
) -> (Vec<Sample>, usize) {
    let prompts = RolePrompts::toolbench();
    let mut samples = samples(6);
    let mut journal = Journal::open(journal, "run").unwrap();
    let mut steps = 0;
    let shard = Shard::of(&samples, shard);
    let run = StaticRun {
        prompts: &prompts,
        models,
        concurrency,
        constrain_caller: false,
    };
    block_on(run.run(&mut samples, shard, &mut journal, || steps += 1)).unwrap();
    (samples, steps)
}

fn json(samples: &[Sample]) -> String {
    serde_json::to_string(samples).unwrap()
}

#[test]
fn outputs_do_not_depend_on_the_concurrency_and_each_call_is_seeded_by_its_step() {
    let dir = tempfile::tempdir().unwrap();
    let models = Seeded::default();
    let (one, steps) = run(Some(&models), &dir.path().join("1.jsonl"), (0, 1), 1);
    let (four, _) = run(Some(&models), &dir.path().join("4.jsonl"), (0, 1), 4);
    assert_eq!(steps, samples(6).len());
    assert_eq!(json(&one), json(&four));
    for (i, s) in one.iter().enumerate() {
        let answer = format!("caller: Action: tool_{i}\nAction Input: {{}}");
        assert!(s.predictions.ends_with(&answer), "{}", s.predictions);
    }
    let calls = models.calls.lock().unwrap();
    let planner_seeds: Vec<u64> = calls
        .iter()
        .filter(|(r, _)| *r == RoleKind::Planner)
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(planner_seeds.len(), 2 * steps);
}

#[test]
fn every_call_is_journaled_and_a_resumed_run_makes_none_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.jsonl");
    let models = Seeded::default();
    let (first, steps) = run(Some(&models), &path, (0, 1), 3);
    let made = models.calls.lock().unwrap().len();
    assert_eq!(made, 2 * steps, "a planner and a caller call per step");
    assert_eq!(Journal::open(&path, "run").unwrap().len(), made);
    let again = Seeded::default();
    let (resumed, _) = run(Some(&again), &path, (0, 1), 3);
    assert!(again.calls.lock().unwrap().is_empty());
    assert_eq!(json(&first), json(&resumed));
}

#[test]
fn shards_split_by_record_and_share_one_journal_to_the_same_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let all = samples(6);
    let (zero, one) = (Shard::of(&all, (0, 2)), Shard::of(&all, (1, 2)));
    assert_eq!(zero.steps() + one.steps(), all.len());
    assert!(zero.steps() > 0 && one.steps() > 0);
    let whole = run(None, &dir.path().join("whole.jsonl"), (0, 1), 2).0;
    let shared = dir.path().join("shared.jsonl");
    run(None, &shared, (0, 2), 2);
    run(None, &shared, (1, 2), 2);
    let (merged, _) = run(Some(&Seeded::default()), &shared, (0, 1), 2);
    // Every call came from the shards' journal (the oracle's outputs, not the fake's).
    assert_eq!(json(&whole), json(&merged));
}

/// `--constrain caller`: each caller call carries the grammar of its record's tools, and
/// no other role's does; without it, none does.
#[test]
fn a_constrained_run_gives_each_caller_call_its_tools_grammar() {
    let prompts = RolePrompts::toolbench();
    for constrain_caller in [true, false] {
        let mut samples = samples(2);
        let tools: Vec<_> = samples.iter().map(|s| s.tools.clone()).collect();
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(&dir.path().join("j.jsonl"), "run").unwrap();
        let models = Seeded::default();
        let shard = Shard::of(&samples, (0, 1));
        let run = StaticRun {
            prompts: &prompts,
            models: Some(&models),
            concurrency: 1,
            constrain_caller,
        };
        block_on(run.run(&mut samples, shard, &mut journal, || {})).unwrap();
        let calls = models.calls.lock().unwrap().clone();
        let grammars = models.grammars.lock().unwrap().clone();
        assert!(grammars.iter().any(|(r, _)| *r == RoleKind::Caller));
        for ((role, step), (_, grammar)) in calls.iter().zip(&grammars) {
            let expected = match role {
                RoleKind::Caller if constrain_caller => caller_grammar(&tools[*step as usize]),
                _ => None,
            };
            assert_eq!(grammar, &expected, "{role:?} at step {step}");
        }
    }
}
