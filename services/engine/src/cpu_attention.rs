//! Causal attention on x86-64 CPUs with AVX-512, over the key/value buffers as stored.
//!
//! candle's path (kept for other CPUs and for GPUs) converts a 16-bit cache to f32 whole
//! at every call, builds a (rows x keys) score matrix per head group, and runs one
//! sequence at a time; at α-UMi's 1-4k-token contexts attention was a quarter of a static
//! evaluation's time and left a core idle (BENCHMARKS.md, "α-UMi task throughput
//! against the seed's pipeline"). Here every sequence of a decode batch (and every row
//! of a prefill chunk) goes through one parallel pass over (sequence, key/value head,
//! block of rows) tasks. Per query row and head: scores 16 keys at a time (one transposing reduction for the 16 dot products),
//! one row of scores at most (never a full score matrix), a vectorised `exp`, then the
//! values weighted and summed; keys and values are widened from bf16/f16 as they load.
//! With 16-bit buffers the values are weighted by the probabilities rounded to that type,
//! as PyTorch's fused CPU attention (transformers' default) does: the reference stack's
//! arithmetic, where near-tie greedy picks are decided (BENCHMARKS.md, "7B beside
//! transformers").
//!
//! A row's arithmetic is fixed whatever the batch, the rows beside it or the thread, so
//! a sequence gets the same bits alone as in a batch. `unsafe`: the intrinsics (called
//! only after detection, see `gemm::kernel`), each vector load from a slice range that is
//! bounds-checked (raw-pointer offsets measured no faster, so none are kept).

use std::arch::x86_64::*;
use std::cell::RefCell;

use half::{bf16, f16};
use rayon::prelude::*;

/// A layer's key or value buffer, (kv_heads, capacity, head_dim) row-major.
#[derive(Clone, Copy)]
pub enum Kv<'a> {
    F32(&'a [f32]),
    Bf16(&'a [bf16]),
    F16(&'a [f16]),
}

impl Kv<'_> {
    fn len(&self) -> usize {
        match self {
            Kv::F32(s) => s.len(),
            Kv::Bf16(s) => s.len(),
            Kv::F16(s) => s.len(),
        }
    }
}

/// The model's attention shape.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// One sequence's new rows.
pub struct Job<'a> {
    /// Query rows after the rotary embedding, f32, (rows, heads, head_dim).
    pub q: &'a [f32],
    pub rows: usize,
    /// This layer's buffers; the first `offset + rows` positions hold data.
    pub k: Kv<'a>,
    pub v: Kv<'a>,
    pub capacity: usize,
    /// Positions before the first row (row i attends to keys 0..=offset + i).
    pub offset: usize,
}

/// Rows of one task: enough to amortise a task, few enough to spread a prefill chunk.
const ROWS_PER_TASK: usize = 16;

