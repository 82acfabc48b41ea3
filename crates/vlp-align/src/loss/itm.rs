//! Image–text matching with hard negatives (BLIP, Li et al., 2022, §3.2; official code
//! `salesforce/BLIP`, `models/blip_pretrain.py`, which PTP's pretraining inherits): every image
//! is paired with its own text and with one other text drawn by similarity, every text with one
//! other image likewise, and a binary head on the image-grounded text encoding says which pairs
//! match.
//!
//! The draw follows the code: weights `softmax(sim_row) + 1e-4` with the anchor's own entry set
//! to 0, one `torch.multinomial` sample per row. Here the uniform variate of each row is an input
//! (inverse CDF), so the caller can make the draws reproducible from the batch.

use burn::tensor::{Tensor, backend::Backend};

use super::cross_entropy_per_position;
use crate::error::{AlignError, Result};

/// BLIP's floor on the sampling weights (`F.softmax(sim, dim=1) + 1e-4`).
const WEIGHT_FLOOR: f64 = 1e-4;

/// For each row `i` of the `n × n` similarity logits (row-major; row `i` = anchor `i` against
/// the candidates), the candidate `j ≠ i` drawn with probability proportional to
/// `softmax(row)_j + 1e-4`, `draws[i] ∈ [0, 1)` the uniform variate of row `i`.
///
/// Errors when `logits` is not `n × n`, there are fewer draws than rows, a draw lies outside
/// `[0, 1)` or a logit is not finite, or `n < 2` (no other candidate exists).
pub fn hard_negatives(logits: &[f32], n: usize, draws: &[f32]) -> Result<Vec<usize>> {
    let fail = |reason: String| AlignError::Input {
        model: "image-text matching".into(),
        reason,
    };
    if n < 2 {
        return Err(fail(format!(
            "a batch of {n} has no negative pair (at least 2 samples are needed)"
        )));
    }
    if logits.len() != n * n || draws.len() != n {
        return Err(fail(format!(
            "{} similarities and {} draws for {n} samples (expected {} and {n})",
            logits.len(),
            draws.len(),
            n * n
        )));
    }
    if let Some(i) = draws.iter().position(|u| !(0.0..1.0).contains(u)) {
        return Err(fail(format!("draw {i} = {} is outside [0, 1)", draws[i])));
    }
    if let Some(k) = logits.iter().position(|v| !v.is_finite()) {
        return Err(fail(format!(
            "similarity ({}, {}) is {}",
            k / n,
            k % n,
            logits[k]
        )));
    }
    Ok(logits
        .chunks(n)
        .zip(draws)
        .enumerate()
        .map(|(i, (row, &u))| {
            let max = row
                .iter()
                .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
            let z: f64 = row.iter().map(|&v| (f64::from(v) - max).exp()).sum();
            let w: Vec<f64> = row
                .iter()
                .enumerate()
                .map(|(j, &v)| {
                    if j == i {
                        0.0
                    } else {
                        (f64::from(v) - max).exp() / z + WEIGHT_FLOOR
                    }
                })
                .collect();
            let target = f64::from(u) * w.iter().sum::<f64>();
            let mut acc = 0.0;
            // The last candidate other than `i` takes what rounding leaves past the sum.
            let last = if i == n - 1 { n - 2 } else { n - 1 };
            (0..n)
                .filter(|&j| j != i)
                .find(|&j| {
                    acc += w[j];
                    target < acc
                })
                .unwrap_or(last)
        })
        .collect())
}

