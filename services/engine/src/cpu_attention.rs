//! Causal attention on x86-64 CPUs with AVX-512 or AVX2, over the key/value buffers as
//! stored. The kernel is written once over sixteen f32 lanes (`Lanes`): one AVX-512
//! register or two AVX2 ones.
//!
//! candle's path (kept for other CPUs and for GPUs) converts a 16-bit cache to f32 whole
//! at every call, builds a (rows x keys) score matrix per head group, and runs one
//! sequence at a time; at α-UMi's 1-4k-token contexts attention was a quarter of a static
//! evaluation's time and left a core idle (BENCHMARKS.md, "α-UMi task throughput
//! against the seed's pipeline"). Here every sequence of a decode batch (and every row
//! of a prefill chunk) goes through one parallel pass over (sequence, key/value head,
//! block of rows) tasks. Per query row and head: scores 16 keys at a time (one
//! transposing reduction for the 16 dot products), one row of scores at most (never a
//! full score matrix), a vectorised `exp`, then the values weighted and summed; keys and
//! values are widened from bf16/f16 as they load. Four rows of a prompt are attended
//! together, so each block of keys and values is loaded once for the twelve (row, head)
//! pairs of a key/value head rather than once per row.
//! With 16-bit buffers the values are weighted by the probabilities rounded to that type,
//! as PyTorch's fused CPU attention (transformers' default) does: the reference stack's
//! arithmetic, where near-tie greedy picks are decided (BENCHMARKS.md, "7B beside
//! transformers").
//!
//! A row's arithmetic is fixed whatever the batch, the rows beside it or the thread, so
//! a sequence gets the same bits alone as in a batch, and a prompt row the same bits
//! alone as in its chunk. `unsafe`: the intrinsics (called only after detection, see
//! `Width::detect`); vector loads in the two inner passes (`score_pass`, `weigh_pass`)
//! go through raw pointers after one bounds check per pass (per-load slice checks made
//! the passes 1.1-1.8x slower, `tests::speed`), every other one through a checked slice
//! range.

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

/// Which vectors this CPU runs the kernel with.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Width {
    /// AVX-512F (`gemm::kernel` finds it).
    Avx512,
    /// AVX2, FMA and F16C, without AVX-512 (`UMI_CANDLE_GEMM` set turns it off, as it
    /// does `gemm_avx2`).
    Avx2,
}

impl Width {
    /// This CPU's, detected once, or None where the kernel does not run (candle's
    /// attention does).
    pub fn detect() -> Option<Width> {
        static WIDTH: std::sync::OnceLock<Option<Width>> = std::sync::OnceLock::new();
        *WIDTH.get_or_init(|| {
            if crate::gemm::kernel() != crate::gemm::Kernel::None {
                Some(Width::Avx512)
            } else if crate::gemm_avx2::available() && is_x86_feature_detected!("f16c") {
                Some(Width::Avx2)
            } else {
                None
            }
        })
    }

    /// # Safety
    /// This width's features must be present (`detect` returned it); as `task`.
    unsafe fn task<E: Elem>(
        self,
        shape: Shape,
        job: &Job<'_>,
        h: usize,
        rows: std::ops::Range<usize>,
        kv: (&[E], &[E]),
        out: &mut [f32],
    ) {
        match self {
            Width::Avx512 => task_avx512(shape, job, h, rows, kv, out),
            Width::Avx2 => task_avx2(shape, job, h, rows, kv, out),
        }
    }
}

/// Rows of one task: enough to amortise a task, few enough to spread a prefill chunk.
const ROWS_PER_TASK: usize = 16;