/// Each job's output, (rows, heads * head_dim) f32, or None where this kernel does not
/// apply (no AVX-512, a head size not a multiple of 16 or over 128, heads not a multiple of the
/// key/value heads or over 8 per key/value head, buffers too short, mixed dtypes).
pub fn attend(shape: Shape, jobs: &[Job<'_>]) -> Option<Vec<Vec<f32>>> {
    let Shape {
        heads,
        kv_heads,
        head_dim: hd,
    } = shape;
    if crate::gemm::kernel() == crate::gemm::Kernel::None
        || hd == 0
        || !hd.is_multiple_of(16)
        || hd > 128
        || kv_heads == 0
        || !heads.is_multiple_of(kv_heads)
        || heads / kv_heads > MAX_GROUPS
    {
        return None;
    }
    for job in jobs {
        let fits = job.q.len() == job.rows * heads * hd
            && job.offset + job.rows <= job.capacity
            && job.k.len() == kv_heads * job.capacity * hd
            && job.v.len() == kv_heads * job.capacity * hd
            && std::mem::discriminant(&job.k) == std::mem::discriminant(&job.v);
        if !fits {
            return None;
        }
    }
    let groups = heads / kv_heads;
    let tasks: Vec<(usize, usize, usize)> = jobs
        .iter()
        .enumerate()
        .flat_map(|(j, job)| {
            (0..kv_heads)
                .flat_map(move |h| (0..job.rows).step_by(ROWS_PER_TASK).map(move |r| (j, h, r)))
        })
        .collect();
    let parts: Vec<Vec<f32>> = tasks
        .par_iter()
        .map(|&(j, h, r0)| {
            let job = &jobs[j];
            let rows = r0..job.rows.min(r0 + ROWS_PER_TASK);
            let mut out = vec![0f32; rows.len() * groups * hd];
            // SAFETY: AVX-512F detected above; every length checked above.
            unsafe {
                match (job.k, job.v) {
                    (Kv::F32(k), Kv::F32(v)) => task(shape, job, h, rows, k, v, &mut out),
                    (Kv::Bf16(k), Kv::Bf16(v)) => task(shape, job, h, rows, k, v, &mut out),
                    (Kv::F16(k), Kv::F16(v)) => task(shape, job, h, rows, k, v, &mut out),
                    _ => unreachable!("dtypes checked above"),
                }
            }
            out
        })
        .collect();
    let mut outs: Vec<Vec<f32>> = jobs
        .iter()
        .map(|j| vec![0f32; j.rows * heads * hd])
        .collect();
    for (&(j, h, r0), part) in tasks.iter().zip(&parts) {
        // part: (rows, groups, hd) for query heads h*groups..(h+1)*groups.
        for (i, src) in part.chunks_exact(groups * hd).enumerate() {
            let at = (r0 + i) * heads * hd + h * groups * hd;
            outs[j][at..at + groups * hd].copy_from_slice(src);
        }
    }
    Some(outs)
}

/// An element type of the buffers, widened to f32 sixteen at a time.
trait Elem: Copy {
    /// # Safety
    /// AVX-512F present; `p` points at 16 readable elements.
    unsafe fn load16(p: *const Self) -> __m512;

    /// `x` rounded to this type's precision (to nearest, ties to even) and widened back.
    /// # Safety
    /// AVX-512F present; `x` holds no NaN.
    unsafe fn round16(x: __m512) -> __m512;
}

impl Elem for f32 {
    #[inline(always)]
    unsafe fn load16(p: *const f32) -> __m512 {
        _mm512_loadu_ps(p)
    }

    #[inline(always)]
    unsafe fn round16(x: __m512) -> __m512 {
        x
    }
}

impl Elem for bf16 {
    #[inline(always)]
    unsafe fn load16(p: *const bf16) -> __m512 {
        // bf16 is the top half of an f32: zero-extend and shift into place.
        let raw = _mm256_loadu_si256(p.cast());
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(raw)))
    }

    #[inline(always)]
    unsafe fn round16(x: __m512) -> __m512 {
        // Add half a unit of the kept bits (less one, plus the kept bits' lowest: ties go
        // to even), then drop the low 16 bits.
        let bits = _mm512_castps_si512(x);
        let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
        let rounded = _mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7fff)), lsb);
        _mm512_castsi512_ps(_mm512_and_si512(rounded, _mm512_set1_epi32(-65536)))
    }
}

impl Elem for f16 {
    #[inline(always)]
    unsafe fn load16(p: *const f16) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p.cast()))
    }

    #[inline(always)]
    unsafe fn round16(x: __m512) -> __m512 {
        _mm512_cvtph_ps(_mm512_cvtps_ph::<
            { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
        >(x))
    }
}

