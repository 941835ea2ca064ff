//! This machine's limits, measured, and a model's cost per token, so that prefill and
//! decode speeds can be stated as fractions of what the hardware allows (`umi bench
//! roofline`):
//!
//! - **compute**: multiply-adds per second with the instructions the prefill kernels use
//!   (`gemm.rs`): AVX-512 `vfmadd231ps` on f32, and AVX512-BF16 `vdpbf16ps` on bf16 pairs,
//!   on every core at once, from registers (no memory traffic);
//! - **memory**: bytes per second read from a buffer far larger than the last-level cache
//!   on every core (STREAM's read-only variant: decode reads weights and keys/values, and
//!   writes next to nothing), and the same from a buffer the size of the model's weights
//!   (which may stay in a large last-level cache).
//!
//! `unsafe`, and why: the peak is a property of specific instructions, which only their
//! intrinsics reach (each enabled by its target feature and called only after
//! detection); the bandwidth loop reads a slice through safe code.

use std::time::{Duration, Instant};

/// Compute and memory peaks of this machine, every core at once.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Peaks {
    pub threads: usize,
    /// f32 multiply-adds with AVX-512 (or AVX2 FMA without it), GFLOP/s.
    pub f32_gflops: f64,
    /// `vdpbf16ps`, GFLOP/s (two per bf16 pair); None without AVX512-BF16.
    pub bf16_gflops: Option<f64>,
    /// Reading a buffer of `dram_bytes` (larger than any cache), GB/s.
    pub dram_gbs: f64,
    pub dram_bytes: usize,
}

/// Runs `work` on `threads` threads for about `time`, each counting its units; returns
/// units per second over all threads (the best of three tries, as STREAM reports).
fn rate(threads: usize, time: Duration, work: impl Fn() -> f64 + Sync) -> f64 {
    let mut best: f64 = 0.0;
    for _ in 0..3 {
        let start = Instant::now();
        let done: f64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut units = 0.0;
                        while start.elapsed() < time {
                            units += work();
                        }
                        units
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
        });
        best = best.max(done / start.elapsed().as_secs_f64());
    }
    best
}

/// Independent accumulators per loop: enough to cover the FMA latency on two ports.
const ACCUMULATORS: usize = 12;
/// Multiply-adds per accumulator per call of a compute loop.
const ITERATIONS: usize = 100_000;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{ACCUMULATORS, ITERATIONS};

    /// FLOPs of one call: `ITERATIONS` x `ACCUMULATORS` FMAs of 16 lanes, 2 FLOPs each.
    ///
    /// # Safety
    /// AVX-512F must be present.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma512() -> f64 {
        let mut acc = [_mm512_set1_ps(1.0); ACCUMULATORS];
        let a = _mm512_set1_ps(0.999_999);
        let b = _mm512_set1_ps(1e-7);
        for _ in 0..ITERATIONS {
            for v in acc.iter_mut() {
                *v = _mm512_fmadd_ps(*v, a, b);
            }
        }
        let sum = acc
            .iter()
            .fold(_mm512_setzero_ps(), |s, v| _mm512_add_ps(s, *v));
        std::hint::black_box(_mm512_reduce_add_ps(sum));
        (ITERATIONS * ACCUMULATORS * 16 * 2) as f64
    }

    /// The same with 8-lane AVX2 FMA.
    ///
    /// # Safety
    /// AVX2 and FMA must be present.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma256() -> f64 {
        let mut acc = [_mm256_set1_ps(1.0); ACCUMULATORS];
        let a = _mm256_set1_ps(0.999_999);
        let b = _mm256_set1_ps(1e-7);
        for _ in 0..ITERATIONS {
            for v in acc.iter_mut() {
                *v = _mm256_fmadd_ps(*v, a, b);
            }
        }
        let mut lanes = [0f32; 8];
        let sum = acc
            .iter()
            .fold(_mm256_setzero_ps(), |s, v| _mm256_add_ps(s, *v));
        _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
        std::hint::black_box(lanes);
        (ITERATIONS * ACCUMULATORS * 8 * 2) as f64
    }

    /// FLOPs of one call: `vdpbf16ps` adds 32 bf16 products into 16 f32 lanes (64 FLOPs).
    ///
    /// # Safety
    /// AVX-512F, AVX-512BW and AVX512-BF16 must be present.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub unsafe fn dpbf16() -> f64 {
        let mut acc = [_mm512_setzero_ps(); ACCUMULATORS];
        let a: __m512bh = std::mem::transmute(_mm512_set1_epi16(0x3f80)); // 1.0
        let b: __m512bh = std::mem::transmute(_mm512_set1_epi16(0x3380)); // ~6e-8
        for _ in 0..ITERATIONS {
            for v in acc.iter_mut() {
                *v = _mm512_dpbf16_ps(*v, a, b);
            }
        }
        let sum = acc
            .iter()
            .fold(_mm512_setzero_ps(), |s, v| _mm512_add_ps(s, *v));
        std::hint::black_box(_mm512_reduce_add_ps(sum));
        (ITERATIONS * ACCUMULATORS * 32 * 2) as f64
    }
}

