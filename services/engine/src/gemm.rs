//! Prefill matrix products on x86-64 CPUs with AVX-512: `a · bᵀ` for f32 activations
//! `a` (m rows of k) and a weight matrix `b` as stored (n rows of k, one per output).
//!
//! Why not candle's: its `gemm` crate stops at AVX2/FMA on stable Rust, and prefill
//! products are a large part of an α-UMi call's time (BENCHMARKS.md, "The kernels, on
//! and off"). Two kernels, chosen at run time by CPU feature detection:
//! - **AVX-512F, f32 products.** f32 weights are read in place; Q8_0, Q4_1 and f16 (and
//!   bf16 where the CPU lacks AVX512-BF16) are widened to f32 one block of rows at a time
//!   into a per-thread panel that serves every activation row, so a quantized matrix is
//!   never dequantized whole.
//! - **AVX512-BF16, bf16 weights.** `vdpbf16ps` multiplies 32 bf16 pairs per instruction,
//!   twice the f32 rate. The activations are rounded to bf16 once per product (as
//!   PyTorch's bf16 path keeps them); the products are summed in f32.
//!
//! Without AVX-512F, [`matmul`] returns `None` and the caller uses candle's.
//!
//! Every output element is one dot product summed in a fixed order (16 or 32 lanes along
//! k, then across the lanes), whatever m, n, the tiling or the thread: a row's result
//! never depends on the rows computed beside it.
//!
//! `unsafe`, and why it is worth it: the intrinsics require it (each kernel enables its
//! target features and is called only after detection), and loads go through raw
//! pointers into slices whose lengths are checked once at entry. Measured on SmolLM2's
//! shapes against candle's AVX2 gemm: see BENCHMARKS.md.

use std::arch::x86_64::*;
use std::cell::RefCell;

use half::{bf16, slice::HalfFloatSliceExt};

pub use crate::linear::Weights;
use crate::quant_dot;
use rayon::prelude::*;

/// Which kernel this CPU runs, detected once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// No AVX-512F: candle's gemm is used instead.
    None,
    Avx512,
    /// AVX-512F plus AVX512-BF16 (bf16 weights use `vdpbf16ps`).
    Avx512Bf16,
}

pub fn kernel() -> Kernel {
    static KERNEL: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
    *KERNEL.get_or_init(|| {
        if std::env::var_os("UMI_NO_AVX512").is_some() {
            Kernel::None
        } else if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512bf16")
        {
            Kernel::Avx512Bf16
        } else if is_x86_feature_detected!("avx512f") {
            Kernel::Avx512
        } else {
            Kernel::None
        }
    })
}

/// Rows of activations per tile and weight rows per tile: 4 x 6 accumulators plus the
/// six weight vectors and one activation vector fill 31 of the 32 vector registers.
const MR: usize = 4;
const NR: usize = 6;
/// A block of weight rows (one parallel task) is kept to about this many bytes, so it
/// stays in the core's L2 cache while every activation row passes over it.
const PANEL_BYTES: usize = 192 * 1024;

