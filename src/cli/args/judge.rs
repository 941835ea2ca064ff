//! The judge of `umi eval pass-rate` and `umi eval win-rate`: an OpenAI-compatible chat
//! endpoint made to call ToolEval's functions, with StableToolBench's timeouts and retries.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use umi_tools::judge::{OpenAiJudge, RetryPolicy};

#[derive(Args, Debug, Clone)]
pub struct JudgeArgs {
    /// The judge: an OpenAI-compatible endpoint, `http(s)://host:port/v1` (a umi worker's
    /// `--openai-listen` serves one offline). Required: there is no verdict without one.
    #[arg(long)]
    pub judge: Option<String>,
    /// The judge's model (StableToolBench's default evaluator: gpt-3.5-turbo-16k).
    #[arg(long, default_value = "gpt-3.5-turbo-16k")]
    pub judge_model: String,
    /// The judge's API key.
    #[arg(long, env = "UMI_JUDGE_API_KEY", hide_env_values = true)]
    pub judge_api_key: Option<String>,
    /// Seconds one judge request may take (StableToolBench's evaluator: 10), before its
    /// retries.
    #[arg(long, default_value_t = 10.0)]
    pub judge_timeout: f64,
}

impl JudgeArgs {
    /// The judge's client, and its name in the judgment files: its model at its endpoint
    /// (two servers may both call their model "default").
    pub fn judge(&self, what: &str) -> anyhow::Result<(OpenAiJudge, String)> {
        let Some(base) = self.judge.clone() else {
            bail!("{what} needs a judge: give --judge http(s)://host:port/v1 (an OpenAI-compatible endpoint; StableToolBench uses gpt-3.5-turbo-16k). umi makes up no proxy for it");
        };
        if !(self.judge_timeout.is_finite() && self.judge_timeout > 0.0) {
            bail!("--judge-timeout must be a positive number of seconds");
        }
        if self.judge_api_key.is_some() {
            umi_tools::http::check_clear_text(&base).context("--judge-api-key")?;
        }
        let id = format!("{} at {base}", self.judge_model);
        let judge = OpenAiJudge {
            base,
            model: self.judge_model.clone(),
            api_key: self.judge_api_key.clone(),
            retry: RetryPolicy {
                request_timeout: Duration::from_secs_f64(self.judge_timeout),
                ..RetryPolicy::default()
            },
        };
        Ok((judge, id))
    }
}
