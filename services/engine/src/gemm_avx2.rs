//! Matrix products on x86-64 CPUs with AVX2 and FMA but no AVX-512 (`gemm.rs` serves
//! those): `a · bᵀ` for f32 activations `a` (m rows of k) and a weight matrix `b` (n
//! rows of k, one per output). Every product of f32 or bf16 weights packed at load
//! (`Packed`, decode and prompt rows alike), and the prompt rows of weights in other
//! formats, as stored (`matmul`).
//!
//! An outer-product kernel over packed weight panels, as BLAS libraries do: sixteen
//! weight rows at a time are widened to f32 and laid out k-major (`[k][16]`), so one
//! step along k loads two vectors of weights, broadcasts one activation of each of six
//! rows, and runs twelve FMAs into accumulators that never leave the registers. There is
//! no horizontal sum per output (the cost that made a dot-product tile slower than
//! candle's gemm on AVX2, BENCHMARKS.md), and a quantized matrix is never dequantized
//! whole: each task widens its own columns as it packs them.
//!
//! Every output element is one FMA chain along k, in order (`acc = fma(a[p], b[p],
//! acc)` for p = 0, 1, …, k-1): the tile, the rows beside it, m, n and the thread never
//! change a row's bits, and neither does how a prompt is cut into chunks.
//!
//! `unsafe`, and why it is worth it: the intrinsics require it (the kernel enables its
//! target features and runs only after detection), and loads go through raw pointers
//! into slices whose lengths are checked at entry. Measured against candle's AVX2 gemm
//! on SmolLM2's shapes: see BENCHMARKS.md.

use std::arch::x86_64::*;
use std::cell::RefCell;

use half::bf16;

use rayon::prelude::*;

use crate::linear::Weights;

/// Weight rows per panel (two 8-lane vectors) and activation rows per tile: 6 x 2
/// accumulators, two weight vectors and one broadcast fill 15 of the 16 registers.
const NR: usize = 16;
const MR: usize = 6;

/// Whether this CPU runs the kernel: AVX2 and FMA, detected once. `UMI_CANDLE_GEMM` set
/// turns it off (candle's gemm, and candle's attention, then run, for comparison).
pub fn available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        std::env::var_os("UMI_CANDLE_GEMM").is_none()
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
    })
}

/// A weight matrix (n rows of k) packed once, at load, into the kernel's layout:
/// panels of NR rows, each k-major (`[panel][k][NR]`, the rows past n zero), in f32 or
/// as bf16 (half the bytes for a decode step to read; the tile widens them as it loads,
/// exactly). Decode rows and prefill rows alike multiply it with [`Packed::matmul`], so
/// one kernel serves both and a row's bits never depend on the rows beside it.
pub struct Packed {
    n: usize,
    k: usize,
    panels: Panels,
}

enum Panels {
    F32(Vec<f32>),
    Bf16(Vec<bf16>),
}

impl Packed {
    /// Packs f32 `w` (n x k, row-major); `None` when the CPU lacks AVX2/FMA or the
    /// lengths do not fit.
    pub fn f32(w: &[f32], n: usize, k: usize) -> Option<Packed> {
        Some(Packed {
            n,
            k,
            panels: Panels::F32(pack(w, n, k)?),
        })
    }

    /// Packs bf16 `w` (n x k, row-major), as `f32` does.
    pub fn bf16(w: &[bf16], n: usize, k: usize) -> Option<Packed> {
        Some(Packed {
            n,
            k,
            panels: Panels::Bf16(pack(w, n, k)?),
        })
    }

    /// Output rows (n) and input columns (k).
    pub fn dims(&self) -> (usize, usize) {
        (self.n, self.k)
    }

    /// Bytes of the weights as packed (the rows past n not counted).
    pub fn bytes(&self) -> usize {
        let size = match self.panels {
            Panels::F32(_) => 4,
            Panels::Bf16(_) => 2,
        };
        self.n * self.k * size
    }