/// Each job's output, (rows, heads * head_dim) f32, or None where this kernel does not
/// apply (no AVX-512 or AVX2, a head size not a multiple of 16 or over 128, heads not a multiple of the
/// key/value heads or over 8 per key/value head, buffers too short, mixed dtypes).
pub fn attend(shape: Shape, jobs: &[Job<'_>]) -> Option<Vec<Vec<f32>>> {
    let Shape {
        heads,
        kv_heads,
        head_dim: hd,
    } = shape;
    let width = Width::detect()?;
    if hd == 0
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
            // SAFETY: the width's features detected above; every length checked above.
            unsafe {
                match (job.k, job.v) {
                    (Kv::F32(k), Kv::F32(v)) => width.task(shape, job, h, rows, (k, v), &mut out),
                    (Kv::Bf16(k), Kv::Bf16(v)) => width.task(shape, job, h, rows, (k, v), &mut out),
                    (Kv::F16(k), Kv::F16(v)) => width.task(shape, job, h, rows, (k, v), &mut out),
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

/// Sixteen f32 lanes and the operations the kernel takes on them: one AVX-512 register,
/// or two AVX2 registers (`Avx512`, `Avx2`). The kernel is written once over this trait;
/// each implementation's lane arithmetic is the same IEEE operation lane by lane (its
/// reductions, in its own fixed order).
///
/// # Safety
/// Every method requires the implementation's CPU features (the callers enable them
/// after detection); loads and stores take pointers to 16 readable (writable) elements.
trait Lanes: Copy {
    unsafe fn zero() -> Self;
    unsafe fn splat(x: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    /// self * b + c, rounded once.
    unsafe fn fmadd(self, b: Self, c: Self) -> Self;
    /// c - self * b, rounded once.
    unsafe fn fnmadd(self, b: Self, c: Self) -> Self;
    unsafe fn add(self, b: Self) -> Self;
    unsafe fn sub(self, b: Self) -> Self;
    unsafe fn mul(self, b: Self) -> Self;
    /// max(self, b) in the first `count` lanes, self in the others.
    unsafe fn max_first(self, b: Self, count: usize) -> Self;
    /// self in the first `count` lanes, 0 in the others.
    unsafe fn keep_first(self, count: usize) -> Self;
    unsafe fn reduce_max(self) -> f32;
    unsafe fn reduce_add(self) -> f32;
    /// Sixteen vectors in, one vector out whose lane i is the sum of vector i's lanes.
    unsafe fn hsum16(v: &[Self; 16]) -> Self;
    /// e^x for x <= 0 (scores minus their maximum), to about 2 ulp.
    unsafe fn exp(self) -> Self;
    unsafe fn load_bf16(p: *const bf16) -> Self;
    unsafe fn load_f16(p: *const f16) -> Self;
    /// Rounded to bf16 (to nearest, ties to even) and widened back; no NaN in self.
    unsafe fn round_bf16(self) -> Self;
    /// Rounded to f16 (to nearest, ties to even) and widened back.
    unsafe fn round_f16(self) -> Self;
}

/// The degree-6 Taylor polynomial of e^r for |r| <= ln2/2, with x = n ln2 + r: shared by
/// both `exp`s (Horner's rule, one FMA a step).
#[inline(always)]
unsafe fn exp_reduced<L: Lanes>(x: L, n: L) -> L {
    let r = n.fnmadd(L::splat(0.693_145_75), x);
    let r = n.fnmadd(L::splat(1.428_606_8e-6), r);
    let mut p = L::splat(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = p.fmadd(r, L::splat(c));
    }
    p
}

/// AVX-512F: one register.
#[derive(Clone, Copy)]
struct Avx512(__m512);

impl Avx512 {
    #[inline(always)]
    fn mask(count: usize) -> __mmask16 {
        if count >= 16 {
            0xffff
        } else {
            ((1u32 << count) - 1) as u16
        }
    }
}

impl Lanes for Avx512 {
    #[inline(always)]
    unsafe fn zero() -> Self {
        Avx512(_mm512_setzero_ps())
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Avx512(_mm512_set1_ps(x))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Avx512(_mm512_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm512_storeu_ps(p, self.0)
    }
    #[inline(always)]
    unsafe fn fmadd(self, b: Self, c: Self) -> Self {
        Avx512(_mm512_fmadd_ps(self.0, b.0, c.0))
    }
    #[inline(always)]
    unsafe fn fnmadd(self, b: Self, c: Self) -> Self {
        Avx512(_mm512_fnmadd_ps(self.0, b.0, c.0))
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        Avx512(_mm512_add_ps(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        Avx512(_mm512_sub_ps(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        Avx512(_mm512_mul_ps(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn max_first(self, b: Self, count: usize) -> Self {
        Avx512(_mm512_mask_max_ps(self.0, Self::mask(count), self.0, b.0))
    }
    #[inline(always)]
    unsafe fn keep_first(self, count: usize) -> Self {
        Avx512(_mm512_maskz_mov_ps(Self::mask(count), self.0))
    }
    #[inline(always)]
    unsafe fn reduce_max(self) -> f32 {
        _mm512_reduce_max_ps(self.0)
    }
    #[inline(always)]
    unsafe fn reduce_add(self) -> f32 {
        _mm512_reduce_add_ps(self.0)
    }
    #[inline(always)]
    unsafe fn hsum16(v: &[Self; 16]) -> Self {
        // Pairs: per 128-bit lane, (a0+a2, b0+b2, a1+a3, b1+b3).
        let mut s = [_mm512_setzero_ps(); 8];
        for (j, out) in s.iter_mut().enumerate() {
            let (a, b) = (v[2 * j].0, v[2 * j + 1].0);
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
        Avx512(_mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(z0, z1),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(z0, z1),
        ))
    }
    /// 2^n by `vscalefps`: subnormal results below e^-87, and 0 below the clamp (e^-104).
    #[inline(always)]
    unsafe fn exp(self) -> Self {
        let x = _mm512_max_ps(self.0, _mm512_set1_ps(-104.0));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let p = exp_reduced(Avx512(x), Avx512(n));
        Avx512(_mm512_scalef_ps(p.0, n))
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const bf16) -> Self {
        // bf16 is the top half of an f32: zero-extend and shift into place.
        let raw = _mm256_loadu_si256(p.cast());
        Avx512(_mm512_castsi512_ps(_mm512_slli_epi32::<16>(
            _mm512_cvtepu16_epi32(raw),
        )))
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const f16) -> Self {
        Avx512(_mm512_cvtph_ps(_mm256_loadu_si256(p.cast())))
    }
    #[inline(always)]
    unsafe fn round_bf16(self) -> Self {
        // Add half a unit of the kept bits (less one, plus the kept bits' lowest: ties go
        // to even), then drop the low 16 bits.
        let bits = _mm512_castps_si512(self.0);
        let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(bits), _mm512_set1_epi32(1));
        let rounded = _mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7fff)), lsb);
        Avx512(_mm512_castsi512_ps(_mm512_and_si512(
            rounded,
            _mm512_set1_epi32(-65536),
        )))
    }
    #[inline(always)]
    unsafe fn round_f16(self) -> Self {
        Avx512(_mm512_cvtph_ps(_mm512_cvtps_ph::<
            { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
        >(self.0)))
    }
}

/// AVX2 with FMA and F16C: two registers, lanes 0-7 and 8-15.
#[derive(Clone, Copy)]
struct Avx2(__m256, __m256);

impl Avx2 {
    /// All-ones in the first `count` lanes of each half's (lo, hi) masks.
    #[inline(always)]
    unsafe fn mask(count: usize) -> (__m256, __m256) {
        let n = _mm256_set1_epi32(count.min(16) as i32);
        let lo = _mm256_cmpgt_epi32(n, _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        let hi = _mm256_cmpgt_epi32(n, _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15));
        (_mm256_castsi256_ps(lo), _mm256_castsi256_ps(hi))
    }

    /// The sixteen lanes folded into one by `wide` (the two halves), then `narrow`
    /// (halving four lanes twice, then the last pair): lane 0 of the last step.
    #[inline(always)]
    unsafe fn reduce(
        self,
        wide: impl Fn(__m256, __m256) -> __m256,
        narrow: impl Fn(__m128, __m128) -> __m128,
    ) -> f32 {
        let v = wide(self.0, self.1);
        let v = narrow(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let v = narrow(v, _mm_movehl_ps(v, v));
        _mm_cvtss_f32(narrow(v, _mm_movehdup_ps(v)))
    }

    /// The eight sums of eight vectors' lanes, in one vector (lane i: vector i's).
    #[inline(always)]
    unsafe fn hsum8(w: &[__m256; 8]) -> __m256 {
        let h01 = _mm256_hadd_ps(w[0], w[1]);
        let h23 = _mm256_hadd_ps(w[2], w[3]);
        let h45 = _mm256_hadd_ps(w[4], w[5]);
        let h67 = _mm256_hadd_ps(w[6], w[7]);
        // Per 128-bit half: the half's totals of vectors 0-3 (and 4-7).
        let q0 = _mm256_hadd_ps(h01, h23);
        let q1 = _mm256_hadd_ps(h45, h67);
        _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(q0, q1),
            _mm256_permute2f128_ps::<0x31>(q0, q1),
        )
    }
}

impl Lanes for Avx2 {
    #[inline(always)]
    unsafe fn zero() -> Self {
        Avx2(_mm256_setzero_ps(), _mm256_setzero_ps())
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Avx2(_mm256_set1_ps(x), _mm256_set1_ps(x))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Avx2(_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm256_storeu_ps(p, self.0);
        _mm256_storeu_ps(p.add(8), self.1);
    }
    #[inline(always)]
    unsafe fn fmadd(self, b: Self, c: Self) -> Self {
        Avx2(
            _mm256_fmadd_ps(self.0, b.0, c.0),
            _mm256_fmadd_ps(self.1, b.1, c.1),
        )
    }
    #[inline(always)]
    unsafe fn fnmadd(self, b: Self, c: Self) -> Self {
        Avx2(
            _mm256_fnmadd_ps(self.0, b.0, c.0),
            _mm256_fnmadd_ps(self.1, b.1, c.1),
        )
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        Avx2(_mm256_add_ps(self.0, b.0), _mm256_add_ps(self.1, b.1))
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        Avx2(_mm256_sub_ps(self.0, b.0), _mm256_sub_ps(self.1, b.1))
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        Avx2(_mm256_mul_ps(self.0, b.0), _mm256_mul_ps(self.1, b.1))
    }
    #[inline(always)]
    unsafe fn max_first(self, b: Self, count: usize) -> Self {
        let (lo, hi) = Self::mask(count);
        Avx2(
            _mm256_blendv_ps(self.0, _mm256_max_ps(self.0, b.0), lo),
            _mm256_blendv_ps(self.1, _mm256_max_ps(self.1, b.1), hi),
        )
    }
    #[inline(always)]
    unsafe fn keep_first(self, count: usize) -> Self {
        let (lo, hi) = Self::mask(count);
        Avx2(_mm256_and_ps(self.0, lo), _mm256_and_ps(self.1, hi))
    }
    #[inline(always)]
    unsafe fn reduce_max(self) -> f32 {
        self.reduce(|a, b| _mm256_max_ps(a, b), |a, b| _mm_max_ps(a, b))
    }
    #[inline(always)]
    unsafe fn reduce_add(self) -> f32 {
        self.reduce(|a, b| _mm256_add_ps(a, b), |a, b| _mm_add_ps(a, b))
    }
    #[inline(always)]
    unsafe fn hsum16(v: &[Self; 16]) -> Self {
        let halves = |first: usize| -> [__m256; 8] {
            std::array::from_fn(|i| _mm256_add_ps(v[first + i].0, v[first + i].1))
        };
        Avx2(Self::hsum8(&halves(0)), Self::hsum8(&halves(8)))
    }
    /// 2^n built in the exponent bits; x is held at -87 or above, so n >= -126 and 2^n
    /// stays a normal number (below e^-87 the result is ~1.6e-38 where AVX-512's is
    /// subnormal or 0: nothing a probability sum or a weighted value can tell apart).
    #[inline(always)]
    unsafe fn exp(self) -> Self {
        let half = |x: __m256| -> (__m256, __m256) {
            let x = _mm256_max_ps(x, _mm256_set1_ps(-87.0));
            let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
            );
            (x, n)
        };
        let ((x0, n0), (x1, n1)) = (half(self.0), half(self.1));
        let p = exp_reduced(Avx2(x0, x1), Avx2(n0, n1));
        let pow2 = |n: __m256| {
            let e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(e))
        };
        Avx2(_mm256_mul_ps(p.0, pow2(n0)), _mm256_mul_ps(p.1, pow2(n1)))
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const bf16) -> Self {
        let (lo, hi) = crate::gemm_avx2::load_bf16x16(p);
        Avx2(lo, hi)
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const f16) -> Self {
        Avx2(
            _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
            _mm256_cvtph_ps(_mm_loadu_si128(p.add(8).cast())),
        )
    }
    #[inline(always)]
    unsafe fn round_bf16(self) -> Self {
        // As Avx512's: half a unit of the kept bits, ties to even, low bits dropped.
        let round = |x: __m256| {
            let bits = _mm256_castps_si256(x);
            let lsb = _mm256_and_si256(_mm256_srli_epi32::<16>(bits), _mm256_set1_epi32(1));
            let rounded = _mm256_add_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(0x7fff)), lsb);
            _mm256_castsi256_ps(_mm256_and_si256(rounded, _mm256_set1_epi32(-65536)))
        };
        Avx2(round(self.0), round(self.1))
    }
    #[inline(always)]
    unsafe fn round_f16(self) -> Self {
        let round = |x: __m256| _mm256_cvtph_ps(_mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(x));
        Avx2(round(self.0), round(self.1))
    }
}

/// An element type of the buffers, widened to f32 sixteen at a time.
trait Elem: Copy {
    /// # Safety
    /// L's CPU features present; `p` points at 16 readable elements.
    unsafe fn load16<L: Lanes>(p: *const Self) -> L;

    /// `x` rounded to this type's precision (to nearest, ties to even) and widened back.
    /// # Safety
    /// L's CPU features present; `x` holds no NaN.
    unsafe fn round16<L: Lanes>(x: L) -> L;
}

impl Elem for f32 {
    #[inline(always)]
    unsafe fn load16<L: Lanes>(p: *const f32) -> L {
        L::load(p)
    }

    #[inline(always)]
    unsafe fn round16<L: Lanes>(x: L) -> L {
        x
    }
}

impl Elem for bf16 {
    #[inline(always)]
    unsafe fn load16<L: Lanes>(p: *const bf16) -> L {
        L::load_bf16(p)
    }

    #[inline(always)]
    unsafe fn round16<L: Lanes>(x: L) -> L {
        x.round_bf16()
    }
}

impl Elem for f16 {
    #[inline(always)]
    unsafe fn load16<L: Lanes>(p: *const f16) -> L {
        L::load_f16(p)
    }

    #[inline(always)]
    unsafe fn round16<L: Lanes>(x: L) -> L {
        x.round_f16()
    }
}

thread_local! {
    /// A task's scores (a row per query row and head) and running sums of weighted
    /// values, reused across tasks.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `task` compiled for one width: `$name` enables `$features` and runs `$lanes`, scoring
/// `$keys` keys per pass and weighting `$chunks` sixteen-value chunks of the head per pass
/// (as many as keep a pass's sums in the width's registers: 16 of AVX2, 32 of AVX-512).
macro_rules! task_with {
    ($name:ident, $features:literal, $lanes:ty, $keys:literal, $chunks:literal) => {
        /// `task` with its width's features.
        ///
        /// # Safety
        /// The features must be present; as `task`.
        #[target_feature(enable = $features)]
        unsafe fn $name<E: Elem>(
            shape: Shape,
            job: &Job<'_>,
            h: usize,
            rows: std::ops::Range<usize>,
            kv: (&[E], &[E]),
            out: &mut [f32],
        ) {
            task::<$lanes, E, $keys, $chunks>(shape, job, h, rows, kv, out)
        }
    };
}

task_with!(task_avx512, "avx512f", Avx512, 16, 8);
task_with!(task_avx2, "avx2,fma,f16c", Avx2, 4, 2);

/// Rows `rows` of `job` for key/value head `h` and its query heads; `out` is
/// (rows, groups, head_dim).
///
/// # Safety
/// L's CPU features must be present (the callers enable them). Every access is a
/// checked slice index, or a load inside a range checked once per pass (`score_pass`,
/// `weigh_pass`).
#[inline(always)]
unsafe fn task<L: Lanes, E: Elem, const P: usize, const Q: usize>(
    shape: Shape,
    job: &Job<'_>,
    h: usize,
    rows: std::ops::Range<usize>,
    (k, v): (&[E], &[E]),
    out: &mut [f32],
) {
    let hd = shape.head_dim;
    let groups = shape.heads / shape.kv_heads;
    let kv = (&k[h * job.capacity * hd..], &v[h * job.capacity * hd..]);
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        let stride = (job.offset + rows.end).div_ceil(16) * 16;
        let heads = ROWS_TOGETHER * groups;
        // Grown, never shrunk: tasks of shorter and longer sequences alternate, and
        // `row_block` writes what it reads (scores before they are read, the sums set to
        // zero), so stale values left from an earlier task are never used.
        let need = heads * (stride + 2 * hd);
        if scratch.len() < need {
            scratch.resize(need, 0.0);
        }
        let (scores, sums) = scratch[..need].split_at_mut(heads * stride);
        let mut first = rows.start;
        while first < rows.end {
            let last = (first + ROWS_TOGETHER).min(rows.end);
            let block = Rows {
                // The query heads sharing key/value head h are adjacent, as are their
                // outputs.
                q: &job.q[first * shape.heads * hd..last * shape.heads * hd],
                heads: shape.heads,
                first_head: h * groups,
                groups,
                hd,
                n: last - first,
                first_keys: job.offset + first + 1,
            };
            let y = &mut out[(first - rows.start) * groups * hd..][..block.n * groups * hd];
            row_block::<L, E, P, Q>(&block, kv, (scores, stride), sums, y);
            first = last;
        }
    });
}

/// Keys (and values) per block: each block is read from memory once and then from L1
/// for every query head of the group in every row of a `row_block`.
const BLOCK: usize = 16;

/// Values per block when they are weighted: more than `BLOCK`, to spread each pass's
/// loading and storing of its sums over more keys (16 KiB of f32 values at 64 per head).
const VALUES_BLOCK: usize = 64;

/// Query rows attended together (`row_block`).
const ROWS_TOGETHER: usize = 4;

/// Up to `ROWS_TOGETHER` consecutive query rows of one key/value head's query heads.
struct Rows<'a> {
    /// The rows' queries, (n, heads, hd).
    q: &'a [f32],
    heads: usize,
    /// The group's first query head.
    first_head: usize,
    groups: usize,
    hd: usize,
    n: usize,
    /// The first row's keys; row r attends to `first_keys + r`.
    first_keys: usize,
}

impl Rows<'_> {
    fn keys(&self, r: usize) -> usize {
        self.first_keys + r
    }

    fn query(&self, r: usize, g: usize) -> &[f32] {
        &self.q[(r * self.heads + self.first_head + g) * self.hd..][..self.hd]
    }
}

/// The rows of `rows` for the `groups` query heads that share a key/value head (`k` and
/// `v` hold that head's keys and values, `hd` each): head g of row r gets its output at
/// `y[(r * groups + g) * hd..]`, its scores at `scores[(r * groups + g) * stride..]`
/// (`stride`: the last row's keys rounded up to 16), its running sums of weighted values
/// at `sums[(r * groups + g) * 2 * hd..]` (even keys', then odd keys'). Keys and values
/// are walked a block at a time, every head of every row taking the block in turn, so
/// each is loaded from memory once per block of rows rather than once per head and row
/// (α-UMi's models share a key/value head among 3 query heads). Each head's arithmetic
/// in each row, and its order, is that of that head and row alone. `P` keys are scored
/// per pass and `Q` chunks of sixteen values weighted per pass, so that a pass's sums
/// stay in registers; neither changes any lane's order.
///
/// # Safety
/// L's CPU features must be present (the caller enables them). Every access is a checked
/// slice index, each vector load or store over a range of exactly 16 elements, except
/// the passes' loads, inside a range each pass checks once.
#[inline(always)]
unsafe fn row_block<L: Lanes, E: Elem, const P: usize, const Q: usize>(
    rows: &Rows<'_>,
    (k, v): (&[E], &[E]),
    (scores, stride): (&mut [f32], usize),
    sums: &mut [f32],
    y: &mut [f32],
) {
    let (groups, hd, n) = (rows.groups, rows.hd, rows.n);
    let most = rows.keys(n - 1);
    // Scores, sixteen keys at a time: sixteen partial dot products, then one transposing
    // reduction gives the sixteen scores in one vector.
    let scale = L::splat(1.0 / (hd as f32).sqrt());
    // The partial dot products of a block's keys: the passes write the first `count`,
    // the rest are zero (only a last, partial block has a rest). Zeroing all sixteen for
    // every block and head cost as much as a third of the scoring (`perf`).
    let mut acc = [L::zero(); 16];
    let mut t0 = 0;
    while t0 < most {
        for r in (0..n).filter(|&r| t0 < rows.keys(r)) {
            let count = (rows.keys(r) - t0).min(BLOCK);
            for g in 0..groups {
                let qg = rows.query(r, g);
                acc[count..].fill(L::zero());
                let mut j = 0;
                while j + P <= count {
                    score_pass::<L, E, P>(qg, k, t0 + j, hd, &mut acc[j..]);
                    j += P;
                }
                while j < count {
                    score_pass::<L, E, 1>(qg, k, t0 + j, hd, &mut acc[j..]);
                    j += 1;
                }
                let s = L::hsum16(&acc).mul(scale);
                s.store(scores[(r * groups + g) * stride + t0..][..16].as_mut_ptr());
            }
        }
        t0 += BLOCK;
    }
    // Per head and row: probabilities (unnormalised) and the reciprocal of their sum. As
    // PyTorch's fused CPU attention (transformers' default, `sdpa`) does for 16-bit
    // inputs, the sum is of the f32 probabilities and the values are weighted by the
    // probabilities rounded to the buffers' type; for f32 buffers nothing is rounded.
    let mut inverse = [0f32; ROWS_TOGETHER * MAX_GROUPS];
    for (head, inv) in inverse.iter_mut().enumerate().take(n * groups) {
        let keys = rows.keys(head / groups);
        let row = &mut scores[head * stride..][..stride];
        let mut max_v = L::splat(f32::NEG_INFINITY);
        let mut t0 = 0;
        while t0 < keys {
            let s = L::load(row[t0..][..16].as_ptr());
            max_v = max_v.max_first(s, keys - t0);
            t0 += 16;
        }
        let max = L::splat(max_v.reduce_max());
        let mut sum_v = L::zero();
        let mut t0 = 0;
        while t0 < keys {
            let p = L::load(row[t0..][..16].as_ptr()).sub(max).exp();
            let p = p.keep_first(keys - t0);
            sum_v = sum_v.add(p);
            E::round16(p).store(row[t0..][..16].as_mut_ptr());
            t0 += 16;
        }
        *inv = 1.0 / sum_v.reduce_add();
    }
    // Values weighted by the probabilities, a block of keys at a time for every head of
    // every row; two interleaved accumulators per chunk hide the FMA latency (their order
    // is fixed: even keys into one, odd into the other), kept in `sums` between passes.
    let chunks = hd / 16;
    let sums = &mut sums[..n * groups * 2 * hd];
    sums.fill(0.0);
    let mut b0 = 0;
    while b0 < most {
        for r in (0..n).filter(|&r| b0 < rows.keys(r)) {
            let keys = b0..(b0 + VALUES_BLOCK).min(rows.keys(r));
            for g in 0..groups {
                let head = r * groups + g;
                let p = &scores[head * stride..][..stride];
                let (even, odd) = sums[head * 2 * hd..][..2 * hd].split_at_mut(hd);
                let mut c = 0;
                while c + Q <= chunks {
                    weigh_pass::<L, E, Q>(p, v, keys.clone(), hd, c, (even, odd));
                    c += Q;
                }
                while c < chunks {
                    weigh_pass::<L, E, 1>(p, v, keys.clone(), hd, c, (even, odd));
                    c += 1;
                }
            }
        }
        b0 += VALUES_BLOCK;
    }
    for (head, inv) in inverse.iter().enumerate().take(n * groups) {
        let inv = L::splat(*inv);
        let (even, odd) = sums[head * 2 * hd..][..2 * hd].split_at(hd);
        let yh = &mut y[head * hd..][..hd];
        for ((yc, ec), oc) in yh
            .chunks_exact_mut(16)
            .zip(even.chunks_exact(16))
            .zip(odd.chunks_exact(16))
        {
            let (e, o) = (L::load(ec.as_ptr()), L::load(oc.as_ptr()));
            e.add(o).mul(inv).store(yc.as_mut_ptr());
        }
    }
}

/// Sixteen partial dot products of one query head (`qg`) with each of keys t..t+N, into
/// `acc[..N]`: lane l of key j's sum is the FMA chain of the head's lanes l, l+16, …,
/// in order. The query chunk is loaded once per pass and the N sums stay in registers.
///
/// # Safety
/// As `row_block`; `acc` holds at least N vectors.
#[inline(always)]
unsafe fn score_pass<L: Lanes, E: Elem, const N: usize>(
    qg: &[f32],
    k: &[E],
    t: usize,
    hd: usize,
    acc: &mut [L],
) {
    // One bounds check for the pass; the loads below stay inside it.
    assert!(qg.len() >= hd && k.len() >= (t + N) * hd && hd.is_multiple_of(16));
    let k = k.as_ptr().add(t * hd);
    let mut sums = [L::zero(); N];
    for c in (0..hd).step_by(16) {
        let qc = L::load(qg.as_ptr().add(c));
        for (j, sum) in sums.iter_mut().enumerate() {
            *sum = qc.fmadd(E::load16(k.add(j * hd + c)), *sum);
        }
    }
    acc[..N].copy_from_slice(&sums);
}

/// Chunks c..c+N (sixteen values each) of the values of keys `keys`, weighted by their
/// probabilities `p` and added to the running sums `even` (even keys) and `odd` (odd
/// keys), key by key in order; the 2N sums stay in registers for the pass.
///
/// # Safety
/// As `row_block`; `even` and `odd` hold the head's `hd` sums; blocks start at an even
/// key.
#[inline(always)]
unsafe fn weigh_pass<L: Lanes, E: Elem, const N: usize>(
    p: &[f32],
    v: &[E],
    keys: std::ops::Range<usize>,
    hd: usize,
    c: usize,
    (even, odd): (&mut [f32], &mut [f32]),
) {
    let (even, odd) = (&mut even[c * 16..][..N * 16], &mut odd[c * 16..][..N * 16]);
    let mut e: [L; N] = std::array::from_fn(|i| L::load(even[i * 16..][..16].as_ptr()));
    let mut o: [L; N] = std::array::from_fn(|i| L::load(odd[i * 16..][..16].as_ptr()));
    // One bounds check for the pass; the loads below stay inside it.
    assert!(keys.end <= p.len() && v.len() >= keys.end * hd && (c + N) * 16 <= hd);
    let v = v.as_ptr().add(c * 16);
    let chunk = |t: usize, i: usize| v.add(t * hd + i * 16);
    let mut t = keys.start;
    while t + 1 < keys.end {
        let (pe, po) = (
            L::splat(*p.get_unchecked(t)),
            L::splat(*p.get_unchecked(t + 1)),
        );
        for i in 0..N {
            e[i] = pe.fmadd(E::load16(chunk(t, i)), e[i]);
            o[i] = po.fmadd(E::load16(chunk(t + 1, i)), o[i]);
        }
        t += 2;
    }
    if t < keys.end {
        // Only at the last key (blocks are even-sized and start even).
        let pe = L::splat(p[t]);
        for (i, x) in e.iter_mut().enumerate() {
            *x = pe.fmadd(E::load16(chunk(t, i)), *x);
        }
    }
    for i in 0..N {
        e[i].store(even[i * 16..][..16].as_mut_ptr());
        o[i].store(odd[i * 16..][..16].as_mut_ptr());
    }
}

/// The most query heads per key/value head this kernel takes (attend checks it).
const MAX_GROUPS: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2's attention: 9 query heads over 3 key/value heads of 64.
    const SMOLLM2: Shape = Shape {
        heads: 9,
        kv_heads: 3,
        head_dim: 64,
    };

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
        if Width::detect().is_none() {
            eprintln!("no AVX-512F or AVX2 on this CPU: nothing to test");
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
        if Width::detect().is_none() {
            return;
        }
        let shape = SMOLLM2;
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

    /// A prompt's rows, attended together (in blocks of rows, in tasks of rows), get the
    /// bits each gets alone as a one-row job at its position: how a prompt is cut into
    /// chunks never changes a row.
    #[test]
    fn a_prompt_row_gets_the_same_bits_as_that_row_alone() {
        if Width::detect().is_none() {
            return;
        }
        let shape = SMOLLM2;
        let (cap, offset, rows) = (120, 9, 37);
        let q = values(rows * 9 * 64, 40);
        let (k, v) = (values(3 * cap * 64, 41), values(3 * cap * 64, 42));
        let (k16, v16): (Vec<bf16>, Vec<bf16>) = k
            .iter()
            .zip(&v)
            .map(|(&a, &b)| (bf16::from_f32(a), bf16::from_f32(b)))
            .unzip();
        let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for (kb, vb) in [(Kv::F32(&k), Kv::F32(&v)), (Kv::Bf16(&k16), Kv::Bf16(&v16))] {
            let job = |q, rows, offset| Job {
                q,
                rows,
                k: kb,
                v: vb,
                capacity: cap,
                offset,
            };
            let all = attend(shape, &[job(&q, rows, offset)]).unwrap().remove(0);
            for (i, row) in q.chunks_exact(9 * 64).enumerate() {
                let alone = attend(shape, &[job(row, 1, offset + i)]).unwrap().remove(0);
                assert_eq!(bits(&all[i * 9 * 64..][..9 * 64]), bits(&alone), "row {i}");
            }
        }
    }

    #[test]
    fn shapes_it_does_not_handle_fall_back() {
        if Width::detect().is_none() {
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

    /// `cargo test --release -p umi-engine --lib cpu_attention::tests::speed -- --ignored
    /// --nocapture`: SmolLM2's attention (9 heads, 3 key/value heads of 64) over a
    /// 512-row prompt, and one decode row at 2,048 keys.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn speed() {
        if Width::detect().is_none() {
            return;
        }
        let shape = SMOLLM2;
        let cap = 2048;
        let (k, v) = (values(3 * cap * 64, 1), values(3 * cap * 64, 2));
        let k16: Vec<bf16> = k.iter().map(|&x| bf16::from_f32(x)).collect();
        let v16: Vec<bf16> = v.iter().map(|&x| bf16::from_f32(x)).collect();
        for (rows, offset, label) in [(512, 0, "prefill 512"), (1, 2047, "decode at 2,048")] {
            let q = values(rows * 9 * 64, 3);
            let flops = 4.0 * 9.0 * 64.0 * (0..rows).map(|i| (offset + i + 1) as f64).sum::<f64>();
            for (kv, dtype) in [
                ((Kv::F32(&k), Kv::F32(&v)), "f32"),
                ((Kv::Bf16(&k16), Kv::Bf16(&v16)), "bf16"),
            ] {
                let job = || Job {
                    q: &q,
                    rows,
                    k: kv.0,
                    v: kv.1,
                    capacity: cap,
                    offset,
                };
                let runs = if rows == 1 { 2000 } else { 20 };
                std::hint::black_box(attend(shape, &[job()]));
                let t = std::time::Instant::now();
                for _ in 0..runs {
                    std::hint::black_box(attend(shape, &[job()]));
                }
                let secs = t.elapsed().as_secs_f64() / runs as f64;
                eprintln!(
                    "{label} {dtype}: {:.1} us, {:.1} GFLOP/s",
                    secs * 1e6,
                    flops / secs / 1e9
                );
            }
        }
    }
}
