//! Reading safetensors files tensor by tensor with plain positioned reads.
//!
//! The format is an 8-byte little-endian header length, a JSON header (`name -> {dtype,
//! shape, data_offsets}`) and the tensors' bytes. Each tensor is read straight into the
//! vector that becomes its storage: no mapping of the file (a 7B load through a mapping
//! took 5.6 million page faults, 31 s of system time, and held the file's pages beside the
//! copy until they were released), no second copy. Sizes and offsets come from the file,
//! so each is checked against the shape and the file's length before anything is read.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use half::{bf16, f16};

use crate::error::{EngineError, Result};

/// The largest header read (the 13B's index-sized headers are under 100 KB).
const MAX_HEADER_BYTES: u64 = 100 << 20;

/// One tensor's place in the file.
#[derive(Debug, Clone)]
struct Entry {
    dtype: DType,
    shape: Vec<usize>,
    /// Absolute byte offset in the file.
    start: u64,
}

/// An open safetensors file whose header has been read.
pub struct SafetensorsFile {
    path: PathBuf,
    file: File,
    entries: HashMap<String, Entry>,
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<Self> {
        let bad =
            |m: String| EngineError::load(path, format!("not a readable safetensors file: {m}"));
        let mut file = File::open(path).map_err(|e| EngineError::load(path, e))?;
        let file_len = file
            .metadata()
            .map_err(|e| EngineError::load(path, e))?
            .len();
        let mut len = [0u8; 8];
        file.read_exact(&mut len)
            .map_err(|e| bad(format!("header length: {e}")))?;
        let header_len = u64::from_le_bytes(len);
        if header_len > MAX_HEADER_BYTES || 8 + header_len > file_len {
            return Err(bad(format!(
                "header of {header_len} bytes in a file of {file_len}"
            )));
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header)
            .map_err(|e| bad(format!("header: {e}")))?;
        let header: HashMap<String, serde_json::Value> =
            serde_json::from_slice(&header).map_err(|e| bad(format!("header: {e}")))?;
        let data_start = 8 + header_len;
        let mut entries = HashMap::new();
        for (name, info) in header {
            if name == "__metadata__" {
                continue;
            }
            let entry = parse_entry(&info, data_start, file_len)
                .map_err(|m| bad(format!("tensor {name}: {m}")))?;
            entries.insert(name, entry);
        }
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            file,
            entries,
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.entries.keys()
    }

    /// The dtype and shape of tensor `name`.
    pub fn describe(&self, name: &str) -> Result<(DType, &[usize])> {
        let entry = self.entry(name)?;
        Ok((entry.dtype, &entry.shape))
    }

    fn entry(&self, name: &str) -> Result<&Entry> {
        self.entries
            .get(name)
            .ok_or_else(|| EngineError::load(&self.path, format!("missing tensor {name}")))
    }

    /// Reads tensor `name` onto `device` (through host memory for accelerators: one
    /// tensor at a time is ever held there).
    pub fn read(&self, name: &str, device: &Device) -> Result<Tensor> {
        let entry = self.entry(name)?;
        let mut storage =
            HostTensor::zeros(entry.dtype, entry.shape.iter().product()).ok_or_else(|| {
                EngineError::load(
                    &self.path,
                    format!(
                        "tensor {name}: dtype {:?} is not a weight type umi loads",
                        entry.dtype
                    ),
                )
            })?;
        self.read_into(name, storage.bytes_mut())?;
        storage
            .into_tensor(&entry.shape, device)
            .map_err(|e| EngineError::load(&self.path, format!("tensor {name}: {e}")))
    }

    /// Reads tensor `name`'s bytes into `out`, which must be exactly their length.
    pub fn read_into(&self, name: &str, out: &mut [u8]) -> Result<()> {
        let entry = self.entry(name)?;
        let len = entry.shape.iter().product::<usize>() * entry.dtype.size_in_bytes();
        if out.len() != len {
            return Err(EngineError::load(
                &self.path,
                format!("tensor {name}: {len} bytes, read into {}", out.len()),
            ));
        }
        self.file
            .read_exact_at(out, entry.start)
            .map_err(|e| EngineError::load(&self.path, format!("tensor {name}: {e}")))?;
        self.drop_cached(entry.start, len);
        Ok(())
    }
}

/// Host storage for weights being read, in one of the dtypes umi loads.
pub enum HostTensor {
    Bf16(Vec<bf16>),
    F16(Vec<f16>),
    F32(Vec<f32>),
}

impl HostTensor {
    /// `count` zeros: fresh pages from the allocator (`calloc`, never written here; a
    /// `vec![bf16::ZERO; n]` would memset them), filled by the reads that follow.
    pub fn zeros(dtype: DType, count: usize) -> Option<Self> {
        let halves = || vec![0u16; count];
        Some(match dtype {
            DType::BF16 => HostTensor::Bf16(bytemuck::allocation::cast_vec(halves())),
            DType::F16 => HostTensor::F16(bytemuck::allocation::cast_vec(halves())),
            DType::F32 => HostTensor::F32(vec![0.0; count]),
            _ => return None,
        })
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            HostTensor::Bf16(v) => bytemuck::cast_slice_mut(v),
            HostTensor::F16(v) => bytemuck::cast_slice_mut(v),
            HostTensor::F32(v) => bytemuck::cast_slice_mut(v),
        }
    }

    pub fn into_tensor(self, shape: &[usize], device: &Device) -> candle_core::Result<Tensor> {
        match self {
            HostTensor::Bf16(v) => Tensor::from_vec(v, shape, device),
            HostTensor::F16(v) => Tensor::from_vec(v, shape, device),
            HostTensor::F32(v) => Tensor::from_vec(v, shape, device),
        }
    }
}