thread_local! {
    /// One row of scores per query head of a group, reused across tasks.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Rows `rows` of `job` for key/value head `h` and its query heads; `out` is
/// (rows, groups, head_dim).
///
/// # Safety
/// AVX-512F must be present. Every access is a checked slice index.
#[target_feature(enable = "avx512f")]
unsafe fn task<E: Elem>(
    shape: Shape,
    job: &Job<'_>,
    h: usize,
    rows: std::ops::Range<usize>,
    k: &[E],
    v: &[E],
    out: &mut [f32],
) {
    let hd = shape.head_dim;
    let groups = shape.heads / shape.kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let (k, v) = (&k[h * job.capacity * hd..], &v[h * job.capacity * hd..]);
    SCORES.with(|scores| {
        let mut scores = scores.borrow_mut();
        let stride = (job.offset + rows.end).div_ceil(16) * 16;
        scores.resize(groups * stride, 0.0);
        for (n, row) in rows.enumerate() {
            let keys = job.offset + row + 1;
            // The query heads sharing key/value head h are adjacent, as are their outputs.
            let q = &job.q[(row * shape.heads + h * groups) * hd..][..groups * hd];
            let y = &mut out[n * groups * hd..][..groups * hd];
            group_row(q, groups, (k, v), keys, hd, scale, &mut scores, stride, y);
        }
    });
}

/// Keys (and values) per block: each block is read from memory once and then from L1
/// for every query head of the group.
const BLOCK: usize = 16;

/// One query row of the `groups` query heads that share a key/value head, over `keys`
/// keys (`k` and `v` hold that key/value head's rows, `hd` values each): head g's query
/// at `q[g * hd..]`, its output (hd values) written at `y[g * hd..]`, its scores in
/// `scores[g * stride..]` (`stride`: `keys` rounded up to 16). Keys and values are walked
/// a block at a time, every head of the group taking the block in turn, so each is loaded
/// from memory once per group rather than once per head (α-UMi's models share a
/// key/value head among 3 query heads). Each head's arithmetic, and its order, is that of
/// a head alone.
///
/// # Safety
/// AVX-512F must be present (the caller enables it). Every access is a checked slice
/// index, each vector load or store over a range of exactly 16 elements.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn group_row<E: Elem>(
    q: &[f32],
    groups: usize,
    (k, v): (&[E], &[E]),
    keys: usize,
    hd: usize,
    scale: f32,
    scores: &mut [f32],
    stride: usize,
    y: &mut [f32],
) {
    let valid_mask = |count: usize| -> __mmask16 {
        if count == 16 {
            0xffff
        } else {
            ((1u32 << count) - 1) as u16
        }
    };
    // Scores, sixteen keys at a time: sixteen partial dot products, then one transposing
    // reduction gives the sixteen scores in one vector.
    let scale_v = _mm512_set1_ps(scale);
    let mut t0 = 0;
    while t0 < keys {
        let count = (keys - t0).min(BLOCK);
        for g in 0..groups {
            let qg = &q[g * hd..][..hd];
            let mut acc = [_mm512_setzero_ps(); 16];
            for (key, a) in acc.iter_mut().enumerate().take(count) {
                let kr = &k[(t0 + key) * hd..][..hd];
                for (qc, kc) in qg.chunks_exact(16).zip(kr.chunks_exact(16)) {
                    *a = _mm512_fmadd_ps(_mm512_loadu_ps(qc.as_ptr()), E::load16(kc.as_ptr()), *a);
                }
            }
            let s = _mm512_mul_ps(hsum16(&acc), scale_v);
            _mm512_storeu_ps(scores[g * stride + t0..][..16].as_mut_ptr(), s);
        }
        t0 += BLOCK;
    }
    // Per head: probabilities (unnormalised) and the reciprocal of their sum. As
    // PyTorch's fused CPU attention (transformers' default, `sdpa`) does for 16-bit
    // inputs, the sum is of the f32 probabilities and the values are weighted by the
    // probabilities rounded to the buffers' type; for f32 buffers nothing is rounded.
    let mut inverse = [0f32; MAX_GROUPS];
    for (g, inv) in inverse.iter_mut().enumerate().take(groups) {
        let row = &mut scores[g * stride..][..stride];
        let mut max_v = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut t0 = 0;
        while t0 < keys {
            let s = _mm512_loadu_ps(row[t0..][..16].as_ptr());
            let valid = valid_mask((keys - t0).min(16));
            max_v = _mm512_mask_max_ps(max_v, valid, max_v, s);
            t0 += 16;
        }
        let max = _mm512_set1_ps(_mm512_reduce_max_ps(max_v));
        let mut sum_v = _mm512_setzero_ps();
        let mut t0 = 0;
        while t0 < keys {
            let valid = valid_mask((keys - t0).min(16));
            let p = exp(_mm512_sub_ps(
                _mm512_loadu_ps(row[t0..][..16].as_ptr()),
                max,
            ));
            let p = _mm512_maskz_mov_ps(valid, p);
            sum_v = _mm512_add_ps(sum_v, p);
            _mm512_storeu_ps(row[t0..][..16].as_mut_ptr(), E::round16(p));
            t0 += 16;
        }
        *inv = 1.0 / _mm512_reduce_add_ps(sum_v);
    }
    // Values weighted by the probabilities, a block of keys at a time for every head;
    // two interleaved accumulators per chunk hide the FMA latency (their order is fixed:
    // even keys into one, odd into the other), kept in memory between blocks.
    let mut even = [[_mm512_setzero_ps(); 8]; MAX_GROUPS];
    let mut odd = [[_mm512_setzero_ps(); 8]; MAX_GROUPS];
    let mut b0 = 0;
    while b0 < keys {
        let end = (b0 + BLOCK).min(keys);
        for g in 0..groups {
            let p = &scores[g * stride..][..stride];
            let (mut e, mut o) = (even[g], odd[g]);
            let mut t = b0;
            while t + 1 < end {
                let (pe, po) = (_mm512_set1_ps(p[t]), _mm512_set1_ps(p[t + 1]));
                let (ve, vo) = (&v[t * hd..][..hd], &v[(t + 1) * hd..][..hd]);
                let lanes = ve.chunks_exact(16).zip(vo.chunks_exact(16));
                for ((ec, oc), (vec, voc)) in e.iter_mut().zip(o.iter_mut()).zip(lanes) {
                    *ec = _mm512_fmadd_ps(pe, E::load16(vec.as_ptr()), *ec);
                    *oc = _mm512_fmadd_ps(po, E::load16(voc.as_ptr()), *oc);
                }
                t += 2;
            }
            if t < end {
                // Only at the last key (blocks are even-sized and start even).
                let pe = _mm512_set1_ps(p[t]);
                let ve = &v[t * hd..][..hd];
                for (x, vc) in e.iter_mut().zip(ve.chunks_exact(16)) {
                    *x = _mm512_fmadd_ps(pe, E::load16(vc.as_ptr()), *x);
                }
            }
            (even[g], odd[g]) = (e, o);
        }
        b0 = end;
    }
    for g in 0..groups {
        let inv = _mm512_set1_ps(inverse[g]);
        let yg = &mut y[g * hd..][..hd];
        for ((yc, ec), oc) in yg.chunks_exact_mut(16).zip(&even[g]).zip(&odd[g]) {
            let sum = _mm512_add_ps(*ec, *oc);
            _mm512_storeu_ps(yc.as_mut_ptr(), _mm512_mul_ps(sum, inv));
        }
    }
}

