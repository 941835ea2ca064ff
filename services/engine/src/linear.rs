//! Linear layers, with a matrix-vector fast path for CPU decode.
//!
//! On a CPU with AVX2 but no AVX-512, f32 and bf16 weights are packed at load into the
//! layout of `gemm_avx2`'s kernel, which then runs every product, decode rows and
//! prefill rows alike: each output is one FMA chain along k, so a row's bits depend
//! neither on the rows beside it nor on how a prompt is cut into chunks, and a mixed
//! step's decode rows ride in the same pass over the weights as its prompt chunk
//! (`forward_rows`). The rest of this comment is about the weights kept as stored.
//!
//! Decoding multiplies one activation row per sequence by every weight matrix. candle's
//! general matmul packs the weights for each call, and its quantized path first quantizes
//! the activations to 8 bits (which flips SmolLM2's greedy picks). For decode rows on the
//! CPU this module instead streams each weight row once, in its stored format (f32, Q8_0
//! or Q4_1 blocks; the quantized formats' kernels are `quant_dot`'s), against f32
//! activations, split across cores; a batch of sequences shares that one pass over the
//! weights, which is what decode time is made of where it is memory-bound (f32 and
//! 16-bit weights; see BENCHMARKS.md). For prefill rows a quantized matrix is dequantized
//! and multiplied in f32. Activations are never quantized on the CPU, so quantized
//! weights answer as their dequantized f32 twins do, and a sequence decoded in a batch
//! gets bit for bit the logits it gets alone.

use candle_core::quantized::{GgmlDType, QMatMul};
use candle_core::{DType, Device, Module, Storage, Tensor};
use half::{bf16, f16};
use rayon::prelude::*;

use crate::error::Result;
use crate::quant_dot;

/// Fewest output rows worth a parallel task: below this, waking a worker costs more than
/// the rows take.
const MIN_ROWS_PER_TASK: usize = 128;

pub struct Linear {
    weight: Stored,
}

/// How the weight matrix is kept.
enum Stored {
    /// As loaded, for candle's products and the kernels that read formats in place.
    Candle(QMatMul),
    /// f32 or bf16 weights packed for the AVX2 kernel, which runs all of this layer's
    /// products.
    #[cfg(target_arch = "x86_64")]
    Packed(crate::gemm_avx2::Packed),
}

impl Linear {
    pub fn new(weight: QMatMul) -> Self {
        let linear = Linear {
            weight: Stored::Candle(weight),
        };
        #[cfg(target_arch = "x86_64")]
        if let Some(packed) = linear.packed() {
            return Linear {
                weight: Stored::Packed(packed),
            };
        }
        linear
    }

    /// The weights packed for `gemm_avx2`'s kernel, where that kernel runs this CPU's
    /// products: AVX2 and FMA without AVX-512 (whose machines keep `gemm.rs` and the
    /// decode kernels below), and f32 or bf16 weights in CPU memory.
    #[cfg(target_arch = "x86_64")]
    fn packed(&self) -> Option<crate::gemm_avx2::Packed> {
        if crate::gemm::kernel() != crate::gemm::Kernel::None || !crate::gemm_avx2::available() {
            return None;
        }
        let packed = self.with_cpu_weights(|w, rows, cols| match w {
            Weights::F32(data) => crate::gemm_avx2::Packed::f32(data, rows, cols),
            Weights::Bf16(data) => crate::gemm_avx2::Packed::bf16(data, rows, cols),
            _ => None,
        });
        packed.ok().flatten().flatten()
    }

    /// The weight matrix's parameters and its bytes as stored.
    pub fn size(&self) -> (usize, usize) {
        match &self.weight {
            Stored::Candle(QMatMul::QTensor(q)) => {
                (q.shape().elem_count(), q.storage_size_in_bytes())
            }
            Stored::Candle(QMatMul::Tensor(w) | QMatMul::TensorF16(w)) => {
                (w.elem_count(), w.elem_count() * w.dtype().size_in_bytes())
            }
            #[cfg(target_arch = "x86_64")]
            Stored::Packed(packed) => {
                let (n, k) = packed.dims();
                (n * k, packed.bytes())
            }
        }
    }

