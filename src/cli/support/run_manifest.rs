//! The `manifest.json` of `umi run` and `umi eval static`: what made a run's outputs (`umi_core::manifest`
//! digests and compares), built from the run's flags, and the resume check: a run
//! adding to a folder whose answers came from other inputs is refused, naming each
//! difference, unless `--force`.

use std::path::Path;

use anyhow::{bail, Context};
use serde_json::{json, Value};
use umi_core::agent::RoleKind;
use umi_core::manifest::{self, differences, section};
use umi_core::presets::Sampling;

use super::output::write_json_atomically;
use crate::cli::args::remote::RemoteArgs;
use crate::cli::args::roles::RoleArgs;
use crate::cli::args::tools::Tools;
use crate::cli::run::RunArgs;

/// umi's version and the commit it was built from.
pub fn created_by() -> Value {
    json!({
        "umi": env!("CARGO_PKG_VERSION"),
        "commit": option_env!("UMI_GIT_COMMIT").unwrap_or("unknown"),
    })
}

fn digest(path: &Path, earlier: Option<&Value>) -> anyhow::Result<Value> {
    manifest::entry(path, earlier).with_context(|| format!("digesting {}", path.display()))
}

/// The three roles on models: each role's checkpoint by digest, dtype and device kind (or
/// its endpoints, where `remote` gives it some), and the tokenizer.
pub fn model_roles(
    r: &RoleArgs,
    remote: Option<&RemoteArgs>,
    earlier: Option<&Value>,
) -> anyhow::Result<Value> {
    let base = r.model.model_path();
    let none = Vec::new();
    let endpoints_of = |role: RoleKind| match (remote, role) {
        (Some(rm), RoleKind::Planner) => &rm.planner_endpoint,
        (Some(rm), RoleKind::Caller) => &rm.caller_endpoint,
        (Some(rm), RoleKind::Summarizer) => &rm.summarizer_endpoint,
        (None, _) => &none,
    };
    let mut roles = serde_json::Map::new();
    for (role, own) in [
        (RoleKind::Planner, &r.planner_model),
        (RoleKind::Caller, &r.caller_model),
        (RoleKind::Summarizer, &r.summarizer_model),
    ] {
        let endpoints = endpoints_of(role);
        let entry = if !endpoints.is_empty() {
            json!({"endpoints": endpoints, "openai_model": remote.and_then(|rm| rm.openai_model.clone())})
        } else {
            section([
                (
                    "checkpoint",
                    digest(own.as_ref().unwrap_or(&base), earlier)
                        .with_context(|| format!("{} checkpoint", role.as_str()))?,
                ),
                ("dtype", json!(r.model.dtype.to_string())),
                // The kind of device, not its number.
                ("device", json!(r.model.device.split(':').next())),
            ])
        };
        roles.insert(role.as_str().into(), entry);
    }
    if remote.is_some_and(|rm| !rm.etcd.etcd.is_empty()) {
        roles.insert("discovered_through_etcd".into(), json!(true));
    }
    let tokenizer = match &r.model.tokenizer {
        Some(t) => digest(t, earlier)?,
        None => json!("the checkpoint's own"),
    };
    roles.insert("tokenizer".into(), tokenizer);
    Ok(Value::Object(roles))
}

/// The manifest of a run with these flags. `sampling` is what the roles sample with
/// (None where another process decides: a coordinator); `earlier` an older manifest of
/// the same folder, for digest reuse.
pub fn build(
    a: &RunArgs,
    method: &str,
    sampling: Option<Sampling>,
    earlier: Option<&Value>,
) -> anyhow::Result<Value> {
    let d = |p: &Path| digest(p, earlier);
    let roles = if let Some(coordinator) = &a.coordinator {
        json!({"coordinator": coordinator, "note": "models, sampling and search are the coordinator's"})
    } else if a.roles == crate::cli::run::RoleSource::Replay {
        json!({"replay": a.tools.record.iter().map(|p| d(p)).collect::<anyhow::Result<Vec<_>>>()?})
    } else if a.engine.is_sim() {
        json!({"simulated_engine": {
            "profile": a.engine.sim_profile.as_deref().map(d).transpose()?,
            "note": "a test double, not a model",
        }})
    } else {
        model_roles(&a.role_args, Some(&a.remote), earlier)?
    };
    let t = &a.tools;
    let caches = if t.save_cache {
        // The run writes simulated replies into it: its digest changes as it goes.
        t.record
            .iter()
            .map(|p| json!({"path": p.display().to_string(), "sha256": "not taken: --save-cache writes into it"}))
            .collect()
    } else {
        t.record
            .iter()
            .map(|p| d(p))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let tools = match t.tools {
        Tools::Rapidapi => json!({
            "backend": "rapidapi",
            "url": t.rapidapi_url.as_deref().unwrap_or(umi_tools::rapidapi::TOOLBENCH_SERVER),
        }),
        Tools::Simulator => {
            let mut tools = json!({
                "backend": "simulator",
                "recorded": caches,
                "simulate_with": t.simulate_with,
                "simulate_model": t.simulate_with.as_ref().map(|_| &t.simulate_model),
                "save_cache": t.save_cache,
            });
            // Only when given, so that earlier manifests compare equal without them.
            if let Some(url) = &t.rapidapi_url {
                tools["real_api"] = json!(url);
            }
            if let Some(folder) = &t.tools_folder {
                tools["tools_folder"] = d(folder)?;
            }
            tools
        }
    };
    Ok(section([
        ("created_by", created_by()),
        ("queries", d(&a.queries)?),
        ("method", json!(method)),
        ("answer_format", json!(format!("{:?}", a.answer_format))),
        ("roles", roles),
        ("sampling", json!(sampling)),
        (
            "search",
            json!({"width": a.width, "max_steps": a.max_steps, "max_depth": a.max_depth}),
        ),
        ("tools", tools),
    ]))
}

/// Reads `out`'s manifest (if any), refuses a run with other inputs when `out` already
/// holds answers (unless `force`), and writes this run's manifest.
pub fn check_and_write(
    out: &Path,
    has_answers: bool,
    force: bool,
    make: impl FnOnce(Option<&Value>) -> anyhow::Result<Value>,
) -> anyhow::Result<()> {
    let path = out.join(manifest::FILE_NAME);
    let earlier: Option<Value> = match std::fs::read(&path) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{}: not a manifest (delete it, or use another --out)",
                path.display()
            )
        })?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let now = make(earlier.as_ref())?;
    if let (Some(earlier), true) = (&earlier, has_answers) {
        let changed = differences(earlier, &now);
        if !changed.is_empty() && !force {
            bail!(
                "{} holds answers made with other inputs, so this run would mix them:\n  {}\nUse another --out, or --force to add to them anyway",
                out.display(),
                changed.join("\n  ")
            );
        }
        if !changed.is_empty() {
            eprintln!(
                "--force: adding to answers made with other inputs ({} differences); manifest.json now describes this run",
                changed.len()
            );
        }
    }
    write_json_atomically(&path, &now)
}