    /// `a` (m x k) times the matrix: m x n, row-major. `None` when `a` is not m x k.
    pub fn matmul(&self, a: &[f32], m: usize) -> Option<Vec<f32>> {
        if m == 0 || a.len() != m * self.k {
            return None;
        }
        Some(match &self.panels {
            Panels::F32(panels) => self.product(panels, a, m),
            Panels::Bf16(panels) => self.product(panels, a, m),
        })
    }

    /// `a` (m x k) times these panels (this matrix's, in their element type).
    fn product<T: Panel>(&self, panels: &[T], a: &[f32], m: usize) -> Vec<f32> {
        let k = self.k;
        product(a, m, k, self.n, |first, count, f| {
            f(&panels[first * k * NR..(first + count) * k * NR])
        })
    }
}

/// `w` (n x k, row-major) as k-major panels of NR rows.
fn pack<T: Panel>(w: &[T], n: usize, k: usize) -> Option<Vec<T>> {
    if !available() || n == 0 || k == 0 || w.len() != n * k {
        return None;
    }
    let mut panels = vec![T::default(); n.div_ceil(NR) * k * NR];
    panels
        .par_chunks_mut(k * NR)
        .zip(w.par_chunks(k * NR))
        .for_each(|(panel, rows)| transpose_into(rows, k, panel));
    Some(panels)
}

/// A packed panel's element: sixteen of them load as two f32 vectors.
trait Panel: Copy + Default + Send + Sync {
    /// # Safety
    /// AVX2 present; `p` points at 16 readable elements.
    unsafe fn load16(p: *const Self) -> (__m256, __m256);
}

impl Panel for f32 {
    #[inline(always)]
    unsafe fn load16(p: *const f32) -> (__m256, __m256) {
        (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
    }
}

impl Panel for bf16 {
    #[inline(always)]
    unsafe fn load16(p: *const bf16) -> (__m256, __m256) {
        load_bf16x16(p)
    }
}

/// Sixteen bf16 values widened to f32, lanes 0-7 and 8-15: bf16 is the top half of an
/// f32, so each is zero-extended and shifted into place (exact). Also `cpu_attention`'s
/// AVX2 load of 16-bit keys and values.
///
/// # Safety
/// AVX2 present; `p` points at 16 readable elements.
#[inline(always)]
pub(crate) unsafe fn load_bf16x16(p: *const bf16) -> (__m256, __m256) {
    let widen =
        |raw: __m128i| _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(raw)));
    (
        widen(_mm_loadu_si128(p.cast())),
        widen(_mm_loadu_si128(p.add(8).cast())),
    )
}

/// `a` (m x k, f32) times `b`ᵀ (`b` is n x k, as stored): returns m x n, row-major, each
/// task packing its own panels (a quantized matrix is widened one task's columns at a
/// time, never whole). `None` when the CPU lacks AVX2/FMA or the shapes do not fit the
/// weights (the caller falls back).
pub fn matmul(a: &[f32], m: usize, k: usize, b: Weights<'_>, n: usize) -> Option<Vec<f32>> {
    if !available() || m == 0 || n == 0 || k == 0 || a.len() != m * k {
        return None;
    }
    if b.len_bytes() != n * b.row_bytes(k)? {
        return None;
    }
    Some(product(a, m, k, n, |first, count, f| {
        SCRATCH.with(|scratch| {
            let (widened, packed) = &mut *scratch.borrow_mut();
            let rows = first * NR..n.min((first + count) * NR);
            // Both grown, never shrunk, and written whole before they are read (a panel
            // short of NR rows is zeroed first), so nothing is cleared for each product.
            let widened = grown(widened, rows.len() * k);
            crate::gemm::widen_rows(b, k, rows, widened);
            let packed = grown(packed, count * k * NR);
            for (panel, rows) in packed.chunks_exact_mut(k * NR).zip(widened.chunks(k * NR)) {
                if rows.len() < k * NR {
                    panel.fill(0.0);
                }
                transpose_f32_into(rows, k, panel);
            }
            f(packed)
        })
    }))
}