/// The most query heads per key/value head this kernel takes (attend checks it).
const MAX_GROUPS: usize = 8;

/// Sixteen vectors in, one vector out whose lane i is the sum of vector i's lanes.
///
/// # Safety
/// AVX-512F must be present.
#[inline(always)]
unsafe fn hsum16(v: &[__m512; 16]) -> __m512 {
    // Pairs: per 128-bit lane, (a0+a2, b0+b2, a1+a3, b1+b3).
    let mut s = [_mm512_setzero_ps(); 8];
    for (j, out) in s.iter_mut().enumerate() {
        let (a, b) = (v[2 * j], v[2 * j + 1]);
        *out = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    }
    // Quads: per 128-bit lane, the lane's total of each of four vectors.
    let mut x = [_mm512_setzero_ps(); 4];
    for (j, out) in x.iter_mut().enumerate() {
        let (p, q) = (s[2 * j], s[2 * j + 1]);
        *out = _mm512_add_ps(
            _mm512_shuffle_ps::<0b01_00_01_00>(p, q),
            _mm512_shuffle_ps::<0b11_10_11_10>(p, q),
        );
    }
    // Across the four 128-bit lanes.
    let z0 = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0b01_00_01_00>(x[0], x[1]),
        _mm512_shuffle_f32x4::<0b11_10_11_10>(x[0], x[1]),
    );
    let z1 = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0b01_00_01_00>(x[2], x[3]),
        _mm512_shuffle_f32x4::<0b11_10_11_10>(x[2], x[3]),
    );
    _mm512_add_ps(
        _mm512_shuffle_f32x4::<0b10_00_10_00>(z0, z1),
        _mm512_shuffle_f32x4::<0b11_01_11_01>(z0, z1),
    )
}

