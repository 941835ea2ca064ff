//! Reading checkpoint tensors, from GGUF files or HuggingFace directories, under
//! HuggingFace tensor names.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::pickle::PthTensors;
use candle_core::quantized::{gguf_file, QTensor};
use candle_core::{Device, Tensor};

use crate::error::{EngineError, Result};
use crate::safetensors::{HostTensor, SafetensorsFile};

/// One stored tensor: still quantized (GGUF) or dense.
pub enum RawTensor {
    Quantized(QTensor),
    Dense(Tensor),
}

impl RawTensor {
    pub fn dims(&self) -> Vec<usize> {
        match self {
            RawTensor::Quantized(q) => q.shape().dims().to_vec(),
            RawTensor::Dense(t) => t.dims().to_vec(),
        }
    }

    pub fn dequantize_ref(&self, device: &Device) -> candle_core::Result<Tensor> {
        match self {
            RawTensor::Quantized(q) => q.dequantize(device),
            RawTensor::Dense(t) => Ok(t.clone()),
        }
    }

    pub fn dequantize(self, device: &Device) -> candle_core::Result<Tensor> {
        match self {
            RawTensor::Quantized(q) => q.dequantize(device),
            RawTensor::Dense(t) => Ok(t),
        }
    }
}

/// Rope layout of the Q/K projection rows. llama.cpp's converter permutes the rows so
/// that rotary pairs are adjacent (interleaved); HuggingFace keeps the two halves apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    Interleaved,
    Halves,
}

/// A source of tensors addressed by HuggingFace names (`model.layers.0.self_attn.q_proj.weight`).
pub trait TensorSource {
    fn path(&self) -> &Path;
    fn rope_layout(&self) -> RopeLayout;
    fn contains(&self, name: &str) -> bool;
    fn take(&mut self, name: &str, device: &Device) -> Result<RawTensor>;

    /// Takes matrices of the given shapes (equal columns) as one, their rows one after
    /// another, read straight into one buffer; None where this source cannot (the caller
    /// then stacks what `take` gives, which copies every part once more).
    fn take_stacked(
        &mut self,
        _parts: &[(String, [usize; 2])],
        _device: &Device,
    ) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

/// HuggingFace ↔ GGUF names of the tensors outside the layers (llama.cpp conventions).
const MODEL_TENSORS: [(&str, &str); 3] = [
    ("model.embed_tokens.weight", "token_embd.weight"),
    ("model.norm.weight", "output_norm.weight"),
    ("lm_head.weight", "output.weight"),
];

/// HuggingFace ↔ GGUF names of each layer's tensors, after `model.layers.N.` / `blk.N.`.
const LAYER_TENSORS: [(&str, &str); 9] = [
    ("self_attn.q_proj.weight", "attn_q.weight"),
    ("self_attn.k_proj.weight", "attn_k.weight"),
    ("self_attn.v_proj.weight", "attn_v.weight"),
    ("self_attn.o_proj.weight", "attn_output.weight"),
    ("mlp.gate_proj.weight", "ffn_gate.weight"),
    ("mlp.up_proj.weight", "ffn_up.weight"),
    ("mlp.down_proj.weight", "ffn_down.weight"),
    ("input_layernorm.weight", "attn_norm.weight"),
    ("post_attention_layernorm.weight", "ffn_norm.weight"),
];

/// Renames a tensor with the tables above, from one side (`from` picks the pair's
/// element, `from_layer`/`to_layer` the layer prefixes) to the other.
fn rename(
    name: &str,
    from: fn(&(&'static str, &'static str)) -> &'static str,
    to: fn(&(&'static str, &'static str)) -> &'static str,
    from_layer: &str,
    to_layer: &str,
) -> Option<String> {
    if let Some(pair) = MODEL_TENSORS.iter().find(|p| from(p) == name) {
        return Some(to(pair).to_string());
    }
    let (layer, suffix) = name.strip_prefix(from_layer)?.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let pair = LAYER_TENSORS.iter().find(|p| from(p) == suffix)?;
    Some(format!("{to_layer}{layer}.{}", to(pair)))
}

/// Maps a HuggingFace tensor name to its GGUF name.
pub fn hf_to_gguf_name(name: &str) -> Option<String> {
    rename(name, |p| p.0, |p| p.1, "model.layers.", "blk.")
}

/// Maps a GGUF tensor name back to its HuggingFace name.
pub fn gguf_to_hf_name(name: &str) -> Option<String> {
    rename(name, |p| p.1, |p| p.0, "blk.", "model.layers.")
}

/// Opens a GGUF file and reads its header; tensors are read on demand.
pub struct GgufSource {
    path: PathBuf,
    reader: BufReader<File>,
    pub content: gguf_file::Content,
}

impl GgufSource {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| EngineError::load(path, e))?;
        let mut reader = BufReader::new(file);
        let content = gguf_file::Content::read(&mut reader)
            .map_err(|e| EngineError::load(path, format!("not a readable GGUF file: {e}")))?;
        Ok(GgufSource {
            path: path.to_path_buf(),
            reader,
            content,
        })
    }
}

