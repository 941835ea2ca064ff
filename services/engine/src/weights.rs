//! Reading checkpoint tensors, from GGUF files or HuggingFace directories, under
//! HuggingFace tensor names.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::pickle::PthTensors;
use candle_core::quantized::{gguf_file, QTensor};
use candle_core::safetensors::{Load, MmapedSafetensors};
use candle_core::{Device, Tensor};

use crate::error::{EngineError, Result};

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
/// takes them, one shard open at a time. Safetensors shards are memory-mapped and each
/// tensor's pages are handed back to the kernel once copied out: the process holds the
/// weights once, not the file's pages beside them (reading whole shards held both: 1.97x
/// the weights at peak, see BENCHMARKS.md "Loading a checkpoint"). PyTorch `.bin` shards
/// (zip archives of pickles) are indexed by their pickle alone and each tensor is read
/// from the archive when taken, so no shard is ever held whole.
pub struct HfSource {
    dir: PathBuf,
    /// The file each tensor is stored in.
    origin: HashMap<String, PathBuf>,
    /// The shard open now.
    open: Option<(PathBuf, Shard)>,
}

/// One open shard of a HuggingFace checkpoint.
enum Shard {
    Safetensors(MmapedSafetensors),
    Pickle(PthTensors),
}

impl Shard {
    fn open(file: &Path) -> Result<Self> {
        if file.extension().is_some_and(|e| e == "safetensors") {
            return map_safetensors(file).map(Shard::Safetensors);
        }
        PthTensors::new(file, None)
            .map(Shard::Pickle)
            .map_err(|e| EngineError::load(file, format!("not a readable PyTorch checkpoint: {e}")))
    }

    fn names(&self) -> Vec<String> {
        match self {
            Shard::Safetensors(mapped) => mapped.tensors().into_iter().map(|(n, _)| n).collect(),
            Shard::Pickle(pth) => pth.tensor_infos().keys().cloned().collect(),
        }
    }

    /// Reads one tensor onto `device`.
    fn read(&self, name: &str, device: &Device) -> candle_core::Result<Tensor> {
        match self {
            Shard::Safetensors(mapped) => {
                let view = mapped.get(name)?;
                let tensor = view.load(device)?;
                release(view.data());
                Ok(tensor)
            }
            Shard::Pickle(pth) => match pth.get(name)? {
                Some(tensor) => tensor.to_device(device),
                None => candle_core::bail!("not in the archive's index"),
            },
        }
    }
}

/// Maps a safetensors file and reads its header.
fn map_safetensors(file: &Path) -> Result<MmapedSafetensors> {
    // SAFETY: a read-only mapping of a checkpoint file, used only while the model loads;
    // as for any reader, a file changed under it would give wrong weights (never unsound
    // reads of freed memory: the mapping lives as long as `MmapedSafetensors`). Measured
    // reason for mapping instead of reading: peak memory of a bf16 load fell from 1.97x
    // to about 1x the weights (BENCHMARKS.md "Loading a checkpoint").
    unsafe { MmapedSafetensors::new(file) }
        .map_err(|e| EngineError::load(file, format!("not a readable safetensors file: {e}")))
}

/// Tells the kernel that the mapped pages of `data` are no longer needed: they leave this
/// process's resident memory (a later read would fault them back in from the file).
fn release(data: &[u8]) {
    #[cfg(unix)]
    {
        // SAFETY: sysconf only reads a system constant.
        let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            size if size > 0 => size as usize,
            _ => return,
        };
        let start = data.as_ptr() as usize;
        let first = start & !(page - 1);
        let end = (start + data.len()) & !(page - 1);
        if end > first {
            // SAFETY: [first, end) lies within the live read-only file mapping that holds
            // `data` (page-aligned down from its start, which the mapping's page-aligned
            // base precedes; the end rounded down stays inside it). MADV_DONTNEED on a
            // clean file-backed mapping only drops page-table entries: the bytes read back
            // are the file's, unchanged, so no Rust reference sees different memory.
            unsafe {
                libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_DONTNEED);
            }
        }
    }
    #[cfg(not(unix))]
    let _ = data;
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
        let in_file =
            |e: candle_core::Error| EngineError::load(&file, format!("tensor {name}: {e}"));
        if !matches!(&self.open, Some((f, _)) if *f == file) {
            // One shard open at a time: the previous one is closed (unmapped) first.
            self.open = None;
            self.open = Some((file.clone(), Shard::open(&file)?));
        }
        let Some((_, shard)) = &self.open else {
            return Err(EngineError::load(&file, "the shard is not open"));
        };
        shard
            .read(name, device)
            .map(RawTensor::Dense)
            .map_err(in_file)
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