/// `a` (m x k, f32) times `b`ᵀ (`b` is n x k): returns m x n, row-major. `None` when the
/// CPU has no AVX-512F or the shapes do not fit the weights (the caller falls back).
pub fn matmul(a: &[f32], m: usize, k: usize, b: Weights<'_>, n: usize) -> Option<Vec<f32>> {
    let kernel = kernel();
    if kernel == Kernel::None || m == 0 || n == 0 || k == 0 || a.len() != m * k {
        return None;
    }
    if b.len_bytes() != n * b.row_bytes(k)? {
        return None;
    }
    let bf16_products = matches!((kernel, b), (Kernel::Avx512Bf16, Weights::Bf16(_)));
    let a_bf16 = bf16_products.then(|| to_bf16(a));
    let panel_row_bytes = if bf16_products { 2 * k } else { 4 * k };
    let threads = rayon::current_num_threads().max(1);
    let block = (PANEL_BYTES / panel_row_bytes)
        .min(n.div_ceil(2 * threads))
        .div_ceil(NR)
        .max(1)
        * NR;
    let blocks: Vec<Vec<f32>> = (0..n.div_ceil(block))
        .into_par_iter()
        .map(|blk| {
            let rows = blk * block..(n.min((blk + 1) * block));
            let mut out = vec![0f32; m * rows.len()];
            match (&a_bf16, b) {
                (Some(a16), Weights::Bf16(w)) => {
                    let panel = &w[rows.start * k..rows.end * k];
                    // SAFETY: detected above; lengths: a16 is m x k, panel rows x k.
                    unsafe {
                        block_bf16(a16, m, k, bytemuck::cast_slice(panel), rows.len(), &mut out)
                    }
                }
                (_, Weights::F32(w)) => {
                    let panel = &w[rows.start * k..rows.end * k];
                    // SAFETY: detected above; lengths: a is m x k, panel rows x k.
                    unsafe { block_f32(a, m, k, panel, rows.len(), &mut out) }
                }
                _ => PANEL.with(|scratch| {
                    let mut scratch = scratch.borrow_mut();
                    scratch.resize(rows.len() * k, 0.0);
                    widen_rows(b, k, rows.clone(), &mut scratch);
                    // SAFETY: as above; the scratch panel holds rows x k.
                    unsafe { block_f32(a, m, k, &scratch, rows.len(), &mut out) }
                }),
            }
            out
        })
        .collect();
    let mut out = vec![0f32; m * n];
    for (blk, part) in blocks.iter().enumerate() {
        let width = part.len() / m;
        let first = blk * block;
        for (row, src) in out.chunks_exact_mut(n).zip(part.chunks_exact(width)) {
            row[first..first + width].copy_from_slice(src);
        }
    }
    Some(out)
}

