//! The static evaluation metrics of `evaluate-multi_agent.py`, with its definitions and
//! quirks: hallucination over all samples, unparseable references skipped from Arg. F1,
//! half credit for a present key with another value, `+ 1e-30` after each F1 mean, and
//! the `rouge` package's ROUGE-L.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::parse::{parse_output, Parsed, Plan};
use crate::rouge::rouge_l_f;
use crate::tool::ToolDoc;

/// One scored step: the reference text, the prediction text, and the record's tools.
pub struct Scored<'a> {
    pub reference: &'a str,
    pub prediction: &'a str,
    pub tool_names: Vec<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// Serialized with the reference evaluator's keys, in its order (`rouge`, `plan_em`,
/// `action_em`, `easy_f1`, `hard_f1`, `f1`, `hallu_rate`), so that the two `metrics.json`
/// files compare key by key; umi's own fields follow.
pub struct Metrics {
    /// ROUGE-L F of the final answers (`rouge` in the reference's file).
    #[serde(rename = "rouge")]
    pub rouge_l: Option<f64>,
    pub plan_em: f64,
    /// 0 when there is no call step, as the reference's `evaluate_action_em`.
    pub action_em: Option<f64>,
    pub easy_f1: Option<f64>,
    pub hard_f1: Option<f64>,
    pub f1: Option<f64>,
    pub hallu_rate: f64,
    pub samples: usize,
    /// Finish steps whose predicted answer the rouge package would reject (empty text);
    /// the reference crashes on them, umi scores them 0.
    pub rouge_rejected: usize,
    /// The samples (by index) whose predicted action is not one of their tools: the
    /// reference's `hallu_cases.json`.
    #[serde(skip)]
    pub hallucinated: Vec<usize>,
}

/// Python `==` on parsed JSON: numbers compare by value (`1 == 1.0`, `True == 1`).
fn py_eq(a: &Value, b: &Value) -> bool {
    let num = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    };
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| py_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| py_eq(v, w)))
        }
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Null, Value::Null) => true,
        _ => match (num(a), num(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
    }
}

/// Arg. F1 of one call step whose action was right; `None` = skipped (reference input
/// not JSON). Errors the reference catches score 0.
fn argument_f1(reference: &str, prediction: &str) -> Option<f64> {
    let reference: Value = serde_json::from_str(reference).ok()?;
    let Ok(prediction) = serde_json::from_str::<Value>(prediction) else {
        return Some(0.0);
    };
    let (Value::Object(r), Value::Object(p)) = (&reference, &prediction) else {
        return Some(0.0);
    };
    if r.is_empty() {
        return Some(if p.is_empty() { 1.0 } else { 0.0 });
    }
    let mut credit = 0.0;
    for (k, v) in r {
        if let Some(w) = p.get(k) {
            credit += if py_eq(v, w) { 1.0 } else { 0.5 };
        }
    }
    if p.is_empty() {
        return Some(0.0); // precision divides by zero in the reference
    }
    let recall = credit / r.len() as f64;
    let precision = credit / p.len() as f64;
    if precision + recall == 0.0 {
        return Some(0.0);
    }
    Some(2.0 * precision * recall / (precision + recall))
}

fn mean_plus_quirk(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64 + 1e-30)
}

/// Scores steps given as (reference, prediction, the record's tools) with `parse`.
pub fn score_steps<'a>(
    steps: impl Iterator<Item = (&'a str, &'a str, &'a [ToolDoc])>,
    parse: fn(&str) -> Parsed,
) -> Metrics {
    let scored: Vec<Scored<'a>> = steps
        .map(|(reference, prediction, tools)| Scored {
            reference,
            prediction,
            tool_names: tools.iter().map(ToolDoc::name).collect(),
        })
        .collect();
    evaluate_with(&scored, parse)
}

/// What one step got right by the evaluator's rules: its plan, and for a call its action
/// (hallucinated: a predicted action that is none of the record's tools).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepOutcome {
    pub reference_plan: Plan,
    pub predicted_plan: Plan,
    pub hallucinated: bool,
    /// For a step whose reference calls: whether the same action was predicted.
    pub same_action: Option<bool>,
}

impl StepOutcome {
    pub fn plan_hit(&self) -> bool {
        self.reference_plan == self.predicted_plan
    }
}

