//! PEFT LoRA adapters (`adapter_config.json` and `adapter_model.safetensors` or
//! `adapter_model.bin`, as `peft` saves them and GLPFT's `train_lora.py` trains them),
//! merged into the base weights as they load: `W + scaling · B·A`, so an adapted model
//! costs nothing per token. The merge is PEFT's `merge_and_unload`: the product and the
//! sum in f32, the result rounded once to the checkpoint's dtype.
//!
//! Or served unmerged ([`LowRank`]): one copy of the base weights for several adapters,
//! each request naming its own, each row of a batch adding its own low-rank product
//! `scaling · (x·Aᵀ)·Bᵀ` (PEFT's `PeftModel` forward), so α-UMi's three roles fit on one
//! device at the memory of one model.
//!
//! Every setting of the config that changes the arithmetic is read or refused by name;
//! settings that only matter for training are ignored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::convert::permute_rope_rows;
use crate::error::{EngineError, Result};
use crate::weights::{RawTensor, RopeLayout, TensorSource};

pub const CONFIG_FILE: &str = "adapter_config.json";
const WEIGHT_FILES: [&str; 2] = ["adapter_model.safetensors", "adapter_model.bin"];
/// Where PEFT puts the base model's module names in the adapter's tensor names.
const PEFT_PREFIX: &str = "base_model.model.";

/// Settings that only matter to training or to PEFT's bookkeeping (`megatron_core` and
/// `qalora_group_size` are read only with `megatron_config` or `use_qalora`, which must be
/// off).
const IGNORED: [&str; 13] = [
    "megatron_core",
    "qalora_group_size",
    "base_model_name_or_path",
    "revision",
    "task_type",
    "inference_mode",
    "lora_dropout",
    "auto_mapping",
    "peft_version",
    "loftq_config",
    "eva_config",
    "corda_config",
    "runtime_config",
];

/// Settings read here.
const READ: [&str; 8] = [
    "init_lora_weights",
    "peft_type",
    "r",
    "lora_alpha",
    "target_modules",
    "fan_in_fan_out",
    "use_rslora",
    "bias",
];

/// One adapter, its matrices per base weight, ready to merge.
pub struct LoraAdapter {
    dir: PathBuf,
    scaling: f64,
    /// `lora_A` ([r, in]) and `lora_B` ([out, r]) by the base weight's name
    /// (`model.layers.0.self_attn.q_proj.weight`).
    pairs: HashMap<String, (Tensor, Tensor)>,
}