/// The product's loops, outermost first: tasks of whole panels (a few per thread);
/// slices of k (`KC`); the task's panels (a slice of one, 16 KiB, stays in L1); the
/// packed row blocks of `a` (whose slice, m x KC, stays in L2). With one block of rows
/// (decode) nothing is reused across panels, and k is one slice: each panel, and the
/// task's panels one after another, are then read in one stream. `panels(first, count,
/// f)` calls `f` with panels first..first+count packed (count x k x NR). Each task keeps
/// its running sums in its own columns of the output, which it alone writes (no zeroing
/// beforehand, no copy afterwards).
fn product<T: Panel>(
    a: &[f32],
    m: usize,
    k: usize,
    n: usize,
    panels: impl Fn(usize, usize, &mut dyn FnMut(&[T])) + Sync,
) -> Vec<f32> {
    let rows = pack_rows(a, m, k);
    let blocks = m.div_ceil(MR);
    let slice = if blocks == 1 { k } else { KC };
    let total = n.div_ceil(NR);
    let per_task = total
        .div_ceil(2 * rayon::current_num_threads().max(1))
        .max(1);
    let mut out = Vec::<f32>::with_capacity(m * n);
    let at = Columns(out.as_mut_ptr());
    (0..total.div_ceil(per_task))
        .into_par_iter()
        .for_each(|task| {
            let first = task * per_task;
            let count = per_task.min(total - first);
            // A panel narrower than NR (n not a multiple of it) keeps its sums here and
            // copies its columns out at the end.
            let last_is_narrow = !n.is_multiple_of(NR) && first + count == total;
            let mut narrow = vec![0f32; if last_is_narrow { blocks * MR * NR } else { 0 }];
            panels(first, count, &mut |packed| {
                let mut from = 0;
                while from < k {
                    let len = slice.min(k - from);
                    for p in 0..count {
                        let b = &packed[(p * k + from) * NR..];
                        let col = (first + p) * NR;
                        for blk in 0..blocks {
                            let a = &rows[(blk * k + from) * MR..];
                            let r = (m - blk * MR).min(MR);
                            // SAFETY: detected by every caller; `a` holds len x MR, `b`
                            // len x NR (checked again inside). The tile's rows and columns
                            // are this task's alone: in `out` (capacity m x n), rows
                            // blk*MR.. (r of them) and columns col..col+NR when the panel
                            // is whole, else `narrow`'s block.
                            unsafe {
                                let (c, ldc) = if col + NR <= n {
                                    (at.get().add(blk * MR * n + col), n)
                                } else {
                                    (narrow.as_mut_ptr().add(blk * MR * NR), NR)
                                };
                                let sums = Sums {
                                    c,
                                    ldc,
                                    carried: from > 0,
                                };
                                match r {
                                    1 => tile::<1, T>(a, b, len, sums),
                                    2 => tile::<2, T>(a, b, len, sums),
                                    3 => tile::<3, T>(a, b, len, sums),
                                    4 => tile::<4, T>(a, b, len, sums),
                                    5 => tile::<5, T>(a, b, len, sums),
                                    _ => tile::<MR, T>(a, b, len, sums),
                                }
                            }
                        }
                    }
                    from += len;
                }
            });
            if !narrow.is_empty() {
                let col = (total - 1) * NR;
                for i in 0..m {
                    let src = &narrow[i * NR..][..n - col];
                    // SAFETY: row i's columns col..n are this task's alone, inside m x n.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            src.as_ptr(),
                            at.get().add(i * n + col),
                            n - col,
                        )
                    };
                }
            }
        });
    // SAFETY: the tasks wrote every one of the m x n elements (each column's panel
    // belongs to exactly one task, which writes all m rows of it).
    unsafe { out.set_len(m * n) };
    out
}

/// The output's base pointer, shared by the tasks, each of which writes only its own
/// columns.
#[derive(Clone, Copy)]
struct Columns(*mut f32);
// SAFETY: tasks write disjoint columns (see `product`), and the vector outlives them.
unsafe impl Send for Columns {}
unsafe impl Sync for Columns {}

