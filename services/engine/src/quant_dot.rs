//! Decode rows times GGML Q4_1 and Q8_0 weight rows as stored: one weight row against
//! each of a step's inputs (f32 activations, never quantized), the results in `out`;
//! and the blocks dequantized to f32, for a prompt's product (`gemm_avx2::matmul`).
//!
//! The arithmetic is defined once, by the portable `dot_q4_1` / `dot_q8_0`: sixteen
//! running sums, each block adding `d * (x[i] * q[i] + x[16 + i] * q[16 + i])` to lane i
//! (separate multiplies and adds, no FMA), the lanes summed in order at the end. On
//! x86-64 CPUs with AVX2 and F16C the same operations run in intrinsics, in the same
//! order, so every output has the same bits either way (tested), whichever inputs are
//! beside it.
//!
//! `unsafe`, and why it is worth it: as compiled, the portable Q4_1 loop read each
//! block's f16 scale into the register that held the running offset, a false dependency
//! that chained every block to the one before, and widened each block again for every
//! input of a batch; the intrinsics read scale and minimum in one load, widen the
//! nibbles a byte to a lane straight from memory, and widen each block once for up to
//! four inputs. One thread, SmolLM2's rows (`tests::speed`): 1.03-1.36x the portable
//! loop for one input, 1.6-1.9x for four (BENCHMARKS.md, session 25). The kernels
//! enable their target features and run only after detection; loads go through raw
//! pointers into slices whose lengths are checked at entry.

/// Bytes of one Q4_1 block (f16 scale, f16 minimum, 16 bytes of nibbles) and of one Q8_0
/// block (f16 scale, 32 signed bytes), each of 32 weights.
pub const Q4_1_BLOCK: usize = 20;
pub const Q8_0_BLOCK: usize = 34;

/// `row` (Q4_1 blocks) times each of `inputs`, into `out` (one value per input). `sums`
/// holds each input's sums of its 32-value blocks ([`block_sums`]), which every row of a
/// matrix shares.
pub fn q4_1(inputs: &[&[f32]], sums: &[Vec<f32>], row: &[u8], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        let blocks = blocks(inputs, row.len() / Q4_1_BLOCK)
            .min(sums.iter().map(Vec::len).min().unwrap_or(0));
        return avx2::q4_1(inputs, sums, row, blocks, out);
    }
    for ((o, x), sums) in out.iter_mut().zip(inputs).zip(sums) {
        *o = dot_q4_1(x, sums, row);
    }
}

/// `row` (Q8_0 blocks) times each of `inputs`, into `out`.
pub fn q8_0(inputs: &[&[f32]], row: &[u8], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        let blocks = blocks(inputs, row.len() / Q8_0_BLOCK);
        return avx2::q8_0(inputs, row, blocks, out);
    }
    for (o, x) in out.iter_mut().zip(inputs) {
        *o = dot_q8_0(x, row);
    }
}

/// Q4_1 blocks as f32 weights, 32 per block into `out` (up to the shorter of the two):
/// `d * q + m`, a multiply then an add, for every weight.
pub fn dequantize_q4_1(blocks: &[u8], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        return avx2::dequantize_q4_1(blocks, out);
    }
    dequantize_q4_1_portable(blocks, out)
}

fn dequantize_q4_1_portable(blocks: &[u8], out: &mut [f32]) {
    for (block, dst) in blocks
        .chunks_exact(Q4_1_BLOCK)
        .zip(out.chunks_exact_mut(32))
    {
        let (d, m) = (f16_at(block, 0), f16_at(block, 2));
        let (lo, hi) = dst.split_at_mut(16);
        for ((l, h), &q) in lo.iter_mut().zip(hi).zip(&block[4..20]) {
            *l = d * f32::from(q & 0x0f) + m;
            *h = d * f32::from(q >> 4) + m;
        }
    }
}