/// e^x for x <= 0 (scores minus their maximum), to about 2 ulp: x = n ln2 + r with
/// |r| <= ln2/2, e^r by its degree-6 Taylor polynomial, times 2^n (`vscalefps`, which
/// underflows to 0 cleanly below e^-87).
///
/// # Safety
/// AVX-512F must be present.
#[inline(always)]
unsafe fn exp(x: __m512) -> __m512 {
    let x = _mm512_max_ps(x, _mm512_set1_ps(-104.0));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
    let mut p = _mm512_set1_ps(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    _mm512_scalef_ps(p, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
            })
            .collect()
    }

    /// Softmax attention in f64, the keys and values given widened; the values weighted
    /// by the unnormalised probabilities passed through `round` (the sum is of the exact
    /// ones), as PyTorch's fused CPU attention does for 16-bit inputs.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        shape: Shape,
        q: &[f32],
        rows: usize,
        k: &[f32],
        v: &[f32],
        cap: usize,
        offset: usize,
        round: fn(f32) -> f32,
    ) -> Vec<f64> {
        let (heads, hd) = (shape.heads, shape.head_dim);
        let groups = heads / shape.kv_heads;
        let mut out = vec![0f64; rows * heads * hd];
        for i in 0..rows {
            for head in 0..heads {
                let h = head / groups;
                let qr = &q[(i * heads + head) * hd..][..hd];
                let keys = offset + i + 1;
                let s: Vec<f64> = (0..keys)
                    .map(|t| {
                        let kr = &k[(h * cap + t) * hd..][..hd];
                        qr.iter()
                            .zip(kr)
                            .map(|(a, b)| f64::from(*a) * f64::from(*b))
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::MIN, f64::max);
                let p: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let l: f64 = p.iter().sum();
                let p: Vec<f64> = p.iter().map(|&x| f64::from(round(x as f32))).collect();
                for d in 0..hd {
                    out[(i * heads + head) * hd + d] = (0..keys)
                        .map(|t| p[t] * f64::from(v[(h * cap + t) * hd + d]))
                        .sum::<f64>()
                        / l;
                }
            }
        }
        out
    }

    #[test]
    fn matches_softmax_attention_rounded_as_pytorch_for_every_buffer_dtype() {
        if crate::gemm::kernel() == crate::gemm::Kernel::None {
            eprintln!("no AVX-512F on this CPU: nothing to test");
            return;
        }
        // Per buffer dtype, the summed distance from the reference with PyTorch's rounding
        // and from the one without.
        let mut errors = [(0f64, 0f64); 3];
        // Grouped and plain heads; key counts off the 16-key blocks; decode and prefill rows.
        for (heads, kv_heads, hd, rows, offset) in [
            (9, 3, 64, 1, 0),
            (9, 3, 64, 1, 40),
            (4, 4, 32, 21, 7),
            (6, 2, 16, 37, 100),
        ] {
            let shape = Shape {
                heads,
                kv_heads,
                head_dim: hd,
            };
            let cap = offset + rows + 5;
            let q = values(rows * heads * hd, 1);
            let k32 = values(kv_heads * cap * hd, 2);
            let v32 = values(kv_heads * cap * hd, 3);
            let kb: Vec<bf16> = k32.iter().map(|&x| bf16::from_f32(x)).collect();
            let vb: Vec<bf16> = v32.iter().map(|&x| bf16::from_f32(x)).collect();
            let kh: Vec<f16> = k32.iter().map(|&x| f16::from_f32(x)).collect();
            let vh: Vec<f16> = v32.iter().map(|&x| f16::from_f32(x)).collect();
            let widen = |k: &[f32]| k.to_vec();
            type Case<'a> = (Kv<'a>, Kv<'a>, Vec<f32>, Vec<f32>, fn(f32) -> f32);
            let cases: [Case; 3] = [
                (
                    Kv::F32(&k32),
                    Kv::F32(&v32),
                    widen(&k32),
                    widen(&v32),
                    |x| x,
                ),
                (
                    Kv::Bf16(&kb),
                    Kv::Bf16(&vb),
                    kb.iter().map(|x| x.to_f32()).collect(),
                    vb.iter().map(|x| x.to_f32()).collect(),
                    |x| bf16::from_f32(x).to_f32(),
                ),
                (
                    Kv::F16(&kh),
                    Kv::F16(&vh),
                    kh.iter().map(|x| x.to_f32()).collect(),
                    vh.iter().map(|x| x.to_f32()).collect(),
                    |x| f16::from_f32(x).to_f32(),
                ),
            ];
            for (case, (k, v, kw, vw, round)) in cases.into_iter().enumerate() {
                let job = Job {
                    q: &q,
                    rows,
                    k,
                    v,
                    capacity: cap,
                    offset,
                };
                let got = attend(shape, &[job]).unwrap().remove(0);
                let want = reference(shape, &q, rows, &kw, &vw, cap, offset, round);
                // A probability within the exp's 2 ulp of a 16-bit rounding boundary may
                // round the other way than the f64 reference's: a few outputs move by up
                // to one 16-bit step of one weight.
                let off: Vec<(f32, f64)> = got
                    .iter()
                    .zip(&want)
                    .filter(|(g, w)| (f64::from(**g) - **w).abs() >= 1e-5 * (1.0 + w.abs()))
                    .map(|(g, w)| (*g, *w))
                    .collect();
                let dtype = match k {
                    Kv::F32(_) => "f32",
                    Kv::Bf16(_) => "bf16",
                    Kv::F16(_) => "f16",
                };
                let context = format!("{shape:?} rows {rows} offset {offset} {dtype}");
                assert!(off.len() * 100 <= got.len(), "{context}: {off:?}");
                for (g, w) in off {
                    assert!((f64::from(g) - w).abs() < 1e-2, "{context}: {g} vs {w}");
                }
                let exact = reference(shape, &q, rows, &kw, &vw, cap, offset, |x| x);
                let err = |r: &[f64]| -> f64 {
                    got.iter()
                        .zip(r)
                        .map(|(g, w)| (f64::from(*g) - w).abs())
                        .sum()
                };
                errors[case].0 += err(&want);
                errors[case].1 += err(&exact);
            }
        }
        // With 16-bit buffers the rounding is there: the unrounded reference is far off.
        assert_eq!(errors[0].0, errors[0].1, "f32: nothing rounded");
        for (dtype, (rounded, exact)) in ["bf16", "f16"].iter().zip(&errors[1..]) {
            assert!(*exact > 10.0 * rounded, "{dtype}: {exact} vs {rounded}");
        }
    }

    /// A sequence's rows get the same bits alone and in a batch of sequences.
    #[test]
    fn a_sequence_gets_the_same_bits_alone_and_in_a_batch() {
        if crate::gemm::kernel() == crate::gemm::Kernel::None {
            return;
        }
        let shape = Shape {
            heads: 9,
            kv_heads: 3,
            head_dim: 64,
        };
        let cap = 300;
        let bufs: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = (0..4)
            .map(|s| {
                (
                    values(9 * 64, 10 + s),
                    values(3 * cap * 64, 20 + s),
                    values(3 * cap * 64, 30 + s),
                )
            })
            .collect();
        let offsets = [0, 17, 250, 64];
        let jobs: Vec<Job> = bufs
            .iter()
            .zip(offsets)
            .map(|((q, k, v), offset)| Job {
                q,
                rows: 1,
                k: Kv::F32(k),
                v: Kv::F32(v),
                capacity: cap,
                offset,
            })
            .collect();
        let batched = attend(shape, &jobs).unwrap();
        for (s, ((q, k, v), offset)) in bufs.iter().zip(offsets).enumerate() {
            let job = Job {
                q,
                rows: 1,
                k: Kv::F32(k),
                v: Kv::F32(v),
                capacity: cap,
                offset,
            };
            let alone = attend(shape, &[job]).unwrap().remove(0);
            let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&batched[s]), bits(&alone), "sequence {s}");
        }
    }

    #[test]
    fn shapes_it_does_not_handle_fall_back() {
        if crate::gemm::kernel() == crate::gemm::Kernel::None {
            return;
        }
        let (q, k) = (values(10, 1), values(100, 2));
        let shape = Shape {
            heads: 1,
            kv_heads: 1,
            head_dim: 10,
        };
        let job = Job {
            q: &q,
            rows: 1,
            k: Kv::F32(&k),
            v: Kv::F32(&k),
            capacity: 10,
            offset: 0,
        };
        assert!(
            attend(shape, &[job]).is_none(),
            "head size 10 is not a multiple of 16"
        );
        let shape = Shape {
            heads: 1,
            kv_heads: 1,
            head_dim: 16,
        };
        let q = values(16, 3);
        let job = Job {
            q: &q,
            rows: 1,
            k: Kv::F32(&k),
            v: Kv::F32(&k),
            capacity: 10,
            offset: 0,
        };
        assert!(
            attend(shape, &[job]).is_none(),
            "buffers shorter than their capacity"
        );
    }
}