/// One step read and judged: its reference, its prediction, and what it got right.
fn judge(s: &Scored<'_>, parse: fn(&str) -> Parsed) -> (Parsed, Parsed, StepOutcome) {
    let reference = parse(s.reference);
    let prediction = parse(s.prediction);
    let step = StepOutcome {
        reference_plan: reference.plan,
        predicted_plan: prediction.plan,
        hallucinated: prediction.action != "none"
            && !s.tool_names.contains(&prediction.action.as_str()),
        same_action: (reference.plan == Plan::Call).then(|| prediction.action == reference.action),
    };
    (reference, prediction, step)
}

/// Each step's [`StepOutcome`], in order (for a report's per-step errors).
pub fn step_outcomes(samples: &[Scored<'_>], parse: fn(&str) -> Parsed) -> Vec<StepOutcome> {
    samples.iter().map(|s| judge(s, parse).2).collect()
}

/// Scores as `evaluate-multi_agent.py` does.
pub fn evaluate(samples: &[Scored<'_>]) -> Metrics {
    evaluate_with(samples, parse_output)
}

/// Scores with `parse` reading references and predictions: the multi-agent evaluator and
/// `evaluate-backbone.py` differ only there.
pub fn evaluate_with(samples: &[Scored<'_>], parse: fn(&str) -> Parsed) -> Metrics {
    let mut plan_hits = 0usize;
    let mut action_hits = Vec::new();
    let mut hallucinated = Vec::new();
    let (mut f1, mut easy, mut hard) = (Vec::new(), Vec::new(), Vec::new());
    let mut rouge = Vec::new();
    let mut rouge_rejected = 0;
    for (i, s) in samples.iter().enumerate() {
        let (reference, prediction, step) = judge(s, parse);
        if step.plan_hit() {
            plan_hits += 1;
        }
        if step.hallucinated {
            hallucinated.push(i);
        }
        match reference.plan {
            Plan::Call => {
                let same_action = step.same_action == Some(true);
                action_hits.push(if same_action { 1.0 } else { 0.0 });
                let is_easy = serde_json::from_str::<Value>(&reference.action_input)
                    .is_ok_and(|v| v.as_object().is_some_and(|o| o.is_empty()));
                if !same_action {
                    // The reference appends the miss to both the easy and the hard list.
                    f1.push(0.0);
                    easy.push(0.0);
                    hard.push(0.0);
                } else if let Some(score) =
                    argument_f1(&reference.action_input, &prediction.action_input)
                {
                    f1.push(score);
                    if is_easy {
                        easy.push(score)
                    } else {
                        hard.push(score)
                    }
                }
            }
            Plan::Finish => {
                let hypothesis = if prediction.plan == Plan::Finish {
                    prediction.answer.as_str()
                } else {
                    "none"
                };
                match rouge_l_f(hypothesis, &reference.answer) {
                    Some(f) => rouge.push(f),
                    None => {
                        rouge_rejected += 1;
                        rouge.push(0.0);
                    }
                }
            }
            Plan::GiveUp => {}
        }
    }
    let n = samples.len().max(1) as f64;
    Metrics {
        samples: samples.len(),
        plan_em: plan_hits as f64 / n,
        // The reference returns 0 for an empty list here (and for R-L); the F1s divide by
        // zero there, so they are None.
        action_em: Some(if action_hits.is_empty() {
            0.0
        } else {
            action_hits.iter().sum::<f64>() / action_hits.len() as f64
        }),
        hallu_rate: hallucinated.len() as f64 / n,
        f1: mean_plus_quirk(&f1),
        easy_f1: mean_plus_quirk(&easy),
        hard_f1: mean_plus_quirk(&hard),
        rouge_l: Some(if rouge.is_empty() {
            0.0
        } else {
            rouge.iter().sum::<f64>() / rouge.len() as f64
        }),
        rouge_rejected,
        hallucinated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s<'a>(reference: &'a str, prediction: &'a str) -> Scored<'a> {
        Scored {
            reference,
            prediction,
            tool_names: vec!["f", "g"],
        }
    }

    const CALL_A1: &str = "assistant: x Next: caller.</s>caller: Action: f\nAction Input: {\"a\": 1, \"b\": \"x\"}</s>";
    const CALL_EMPTY: &str =
        "assistant: x Next: caller.</s>caller: Action: g\nAction Input: {}</s>";
    const FINISH: &str = "assistant: x Next: conclusion.</s>conclusion: Paris is the capital</s>";
    const GIVE_UP: &str = "I cannot. Next: give up.";

    #[test]
    fn every_branch_worked_by_hand() {
        let samples = [
            // 1. call, exact: F1 1 (hard).
            s(CALL_A1, "asssitant: x Next: caller.</s>caller: Action: f\nAction Input: {\"a\": 1.0, \"b\": \"x\"}"),
            // 2. call, a right, b wrong value, extra key c: credit 1.5; R = 1.5/2, P = 1.5/3 → F1 = 0.6 (hard).
            s(CALL_A1, "asssitant: x Next: caller.</s>caller: Action: f\nAction Input: {\"a\": 1, \"b\": \"y\", \"c\": 0}"),
            // 3. call with the wrong action: F1 0 (hard), action miss.
            s(CALL_A1, "asssitant: x Next: caller.</s>caller: Action: g\nAction Input: {\"a\": 1, \"b\": \"x\"}"),
            // 4. call, unparseable JSON input: F1 0 (hard).
            s(CALL_A1, "asssitant: x Next: caller.</s>caller: Action: f\nAction Input: {a: 1"),
            // 5. empty inputs both: easy 1.
            s(CALL_EMPTY, "asssitant: x Next: caller.</s>caller: Action: g\nAction Input: {}"),
            // 6. hallucinated tool on an empty-input step: easy 0, action miss, hallucination.
            s(CALL_EMPTY, "asssitant: x Next: caller.</s>caller: Action: made_up\nAction Input: {}"),
            // 7. conclusion predicted for a call step: plan miss, action "none", easy 0.
            s(CALL_EMPTY, "asssitant: x Next: conclusion.</s>conclusion: hi"),
            // 8. conclusion, identical answer: ROUGE-L 2/(2+1e-8).
            s(FINISH, "asssitant: x Next: conclusion.</s>conclusion: Paris is the capital"),
            // 9. conclusion step answered with give up: hypothesis "none" → ROUGE-L 0, plan miss.
            s(FINISH, "Next: give up."),
            // 10. give up, matched.
            s(GIVE_UP, "nothing works Next: give up."),
        ];
        let m = evaluate(&samples);
        assert_eq!(m.samples, 10);
        assert!((m.plan_em - 0.8).abs() < 1e-12, "{}", m.plan_em); // misses: 7, 9
        assert!((m.action_em.unwrap() - 4.0 / 7.0).abs() < 1e-12); // hits: 1, 2, 4, 5
        assert!((m.hallu_rate - 0.1).abs() < 1e-12);
        // A wrong action (3, 6, 7) counts 0 in both lists, as in the reference.
        let hard = (1.0 + 0.6 + 0.0 + 0.0 + 0.0 + 0.0) / 6.0;
        let easy = (1.0 + 0.0 + 0.0 + 0.0) / 4.0;
        assert!((m.hard_f1.unwrap() - hard).abs() < 1e-12, "{:?}", m.hard_f1);
        assert!((m.easy_f1.unwrap() - easy).abs() < 1e-12);
        assert!((m.f1.unwrap() - 2.6 / 7.0).abs() < 1e-12);
        assert!((m.rouge_l.unwrap() - (2.0 / (2.0 + 1e-8)) / 2.0).abs() < 1e-12);
    }

    /// Pins `evaluate-multi_agent.py`'s `metric` dict: its keys, in its order, first.
    #[test]
    fn metrics_json_has_the_reference_keys_in_order() {
        let m = evaluate(&[s(GIVE_UP, "Next: give up.")]);
        let keys: Vec<String> = serde_json::to_value(&m)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            keys[..7],
            [
                "rouge",
                "plan_em",
                "action_em",
                "easy_f1",
                "hard_f1",
                "f1",
                "hallu_rate"
            ]
        );
    }

    #[test]
    fn unparseable_reference_input_is_skipped_and_empty_lists_are_as_the_reference() {
        let bad_ref = "assistant: x Next: caller.</s>caller: Action: f\nAction Input: not json</s>";
        let m = evaluate(&[s(
            bad_ref,
            "a Next: caller.</s>caller: Action: f\nAction Input: {}",
        )]);
        assert_eq!(m.action_em, Some(1.0));
        assert_eq!(m.f1, None);
        // No conclusion step: R-L is 0, as `evaluate_rougel` returns for an empty list.
        assert_eq!(m.rouge_l, Some(0.0));
        let m = evaluate(&[s(GIVE_UP, "Next: give up.")]);
        assert_eq!(m.action_em, Some(0.0));
        assert_eq!(m.plan_em, 1.0);
    }

    #[test]
    fn mean_carries_the_reference_epsilon() {
        let m = evaluate(&[s(
            CALL_A1,
            "a Next: caller.</s>caller: Action: g\nAction Input: {}",
        )]);
        assert_eq!(m.f1, Some(1e-30));
    }
}