/// Q8_0 blocks as f32 weights, `d * q`, 32 per block into `out`.
pub fn dequantize_q8_0(blocks: &[u8], out: &mut [f32]) {
    for (block, dst) in blocks
        .chunks_exact(Q8_0_BLOCK)
        .zip(out.chunks_exact_mut(32))
    {
        let d = f16_at(block, 0);
        for (o, &q) in dst.iter_mut().zip(&block[2..34]) {
            *o = d * f32::from(q as i8);
        }
    }
}

/// Each input's sums of its blocks of 32 values (Q4_1's minimum multiplies them).
pub fn block_sums(inputs: &[&[f32]]) -> Vec<Vec<f32>> {
    inputs
        .iter()
        .map(|x| x.chunks_exact(32).map(|b| b.iter().sum()).collect())
        .collect()
}

/// Whole blocks every input and the row have: what the portable loops' zips stop at.
#[cfg(target_arch = "x86_64")]
fn blocks(inputs: &[&[f32]], row_blocks: usize) -> usize {
    inputs
        .iter()
        .map(|x| x.len() / 32)
        .min()
        .unwrap_or(0)
        .min(row_blocks)
}

/// GGML Q4_1 block: f16 scale d, f16 minimum m, 16 bytes of nibbles (low nibbles are
/// weights 0..16, high nibbles 16..32). w = d * q + m, so x·w = d (x·q) + m Σx, and Σx
/// per block (`x_sums`) is the same for every row.
///
/// Partial sums stay in sixteen lanes across all blocks and are reduced once per row: a
/// reduction per block would serialise the loop on floating-point add latency.
pub fn dot_q4_1(x: &[f32], x_sums: &[f32], row: &[u8]) -> f32 {
    let mut acc = [0f32; 16];
    let mut offset = 0f32;
    let blocks = x.chunks_exact(32).zip(row.chunks_exact(Q4_1_BLOCK));
    for ((xb, block), x_sum) in blocks.zip(x_sums) {
        let d = f16_at(block, 0);
        let m = f16_at(block, 2);
        let qs = &block[4..20];
        for i in 0..16 {
            let dot = xb[i] * f32::from(qs[i] & 0x0f) + xb[16 + i] * f32::from(qs[i] >> 4);
            acc[i] += d * dot;
        }
        offset += m * x_sum;
    }
    acc.iter().sum::<f32>() + offset
}

/// GGML Q8_0 block: f16 scale, 32 signed bytes. w = d * q.
pub fn dot_q8_0(x: &[f32], row: &[u8]) -> f32 {
    let mut acc = [0f32; 16];
    for (xb, block) in x.chunks_exact(32).zip(row.chunks_exact(Q8_0_BLOCK)) {
        let d = f16_at(block, 0);
        let (lo, hi) = block[2..34].split_at(16);
        for i in 0..16 {
            let dot = xb[i] * f32::from(lo[i] as i8) + xb[16 + i] * f32::from(hi[i] as i8);
            acc[i] += d * dot;
        }
    }
    acc.iter().sum()
}

