//! Decode products on x86-64 CPUs with AVX-512: a few input rows (one per sequence of a
//! decode batch) times dense weights as stored (f32, f16, bf16).
//!
//! The portable path (`linear.rs`, AVX2) takes one input at a time and widens each
//! 16-bit weight again for every input; at a decode batch of 4 those products were 29%
//! of a static evaluation. Here each block of sixteen weights is loaded and widened once
//! and multiplied into every input's accumulator (up to eight inputs per pass over the
//! row). Each output is a fixed-order dot product: sixteen lanes accumulated by fused
//! multiply-adds along the row, then one fixed reduction, so an input's bits do not
//! depend on the inputs beside it. `unsafe`: intrinsics, called only after detection
//! (`gemm::kernel`), and loads inside slices whose lengths are checked at entry.

use std::arch::x86_64::*;

use rayon::prelude::*;

use crate::cpu_attention::Elem;
use crate::linear::Weights;

/// Inputs multiplied into one pass over a weight row (their accumulators stay in
/// registers).
const INPUTS_PER_PASS: usize = 8;
/// Weight rows per parallel task.
const ROWS_PER_TASK: usize = 64;

/// `inputs[j] · row r` for every row of `w` (rows x cols, row-major), laid out row by row:
/// entry `r * inputs.len() + j`. None where this kernel does not apply (no AVX-512, a
/// quantized format, lengths that disagree).
pub fn rows(w: Weights<'_>, rows: usize, cols: usize, inputs: &[&[f32]]) -> Option<Vec<f32>> {
    if crate::gemm::kernel() == crate::gemm::Kernel::None
        || cols == 0
        || inputs.is_empty()
        || inputs.iter().any(|x| x.len() != cols)
    {
        return None;
    }
    let n = inputs.len();
    let mut out = vec![0f32; rows * n];
    let fits = |len: usize| len == rows * cols;
    let body = |(task, chunk): (usize, &mut [f32])| {
        let first = task * ROWS_PER_TASK;
        for (i, o) in chunk.chunks_exact_mut(n).enumerate() {
            let r = first + i;
            // SAFETY: AVX-512F detected above; each weight slice holds rows * cols
            // elements (checked below) and every input cols.
            unsafe {
                match w {
                    Weights::F32(d) => row_dots(&d[r * cols..(r + 1) * cols], inputs, o),
                    Weights::F16(d) => row_dots(&d[r * cols..(r + 1) * cols], inputs, o),
                    Weights::Bf16(d) => row_dots(&d[r * cols..(r + 1) * cols], inputs, o),
                    Weights::Q8_0(_) | Weights::Q4_1(_) => unreachable!("refused below"),
                }
            }
        }
    };
    let ok = match w {
        Weights::F32(d) => fits(d.len()),
        Weights::F16(d) => fits(d.len()),
        Weights::Bf16(d) => fits(d.len()),
        Weights::Q8_0(_) | Weights::Q4_1(_) => false,
    };
    if !ok {
        return None;
    }
    out.par_chunks_mut(ROWS_PER_TASK * n)
        .enumerate()
        .for_each(body);
    Some(out)
}

/// One weight row times every input: `out[j] = row · inputs[j]`.
#[target_feature(enable = "avx512f")]
unsafe fn row_dots<E: Elem>(row: &[E], inputs: &[&[f32]], out: &mut [f32]) {
    let cols = row.len();
    let full = cols / 16 * 16;
    let tail = cols - full;
    for (group, outs) in inputs
        .chunks(INPUTS_PER_PASS)
        .zip(out.chunks_mut(INPUTS_PER_PASS))
    {
        let mut acc = [_mm512_setzero_ps(); INPUTS_PER_PASS];
        let mut c = 0;
        while c < full {
            let w = E::load16(row.as_ptr().add(c));
            for (a, x) in acc.iter_mut().zip(group) {
                *a = _mm512_fmadd_ps(_mm512_loadu_ps(x.as_ptr().add(c)), w, *a);
            }
            c += 16;
        }
        if tail > 0 {
            // The last partial block, widened from a zero-padded copy.
            let mut w = [0f32; 16];
            for (d, s) in w.iter_mut().zip(&row[full..]) {
                *d = s.widen();
            }
            let w = _mm512_loadu_ps(w.as_ptr());
            let mask: __mmask16 = ((1u32 << tail) - 1) as u16;
            for (a, x) in acc.iter_mut().zip(group) {
                let xv = _mm512_maskz_loadu_ps(mask, x.as_ptr().add(full));
                *a = _mm512_fmadd_ps(xv, w, *a);
            }
        }
        for (o, a) in outs.iter_mut().zip(&acc) {
            *o = _mm512_reduce_add_ps(*a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    fn exact(row: &[f32], x: &[f32]) -> f64 {
        row.iter().zip(x).map(|(&a, &b)| a as f64 * b as f64).sum()
    }

    #[test]
    fn products_match_exact_ones_and_an_input_gets_the_same_bits_alone() {
        if crate::gemm::kernel() == crate::gemm::Kernel::None {
            eprintln!("no AVX-512 here: the portable path is used instead");
            return;
        }
        let (rows, cols) = (37, 200); // a partial block at the end of each row
        let value = |i: usize, salt: usize| (((i * 7919 + salt * 31) % 97) as f32 - 48.0) / 61.0;
        let w32: Vec<f32> = (0..rows * cols).map(|i| value(i, 1)).collect();
        let wb: Vec<bf16> = w32.iter().map(|&v| bf16::from_f32(v)).collect();
        let wh: Vec<f16> = w32.iter().map(|&v| f16::from_f32(v)).collect();
        let xs: Vec<Vec<f32>> = (0..11)
            .map(|j| (0..cols).map(|i| value(i, 10 + j)).collect())
            .collect();
        let inputs: Vec<&[f32]> = xs.iter().map(|x| x.as_slice()).collect();
        for (name, w, widened) in [
            ("f32", Weights::F32(&w32), w32.clone()),
            (
                "bf16",
                Weights::Bf16(&wb),
                wb.iter().map(|v| v.to_f32()).collect(),
            ),
            (
                "f16",
                Weights::F16(&wh),
                wh.iter().map(|v| v.to_f32()).collect::<Vec<_>>(),
            ),
        ] {
            let all = rows_of(w, rows, cols, &inputs);
            for r in 0..rows {
                for (j, x) in xs.iter().enumerate() {
                    let got = all[r * inputs.len() + j] as f64;
                    let want = exact(&widened[r * cols..(r + 1) * cols], x);
                    assert!(
                        (got - want).abs() < 1e-4,
                        "{name} row {r} input {j}: {got} vs {want}"
                    );
                }
            }
            // Each input alone: the same bits as among eleven.
            for (j, x) in inputs.iter().enumerate() {
                let alone = rows_of(w, rows, cols, &[x]);
                for r in 0..rows {
                    assert_eq!(
                        alone[r].to_bits(),
                        all[r * inputs.len() + j].to_bits(),
                        "{name}"
                    );
                }
            }
        }
        assert!(rows_of_opt(Weights::Q8_0(&[]), 1, 32, &inputs[..1]).is_none());
    }

    fn rows_of(w: Weights<'_>, r: usize, c: usize, x: &[&[f32]]) -> Vec<f32> {
        rows(w, r, c, x).expect("the kernel applies")
    }

    fn rows_of_opt(w: Weights<'_>, r: usize, c: usize, x: &[&[f32]]) -> Option<Vec<f32>> {
        rows(w, r, c, x)
    }
}