impl LoraAdapter {
    /// Reads the adapter in `dir`, refusing a setting it cannot honour by its name.
    pub fn open(dir: &Path) -> Result<LoraAdapter> {
        let config_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| EngineError::load(&config_path, e))?;
        let config: serde_json::Map<String, Value> = serde_json::from_str(&text)
            .map_err(|e| EngineError::load(&config_path, format!("not a JSON object: {e}")))?;
        let settings = Settings::read(&config).map_err(|e| EngineError::load(&config_path, e))?;
        let pairs = read_pairs(dir, &settings)?;
        Ok(LoraAdapter {
            dir: dir.to_path_buf(),
            scaling: settings.scaling,
            pairs,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Puts B's rows of q_proj and k_proj in the checkpoint's rotary layout: PEFT's are in
    /// HuggingFace's (halves), a GGUF file's weights in llama.cpp's (interleaved).
    pub fn match_rope_layout(
        &mut self,
        layout: RopeLayout,
        heads: usize,
        kv_heads: usize,
    ) -> Result<()> {
        if layout == RopeLayout::Halves {
            return Ok(());
        }
        for (name, (_, b)) in self.pairs.iter_mut() {
            let heads = if name.ends_with("self_attn.q_proj.weight") {
                heads
            } else if name.ends_with("self_attn.k_proj.weight") {
                kv_heads
            } else {
                continue;
            };
            if b.dims().first().is_none_or(|rows| rows % (2 * heads) != 0) {
                // Not this model's shape: the merge or the stacking refuses it by name.
                continue;
            }
            *b = permute_rope_rows(b, heads, layout)
                .map_err(|e| EngineError::load(&self.dir, format!("{name}: {e}")))?;
        }
        Ok(())
    }

    /// `W + scaling · B·A` for a base weight the adapter targets (None for the others).
    pub fn merge(&self, name: &str, weight: &Tensor) -> Result<Option<Tensor>> {
        let Some((a, b)) = self.pairs.get(name) else {
            return Ok(None);
        };
        let in_adapter =
            |e: candle_core::Error| EngineError::load(&self.dir, format!("{name}: {e}"));
        let delta = b
            .to_dtype(DType::F32)
            .and_then(|b| b.matmul(&a.to_dtype(DType::F32)?))
            .and_then(|d| d.affine(self.scaling, 0.0))
            .map_err(in_adapter)?;
        if delta.dims() != weight.dims() {
            return Err(EngineError::load(
                &self.dir,
                format!(
                    "{name}: the adapter's B·A is {:?}, the model's weight {:?}",
                    delta.dims(),
                    weight.dims()
                ),
            ));
        }
        let merged = weight
            .to_device(&Device::Cpu)
            .and_then(|w| w.to_dtype(DType::F32))
            .and_then(|w| w + delta)
            .and_then(|w| w.to_dtype(weight.dtype()))
            .and_then(|w| w.to_device(weight.device()))
            .map_err(in_adapter)?;
        Ok(Some(merged))
    }

    fn targets(&self) -> impl Iterator<Item = &String> {
        self.pairs.keys()
    }

    /// The adapter's product for a stacked matrix (`parts`: each part's weight name and
    /// rows, in the stack's order; `inputs`: the columns they share): A of the adapted
    /// parts one after another, B placing each part's B in its rows and ranks (zero
    /// elsewhere), in f32 on `device`. None when no part is adapted. The names used are
    /// recorded in `used`.
    pub fn low_rank(
        &self,
        parts: &[(String, usize)],
        inputs: usize,
        device: &Device,
        used: &mut Vec<String>,
    ) -> Result<Option<LowRank>> {
        let adapted: Vec<(usize, &(Tensor, Tensor))> = parts
            .iter()
            .enumerate()
            .filter_map(|(i, (name, _))| self.pairs.get(name).map(|pair| (i, pair)))
            .collect();
        if adapted.is_empty() {
            return Ok(None);
        }
        let in_adapter = |e: candle_core::Error| EngineError::load(&self.dir, e);
        let rows: usize = parts.iter().map(|(_, r)| r).sum();
        let mut b_blocks = Vec::new();
        let mut a_parts = Vec::new();
        for (i, (a, b)) in &adapted {
            let (part_rows, rank) = (parts[*i].1, a.dims()[0]);
            if b.dims() != [part_rows, rank] || a.dims() != [rank, inputs] {
                return Err(EngineError::load(
                    &self.dir,
                    format!(
                        "{}: lora_A is {:?} and lora_B {:?}; the model's weight is \
                         [{part_rows}, {inputs}]",
                        parts[*i].0,
                        a.dims(),
                        b.dims()
                    ),
                ));
            }
            let row_at: usize = parts[..*i].iter().map(|(_, r)| r).sum();
            // B's columns for this part's ranks: its rows in place, zero above and below.
            let block = b
                .to_dtype(DType::F32)
                .and_then(|b| b.pad_with_zeros(0, row_at, rows - row_at - part_rows))
                .map_err(in_adapter)?;
            b_blocks.push(block);
            a_parts.push(a.to_dtype(DType::F32).map_err(in_adapter)?);
            used.push(parts[*i].0.clone());
        }
        let b = Tensor::cat(&b_blocks, 1).map_err(in_adapter)?;
        let a = Tensor::cat(&a_parts, 0).map_err(in_adapter)?;
        // Kept in f32: PEFT upcasts adapter weights to f32 by default.
        let on_device = |t: Tensor| {
            t.to_device(device)
                .and_then(|t| t.t())
                .and_then(|t| t.contiguous())
                .map_err(in_adapter)
        };
        Ok(Some(LowRank {
            a_t: on_device(a)?,
            b_t: on_device(b)?,
            scaling: self.scaling,
        }))
    }

    /// An error if some pair of the adapter was not in `used` (a weight the model lacks).
    pub fn check_all_used(&self, used: &[String]) -> Result<()> {
        let unused: Vec<&String> = self.targets().filter(|t| !used.contains(t)).collect();
        match unused.first() {
            None => Ok(()),
            Some(first) => Err(EngineError::load(
                &self.dir,
                format!(
                    "the adapter adapts {first} (and {} more), which the model does not have",
                    unused.len() - 1
                ),
            )),
        }
    }
}

/// One linear layer's share of an unmerged adapter: `y += scaling · (x·Aᵀ)·Bᵀ`.
pub struct LowRank {
    /// Aᵀ: [in, r].
    a_t: Tensor,
    /// Bᵀ: [r, out].
    b_t: Tensor,
    scaling: f64,
}

impl LowRank {
    /// `y + scaling · (x·Aᵀ)·Bᵀ` for the layer's input `x` (..., in) and output `y`,
    /// in f32 and rounded once to `y`'s dtype, as PEFT's forward computes it.
    pub fn add_to(&self, y: &Tensor, x: &Tensor) -> candle_core::Result<Tensor> {
        let delta = x
            .to_dtype(DType::F32)?
            .broadcast_matmul(&self.a_t)?
            .broadcast_matmul(&self.b_t)?
            .affine(self.scaling, 0.0)?;
        (y.to_dtype(DType::F32)? + delta)?.to_dtype(y.dtype())
    }

    /// Bytes of the two matrices.
    pub fn bytes(&self) -> usize {
        (self.a_t.elem_count() + self.b_t.elem_count()) * self.a_t.dtype().size_in_bytes()
    }
}

/// What the config says, checked.
#[derive(Debug)]
struct Settings {
    scaling: f64,
    targets: Targets,
}

#[derive(Debug)]
enum Targets {
    /// Module names matched as PEFT matches them: the name, or a `.`-suffix of the path.
    Names(Vec<String>),
    /// A regular expression over the whole module path.
    Pattern(regex::Regex),
    /// PEFT's `all-linear`: every linear layer but the output head.
    AllLinear,
}

impl Targets {
    fn matches(&self, module: &str) -> bool {
        match self {
            Targets::Names(names) => names
                .iter()
                .any(|n| module == n || module.ends_with(&format!(".{n}"))),
            Targets::Pattern(re) => re.is_match(module),
            Targets::AllLinear => module != "lm_head",
        }
    }
}

impl Settings {
    fn read(config: &serde_json::Map<String, Value>) -> std::result::Result<Settings, String> {
        for (key, value) in config {
            if READ.contains(&key.as_str()) || IGNORED.contains(&key.as_str()) {
                continue;
            }
            // Anything else must be off (null, false, empty): such a setting, known or
            // new, changes what the adapter computes.
            let off = match value {
                Value::Null | Value::Bool(false) => true,
                Value::String(s) => s.is_empty(),
                Value::Array(a) => a.is_empty(),
                Value::Object(o) => o.is_empty(),
                _ => false,
            };
            if !off {
                return Err(format!(
                    "the setting {key:?} = {value} is not supported (umi merges plain LoRA: \
                     no DoRA, per-module ranks, saved modules, layer selections or biases)"
                ));
            }
        }
        // Initialisations that rewrite the base weights too (PiSSA, OLoRA, LoftQ, CorDA,
        // EVA): such an adapter needs its converted base.
        match config.get("init_lora_weights") {
            None | Some(Value::Bool(_)) => {}
            Some(Value::String(s)) if s == "gaussian" => {}
            Some(other) => {
                return Err(format!(
                    "init_lora_weights is {other}: an adapter initialised that way needs the \
                     base weights it rewrote (convert it to plain LoRA first)"
                ))
            }
        }
        match config.get("peft_type").and_then(Value::as_str) {
            Some("LORA") => {}
            other => return Err(format!("peft_type is {other:?}, not \"LORA\"")),
        }
        let r = config
            .get("r")
            .and_then(Value::as_u64)
            .filter(|r| *r > 0)
            .ok_or("r is not a positive integer")? as f64;
        let alpha = config
            .get("lora_alpha")
            .and_then(Value::as_f64)
            .ok_or("lora_alpha is not a number")?;
        let rslora = config
            .get("use_rslora")
            .is_some_and(|v| v.as_bool() == Some(true));
        let scaling = if rslora { alpha / r.sqrt() } else { alpha / r };
        match config.get("bias").and_then(Value::as_str) {
            None | Some("none") => {}
            Some(other) => {
                return Err(format!(
                    "bias is {other:?}: adapters with trained biases are not supported"
                ))
            }
        }
        if config.get("fan_in_fan_out").and_then(Value::as_bool) == Some(true) {
            // PEFT's own rule for torch.nn.Linear layers (all of LLaMA's): it warns and
            // sets fan_in_fan_out to false (the flag is for GPT-2's Conv1D).
            tracing::warn!("fan_in_fan_out is true in an adapter of linear layers: treated as false, as PEFT does");
        }
        let targets = match config.get("target_modules") {
            Some(Value::String(s)) if s == "all-linear" => Targets::AllLinear,
            Some(Value::String(s)) => Targets::Pattern(
                regex::Regex::new(&format!("^(?:{s})$"))
                    .map_err(|e| format!("target_modules is not a regular expression: {e}"))?,
            ),
            Some(Value::Array(items)) => Targets::Names(
                items
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or("target_modules holds a non-string")?,
            ),
            _ => return Err("target_modules is neither a list of names nor a pattern".into()),
        };
        Ok(Settings { scaling, targets })
    }
}

/// The adapter's `lora_A`/`lora_B` pairs by base weight name; every tensor must belong to
/// a complete pair on a targeted module.
fn read_pairs(dir: &Path, settings: &Settings) -> Result<HashMap<String, (Tensor, Tensor)>> {
    let path = WEIGHT_FILES
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            EngineError::load(
                dir,
                format!("no adapter weights ({})", WEIGHT_FILES.join(" or ")),
            )
        })?;
    let tensors = if path.extension().is_some_and(|e| e == "safetensors") {
        candle_core::safetensors::load(&path, &Device::Cpu)
            .map_err(|e| EngineError::load(&path, e))?
    } else {
        candle_core::pickle::read_all(&path)
            .map_err(|e| EngineError::load(&path, e))?
            .into_iter()
            .collect()
    };
    let mut halves: HashMap<String, (Option<Tensor>, Option<Tensor>)> = HashMap::new();
    for (name, tensor) in tensors {
        let (module, which) = lora_name(&name).ok_or_else(|| {
            EngineError::load(
                &path,
                format!("tensor {name} is not a LoRA matrix (lora_A or lora_B of a linear layer)"),
            )
        })?;
        if !settings.targets.matches(module) {
            return Err(EngineError::load(
                &path,
                format!("tensor {name} is for {module}, which target_modules does not name"),
            ));
        }
        let entry = halves.entry(format!("{module}.weight")).or_default();
        match which {
            Half::A => entry.0 = Some(tensor),
            Half::B => entry.1 = Some(tensor),
        }
    }
    let mut pairs = HashMap::new();
    for (weight, halves) in halves {
        match halves {
            (Some(a), Some(b)) if a.rank() == 2 && b.rank() == 2 && a.dims()[0] == b.dims()[1] => {
                pairs.insert(weight, (a, b));
            }
            (Some(a), Some(b)) => {
                return Err(EngineError::load(
                    &path,
                    format!(
                        "{weight}: lora_A is {:?} and lora_B {:?}, not [r, in] and [out, r]",
                        a.dims(),
                        b.dims()
                    ),
                ))
            }
            _ => {
                return Err(EngineError::load(
                    &path,
                    format!("{weight}: lora_A or lora_B is missing"),
                ))
            }
        }
    }
    if pairs.is_empty() {
        return Err(EngineError::load(&path, "no LoRA matrices"));
    }
    Ok(pairs)
}