fn f16_at(block: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([block[at], block[at + 1]]).to_f32()
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::{Q4_1_BLOCK, Q8_0_BLOCK};

    /// Inputs one pass over a block serves: four inputs' eight running sums, the block's
    /// four widened vectors and its scale fill 13 of the 16 registers.
    const GROUP: usize = 4;

    /// AVX2 and F16C, detected once.
    pub fn available() -> bool {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE
            .get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c"))
    }

    /// The portable loop's running sums, reduced as it reduces them.
    type Sums = [__m256; 2];

    /// `f(inputs, outs)` for the inputs in groups of up to four, each with its places
    /// in `out` (inputs past `out`'s length are left out, as a zip would).
    fn in_groups(inputs: usize, out: &mut [f32], mut f: impl FnMut(Range<usize>, &mut [f32])) {
        let places = inputs.min(out.len());
        for (g, outs) in out[..places].chunks_mut(GROUP).enumerate() {
            f(g * GROUP..g * GROUP + outs.len(), outs);
        }
    }

    pub fn q4_1(inputs: &[&[f32]], sums: &[Vec<f32>], row: &[u8], blocks: usize, out: &mut [f32]) {
        assert!(row.len() >= blocks * Q4_1_BLOCK);
        in_groups(inputs.len(), out, |group, outs| {
            let (sums, group) = (&sums[group.clone()], &inputs[group]);
            assert!(group.iter().all(|x| x.len() >= blocks * 32));
            assert!(sums.iter().all(|s| s.len() >= blocks));
            // SAFETY: AVX2 and F16C were detected (the caller checked `available`); the
            // lengths are checked above.
            unsafe {
                match group.len() {
                    1 => q4_1_group::<1>(group, sums, row, blocks, outs),
                    2 => q4_1_group::<2>(group, sums, row, blocks, outs),
                    3 => q4_1_group::<3>(group, sums, row, blocks, outs),
                    _ => q4_1_group::<4>(group, sums, row, blocks, outs),
                }
            }
        });
    }

    pub fn q8_0(inputs: &[&[f32]], row: &[u8], blocks: usize, out: &mut [f32]) {
        assert!(row.len() >= blocks * Q8_0_BLOCK);
        in_groups(inputs.len(), out, |group, outs| {
            let group = &inputs[group];
            assert!(group.iter().all(|x| x.len() >= blocks * 32));
            // SAFETY: as for `q4_1`.
            unsafe {
                match group.len() {
                    1 => q8_0_group::<1>(group, row, blocks, outs),
                    2 => q8_0_group::<2>(group, row, blocks, outs),
                    3 => q8_0_group::<3>(group, row, blocks, outs),
                    _ => q8_0_group::<4>(group, row, blocks, outs),
                }
            }
        });
    }

    pub fn dequantize_q4_1(blocks: &[u8], out: &mut [f32]) {
        let count = (blocks.len() / Q4_1_BLOCK).min(out.len() / 32);
        // SAFETY: AVX2 and F16C were detected (the caller checked `available`); `count`
        // blocks are read and `count` x 32 values written, inside both slices.
        unsafe { dequantize_q4_1_blocks(blocks, count, out) }
    }

    /// # Safety
    /// AVX2 and F16C present; `blocks` holds `count` Q4_1 blocks, `out` `count` x 32
    /// places.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dequantize_q4_1_blocks(blocks: &[u8], count: usize, out: &mut [f32]) {
        for b in 0..count {
            let p = blocks.as_ptr().add(b * Q4_1_BLOCK);
            let (d, m, q) = q4_1_block(p);
            let o = out.as_mut_ptr().add(b * 32);
            for (i, q) in q.into_iter().enumerate() {
                _mm256_storeu_ps(o.add(8 * i), _mm256_add_ps(_mm256_mul_ps(d, q), m));
            }
        }
    }

    /// The Q4_1 block at `p`: its scale and its minimum, each in every lane, and its
    /// weights 0..8, 8..16, 16..24, 24..32 as f32 (the nibbles, before scaling).
    ///
    /// # Safety
    /// AVX2 and F16C present; `p` points at a whole block.
    #[inline(always)]
    unsafe fn q4_1_block(p: *const u8) -> (__m256, __m256, [__m256; 4]) {
        // Scale and minimum in one load: [d, m, 0, 0].
        let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(p.cast::<i32>().read_unaligned()));
        let d = _mm256_broadcastss_ps(dm);
        let m = _mm256_broadcastss_ps(_mm_movehdup_ps(dm));
        // Bytes 0..8 and 8..16, one to a lane: the low nibbles are weights 0..16, the
        // high ones 16..32.
        let nibble = _mm256_set1_epi32(0x0f);
        let q0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.add(4).cast()));
        let q1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.add(12).cast()));
        let q = [
            _mm256_and_si256(q0, nibble),
            _mm256_and_si256(q1, nibble),
            _mm256_srli_epi32::<4>(q0),
            _mm256_srli_epi32::<4>(q1),
        ];
        (d, m, q.map(|q| _mm256_cvtepi32_ps(q)))
    }

    /// # Safety
    /// AVX2 and F16C present; `row` holds `blocks` Q4_1 blocks, each of the N inputs
    /// `blocks` x 32 values and its sums `blocks`; `out` has N places.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q4_1_group<const N: usize>(
        inputs: &[&[f32]],
        sums: &[Vec<f32>],
        row: &[u8],
        blocks: usize,
        out: &mut [f32],
    ) {
        let mut acc = [[_mm256_setzero_ps(); 2]; N];
        let mut offset = [0f32; N];
        for b in 0..blocks {
            let (d, m, q) = q4_1_block(row.as_ptr().add(b * Q4_1_BLOCK));
            let m = _mm256_cvtss_f32(m);
            for j in 0..N {
                let x = inputs.get_unchecked(j).as_ptr().add(b * 32);
                block(&mut acc[j], x, d, q);
                offset[j] += m * *sums.get_unchecked(j).get_unchecked(b);
            }
        }
        for ((o, acc), offset) in out.iter_mut().zip(&acc).zip(offset) {
            *o = reduce(acc) + offset;
        }
    }

    /// # Safety
    /// As `q4_1_group`, for Q8_0 blocks.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q8_0_group<const N: usize>(
        inputs: &[&[f32]],
        row: &[u8],
        blocks: usize,
        out: &mut [f32],
    ) {
        let mut acc = [[_mm256_setzero_ps(); 2]; N];
        for b in 0..blocks {
            let p = row.as_ptr().add(b * Q8_0_BLOCK);
            let scale = p.cast::<u16>().read_unaligned();
            let d = _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(scale))));
            let q = |at: usize| {
                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p.add(2 + at).cast())))
            };
            let q = [q(0), q(8), q(16), q(24)];
            for (j, acc) in acc.iter_mut().enumerate() {
                block(acc, inputs.get_unchecked(j).as_ptr().add(b * 32), d, q);
            }
        }
        for (o, acc) in out.iter_mut().zip(&acc) {
            *o = reduce(acc);
        }
    }

    /// One block of one input: lanes 0..8 and 8..16 of the portable loop's sums, each
    /// `acc += d * (x[i] * q[i] + x[16 + i] * q[16 + i])`, multiplies and adds apart.
    /// `q` is the block's weights 0..8, 8..16, 16..24, 24..32 as f32.
    ///
    /// # Safety
    /// AVX2 present; `x` points at 32 readable values.
    #[inline(always)]
    unsafe fn block(acc: &mut Sums, x: *const f32, d: __m256, q: [__m256; 4]) {
        let [q0, q1, q2, q3] = q;
        let lanes = |at: usize, lo: __m256, hi: __m256| {
            let lo = _mm256_mul_ps(_mm256_loadu_ps(x.add(at)), lo);
            let hi = _mm256_mul_ps(_mm256_loadu_ps(x.add(16 + at)), hi);
            _mm256_mul_ps(d, _mm256_add_ps(lo, hi))
        };
        acc[0] = _mm256_add_ps(acc[0], lanes(0, q0, q2));
        acc[1] = _mm256_add_ps(acc[1], lanes(8, q1, q3));
    }

    /// The sixteen lanes summed in order, as the portable loop's `acc.iter().sum()`.
    ///
    /// # Safety
    /// AVX present.
    #[inline(always)]
    unsafe fn reduce(acc: &Sums) -> f32 {
        let mut lanes = [0f32; 16];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc[0]);
        _mm256_storeu_ps(lanes.as_mut_ptr().add(8), acc[1]);
        lanes.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// `blocks` random blocks of `size` bytes whose f16 fields (the first `halves`) are
    /// finite numbers of either sign, some tiny, some large.
    fn row(blocks: usize, size: usize, halves: usize, seed: u64) -> Vec<u8> {
        let noise = values(blocks * size, seed);
        let mut row: Vec<u8> = noise.iter().map(|v| (v.to_bits() >> 7) as u8).collect();
        for (b, block) in row.chunks_exact_mut(size).enumerate() {
            for h in 0..halves {
                let v = noise[b * size + h] * [1e-3, 0.05, 3.0, 900.0][(b + h) % 4];
                block[2 * h..2 * h + 2].copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
            }
        }
        row
    }

    fn inputs(count: usize, k: usize) -> Vec<Vec<f32>> {
        (0..count)
            .map(|j| values(k, 100 + j as u64).iter().map(|v| v * 4.0).collect())
            .collect()
    }

    /// Every output of the kernels is bit for bit the portable loop's for its input,
    /// whatever the number of inputs beside it (groups of four and the rest), and inputs
    /// past `out`'s length are left out.
    #[test]
    fn the_kernels_give_the_portable_loops_bits_for_any_number_of_inputs() {
        for (k, seed) in [(32, 1), (576, 2), (1536, 3)] {
            let q4_1 = row(k / 32, Q4_1_BLOCK, 2, seed);
            let q8_0 = row(k / 32, Q8_0_BLOCK, 1, seed + 50);
            for count in 0..=9 {
                let owned = inputs(count, k);
                let xs: Vec<&[f32]> = owned.iter().map(Vec::as_slice).collect();
                let sums = block_sums(&xs);
                let mut out = vec![f32::NAN; count + 1];
                super::q4_1(&xs, &sums, &q4_1, &mut out[..count]);
                for (j, x) in xs.iter().enumerate() {
                    let want = dot_q4_1(x, &sums[j], &q4_1);
                    assert_eq!(
                        out[j].to_bits(),
                        want.to_bits(),
                        "q4_1 k {k}, {count} inputs, input {j}"
                    );
                }
                assert!(out[count].is_nan(), "only {count} places written");
                super::q8_0(&xs, &q8_0, &mut out[..count]);
                for (j, x) in xs.iter().enumerate() {
                    let want = dot_q8_0(x, &q8_0);
                    assert_eq!(
                        out[j].to_bits(),
                        want.to_bits(),
                        "q8_0 k {k}, {count} inputs, input {j}"
                    );
                }
                if count > 1 {
                    let mut short = vec![0f32; count - 1];
                    super::q8_0(&xs, &q8_0, &mut short);
                    assert_eq!(
                        short.last().map(|v| v.to_bits()),
                        Some(out[count - 2].to_bits())
                    );
                }
            }
        }
    }

    /// The AVX2 dequantization writes the portable loop's bits, up to the shorter of the
    /// blocks and the output, and leaves the rest of the output as it was.
    #[test]
    fn dequantized_blocks_are_the_portable_loops_bits() {
        let blocks = row(40, Q4_1_BLOCK, 2, 11);
        for (count, places) in [(40, 40), (40, 13), (7, 40)] {
            let mut want = vec![-7f32; places * 32];
            let mut got = want.clone();
            dequantize_q4_1_portable(&blocks[..count * Q4_1_BLOCK], &mut want);
            dequantize_q4_1(&blocks[..count * Q4_1_BLOCK], &mut got);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{count} blocks into {places}");
            assert!(want[..count.min(places) * 32].iter().all(|&w| w != -7.0));
        }
    }

    /// Rows, inputs or sums shorter than the others stop every product at the shortest,
    /// as the portable loops' zips do, instead of reading past them.
    #[test]
    fn uneven_lengths_stop_at_the_shortest() {
        let long = inputs(2, 96);
        let xs: Vec<&[f32]> = vec![&long[0], &long[1][..64]];
        let sums = block_sums(&xs);
        let q4_1 = row(3, Q4_1_BLOCK, 2, 9);
        let mut out = [0f32; 2];
        super::q4_1(&xs, &sums, &q4_1, &mut out);
        let two: Vec<&[f32]> = xs.iter().map(|x| &x[..64]).collect();
        let sums_two = block_sums(&two);
        let mut want = [0f32; 2];
        super::q4_1(&two, &sums_two, &q4_1[..2 * Q4_1_BLOCK], &mut want);
        assert_eq!(out.map(f32::to_bits), want.map(f32::to_bits));
        assert_eq!(
            want[0].to_bits(),
            dot_q4_1(two[0], &sums_two[0], &q4_1).to_bits()
        );
    }

    /// A weight dequantized by hand: the portable definitions are the products they say.
    #[test]
    fn the_portable_loops_are_the_dequantized_products() {
        let x = inputs(1, 64).remove(0);
        let q4_1 = row(2, Q4_1_BLOCK, 2, 4);
        let q8_0 = row(2, Q8_0_BLOCK, 1, 5);
        let (mut w4, mut w8) = (Vec::new(), Vec::new());
        for b in q4_1.chunks_exact(Q4_1_BLOCK) {
            let (d, m) = (f16_at(b, 0) as f64, f16_at(b, 2) as f64);
            let q = &b[4..];
            w4.extend(
                (0..32).map(|i| d * f64::from(if i < 16 { q[i] & 15 } else { q[i - 16] >> 4 }) + m),
            );
        }
        for b in q8_0.chunks_exact(Q8_0_BLOCK) {
            w8.extend(
                b[2..]
                    .iter()
                    .map(|&q| f16_at(b, 0) as f64 * f64::from(q as i8)),
            );
        }
        let exact = |w: &[f64]| x.iter().zip(w).map(|(&x, w)| f64::from(x) * w).sum::<f64>();
        let sums = block_sums(&[&x]);
        for (got, want) in [
            (dot_q4_1(&x, &sums[0], &q4_1), exact(&w4)),
            (dot_q8_0(&x, &q8_0), exact(&w8)),
        ] {
            let scale = x.iter().map(|v| v.abs() as f64).sum::<f64>() * 900.0 * 128.0;
            assert!(
                (f64::from(got) - want).abs() < 1e-5 * scale,
                "{got} vs {want}"
            );
        }
    }

    /// `cargo test --release -p umi-engine --lib quant_dot::tests::speed -- --ignored
    /// --nocapture`: one thread through SmolLM2's decode rows (k = 576), the kernels
    /// against the portable loops, one input and four.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn speed() {
        let k = 576;
        let rows = 65_536;
        let q4_1 = row(rows * k / 32, Q4_1_BLOCK, 2, 7);
        let owned = inputs(4, k);
        let xs: Vec<&[f32]> = owned.iter().map(Vec::as_slice).collect();
        let sums = block_sums(&xs);
        let row_bytes = k / 32 * Q4_1_BLOCK;
        let time = |f: &dyn Fn()| {
            f();
            let t = std::time::Instant::now();
            for _ in 0..5 {
                f();
            }
            t.elapsed().as_secs_f64() / 5.0
        };
        for n in [1, 4] {
            let portable = time(&|| {
                for r in q4_1.chunks_exact(row_bytes) {
                    for (j, x) in xs[..n].iter().enumerate() {
                        std::hint::black_box(dot_q4_1(x, &sums[j], r));
                    }
                }
            });
            let kernel = time(&|| {
                let mut out = vec![0f32; n];
                for r in q4_1.chunks_exact(row_bytes) {
                    super::q4_1(&xs[..n], &sums[..n], r, &mut out);
                    std::hint::black_box(&out);
                }
            });
            let gb = q4_1.len() as f64 / 1e9;
            eprintln!(
                "Q4_1, {n} input(s): kernel {:.2} GB/s of weights, portable {:.2} GB/s ({:.2}x)",
                gb / kernel,
                gb / portable,
                portable / kernel
            );
        }
    }
}