impl Columns {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Where a tile keeps its running sums: row i of the tile at `c + i * ldc` (sixteen
/// floats), and whether they hold earlier slices' sums to continue (else they start at 0
/// and what is there is not read).
struct Sums {
    c: *mut f32,
    ldc: usize,
    carried: bool,
}

/// Elements of k per slice: a slice of a packed panel is KC x NR floats (16 KiB).
const KC: usize = 256;

thread_local! {
    /// This thread's widened weight rows and their packed panels, reused across
    /// products (fresh allocations would be fresh mappings and page faults).
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// The first `len` values of `buffer`, which grows to hold them if it must (the new
/// values zero) and never shrinks.
fn grown(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

/// `a` (m x k) in blocks of MR rows, each laid out k-major (`[block][k][MR]`; the rows
/// past m are zero), so a tile reads one stream.
fn pack_rows(a: &[f32], m: usize, k: usize) -> Vec<f32> {
    let mut packed = vec![0f32; m.div_ceil(MR) * k * MR];
    for (i, row) in a.chunks_exact(k).enumerate() {
        let (blk, r) = (i / MR, i % MR);
        let block = &mut packed[blk * k * MR..(blk + 1) * k * MR];
        for (p, &x) in row.iter().enumerate() {
            block[p * MR + r] = x;
        }
    }
    packed
}

/// Up to NR rows of k (row-major) into one k-major panel (`[k][NR]`, zero-filled past the
/// last row).
fn transpose_into<T: Copy>(rows: &[T], k: usize, panel: &mut [T]) {
    for (j, row) in rows.chunks_exact(k).enumerate() {
        for (p, &w) in row.iter().enumerate() {
            panel[p * NR + j] = w;
        }
    }
}

/// As `transpose_into`, for f32 rows (a prompt's widened quantized weights, at every
/// product): eight rows by eight columns at a time through registers, the rest one by
/// one. Values move unchanged.
fn transpose_f32_into(rows: &[f32], k: usize, panel: &mut [f32]) {
    let n = rows.len() / k.max(1);
    assert!(n <= NR && panel.len() >= k * NR);
    let (whole_rows, whole_cols) = (n / 8 * 8, k / 8 * 8);
    // SAFETY: AVX2 was detected (every caller checks `available`); the blocks read and
    // written lie inside `rows` (n x k) and `panel` (k x NR), asserted above.
    unsafe { transpose_8x8_blocks(rows, k, whole_rows, whole_cols, panel) };
    for (j, row) in rows.chunks_exact(k).enumerate() {
        let done = if j < whole_rows { whole_cols } else { 0 };
        for (p, &w) in row.iter().enumerate().skip(done) {
            panel[p * NR + j] = w;
        }
    }
}

/// Rows 0..`row_end` x columns 0..`col_end` of `rows` (x k) into `panel`, both ends
/// multiples of 8.
///
/// # Safety
/// AVX2 present; `rows` holds `row_end` rows of k, `panel` k x NR values, `row_end` <= NR,
/// `col_end` <= k.
#[target_feature(enable = "avx2")]
unsafe fn transpose_8x8_blocks(
    rows: &[f32],
    k: usize,
    row_end: usize,
    col_end: usize,
    panel: &mut [f32],
) {
    let (src, dst) = (rows.as_ptr(), panel.as_mut_ptr());
    for j in (0..row_end).step_by(8) {
        for p in (0..col_end).step_by(8) {
            let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add((j + i) * k + p)));
            // Pairs of rows interleaved, then fours: s[c] holds column c of rows 0..4 in
            // its low half and column c + 4 in its high half, s[4 + c] the same of rows
            // 4..8.
            let t: [__m256; 8] = std::array::from_fn(|i| {
                let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
                if i % 2 == 0 {
                    _mm256_unpacklo_ps(a, b)
                } else {
                    _mm256_unpackhi_ps(a, b)
                }
            });
            let s: [__m256; 8] = std::array::from_fn(|i| {
                let (a, b) = (t[i / 4 * 4 + i % 4 / 2], t[i / 4 * 4 + i % 4 / 2 + 2]);
                if i % 2 == 0 {
                    _mm256_shuffle_ps::<0x44>(a, b)
                } else {
                    _mm256_shuffle_ps::<0xee>(a, b)
                }
            });
            for c in 0..4 {
                let low = _mm256_permute2f128_ps::<0x20>(s[c], s[4 + c]);
                let high = _mm256_permute2f128_ps::<0x31>(s[c], s[4 + c]);
                _mm256_storeu_ps(dst.add((p + c) * NR + j), low);
                _mm256_storeu_ps(dst.add((p + c + 4) * NR + j), high);
            }
        }
    }
}

/// The first R rows of a packed row block times a packed panel over `len` steps of k:
/// each of the R x NR sums at `sums` is one FMA chain along k, continued from its value
/// (or from 0) and stored back.
///
/// # Safety
/// AVX2 and FMA must be present; `a.len() >= len * MR`, `b.len() >= len * NR` (asserted);
/// `sums` points at R rows of NR writable floats, `ldc` apart, readable if carried.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const R: usize, T: Panel>(a: &[f32], b: &[T], len: usize, sums: Sums) {
    assert!(R <= MR && a.len() >= len * MR && b.len() >= len * NR);
    let (a, b, Sums { c, ldc, carried }) = (a.as_ptr(), b.as_ptr(), sums);
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    if carried {
        for (i, sums) in acc.iter_mut().enumerate() {
            sums[0] = _mm256_loadu_ps(c.add(i * ldc));
            sums[1] = _mm256_loadu_ps(c.add(i * ldc + 8));
        }
    }
    for p in 0..len {
        let (b0, b1) = T::load16(b.add(p * NR));
        for (i, sums) in acc.iter_mut().enumerate() {
            let av = _mm256_broadcast_ss(&*a.add(p * MR + i));
            sums[0] = _mm256_fmadd_ps(av, b0, sums[0]);
            sums[1] = _mm256_fmadd_ps(av, b1, sums[1]);
        }
    }
    for (i, sums) in acc.iter().enumerate() {
        _mm256_storeu_ps(c.add(i * ldc), sums[0]);
        _mm256_storeu_ps(c.add(i * ldc + 8), sums[1]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::tests::{check_every_weight_format, values};

    #[test]
    fn every_weight_format_matches_the_exact_product_at_odd_shapes() {
        if !available() {
            eprintln!("no AVX2/FMA on this CPU: nothing to test");
            return;
        }
        check_every_weight_format(matmul, 1e-5);
    }

    /// The register transpose moves every value where the one-by-one transpose does, at
    /// any count of rows up to a panel's and any k (whole 8 x 8 blocks and the rest).
    #[test]
    fn the_f32_transpose_matches_the_one_by_one_transpose() {
        if !available() {
            return;
        }
        for rows in 1..=NR {
            for k in [1, 7, 8, 9, 24, 37, 64] {
                let w = values(rows * k, (rows * 100 + k) as u64);
                let (mut want, mut got) = (vec![0f32; k * NR], vec![0f32; k * NR]);
                transpose_into(&w, k, &mut want);
                transpose_f32_into(&w, k, &mut got);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{rows} rows of {k}");
            }
        }
    }

    /// Each output is the FMA chain along k in order, whatever the tiling: exactly what
    /// a scalar `mul_add` loop gives, and a row's bits do not depend on the rows beside
    /// it or on how many there are.
    #[test]
    fn each_output_is_one_fma_chain_along_k_whatever_the_rows_beside_it() {
        if !available() {
            return;
        }
        let (m, n, k) = (23, 41, 600);
        let a = values(m * k, 5);
        let w = values(n * k, 6);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let all = matmul(&a, m, k, Weights::F32(&w), n).unwrap();
        let packed = Packed::f32(&w, n, k).unwrap();
        assert_eq!(
            bits(&all),
            bits(&packed.matmul(&a, m).unwrap()),
            "packed at load"
        );
        let chain: Vec<f32> = (0..m * n)
            .map(|o| {
                let (i, j) = (o / n, o % n);
                (0..k).fold(0f32, |acc, p| a[i * k + p].mul_add(w[j * k + p], acc))
            })
            .collect();
        assert_eq!(bits(&all), bits(&chain));
        for i in 0..m {
            let row = &a[i * k..(i + 1) * k];
            let alone = matmul(row, 1, k, Weights::F32(&w), n).unwrap();
            assert_eq!(bits(&all[i * n..(i + 1) * n]), bits(&alone), "row {i}");
            let alone = packed.matmul(row, 1).unwrap();
            assert_eq!(
                bits(&all[i * n..(i + 1) * n]),
                bits(&alone),
                "packed row {i}"
            );
        }
    }

    /// bf16 panels, widened as the tile loads them, give the bits of the f32 panels of
    /// the same (widened) weights, and of a prompt's product widening them as it packs.
    #[test]
    fn bf16_panels_give_the_bits_of_their_weights_widened() {
        if !available() {
            return;
        }
        let (m, n, k) = (13, 37, 600);
        let a = values(m * k, 10);
        let w: Vec<bf16> = values(n * k, 11).into_iter().map(bf16::from_f32).collect();
        let wide: Vec<f32> = w.iter().map(|x| x.to_f32()).collect();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let want = Packed::f32(&wide, n, k).unwrap().matmul(&a, m).unwrap();
        let packed = Packed::bf16(&w, n, k).unwrap();
        assert_eq!(packed.bytes(), n * k * 2);
        assert_eq!(bits(&packed.matmul(&a, m).unwrap()), bits(&want));
        assert_eq!(
            bits(&matmul(&a, m, k, Weights::Bf16(&w), n).unwrap()),
            bits(&want)
        );
        let alone = packed.matmul(&a[..k], 1).unwrap();
        assert_eq!(bits(&alone), bits(&want[..n]), "one row");
    }

    #[test]
    fn shapes_that_do_not_fit_the_weights_fall_back() {
        if !available() {
            return;
        }
        let w = values(6 * 10, 7);
        assert!(matmul(&values(20, 8), 2, 10, Weights::F32(&w), 5).is_none());
        assert!(matmul(&values(20, 8), 2, 10, Weights::Q8_0(&[0; 34]), 1).is_none());
        assert!(Packed::f32(&w, 5, 10).is_none());
        let packed = Packed::f32(&w, 6, 10).unwrap();
        assert!(packed.matmul(&values(21, 8), 2).is_none());
        assert!(packed.matmul(&[], 0).is_none());
    }

    /// `cargo test --release -p umi-engine --lib gemm_avx2::tests::speed -- --ignored
    /// --nocapture`: SmolLM2's prefill products (256 rows) here and through candle.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn speed() {
        use candle_core::{Device, Tensor};
        let m = 256;
        for (k, n) in [(576, 576), (576, 192), (576, 1536), (1536, 576)] {
            let a = values(m * k, 8);
            let w = values(n * k, 9);
            let flops = 2.0 * (m * n * k) as f64;
            let time = |f: &dyn Fn()| {
                f();
                let t = std::time::Instant::now();
                for _ in 0..20 {
                    f();
                }
                t.elapsed().as_secs_f64() / 20.0
            };
            let ours = time(&|| {
                std::hint::black_box(matmul(&a, m, k, Weights::F32(&w), n));
            });
            let packed = Packed::f32(&w, n, k).unwrap();
            let at_load = time(&|| {
                std::hint::black_box(packed.matmul(&a, m));
            });
            let one = time(&|| {
                std::hint::black_box(packed.matmul(&a[..k], 1));
            });
            let at = Tensor::from_slice(&a, (m, k), &Device::Cpu).unwrap();
            let wt = Tensor::from_slice(&w, (n, k), &Device::Cpu).unwrap();
            let candle = time(&|| {
                std::hint::black_box(at.matmul(&wt.t().unwrap()).unwrap());
            });
            eprintln!(
                "{m}x{k} · {k}x{n}: umi {:.1} GFLOP/s (packed at load {:.1}), candle {:.1} \
                 GFLOP/s; one row: {:.1} GB/s of weights",
                flops / ours / 1e9,
                flops / at_load / 1e9,
                flops / candle / 1e9,
                (4 * n * k) as f64 / one / 1e9,
            );
        }
    }
}