    /// Each of `xs` (batch, seq, in) times the weights, (batch, seq, out) each. Packed
    /// weights multiply all their rows in one product (a mixed step's prompt chunk and
    /// decode rows together), with each row's bits what it gets alone; otherwise each
    /// input is its own `forward`.
    pub fn forward_rows(&self, xs: &[&Tensor]) -> Result<Vec<Tensor>> {
        match &self.weight {
            #[cfg(target_arch = "x86_64")]
            Stored::Packed(packed) => packed_product(packed, xs),
            Stored::Candle(_) => xs.iter().map(|x| self.forward(x)).collect(),
        }
    }

    /// `x` is (batch, seq, in); returns (batch, seq, out). With `seq == 1` each row is
    /// one sequence's next token (decode), else the rows are one prompt (prefill).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let weight = match &self.weight {
            Stored::Candle(weight) => weight,
            #[cfg(target_arch = "x86_64")]
            Stored::Packed(packed) => {
                let mut ys = packed_product(packed, &[x])?;
                return Ok(ys.remove(0));
            }
        };
        let decode_rows = x.rank() >= 2 && x.dim(candle_core::D::Minus2)? == 1;
        if x.device().is_cpu() {
            let fast = if decode_rows {
                self.cpu_rows(x)?
            } else {
                self.cpu_prefill(x)?
            };
            if let Some(y) = fast {
                return Ok(y);
            }
        }
        if let QMatMul::QTensor(q) = weight {
            if x.device().is_cpu() && x.dtype() == DType::F32 {
                // Rows no CPU kernel above took (no AVX2, or a format or shape they do
                // not read): dequantize this one matrix and use the f32 gemm, rather than
                // quantizing the activations as candle's quantized matmul does.
                let dense = QMatMul::Tensor(q.dequantize(x.device())?);
                return Ok(dense.forward(x)?);
            }
        }
        Ok(weight.forward(x)?)
    }

    /// The weight matrix as rows in CPU memory, `f(rows, rows count, columns)`, when it
    /// is in one of the formats the CPU kernels read; None otherwise.
    fn with_cpu_weights<R>(
        &self,
        f: impl FnOnce(Weights<'_>, usize, usize) -> R,
    ) -> Result<Option<R>> {
        let weight = match &self.weight {
            Stored::Candle(weight) => weight,
            #[cfg(target_arch = "x86_64")]
            Stored::Packed(_) => return Ok(None),
        };
        match weight {
            QMatMul::Tensor(w) => {
                let (rows, cols) = w.dims2()?;
                let (storage, layout) = w.storage_and_layout();
                let Storage::Cpu(cpu) = &*storage else {
                    return Ok(None);
                };
                if !layout.is_contiguous() {
                    return Ok(None);
                }
                let span = layout.start_offset()..layout.start_offset() + rows * cols;
                let view = match w.dtype() {
                    DType::F32 => Weights::F32(&cpu.as_slice::<f32>()?[span]),
                    DType::F16 => Weights::F16(&cpu.as_slice::<f16>()?[span]),
                    DType::BF16 => Weights::Bf16(&cpu.as_slice::<bf16>()?[span]),
                    _ => return Ok(None),
                };
                Ok(Some(f(view, rows, cols)))
            }
            QMatMul::QTensor(q) if matches!(q.dtype(), GgmlDType::Q8_0 | GgmlDType::Q4_1) => {
                let (rows, cols) = q.shape().dims2()?;
                if cols % 32 != 0 || !matches!(q.device(), Device::Cpu) {
                    return Ok(None);
                }
                let data = q.data()?;
                let view = match q.dtype() {
                    GgmlDType::Q8_0 => Weights::Q8_0(&data),
                    _ => Weights::Q4_1(&data),
                };
                Ok(Some(f(view, rows, cols)))
            }
            _ => Ok(None),
        }
    }

    /// Prefill rows on an x86-64 CPU: one blocked product over the weights as stored
    /// (`gemm` with AVX-512, else `gemm_avx2`, which widens a task's columns at a time).
    #[cfg(target_arch = "x86_64")]
    fn cpu_prefill(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let matmul = if crate::gemm::kernel() != crate::gemm::Kernel::None {
            crate::gemm::matmul
        } else if crate::gemm_avx2::available() {
            crate::gemm_avx2::matmul
        } else {
            return Ok(None);
        };
        let cols = x.dim(candle_core::D::Minus1)?;
        let xs: Vec<f32> = x.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        if cols == 0 || !xs.len().is_multiple_of(cols) {
            return Ok(None);
        }
        let m = xs.len() / cols;
        let product = self.with_cpu_weights(|w, rows, w_cols| {
            (w_cols == cols)
                .then(|| matmul(&xs, m, cols, w, rows).map(|y| (y, rows)))
                .flatten()
        })?;
        let Some(Some((y, rows))) = product else {
            return Ok(None);
        };
        Ok(Some(shaped_like(x, rows, y)?))
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn cpu_prefill(&self, _x: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// Every row of `x` times the weights, one pass over the weights for all rows.
    fn cpu_rows(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let cols = x.dim(candle_core::D::Minus1)?;
        let xs: Vec<f32> = x.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        if cols == 0 || xs.is_empty() {
            return Ok(None);
        }
        let inputs: Vec<&[f32]> = xs.chunks_exact(cols).collect();
        let n = inputs.len();
        // Weight row by weight row, each input in turn: the row is read from memory once
        // and stays in cache for the others (the quantized kernels widen each block once
        // for several inputs).
        let each = |out: &mut [f32], dot: &dyn Fn(&[f32]) -> f32| {
            for (o, x) in out.iter_mut().zip(&inputs) {
                *o = dot(x);
            }
        };
        let by_row = self.with_cpu_weights(|w, rows, w_cols| {
            let row_bytes = w.row_bytes(cols).filter(|_| w_cols == cols)?;
            let row = |r: usize| r * cols..(r + 1) * cols;
            Some(match w {
                Weights::F32(data) => {
                    gemv(rows, n, |r, out| each(out, &|x| dot_f32(x, &data[row(r)])))
                }
                Weights::F16(data) => gemv(rows, n, |r, out| {
                    each(out, &|x| dot_half(x, &data[row(r)], f16::to_f32))
                }),
                Weights::Bf16(data) => gemv(rows, n, |r, out| {
                    each(out, &|x| dot_half(x, &data[row(r)], bf16::to_f32))
                }),
                Weights::Q8_0(data) => gemv(rows, n, |r, out| {
                    quant_dot::q8_0(&inputs, &data[r * row_bytes..][..row_bytes], out)
                }),
                Weights::Q4_1(data) => {
                    let sums = quant_dot::block_sums(&inputs);
                    gemv(rows, n, |r, out| {
                        quant_dot::q4_1(&inputs, &sums, &data[r * row_bytes..][..row_bytes], out)
                    })
                }
            })
        })?;
        let Some(Some(by_row)) = by_row else {
            return Ok(None);
        };
        // `by_row` holds weight row r's results for every input at r * n..(r + 1) * n.
        let rows = by_row.len() / n;
        let out = if n == 1 {
            by_row
        } else {
            let mut out = vec![0f32; n * rows];
            for (r, results) in by_row.chunks_exact(n).enumerate() {
                for (j, &y) in results.iter().enumerate() {
                    out[j * rows + r] = y;
                }
            }
            out
        };
        Ok(Some(shaped_like(x, rows, out)?))
    }
}

/// `values` (f32, on the CPU) as a tensor shaped as `x` but with `last` outputs per row,
/// in `x`'s dtype.
fn shaped_like(x: &Tensor, last: usize, values: Vec<f32>) -> Result<Tensor> {
    let mut dims = x.dims().to_vec();
    if let Some(d) = dims.last_mut() {
        *d = last;
    }
    Ok(Tensor::from_vec(values, dims, &Device::Cpu)?.to_dtype(x.dtype())?)
}

/// Every row of `xs` times packed weights in one product, split back per input. Rows
/// of another width than the matrix's, or none, are refused by name.
#[cfg(target_arch = "x86_64")]
fn packed_product(packed: &crate::gemm_avx2::Packed, xs: &[&Tensor]) -> Result<Vec<Tensor>> {
    if xs.is_empty() {
        return Ok(Vec::new());
    }
    let (n, k) = packed.dims();
    let refused = |what: String| crate::error::EngineError::invalid("input", what);
    let mut rows = Vec::new();
    for x in xs {
        let cols = x.dims().last().copied().unwrap_or(0);
        if cols != k || x.elem_count() == 0 {
            return Err(refused(format!(
                "{} rows of {cols} values for a matrix of {k} inputs",
                x.elem_count().checked_div(cols).unwrap_or(0)
            )));
        }
        rows.extend(x.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?);
    }
    let y = packed
        .matmul(&rows, rows.len() / k)
        .ok_or_else(|| refused(format!("{} values for rows of {k}", rows.len())))?;
    if let [x] = xs {
        return Ok(vec![shaped_like(x, n, y)?]);
    }
    let mut first = 0;
    xs.iter()
        .map(|x| {
            let count = x.elem_count() / k;
            let part = y[first * n..(first + count) * n].to_vec();
            first += count;
            shaped_like(x, n, part)
        })
        .collect()
}

/// A weight matrix as stored: n rows of k, row-major.
#[derive(Clone, Copy)]
pub enum Weights<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    Bf16(&'a [bf16]),
    /// GGML Q8_0 blocks (34 bytes per 32 weights).
    Q8_0(&'a [u8]),
    /// GGML Q4_1 blocks (20 bytes per 32 weights).
    Q4_1(&'a [u8]),
}

impl Weights<'_> {
    /// Bytes one row of k takes, or None when k does not fit the format.
    pub(crate) fn row_bytes(&self, k: usize) -> Option<usize> {
        match self {
            Weights::F32(_) => Some(4 * k),
            Weights::F16(_) | Weights::Bf16(_) => Some(2 * k),
            Weights::Q8_0(_) => k
                .is_multiple_of(32)
                .then_some(k / 32 * quant_dot::Q8_0_BLOCK),
            Weights::Q4_1(_) => k
                .is_multiple_of(32)
                .then_some(k / 32 * quant_dot::Q4_1_BLOCK),
        }
    }

    pub(crate) fn len_bytes(&self) -> usize {
        match self {
            Weights::F32(w) => 4 * w.len(),
            Weights::F16(w) => 2 * w.len(),
            Weights::Bf16(w) => 2 * w.len(),
            Weights::Q8_0(w) | Weights::Q4_1(w) => w.len(),
        }
    }
}

/// One task per core: a decode step runs ~200 of these, so scheduling overhead, not
/// balance, is what matters. `row_dots(r, out)` writes weight row r's product with each of
/// the `n` inputs into `out`.
fn gemv(rows: usize, n: usize, row_dots: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let mut out = vec![0f32; rows * n];
    let per_task = rows
        .div_ceil(rayon::current_num_threads())
        .max(MIN_ROWS_PER_TASK);
    out.par_chunks_mut(per_task * n)
        .enumerate()
        .for_each(|(task, chunk)| {
            let first = task * per_task;
            for (i, o) in chunk.chunks_exact_mut(n).enumerate() {
                row_dots(first + i, o);
            }
        });
    out
}

/// Sixteen independent partial sums let the compiler keep two vector registers busy
/// (float addition is not reassociated on its own).
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let split = a.len() / 16 * 16;
    for (x, y) in a[..split].chunks_exact(16).zip(b[..split].chunks_exact(16)) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = a[split..].iter().zip(&b[split..]).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// 16-bit weights, widened to f32 as they stream by.
fn dot_half<T: Copy>(a: &[f32], b: &[T], widen: fn(T) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let split = a.len() / 16 * 16;
    for (x, y) in a[..split].chunks_exact(16).zip(b[..split].chunks_exact(16)) {
        for i in 0..16 {
            acc[i] += x[i] * widen(y[i]);
        }
    }
    let tail: f32 = a[split..]
        .iter()
        .zip(&b[split..])
        .map(|(x, &y)| x * widen(y))
        .sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;

    /// The fast path must agree with dequantize-then-matmul in f32. `dense` is the dtype
    /// of unquantized weights and of the activations.
    fn check(quant: Option<GgmlDType>, dense: DType) {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (96, 64), &dev).unwrap();
        let x = Tensor::randn(0f32, 1.0, (1, 1, 64), &dev)
            .unwrap()
            .to_dtype(dense)
            .unwrap();
        let (weight, reference) = match quant {
            Some(q) => {
                let q = QTensor::quantize(&w, q).unwrap();
                let deq = q.dequantize(&dev).unwrap();
                (QMatMul::QTensor(std::sync::Arc::new(q)), deq)
            }
            None => {
                let wd = w.to_dtype(dense).unwrap();
                (
                    QMatMul::Tensor(wd.clone()),
                    wd.to_dtype(DType::F32).unwrap(),
                )
            }
        };
        let x32 = x.to_dtype(DType::F32).unwrap();
        let want: Vec<f32> = x32
            .broadcast_matmul(&reference.t().unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let got = Linear::new(weight).forward(&x).unwrap();
        assert_eq!(got.dims(), &[1, 1, 96]);
        assert_eq!(got.dtype(), dense);
        let got: Vec<f32> = got
            .flatten_all()
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1()
            .unwrap();
        let tol = if dense == DType::F32 { 1e-3 } else { 2e-2 };
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() < tol * (1.0 + w.abs()),
                "{quant:?}/{dense:?}: {g} vs {w}"
            );
        }
    }

    #[test]
    fn f32_gemv_matches_matmul() {
        check(None, DType::F32);
    }

    #[test]
    fn half_precision_gemv_matches_matmul() {
        check(None, DType::F16);
        check(None, DType::BF16);
    }

    #[test]
    fn q8_0_gemv_matches_dequantized_matmul() {
        check(Some(GgmlDType::Q8_0), DType::F32);
    }

    #[test]
    fn q4_1_gemv_matches_dequantized_matmul() {
        check(Some(GgmlDType::Q4_1), DType::F32);
    }

    /// A sequence decoded in a batch must get exactly the logits it gets alone, so a batch
    /// of rows must give bit for bit what each row gives alone.
    #[test]
    fn a_batch_of_rows_matches_each_row_alone_bit_for_bit() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (300, 64), &dev).unwrap();
        let weights = [
            ("f32", QMatMul::Tensor(w.clone())),
            ("bf16", QMatMul::Tensor(w.to_dtype(DType::BF16).unwrap())),
            ("q8_0", quantized(&w, GgmlDType::Q8_0)),
            ("q4_1", quantized(&w, GgmlDType::Q4_1)),
        ];
        let x = Tensor::randn(0f32, 1.0, (11, 1, 64), &dev).unwrap();
        for (name, weight) in weights {
            let linear = Linear::new(weight);
            let batched = linear.forward(&x).unwrap();
            assert_eq!(batched.dims(), &[11, 1, 300], "{name}");
            for r in 0..11 {
                let alone = linear.forward(&x.narrow(0, r, 1).unwrap()).unwrap();
                let want: Vec<u32> = bits(&alone);
                let got: Vec<u32> = bits(&batched.narrow(0, r, 1).unwrap());
                assert_eq!(got, want, "{name}, row {r}");
            }
        }
    }

    /// A mixed step's products: a prompt chunk's rows and decode rows through
    /// `forward_rows` get bit for bit what each input gets from `forward` alone, whether
    /// the layer multiplies them together (packed weights) or one by one.
    #[test]
    fn a_prompt_chunk_and_decode_rows_together_match_each_alone_bit_for_bit() {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (300, 64), &dev).unwrap();
        let chunk = Tensor::randn(0f32, 1.0, (1, 13, 64), &dev).unwrap();
        let decode = Tensor::randn(0f32, 1.0, (3, 1, 64), &dev).unwrap();
        let bf16 = QMatMul::Tensor(w.to_dtype(DType::BF16).unwrap());
        for (name, weight, act) in [
            ("f32", QMatMul::Tensor(w.clone()), DType::F32),
            ("q4_1", quantized(&w, GgmlDType::Q4_1), DType::F32),
            ("bf16", bf16, DType::BF16),
        ] {
            let linear = Linear::new(weight);
            let (chunk, decode) = (chunk.to_dtype(act).unwrap(), decode.to_dtype(act).unwrap());
            let together = linear.forward_rows(&[&chunk, &decode]).unwrap();
            assert_eq!(together[0].dims(), &[1, 13, 300], "{name}");
            assert_eq!(together[1].dims(), &[3, 1, 300], "{name}");
            for (got, x) in together.iter().zip([&chunk, &decode]) {
                assert_eq!(bits(got), bits(&linear.forward(x).unwrap()), "{name}");
            }
            for r in 0..3 {
                let alone = linear.forward(&decode.narrow(0, r, 1).unwrap()).unwrap();
                let got = together[1].narrow(0, r, 1).unwrap();
                assert_eq!(bits(&got), bits(&alone), "{name}, decode row {r}");
            }
        }
    }

    /// Where the AVX2 kernel runs the products, f32 and bf16 weights are packed at load;
    /// their size is still the matrix's.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn f32_and_bf16_weights_are_packed_where_the_avx2_kernel_runs() {
        let w = Tensor::randn(0f32, 1.0, (40, 64), &Device::Cpu).unwrap();
        let packs =
            crate::gemm::kernel() == crate::gemm::Kernel::None && crate::gemm_avx2::available();
        let half = Linear::new(QMatMul::Tensor(w.to_dtype(DType::BF16).unwrap()));
        assert_eq!(matches!(half.weight, Stored::Packed(_)), packs);
        assert_eq!(half.size(), (40 * 64, 40 * 64 * 2));
        let linear = Linear::new(QMatMul::Tensor(w));
        assert_eq!(matches!(linear.weight, Stored::Packed(_)), packs);
        assert_eq!(linear.size(), (40 * 64, 40 * 64 * 4));
        if packs {
            // Rows of the wrong width are refused by name, not multiplied.
            let x = Tensor::randn(0f32, 1.0, (1, 4, 32), &Device::Cpu).unwrap();
            let err = linear.forward(&x).unwrap_err().to_string();
            assert!(
                err.contains("4 rows of 32 values for a matrix of 64 inputs"),
                "{err}"
            );
        }
    }

    fn quantized(w: &Tensor, dtype: GgmlDType) -> QMatMul {
        QMatMul::QTensor(std::sync::Arc::new(QTensor::quantize(w, dtype).unwrap()))
    }

    /// The values' bits, widened to f32 (exactly) from a 16-bit dtype.
    fn bits(t: &Tensor) -> Vec<u32> {
        let v: Vec<f32> = t
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        v.iter().map(|f| f.to_bits()).collect()
    }
}