impl SafetensorsFile {
    /// Tells the kernel the file's bytes just read will not be read again, so the page
    /// cache does not hold a second copy of the weights against the process (at 7B on a
    /// 24 GiB machine that pressure cost more system time than the reads).
    fn drop_cached(&self, start: u64, len: usize) {
        use std::os::fd::AsRawFd;
        // SAFETY: posix_fadvise only advises the kernel about a range of an open file.
        unsafe {
            libc::posix_fadvise(
                self.file.as_raw_fd(),
                start as libc::off_t,
                len as libc::off_t,
                libc::POSIX_FADV_DONTNEED,
            );
        }
    }
}

/// One header entry, checked: a known dtype, offsets inside the file's data, and a byte
/// length that is the shape's.
fn parse_entry(
    info: &serde_json::Value,
    data_start: u64,
    file_len: u64,
) -> std::result::Result<Entry, String> {
    let dtype = match info.get("dtype").and_then(|d| d.as_str()) {
        Some("BF16") => DType::BF16,
        Some("F16") => DType::F16,
        Some("F32") => DType::F32,
        Some("F64") => DType::F64,
        Some("I64") => DType::I64,
        Some("U32") => DType::U32,
        Some("U8") => DType::U8,
        Some(other) => return Err(format!("unknown dtype {other:?}")),
        None => return Err("no dtype".into()),
    };
    let numbers = |key: &str| -> std::result::Result<Vec<u64>, String> {
        info.get(key)
            .and_then(|v| v.as_array())
            .ok_or_else(|| format!("no {key}"))?
            .iter()
            .map(|n| n.as_u64().ok_or_else(|| format!("{key} holds {n}")))
            .collect()
    };
    let shape: Vec<usize> = numbers("shape")?.into_iter().map(|d| d as usize).collect();
    let offsets = numbers("data_offsets")?;
    let [begin, end] = offsets[..] else {
        return Err(format!("data_offsets {offsets:?}"));
    };
    let bytes = shape
        .iter()
        .try_fold(dtype.size_in_bytes(), |n, &d| n.checked_mul(d))
        .ok_or("the shape overflows")?;
    if end < begin || (end - begin) as usize != bytes || data_start + end > file_len {
        return Err(format!(
            "data_offsets [{begin}, {end}] do not hold a {shape:?} {dtype:?} tensor inside the file"
        ));
    }
    Ok(Entry {
        dtype,
        shape,
        start: data_start + begin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a safetensors file with the given header entries and data.
    fn write(dir: &Path, header: serde_json::Value, data: &[u8]) -> PathBuf {
        let path = dir.join("t.safetensors");
        let text = header.to_string();
        let mut bytes = (text.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(text.as_bytes());
        bytes.extend_from_slice(data);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn tensors_are_read_with_their_dtype_and_shape() {
        let dir = tempfile::tempdir().unwrap();
        let a: Vec<u8> = [1.5f32, -2.0, 3.25, 0.0, 7.0, 8.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let b: Vec<u8> = [bf16::from_f32(0.5), bf16::from_f32(-4.0)]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let header = serde_json::json!({
            "__metadata__": {"format": "pt"},
            "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
            "b": {"dtype": "BF16", "shape": [2], "data_offsets": [24, 28]},
        });
        let path = write(dir.path(), header, &[a, b].concat());
        let file = SafetensorsFile::open(&path).unwrap();
        let a = file.read("a", &Device::Cpu).unwrap();
        assert_eq!(
            a.to_vec2::<f32>().unwrap(),
            [[1.5, -2.0, 3.25], [0.0, 7.0, 8.0]]
        );
        let b = file.read("b", &Device::Cpu).unwrap();
        assert_eq!(b.dtype(), DType::BF16);
        assert_eq!(
            b.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap(),
            [0.5, -4.0]
        );
        let err = file.read("c", &Device::Cpu).err().unwrap().to_string();
        assert!(err.contains("missing tensor c"), "{err}");
    }

    #[test]
    fn offsets_and_shapes_that_disagree_are_refused_naming_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        for (entry, why) in [
            (
                serde_json::json!({"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}),
                "do not hold",
            ),
            (
                serde_json::json!({"dtype": "F32", "shape": [1], "data_offsets": [0, 4000]}),
                "do not hold",
            ),
            (
                serde_json::json!({"dtype": "F32", "shape": [usize::MAX, 4], "data_offsets": [0, 4]}),
                "overflows",
            ),
            (
                serde_json::json!({"dtype": "Q9", "shape": [1], "data_offsets": [0, 4]}),
                "unknown dtype",
            ),
        ] {
            let path = write(dir.path(), serde_json::json!({ "w": entry }), &[0u8; 24]);
            let err = SafetensorsFile::open(&path).err().unwrap().to_string();
            assert!(err.contains("tensor w") && err.contains(why), "{err}");
            assert!(err.starts_with(&path.display().to_string()), "{err}");
        }
        // A header length past the file's end.
        let path = dir.path().join("short.safetensors");
        std::fs::write(&path, 1000u64.to_le_bytes()).unwrap();
        let err = SafetensorsFile::open(&path).err().unwrap().to_string();
        assert!(err.contains("header of 1000 bytes"), "{err}");
    }
}
