//! `umi run --coordinator`: the coordinator client (`umi_rpc::coordinator_client`) wired
//! to this command: its notices printed on stderr, its task ends handed to `umi run`'s
//! answer writer.

use umi_core::task::Query;
use umi_rpc::coordinator_client::{ClientError, FinishError, Notice, TaskEnd};

pub use umi_rpc::coordinator_client::CoordinatorAt;

use super::run::Finished;

/// The coordinator's search method, which names the answer files (a coordinator not
/// reachable yet is waited for).
pub async fn method(c: &CoordinatorAt) -> anyhow::Result<String> {
    Ok(c.method(&mut print).await?)
}

/// Solves `todo` on the coordinator, handing each query's end to `finish` as it comes.
pub async fn solve_all(
    c: &CoordinatorAt,
    todo: &[&Query],
    finish: &mut impl FnMut(&str, Finished) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut finish = |id: &str, end: TaskEnd| -> Result<(), FinishError> {
        finish(
            id,
            Finished {
                answer: end.answer,
                outcome: end.outcome,
                failure: end.failure,
                steps: end.steps,
                tokens: end.tokens,
                calls: None,
            },
        )
        .map_err(Into::into)
    };
    Ok(c.solve_all(todo, &mut print, &mut finish).await?)
}

/// What the client is doing about an unreachable or full coordinator, on stderr.
fn print(notice: Notice<'_>) {
    match notice {
        Notice::Waiting {
            address,
            error,
            patience,
        } => eprintln!(
            "waiting for the coordinator at {address} ({}), up to {} s",
            super::report::cause_of(error),
            patience.as_secs()
        ),
        Notice::Lost { error, open } => eprintln!(
            "lost the coordinator ({}); reconnecting and resubmitting the {open} open tasks",
            chain(error)
        ),
        Notice::Full { message } => {
            eprintln!("the coordinator is full ({message}); submitting the rest as tasks finish")
        }
    }
}

/// The error and its sources, joined by ": " (as anyhow's `{:#}` shows a chain).
fn chain(e: &ClientError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
