//! The `manifest.json` of `umi run` and `umi eval static`: what made a run's outputs (`umi_core::manifest`
//! digests and compares), built from the run's flags, and the resume check: a run
//! adding to a folder whose answers came from other inputs is refused, naming each
//! difference, unless `--force`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

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
        "commit": crate::cli::COMMIT,
    })
}

/// Digests of this run's files: an earlier manifest's reused for unchanged files, each
/// file digested once however many roles name it.
pub struct Digests {
    earlier: manifest::Earlier,
    done: HashMap<PathBuf, Value>,
}

impl Digests {
    pub fn new(earlier: Option<&Value>) -> Self {
        Digests {
            earlier: manifest::Earlier::index(earlier),
            done: HashMap::new(),
        }
    }

    pub fn of(&mut self, path: &Path) -> anyhow::Result<Value> {
        if let Some(known) = self.done.get(path) {
            return Ok(known.clone());
        }
        let entry = manifest::entry(path, &self.earlier)
            .with_context(|| format!("digesting {}", path.display()))?;
        self.done.insert(path.to_path_buf(), entry.clone());
        Ok(entry)
    }
}

/// The three roles on models: each role's checkpoint by digest, dtype and device kind (or
/// its endpoints, or the workers discovered through etcd, where `remote` says so), and the
/// tokenizer.
pub fn model_roles(
    r: &RoleArgs,
    remote: Option<&RemoteArgs>,
    digests: &mut Digests,
) -> anyhow::Result<Value> {
    let none = Vec::new();
    let endpoints_of = |role: RoleKind| {
        remote
            .and_then(|rm| rm.endpoints().into_iter().find(|(r, _)| *r == role))
            .map_or(&none, |(_, e)| e)
    };
    let discovered = remote.is_some_and(|rm| !rm.etcd.etcd.is_empty());
    let mut roles = serde_json::Map::new();
    for (role, own) in [
        (RoleKind::Planner, &r.planner_model),
        (RoleKind::Caller, &r.caller_model),
        (RoleKind::Summarizer, &r.summarizer_model),
    ] {
        let own_adapter = r.adapters.of(role);
        let endpoints = endpoints_of(role);
        let entry = if !endpoints.is_empty() {
            json!({"endpoints": endpoints, "openai_model": remote.and_then(|rm| rm.openai_model.clone())})
        } else if discovered {
            // The workers' checkpoints are theirs, not this machine's.
            json!({"workers_discovered_through_etcd": remote.map(|rm| &rm.etcd.etcd)})
        } else {
            let path = match own {
                Some(p) => p.clone(),
                None => r.model.model_path()?,
            };
            let mut entry = section([
                (
                    "checkpoint",
                    digests
                        .of(&path)
                        .with_context(|| format!("{} checkpoint", role.as_str()))?,
                ),
                ("dtype", json!(r.model.dtype.to_string())),
                // The kind of device, not its number.
                ("device", json!(r.model.device.split(':').next())),
            ]);
            // Only with an adapter, so manifests of runs without one stay as they were.
            if let Some(adapter) = own_adapter.or(r.model.adapter.as_ref()) {
                let digest = digests
                    .of(adapter)
                    .with_context(|| format!("{} adapter", role.as_str()))?;
                if let Value::Object(fields) = &mut entry {
                    fields.insert("adapter".into(), digest);
                }
            }
            entry
        };
        roles.insert(role.as_str().into(), entry);
    }
    let tokenizer = match &r.model.tokenizer {
        Some(t) => digests.of(t)?,
        None => json!("the checkpoint's own"),
    };
    roles.insert("tokenizer".into(), tokenizer);
    Ok(Value::Object(roles))
}