enum Half {
    A,
    B,
}

/// `base_model.model.<module>.lora_A.weight` (or `.lora_A.<adapter name>.weight`) →
/// (`<module>`, A).
fn lora_name(name: &str) -> Option<(&str, Half)> {
    let rest = name.strip_prefix(PEFT_PREFIX)?;
    let rest = rest.strip_suffix(".weight")?;
    for (marker, half) in [(".lora_A", Half::A), (".lora_B", Half::B)] {
        if let Some(at) = rest.find(marker) {
            let after = &rest[at + marker.len()..];
            // Nothing after the marker, or one adapter-name component.
            if after.is_empty() || (after.starts_with('.') && !after[1..].contains('.')) {
                return Some((&rest[..at], half));
            }
        }
    }
    None
}

/// A checkpoint's tensors with an adapter merged into the weights it targets, as they are
/// taken. Once the model has taken all it needs, [`LoraSource::finish`] checks that every
/// adapted weight was one the model has.
pub struct LoraSource<'a> {
    base: &'a mut dyn TensorSource,
    adapter: LoraAdapter,
    /// Whether the model keeps matrices dense (f32, f16, bf16): a quantized one is then
    /// dequantized before the merge, as it would be anyway; otherwise it is refused.
    dense: bool,
    merged: Vec<String>,
}