/// BLIP's matching loss: cross-entropy of `logits` (`[3n, 2]`: the `n` matched pairs first,
/// then the `2n` pairs with a drawn negative) against label 1 for the first `n` rows and 0 for
/// the others, averaged over the rows.
///
/// # Shapes
/// - `logits`: `[3n, 2]`; returns `[1]`
///
/// # Panics
/// If the rows are not a multiple of 3 (the caller stacks them).
pub fn itm_loss<B: Backend>(logits: Tensor<B, 2>) -> Tensor<B, 1> {
    let [rows, classes] = logits.dims();
    assert_eq!(rows % 3, 0, "matched pairs, then two negatives each");
    let n = rows / 3;
    let labels: Vec<i64> = (0..rows).map(|r| i64::from(r < n)).collect();
    cross_entropy_per_position(logits.reshape([rows, 1, classes]), &labels).mean()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use vlp_core::backend::{DefaultBackend as B, default_device};

    /// BLIP's weights of row `i`, in f64, by a plain loop.
    fn weights(row: &[f32], i: usize) -> Vec<f64> {
        let e: Vec<f64> = row.iter().map(|&v| f64::from(v).exp()).collect();
        let z: f64 = e.iter().sum();
        e.iter()
            .enumerate()
            .map(|(j, x)| if j == i { 0.0 } else { x / z + 1e-4 })
            .collect()
    }

    #[test]
    fn draws_follow_blips_weights_and_never_pick_the_anchor() {
        // 5 × 5 (odd), one row with a clear favourite, one nearly uniform.
        let n = 5;
        let logits: Vec<f32> = (0..n * n)
            .map(|k| {
                let (i, j) = (k / n, k % n);
                if i == 1 && j == 3 {
                    6.0
                } else {
                    ((i * 7 + j * 3) % 5) as f32 * 0.3
                }
            })
            .collect();
        let grid = 2000;
        for i in 0..n {
            let w = weights(&logits[i * n..(i + 1) * n], i);
            let total: f64 = w.iter().sum();
            let mut counts = vec![0usize; n];
            for g in 0..grid {
                let mut draws = vec![0.5f32; n];
                draws[i] = (g as f32 + 0.5) / grid as f32;
                counts[hard_negatives(&logits, n, &draws).unwrap()[i]] += 1;
            }
            assert_eq!(counts[i], 0, "row {i} drew itself");
            for j in (0..n).filter(|&j| j != i) {
                let got = counts[j] as f64 / grid as f64;
                assert!(
                    (got - w[j] / total).abs() < 1.5 / grid as f64 + 1e-9,
                    "row {i} candidate {j}: drawn {got}, weight {}",
                    w[j] / total
                );
            }
        }
        // The favourite of row 1 takes almost every draw.
        let d = vec![0.3f32; n];
        assert_eq!(hard_negatives(&logits, n, &d).unwrap()[1], 3);
    }

    #[test]
    fn draws_at_the_edges_stay_in_range() {
        let logits = [0.0f32, 1.0, 2.0, 3.0];
        assert_eq!(hard_negatives(&logits, 2, &[0.0, 0.0]).unwrap(), vec![1, 0]);
        let top = 1.0 - f32::EPSILON;
        assert_eq!(hard_negatives(&logits, 2, &[top, top]).unwrap(), vec![1, 0]);
    }

    #[test]
    fn unusable_inputs_are_errors_naming_the_problem() {
        let e = |l: &[f32], n, d: &[f32]| hard_negatives(l, n, d).unwrap_err().to_string();
        assert!(e(&[0.0], 1, &[0.5]).contains("no negative pair"));
        assert!(e(&[0.0; 3], 2, &[0.5, 0.5]).contains("3 similarities"));
        assert!(e(&[0.0; 4], 2, &[0.5]).contains("1 draws"));
        assert!(e(&[0.0; 4], 2, &[0.5, 1.0]).contains("draw 1 = 1"));
        assert!(e(&[0.0, f32::NAN, 0.0, 0.0], 2, &[0.5, 0.5]).contains("similarity (0, 1)"));
    }

    #[test]
    fn matching_loss_is_cross_entropy_with_the_first_third_matched() {
        let dev = default_device();
        // n = 2: rows 0–1 matched (label 1), rows 2–5 not (label 0).
        let l: Vec<f32> = vec![0.0, 2.0, 1.0, -1.0, 0.5, 0.5, 3.0, 0.0, -2.0, 1.0, 0.0, 0.0];
        let logits = Tensor::<B, 2>::from_data(TensorData::new(l.clone(), [6, 2]), &dev);
        let got: f32 = itm_loss(logits).into_scalar();
        let want: f64 = l
            .chunks(2)
            .enumerate()
            .map(|(r, c)| {
                let (a, b) = (f64::from(c[0]), f64::from(c[1]));
                let lse = (a.exp() + b.exp()).ln();
                lse - if r < 2 { b } else { a }
            })
            .sum::<f64>()
            / 6.0;
        assert!((f64::from(got) - want).abs() < 1e-6, "{got} vs {want}");
    }
}