/// The manifest of a run with these flags. `sampling` is what the roles sample with
/// (None where another process decides: a coordinator).
pub fn build(
    a: &RunArgs,
    method: &str,
    sampling: Option<Sampling>,
    max_steps: usize,
    digests: &mut Digests,
) -> anyhow::Result<Value> {
    let t = &a.tools;
    let recorded = t.record_paths();
    let roles = if let Some(coordinator) = &a.coordinator {
        json!({"coordinator": coordinator, "note": "models, sampling and search are the coordinator's"})
    } else if a.roles == crate::cli::args::roles::Answerers::Replay {
        let replayed = recorded
            .iter()
            .map(|p| digests.of(p))
            .collect::<anyhow::Result<Vec<_>>>()?;
        json!({ "replay": replayed })
    } else if a.engine.is_sim() {
        let profile = match a.engine.sim_profile.as_deref() {
            Some(p) => Some(digests.of(p)?),
            None => None,
        };
        json!({"simulated_engine": {"profile": profile, "note": "a test double, not a model"}})
    } else {
        model_roles(&a.role_args, Some(&a.remote), digests)?
    };
    let caches = if t.save_cache {
        // The run writes simulated replies into it: its digest changes as it goes.
        recorded
            .iter()
            .map(|p| json!({"path": p.display().to_string(), "digest": "not taken: --save-cache writes into it"}))
            .collect()
    } else {
        recorded
            .iter()
            .map(|p| digests.of(p))
            .collect::<anyhow::Result<Vec<_>>>()?
    };
    let tools = match t.tools {
        Tools::Rapidapi => json!({
            "backend": "rapidapi",
            "url": t.rapidapi_url.as_deref().unwrap_or(umi_tools::rapidapi::TOOLBENCH_SERVER),
            "max_response_bytes": t.tool_max_response_bytes,
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
                tools["real_api"] =
                    json!({"url": url, "max_response_bytes": t.tool_max_response_bytes});
            }
            // Read by --simulate-with, and by ToolBench agents for their system message.
            let read = t.simulate_with.is_some() || a.agent.toolbench_messages();
            if let (Some(folder), true) = (&t.tools_folder, read) {
                tools["tools_folder"] = digests.of(folder)?;
            }
            tools
        }
    };
    let queries = match &a.queries {
        Some(path) => digests.of(path)?,
        None => json!({
            "built_in": "data/queries/demo.json",
            "sha256": manifest::text_digest(crate::cli::run::DEMO_QUERIES),
        }),
    };
    let mut search = json!({"width": a.width, "max_steps": max_steps, "max_depth": a.max_depth});
    // Only another agent is named, so α-UMi runs made before agents were a setting resume.
    if a.agent != umi_core::agents::AgentKind::AlphaUmi {
        search["agent"] = json!(a.agent.as_str());
    }
    // Only a constrained caller is named, so earlier runs' manifests compare equal.
    if a.role_args.constrain.is_some() {
        search["constrain"] = json!("caller");
    }
    Ok(section([
        ("created_by", created_by()),
        ("queries", queries),
        ("method", json!(method)),
        ("answer_format", json!(format!("{:?}", a.answer_format()?))),
        ("roles", roles),
        ("sampling", json!(sampling)),
        ("search", search),
        ("tools", tools),
    ]))
}

/// Reads `out`'s manifest (if any), refuses a run with other inputs when `out` already
/// holds results (unless `force`: then the earlier manifest is kept under
/// `superseded`), and writes this run's manifest.
pub fn check_and_write(
    out: &Path,
    has_results: bool,
    force: bool,
    make: impl FnOnce(&mut Digests) -> anyhow::Result<Value>,
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
    let mut now = make(&mut Digests::new(earlier.as_ref()))?;
    if let (Some(mut earlier), true) = (earlier, has_results) {
        let changed = differences(&earlier, &now);
        if !changed.is_empty() && !force {
            bail!(
                "{} holds results made with other inputs, so this run would mix them:\n  {}\nUse another --out, or --force to add to them anyway",
                out.display(),
                changed.join("\n  ")
            );
        }
        if !changed.is_empty() {
            eprintln!(
                "--force: adding to results made with other inputs ({} differences); manifest.json now describes this run, the earlier one under \"superseded\"",
                changed.len()
            );
            let mut superseded = match earlier.get_mut("superseded").map(Value::take) {
                Some(Value::Array(list)) => list,
                _ => Vec::new(),
            };
            if let Value::Object(m) = &mut earlier {
                m.remove("superseded");
            }
            superseded.push(earlier);
            now["superseded"] = Value::Array(superseded);
        } else if let Some(kept) = earlier.get("superseded") {
            now["superseded"] = kept.clone();
        }
    }
    write_json_atomically(&path, &now)
}