impl<'a> LoraSource<'a> {
    pub fn new(base: &'a mut dyn TensorSource, adapter: LoraAdapter, dense: bool) -> Self {
        LoraSource {
            base,
            adapter,
            dense,
            merged: Vec::new(),
        }
    }

    /// How many weights took the adapter; an error if some adapted weight is not the
    /// model's (a LoRA for another architecture).
    pub fn finish(self) -> Result<usize> {
        self.adapter.check_all_used(&self.merged)?;
        Ok(self.merged.len())
    }
}

impl TensorSource for LoraSource<'_> {
    fn path(&self) -> &Path {
        self.base.path()
    }

    fn rope_layout(&self) -> RopeLayout {
        self.base.rope_layout()
    }

    fn contains(&self, name: &str) -> bool {
        self.base.contains(name)
    }

    fn take(&mut self, name: &str, device: &Device) -> Result<RawTensor> {
        let raw = self.base.take(name, device)?;
        if !self.adapter.pairs.contains_key(name) {
            return Ok(raw);
        }
        let weight = match raw {
            RawTensor::Dense(weight) => weight,
            quantized if self.dense => quantized.dequantize(device)?,
            _ => {
                return Err(EngineError::load(
                    self.base.path(),
                    format!(
                        "{name} stays quantized with this --dtype: a LoRA adapter merges into \
                         dense weights (load with --dtype f32, f16 or bf16)"
                    ),
                ))
            }
        };
        let merged = self.adapter.merge(name, &weight)?.unwrap_or(weight);
        self.merged.push(name.to_string());
        Ok(RawTensor::Dense(merged))
    }

    /// Stacked reads skip the merge, so a stack with an adapted part is taken part by part.
    fn take_stacked(
        &mut self,
        parts: &[(String, [usize; 2])],
        device: &Device,
    ) -> Result<Option<Tensor>> {
        if parts
            .iter()
            .any(|(name, _)| self.adapter.pairs.contains_key(name))
        {
            return Ok(None);
        }
        self.base.take_stacked(parts, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(config: Value) -> std::result::Result<Settings, String> {
        Settings::read(config.as_object().unwrap())
    }

    fn base() -> Value {
        json!({"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"],
               "lora_dropout": 0.05, "bias": "none", "task_type": "CAUSAL_LM",
               "use_dora": false, "modules_to_save": null, "rank_pattern": {}})
    }

    #[test]
    fn scaling_is_alpha_over_r_or_its_root() {
        assert_eq!(settings(base()).unwrap().scaling, 2.0);
        let mut c = base();
        c["use_rslora"] = json!(true);
        c["r"] = json!(4);
        assert_eq!(settings(c).unwrap().scaling, 8.0);
    }

    #[test]
    fn settings_that_change_the_arithmetic_are_refused_by_name() {
        for (key, value) in [
            ("use_dora", json!(true)),
            ("modules_to_save", json!(["lm_head"])),
            ("rank_pattern", json!({"q_proj": 4})),
            ("layers_to_transform", json!([0])),
            ("some_future_setting", json!(3)),
        ] {
            let mut c = base();
            c[key] = value;
            let err = settings(c).unwrap_err();
            assert!(err.contains(key), "{key}: {err}");
        }
        let mut c = base();
        c["bias"] = json!("all");
        assert!(settings(c).unwrap_err().contains("bias"));
        let mut c = base();
        c["peft_type"] = json!("IA3");
        assert!(settings(c).unwrap_err().contains("IA3"));
    }

    #[test]
    fn targets_match_as_peft_matches_them() {
        let names = settings(base()).unwrap().targets;
        assert!(names.matches("model.layers.0.self_attn.q_proj"));
        assert!(!names.matches("model.layers.0.self_attn.k_proj"));
        let mut c = base();
        c["target_modules"] = json!(r".*\.(q|v)_proj");
        let pattern = settings(c).unwrap().targets;
        assert!(pattern.matches("model.layers.3.self_attn.v_proj"));
        assert!(!pattern.matches("model.layers.3.self_attn.v_proj.x"));
        let mut c = base();
        c["target_modules"] = json!("all-linear");
        let all = settings(c).unwrap().targets;
        assert!(all.matches("model.layers.0.mlp.down_proj") && !all.matches("lm_head"));
    }

    #[test]
    fn peft_tensor_names_give_the_module() {
        let (m, h) =
            lora_name("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").unwrap();
        assert_eq!(m, "model.layers.0.self_attn.q_proj");
        assert!(matches!(h, Half::A));
        let (m, h) =
            lora_name("base_model.model.model.layers.1.mlp.up_proj.lora_B.default.weight").unwrap();
        assert_eq!(m, "model.layers.1.mlp.up_proj");
        assert!(matches!(h, Half::B));
        assert!(lora_name("base_model.model.model.embed_tokens.lora_embedding_A").is_none());
        assert!(lora_name("model.layers.0.self_attn.q_proj.weight").is_none());
    }

    #[test]
    fn a_merge_adds_the_scaled_product() {
        let dir = tempfile::tempdir().unwrap();
        let a = Tensor::new(&[[1f32, 0.0, 2.0]], &Device::Cpu).unwrap(); // [r=1, in=3]
        let b = Tensor::new(&[[1f32], [3.0]], &Device::Cpu).unwrap(); // [out=2, r=1]
        let adapter = LoraAdapter {
            dir: dir.path().to_path_buf(),
            scaling: 0.5,
            pairs: HashMap::from([("w.weight".to_string(), (a, b))]),
        };
        let w = Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap();
        let merged = adapter.merge("w.weight", &w).unwrap().unwrap();
        assert_eq!(
            merged.to_vec2::<f32>().unwrap(),
            vec![vec![0.5, 0.0, 1.0], vec![1.5, 0.0, 3.0]]
        );
        assert!(adapter.merge("other.weight", &w).unwrap().is_none());
        let wrong = Tensor::zeros((3, 3), DType::F32, &Device::Cpu).unwrap();
        assert!(adapter.merge("w.weight", &wrong).is_err());
    }
}
