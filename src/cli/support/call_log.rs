//! `umi run --log-calls FILE`: each α-UMi role call's rendered prompt and token counts,
//! one JSON line per answered call, so the same calls can be made again elsewhere
//! (`scripts/bench_seed.sh realtime` makes them the seed's way: transformers `generate`,
//! batch 1, the whole prompt every call).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use futures::future::BoxFuture;
use serde::Serialize;
use umi_core::agent::{Generated, RoleModels, RoleRequest};
use umi_core::prompt::RolePrompts;
use umi_core::{CoreError, ErrorClass};

/// One line of the log.
#[derive(Serialize)]
struct Line<'a> {
    task_id: &'a str,
    role: &'a str,
    /// The prompt as rendered, before the engine's left truncation to the sampling's
    /// `max_input_tokens`.
    prompt: &'a str,
    prompt_tokens: usize,
    cached_tokens: usize,
    generated_tokens: usize,
}

/// Roles that log each answered call; calls in forms with no rendered prompt (a
/// function-calling chat) pass through unlogged.
pub struct CallLog {
    inner: Arc<dyn RoleModels>,
    prompts: RolePrompts,
    path: PathBuf,
    file: Mutex<File>,
}

impl CallLog {
    /// Appends to `path` (created if missing).
    pub fn open(inner: Arc<dyn RoleModels>, path: &Path) -> anyhow::Result<CallLog> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .with_context(|| format!("opening {} (--log-calls)", path.display()))?;
        Ok(CallLog {
            inner,
            prompts: RolePrompts::toolbench(),
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    fn append(
        &self,
        task_id: &str,
        role: &str,
        prompt: &str,
        out: &Generated,
    ) -> Result<(), CoreError> {
        let line = Line {
            task_id,
            role,
            prompt,
            prompt_tokens: out.prompt_tokens,
            cached_tokens: out.cached_tokens,
            generated_tokens: out.generated_tokens,
        };
        let failed = |e: &dyn std::fmt::Display| {
            CoreError::new(
                ErrorClass::Internal,
                format!("writing {} (--log-calls): {e}", self.path.display()),
            )
        };
        let mut text = serde_json::to_string(&line).map_err(|e| failed(&e))?;
        text.push('\n');
        // One write per line, under the lock: lines from concurrent tasks never interleave.
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        file.write_all(text.as_bytes()).map_err(|e| failed(&e))
    }
}

impl RoleModels for CallLog {
    fn generate<'a>(&'a self, request: RoleRequest) -> BoxFuture<'a, umi_core::Result<Generated>> {
        Box::pin(async move {
            let prompt = request.render(&self.prompts).ok();
            let (task_id, role) = (request.task_id.clone(), request.role.as_str());
            let out = self.inner.generate(request).await?;
            if let Some(prompt) = prompt {
                self.append(&task_id, role, &prompt, &out)?;
            }
            Ok(out)
        })
    }
}