impl TensorSource for GgufSource {
    fn path(&self) -> &Path {
        &self.path
    }

    fn rope_layout(&self) -> RopeLayout {
        RopeLayout::Interleaved
    }

    fn contains(&self, name: &str) -> bool {
        hf_to_gguf_name(name).is_some_and(|g| self.content.tensor_infos.contains_key(&g))
    }

    fn take(&mut self, name: &str, device: &Device) -> Result<RawTensor> {
        let gguf_name = hf_to_gguf_name(name).ok_or_else(|| {
            EngineError::load(&self.path, format!("no GGUF name for tensor {name}"))
        })?;
        if !self.content.tensor_infos.contains_key(&gguf_name) {
            return Err(EngineError::load(
                &self.path,
                format!("missing tensor {gguf_name}"),
            ));
        }
        self.content
            .tensor(&mut self.reader, &gguf_name, device)
            .map(RawTensor::Quantized)
            .map_err(|e| {
                EngineError::load(
                    &self.path,
                    format!("tensor {gguf_name} is truncated or corrupt: {e}"),
                )
            })
    }
}

/// The tensors of a HuggingFace checkpoint directory, read tensor by tensor as the model
/// takes them, one shard open at a time: safetensors shards by positioned reads straight
/// into each tensor's storage (`safetensors.rs`), PyTorch `.bin` shards (zip archives of
/// pickles) indexed by their pickle alone and each tensor read from the archive when
/// taken. No shard is ever held whole (reading whole shards held the file beside the
/// weights: 1.97x the weights at peak, see BENCHMARKS.md "Loading a checkpoint").
pub struct HfSource {
    dir: PathBuf,
    /// The file each tensor is stored in.
    origin: HashMap<String, PathBuf>,
    /// The shard open now.
    open: Option<(PathBuf, Shard)>,
}

/// One open shard of a HuggingFace checkpoint.
enum Shard {
    Safetensors(SafetensorsFile),
    Pickle(PthTensors),
}

impl Shard {
    fn open(file: &Path) -> Result<Self> {
        if file.extension().is_some_and(|e| e == "safetensors") {
            return SafetensorsFile::open(file).map(Shard::Safetensors);
        }
        PthTensors::new(file, None)
            .map(Shard::Pickle)
            .map_err(|e| EngineError::load(file, format!("not a readable PyTorch checkpoint: {e}")))
    }

    fn names(&self) -> Vec<String> {
        match self {
            Shard::Safetensors(file) => file.names().cloned().collect(),
            Shard::Pickle(pth) => pth.tensor_infos().keys().cloned().collect(),
        }
    }

    /// Reads one tensor onto `device`.
    fn read(&self, file: &Path, name: &str, device: &Device) -> Result<Tensor> {
        match self {
            Shard::Safetensors(shard) => shard.read(name, device),
            Shard::Pickle(pth) => {
                let in_file =
                    |e: candle_core::Error| EngineError::load(file, format!("tensor {name}: {e}"));
                match pth.get(name).map_err(in_file)? {
                    Some(tensor) => tensor.to_device(device).map_err(in_file),
                    None => Err(in_file(candle_core::Error::Msg(
                        "not in the archive's index".into(),
                    ))),
                }
            }
        }
    }
}

impl HfSource {
    /// Opens `*.safetensors` (single or sharded through `model.safetensors.index.json`) or
    /// PyTorch `pytorch_model*.bin` shards: only headers and pickles are read now.
    pub fn open(dir: &Path) -> Result<Self> {
        let mut origin = HashMap::new();
        for file in checkpoint_files(dir)? {
            for name in Shard::open(&file)?.names() {
                origin.insert(name, file.clone());
            }
        }
        Ok(HfSource {
            dir: dir.to_path_buf(),
            origin,
            open: None,
        })
    }
}

impl TensorSource for HfSource {
    fn path(&self) -> &Path {
        &self.dir
    }

    fn rope_layout(&self) -> RopeLayout {
        RopeLayout::Halves
    }

    fn contains(&self, name: &str) -> bool {
        self.origin.contains_key(name)
    }

    fn take(&mut self, name: &str, device: &Device) -> Result<RawTensor> {
        let file = self
            .origin
            .remove(name)
            .ok_or_else(|| EngineError::load(&self.dir, format!("missing tensor {name}")))?;
        self.open_shard(&file)?
            .read(&file, name, device)
            .map(RawTensor::Dense)
    }