thread_local! {
    /// The widened weight panel of this thread's current block (reused: a fresh
    /// allocation of this size per block would be a fresh mapping, page faults and all).
    static PANEL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Rows `rows` of `b`, widened to f32 into `out` (rows.len() x k).
pub(crate) fn widen_rows(b: Weights<'_>, k: usize, rows: std::ops::Range<usize>, out: &mut [f32]) {
    let span = |row_len: usize| rows.start * row_len..rows.end * row_len;
    match b {
        Weights::F32(w) => out.copy_from_slice(&w[span(k)]),
        Weights::F16(w) => w[span(k)].convert_to_f32_slice(out),
        Weights::Bf16(w) => w[span(k)].convert_to_f32_slice(out),
        Weights::Q8_0(w) => {
            quant_dot::dequantize_q8_0(&w[span(k / 32 * quant_dot::Q8_0_BLOCK)], out)
        }
        Weights::Q4_1(w) => {
            quant_dot::dequantize_q4_1(&w[span(k / 32 * quant_dot::Q4_1_BLOCK)], out)
        }
    }
}

/// Activations rounded to bf16 (nearest, ties to even), as raw bits.
fn to_bf16(a: &[f32]) -> Vec<u16> {
    a.iter().map(|&x| bf16::from_f32(x).to_bits()).collect()
}

/// One block: `out` (m x n, row-major) = a (m x k) · panelᵀ (panel is n x k), f32.
///
/// # Safety
/// AVX-512F must be present; `a.len() >= m * k`, `panel.len() >= n * k`,
/// `out.len() >= m * n`.
#[target_feature(enable = "avx512f")]
unsafe fn block_f32(a: &[f32], m: usize, k: usize, panel: &[f32], n: usize, out: &mut [f32]) {
    debug_assert!(a.len() >= m * k && panel.len() >= n * k && out.len() >= m * n);
    let (a, b) = (a.as_ptr(), panel.as_ptr());
    let mut i = 0;
    while i < m {
        let mut j = 0;
        while j < n {
            let (ap, bp) = (a.add(i * k), b.add(j * k));
            match (m - i >= MR, n - j >= NR) {
                (true, true) => tile_f32::<MR, NR>(ap, bp, k, out, n, i, j),
                (true, false) => tile_f32::<MR, 1>(ap, bp, k, out, n, i, j),
                (false, true) => tile_f32::<1, NR>(ap, bp, k, out, n, i, j),
                (false, false) => tile_f32::<1, 1>(ap, bp, k, out, n, i, j),
            }
            j += if n - j >= NR { NR } else { 1 };
        }
        i += if m - i >= MR { MR } else { 1 };
    }
}

/// The R x C dot products of rows `a..a+R` with rows `b..b+C`, each summed over 16
/// lanes along k (the tail masked) and then across its lanes, into out[i0.., j0..].
///
/// # Safety
/// AVX-512F must be present (the caller enables it); `a` and `b` point at R and C
/// readable rows of `k` elements.
#[inline(always)]
unsafe fn tile_f32<const R: usize, const C: usize>(
    a: *const f32,
    b: *const f32,
    k: usize,
    out: &mut [f32],
    ld: usize,
    i0: usize,
    j0: usize,
) {
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    let full = k / 16 * 16;
    let mut p = 0;
    while p < full {
        let mut bv = [_mm512_setzero_ps(); C];
        for (j, v) in bv.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(b.add(j * k + p));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let av = _mm512_loadu_ps(a.add(i * k + p));
            for (sum, bj) in row.iter_mut().zip(&bv) {
                *sum = _mm512_fmadd_ps(av, *bj, *sum);
            }
        }
        p += 16;
    }
    if p < k {
        let mask: __mmask16 = ((1u32 << (k - p)) - 1) as u16;
        let mut bv = [_mm512_setzero_ps(); C];
        for (j, v) in bv.iter_mut().enumerate() {
            *v = _mm512_maskz_loadu_ps(mask, b.add(j * k + p));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let av = _mm512_maskz_loadu_ps(mask, a.add(i * k + p));
            for (sum, bj) in row.iter_mut().zip(&bv) {
                *sum = _mm512_fmadd_ps(av, *bj, *sum);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (j, sum) in row.iter().enumerate() {
            out[(i0 + i) * ld + j0 + j] = _mm512_reduce_add_ps(*sum);
        }
    }
}

/// One block with bf16 products: `out` (m x n) = a (m x k, bf16 bits) · panelᵀ (n x k).
///
/// # Safety
/// AVX-512F, AVX-512BW and AVX512-BF16 must be present; `a.len() >= m * k`,
/// `panel.len() >= n * k`, `out.len() >= m * n`.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn block_bf16(a: &[u16], m: usize, k: usize, panel: &[u16], n: usize, out: &mut [f32]) {
    debug_assert!(a.len() >= m * k && panel.len() >= n * k && out.len() >= m * n);
    let (a, b) = (a.as_ptr(), panel.as_ptr());
    let mut i = 0;
    while i < m {
        let mut j = 0;
        while j < n {
            let (ap, bp) = (a.add(i * k), b.add(j * k));
            match (m - i >= MR, n - j >= NR) {
                (true, true) => tile_bf16::<MR, NR>(ap, bp, k, out, n, i, j),
                (true, false) => tile_bf16::<MR, 1>(ap, bp, k, out, n, i, j),
                (false, true) => tile_bf16::<1, NR>(ap, bp, k, out, n, i, j),
                (false, false) => tile_bf16::<1, 1>(ap, bp, k, out, n, i, j),
            }
            j += if n - j >= NR { NR } else { 1 };
        }
        i += if m - i >= MR { MR } else { 1 };
    }
}

/// As [`tile_f32`], 32 bf16 pairs per step (`vdpbf16ps` adds each adjacent pair's
/// products into one f32 lane).
///
/// # Safety
/// AVX-512F, AVX-512BW and AVX512-BF16 must be present (the caller enables them); `a`
/// and `b` point at R and C readable rows of `k` bf16 bit patterns.
#[inline(always)]
unsafe fn tile_bf16<const R: usize, const C: usize>(
    a: *const u16,
    b: *const u16,
    k: usize,
    out: &mut [f32],
    ld: usize,
    i0: usize,
    j0: usize,
) {
    let load = |p: *const u16| -> __m512bh {
        std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(p.cast()))
    };
    let mut acc = [[_mm512_setzero_ps(); C]; R];
    let full = k / 32 * 32;
    let mut p = 0;
    while p < full {
        let mut bv: [__m512bh; C] =
            [std::mem::transmute::<__m512, __m512bh>(_mm512_setzero_ps()); C];
        for (j, v) in bv.iter_mut().enumerate() {
            *v = load(b.add(j * k + p));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let av = load(a.add(i * k + p));
            for (sum, bj) in row.iter_mut().zip(&bv) {
                *sum = _mm512_dpbf16_ps(*sum, av, *bj);
            }
        }
        p += 32;
    }
    if p < k {
        let mask: __mmask32 = ((1u64 << (k - p)) - 1) as u32;
        let masked = |p: *const u16| -> __m512bh {
            std::mem::transmute::<__m512i, __m512bh>(_mm512_maskz_loadu_epi16(mask, p.cast()))
        };
        let mut bv: [__m512bh; C] =
            [std::mem::transmute::<__m512, __m512bh>(_mm512_setzero_ps()); C];
        for (j, v) in bv.iter_mut().enumerate() {
            *v = masked(b.add(j * k + p));
        }
        for (i, row) in acc.iter_mut().enumerate() {
            let av = masked(a.add(i * k + p));
            for (sum, bj) in row.iter_mut().zip(&bv) {
                *sum = _mm512_dpbf16_ps(*sum, av, *bj);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (j, sum) in row.iter().enumerate() {
            out[(i0 + i) * ld + j0 + j] = _mm512_reduce_add_ps(*sum);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use half::f16;

    /// A seeded stream of values in [-1, 1).
    pub(crate) fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The exact product of `a` and the f32 widening of `b`, in f64.
    pub(crate) fn reference(a: &[f32], m: usize, k: usize, b: &[f32], n: usize) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k)
                    .map(|p| f64::from(a[i * k + p]) * f64::from(b[j * k + p]))
                    .sum();
            }
        }
        out
    }

    pub(crate) fn close(got: &[f32], want: &[f64], k: usize, tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (g, w) in got.iter().zip(want) {
            let bound = tol * (k as f64).sqrt().max(1.0);
            assert!((f64::from(*g) - w).abs() <= bound, "{what}: {g} vs {w}");
        }
    }

    pub(crate) fn quantize_q8_0(w: &[f32]) -> (Vec<u8>, Vec<f32>) {
        let (mut bytes, mut deq) = (Vec::new(), Vec::new());
        for block in w.chunks_exact(32) {
            let amax = block.iter().fold(0f32, |m, x| m.max(x.abs()));
            let d = f16::from_f32(amax / 127.0);
            bytes.extend_from_slice(&d.to_le_bytes());
            for x in block {
                let q = if d.to_f32() == 0.0 {
                    0
                } else {
                    (x / d.to_f32()).round() as i8
                };
                bytes.push(q as u8);
                deq.push(d.to_f32() * f32::from(q));
            }
        }
        (bytes, deq)
    }

    pub(crate) fn quantize_q4_1(w: &[f32]) -> (Vec<u8>, Vec<f32>) {
        let (mut bytes, mut deq) = (Vec::new(), vec![0f32; w.len()]);
        for (b, block) in w.chunks_exact(32).enumerate() {
            let lo = block.iter().fold(f32::MAX, |m, &x| m.min(x));
            let hi = block.iter().fold(f32::MIN, |m, &x| m.max(x));
            let (d, m) = (f16::from_f32((hi - lo) / 15.0), f16::from_f32(lo));
            bytes.extend_from_slice(&d.to_le_bytes());
            bytes.extend_from_slice(&m.to_le_bytes());
            let q = |x: f32| ((x - m.to_f32()) / d.to_f32()).round().clamp(0.0, 15.0) as u8;
            for i in 0..16 {
                let (l, h) = (q(block[i]), q(block[16 + i]));
                bytes.push(l | (h << 4));
                deq[b * 32 + i] = d.to_f32() * f32::from(l) + m.to_f32();
                deq[b * 32 + 16 + i] = d.to_f32() * f32::from(h) + m.to_f32();
            }
        }
        (bytes, deq)
    }

    /// A product over f32 activations and weights as stored (`gemm::matmul` or
    /// `gemm_avx2::matmul`).
    pub(crate) type Matmul = fn(&[f32], usize, usize, Weights<'_>, usize) -> Option<Vec<f32>>;

    /// `matmul` against the exact product for every weight format at shapes with tails
    /// in every dimension; bf16 weights within `bf16_tol` (a kernel that rounds the
    /// activations to bf16 too is that far off).
    pub(crate) fn check_every_weight_format(matmul: Matmul, bf16_tol: f64) {
        // Tails in every dimension: m and n not multiples of the tile, k of the lanes.
        for (m, n, k) in [
            (1, 1, 1),
            (3, 7, 17),
            (5, 13, 40),
            (9, 25, 70),
            (13, 37, 576),
            (7, 300, 64),
        ] {
            let a = values(m * k, 1);
            let w = values(n * k, 2);
            let want = reference(&a, m, k, &w, n);
            let got = matmul(&a, m, k, Weights::F32(&w), n).unwrap();
            close(&got, &want, k, 1e-5, &format!("f32 {m}x{n}x{k}"));

            let w16: Vec<f16> = w.iter().map(|&x| f16::from_f32(x)).collect();
            let w16f: Vec<f32> = w16.iter().map(|x| x.to_f32()).collect();
            let got = matmul(&a, m, k, Weights::F16(&w16), n).unwrap();
            close(&got, &reference(&a, m, k, &w16f, n), k, 1e-5, "f16");

            let wb: Vec<bf16> = w.iter().map(|&x| bf16::from_f32(x)).collect();
            let wbf: Vec<f32> = wb.iter().map(|x| x.to_f32()).collect();
            let got = matmul(&a, m, k, Weights::Bf16(&wb), n).unwrap();
            close(&got, &reference(&a, m, k, &wbf, n), k, bf16_tol, "bf16");
        }
        for (m, n, k) in [(1, 1, 32), (6, 11, 64), (17, 19, 576)] {
            let a = values(m * k, 3);
            let w = values(n * k, 4);
            let (q8, deq8) = quantize_q8_0(&w);
            let got = matmul(&a, m, k, Weights::Q8_0(&q8), n).unwrap();
            close(&got, &reference(&a, m, k, &deq8, n), k, 1e-5, "q8_0");
            let (q4, deq4) = quantize_q4_1(&w);
            let got = matmul(&a, m, k, Weights::Q4_1(&q4), n).unwrap();
            close(&got, &reference(&a, m, k, &deq4, n), k, 1e-5, "q4_1");
        }
    }

    #[test]
    fn every_weight_format_matches_the_exact_product_at_odd_shapes() {
        if kernel() == Kernel::None {
            eprintln!("no AVX-512F on this CPU: nothing to test");
            return;
        }
        // bf16 products round the activations too: bf16 precision, 2^-8 relative.
        check_every_weight_format(matmul, 1e-2);
    }

    /// A row's result must not depend on the rows beside it (the tile it fell in).
    #[test]
    fn a_row_gets_the_same_bits_alone_and_among_others() {
        if kernel() == Kernel::None {
            return;
        }
        let (m, n, k) = (11, 29, 100);
        let a = values(m * k, 5);
        let w = values(n * k, 6);
        let wb: Vec<bf16> = w.iter().map(|&x| bf16::from_f32(x)).collect();
        for weights in [Weights::F32(&w), Weights::Bf16(&wb)] {
            let all = matmul(&a, m, k, weights, n).unwrap();
            for i in 0..m {
                let alone = matmul(&a[i * k..(i + 1) * k], 1, k, weights, n).unwrap();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&all[i * n..(i + 1) * n]), bits(&alone), "row {i}");
            }
        }
    }

    #[test]
    fn shapes_that_do_not_fit_the_weights_fall_back() {
        if kernel() == Kernel::None {
            return;
        }
        let w = values(6 * 10, 7);
        assert!(matmul(&values(20, 8), 2, 10, Weights::F32(&w), 5).is_none());
        assert!(matmul(&values(20, 8), 2, 10, Weights::Q8_0(&[0; 34]), 1).is_none());
    }
}