/// Bytes read per second from `bytes` of memory split over `threads` threads, each
/// summing its own part (so the sum cannot be skipped).
pub fn read_bandwidth(threads: usize, bytes: usize, time: Duration) -> f64 {
    let floats = (bytes / 4).max(threads * 16);
    let buffer: Vec<f32> = (0..floats).map(|i| (i % 7) as f32).collect();
    let chunk = floats.div_ceil(threads);
    let parts: Vec<&[f32]> = buffer.chunks(chunk).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    rate(threads, time, || {
        let part = parts[next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % parts.len()];
        // 16 independent sums: the compiler vectorizes the loop and nothing waits on one
        // add chain.
        let mut sums = [0f32; 16];
        for block in part.chunks_exact(16) {
            for (s, x) in sums.iter_mut().zip(block) {
                *s += x;
            }
        }
        std::hint::black_box(sums);
        (part.len() * 4) as f64
    }) / 1e9
}

/// Measures this machine's peaks on `threads` threads (about `time` per figure, three
/// tries each); the memory figure reads `dram_bytes`.
pub fn measure(threads: usize, time: Duration, dram_bytes: usize) -> Peaks {
    let threads = threads.max(1);
    #[cfg(target_arch = "x86_64")]
    let (f32_gflops, bf16_gflops) = {
        let f32_rate = if is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F was detected.
            rate(threads, time, || unsafe { x86::fma512() })
        } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: AVX2 and FMA were detected.
            rate(threads, time, || unsafe { x86::fma256() })
        } else {
            0.0
        };
        let bf16 = (is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512bf16"))
        .then(|| {
            // SAFETY: the three features were detected.
            rate(threads, time, || unsafe { x86::dpbf16() }) / 1e9
        });
        (f32_rate / 1e9, bf16)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let (f32_gflops, bf16_gflops) = (0.0, None);
    Peaks {
        threads,
        f32_gflops,
        bf16_gflops,
        dram_gbs: read_bandwidth(threads, dram_bytes, time),
        dram_bytes,
    }
}

/// What one token costs a model: the FLOPs of prefill and the bytes decode reads.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Costs {
    /// Parameters of the per-layer matrices (attention and MLP), all layers.
    pub layer_params: usize,
    /// Their bytes as stored (quantized blocks included).
    pub layer_bytes: usize,
    pub lm_head_params: usize,
    pub lm_head_bytes: usize,
    pub layers: usize,
    pub hidden: usize,
    /// Width of the keys (and of the values) per layer: heads of keys x head size.
    pub kv_width: usize,
    /// Bytes of one cached key or value element (the activations' dtype).
    pub kv_element_bytes: usize,
}

impl Costs {
    /// FLOPs of a prefill of `tokens` from scratch: two per multiply-add of every
    /// layer matrix per token, the causal attention's scores and weighted sums (each
    /// query against itself and the tokens before it), and the output head for the
    /// last token only.
    pub fn prefill_flops(&self, tokens: usize) -> f64 {
        let t = tokens as f64;
        let linear = 2.0 * self.layer_params as f64 * t;
        let pairs = t * (t + 1.0) / 2.0;
        let attention = self.layers as f64 * 4.0 * self.hidden as f64 * pairs;
        linear + attention + 2.0 * self.lm_head_params as f64
    }

    /// Bytes one decode step of one sequence reads at `context` tokens: every weight
    /// once (the layer matrices and the output head) and the cached keys and values.
    pub fn decode_bytes(&self, context: usize) -> f64 {
        let kv = 2 * self.layers * context * self.kv_width * self.kv_element_bytes;
        (self.layer_bytes + self.lm_head_bytes + kv) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_follow_the_shapes() {
        let c = Costs {
            layer_params: 1000,
            layer_bytes: 4000,
            lm_head_params: 100,
            lm_head_bytes: 400,
            layers: 2,
            hidden: 10,
            kv_width: 5,
            kv_element_bytes: 4,
        };
        // 2·1000·3 + 2 layers · 4 · 10 · (3·4/2) + 2·100
        assert_eq!(c.prefill_flops(3), 6000.0 + 480.0 + 200.0);
        // weights, plus keys and values: 2 · 2 layers · 8 tokens · 5 · 4 bytes
        assert_eq!(c.decode_bytes(8), 4400.0 + 640.0);
    }

    #[test]
    fn the_peaks_are_positive_and_the_bandwidth_reads_what_it_says() {
        let p = measure(1, Duration::from_millis(20), 8 << 20);
        assert!(p.f32_gflops > 0.0 && p.dram_gbs > 0.0, "{p:?}");
        assert!(p.bf16_gflops.is_none_or(|g| g > 0.0));
    }
}