    fn take_stacked(
        &mut self,
        parts: &[(String, [usize; 2])],
        device: &Device,
    ) -> Result<Option<Tensor>> {
        // Every part in a safetensors shard, all of one dtype and of the expected shape.
        let mut dtype = None;
        for (name, shape) in parts {
            let file = self.origin_of(name)?;
            let Shard::Safetensors(shard) = self.open_shard(&file)? else {
                return Ok(None);
            };
            let (dt, dims) = shard.describe(name)?;
            if dims != shape {
                return Err(EngineError::load(
                    &file,
                    format!("tensor {name} has shape {dims:?}, config expects {shape:?}"),
                ));
            }
            if dtype.is_some_and(|d| d != dt) {
                return Ok(None);
            }
            dtype = Some(dt);
        }
        let (Some(dtype), Some((_, [_, cols]))) = (dtype, parts.first()) else {
            return Ok(None);
        };
        let rows: usize = parts.iter().map(|(_, [r, _])| r).sum();
        let Some(mut storage) = HostTensor::zeros(dtype, rows * cols) else {
            return Ok(None);
        };
        let bytes = storage.bytes_mut();
        let mut at = 0;
        for (name, [r, c]) in parts {
            let file = self.origin_of(name)?;
            let len = r * c * dtype.size_in_bytes();
            if let Shard::Safetensors(shard) = self.open_shard(&file)? {
                shard.read_into(name, &mut bytes[at..at + len])?;
            }
            self.origin.remove(name);
            at += len;
        }
        storage
            .into_tensor(&[rows, *cols], device)
            .map(Some)
            .map_err(|e| EngineError::load(&self.dir, format!("{}: {e}", parts[0].0)))
    }
}

impl HfSource {
    fn origin_of(&self, name: &str) -> Result<PathBuf> {
        self.origin
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::load(&self.dir, format!("missing tensor {name}")))
    }

    /// The shard `file`, opened if it is not the open one (one open at a time: the
    /// previous one is closed first).
    fn open_shard(&mut self, file: &Path) -> Result<&Shard> {
        if !matches!(&self.open, Some((f, _)) if f == file) {
            self.open = None;
            self.open = Some((file.to_path_buf(), Shard::open(file)?));
        }
        match &self.open {
            Some((_, shard)) => Ok(shard),
            None => Err(EngineError::load(file, "the shard is not open")),
        }
    }
}

/// The weight files of a HuggingFace directory, in load order.
fn checkpoint_files(dir: &Path) -> Result<Vec<PathBuf>> {
    for index in [
        "model.safetensors.index.json",
        "pytorch_model.bin.index.json",
    ] {
        let index_path = dir.join(index);
        if index_path.exists() {
            return shard_files(&index_path);
        }
    }
    for single in ["model.safetensors", "pytorch_model.bin"] {
        let path = dir.join(single);
        if path.exists() {
            return Ok(vec![path]);
        }
    }
    let entries = std::fs::read_dir(dir).map_err(|e| EngineError::load(dir, e))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    found.sort();
    if found.is_empty() {
        return Err(EngineError::load(
            dir,
            "no weights found (expected model.safetensors, *.safetensors shards with an index, or pytorch_model*.bin)",
        ));
    }
    Ok(found)
}

fn shard_files(index_path: &Path) -> Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string(index_path).map_err(|e| EngineError::load(index_path, e))?;
    let index: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| EngineError::load(index_path, format!("invalid JSON: {e}")))?;
    let map = index
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| EngineError::load(index_path, "no \"weight_map\" object"))?;
    let dir = index_path.parent().unwrap_or(Path::new("."));
    let mut files: Vec<PathBuf> = Vec::new();
    for shard in map.values() {
        let shard = shard
            .as_str()
            .ok_or_else(|| EngineError::load(index_path, "weight_map values must be file names"))?;
        let path = dir.join(shard);
        if !files.contains(&path) {
            if !path.exists() {
                return Err(EngineError::load(
                    &path,
                    "shard listed in the index is missing",
                ));
            }
            files.push(path);
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways() {
        for hf in [
            "model.embed_tokens.weight",
            "model.norm.weight",
            "lm_head.weight",
            "model.layers.12.self_attn.k_proj.weight",
            "model.layers.0.mlp.down_proj.weight",
            "model.layers.29.post_attention_layernorm.weight",
        ] {
            let gguf = hf_to_gguf_name(hf).unwrap();
            assert_eq!(gguf_to_hf_name(&gguf).as_deref(), Some(hf));
        }
        assert_eq!(
            hf_to_gguf_name("model.layers.3.self_attn.o_proj.weight").as_deref(),
            Some("blk.3.attn_output.weight")
        );
        assert_eq!(hf_to_gguf_name("model.layers.x.mlp.up_proj.weight"), None);
    }

    #[test]
    fn empty_directory_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let err = match HfSource::open(dir.path()) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("empty dir loaded"),
        };
        assert!(err.contains("no weights found"), "{err}");
    }

    #[test]
    fn missing_gguf_names_the_file() {
        let err = match GgufSource::open(Path::new("/nonexistent/model.gguf")) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("opened a missing file"),
        };
        assert!(err.starts_with("/nonexistent/model.gguf: "), "{err}");
    }
}
