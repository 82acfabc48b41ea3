//! Circle loss (Sun et al., 2020, "Circle Loss: A Unified Perspective of Pair Similarity
//! Optimization", eq. 4–6), in the pairwise form with several positives per row that DreamLIP
//! trains its image-to-many-texts objective with (`pairwise_circleloss` in its
//! `open_clip/loss.py`).

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor};

use super::{logsumexp, softplus};

/// Stands in for −∞ where a pair is not of the kind summed: finite, so a row without positives
/// (or negatives) gives a zero loss and no NaN gradient.
const OFF: f32 = -1.0e8;

/// Circle loss over a similarity matrix: for each row, `softplus(logsumexp_p(−γ·α_p·(s_p − Δ_p))
/// + logsumexp_n(γ·α_n·(s_n − Δ_n)))` with `α_p = [1 + m − s_p]₊`, `α_n = [s_n + m]₊` (held
/// constant in the gradient), `Δ_p = 1 − m`, `Δ_n = m`; the mean over rows.
///
/// # Shapes
/// - `sim`: `[rows, cols]` similarities (cosines, in [−1, 1])
/// - `positive`: `[rows, cols]`, `true` where column `j` is a positive of row `i` (every other
///   column is a negative)
/// - returns: `[1]`
pub fn circle_loss<B: Backend>(
    sim: Tensor<B, 2>,
    positive: Tensor<B, 2, Bool>,
    margin: f32,
    gamma: f32,
) -> Tensor<B, 1> {
    let negative = positive.clone().bool_not();
    let fixed = sim.clone().detach();
    let alpha_p = (fixed.clone().neg() + (1.0 + margin)).clamp_min(0.0);
    let alpha_n = (fixed + margin).clamp_min(0.0);
    let logit_p = (alpha_p * (sim.clone() - (1.0 - margin)) * (-gamma)).mask_fill(negative, OFF);
    let logit_n = (alpha_n * (sim - margin) * gamma).mask_fill(positive, OFF);
    let rows = logsumexp(logit_p, 1) + logsumexp(logit_n, 1);
    softplus(rows).mean()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{DefaultBackend as B, default_device};
    use burn::tensor::TensorData;

    /// The loss by a loop over rows, in f64.
    fn brute(sim: &[Vec<f64>], pos: &[Vec<bool>], m: f64, g: f64) -> f64 {
        let lse = |xs: &[f64]| {
            if xs.is_empty() {
                return f64::NEG_INFINITY;
            }
            let mx = xs.iter().cloned().fold(f64::MIN, f64::max);
            mx + xs.iter().map(|x| (x - mx).exp()).sum::<f64>().ln()
        };
        let mut total = 0.0;
        for (row, p) in sim.iter().zip(pos) {
            let (mut lp, mut ln) = (Vec::new(), Vec::new());
            for (&s, &is_p) in row.iter().zip(p) {
                if is_p {
                    lp.push(-g * (1.0 + m - s).max(0.0) * (s - (1.0 - m)));
                } else {
                    ln.push(g * (s + m).max(0.0) * (s - m));
                }
            }
            let z = lse(&lp) + lse(&ln);
            total += if z == f64::NEG_INFINITY {
                0.0
            } else {
                z.max(0.0) + (-z.abs()).exp().ln_1p()
            };
        }
        total / sim.len() as f64
    }

    fn check(sim: Vec<Vec<f64>>, pos: Vec<Vec<bool>>, m: f64, g: f64) {
        let dev = default_device();
        let (r, c) = (sim.len(), sim[0].len());
        let flat: Vec<f32> = sim.iter().flatten().map(|&x| x as f32).collect();
        let bits: Vec<bool> = pos.iter().flatten().copied().collect();
        let s = Tensor::<B, 2>::from_data(TensorData::new(flat, [r, c]), &dev);
        let p = Tensor::<B, 2, Bool>::from_data(TensorData::new(bits, [r, c]), &dev);
        let got: f32 = circle_loss(s, p, m as f32, g as f32).into_scalar();
        let want = brute(&sim, &pos, m, g);
        assert!(
            (got as f64 - want).abs() < 1e-4 * want.abs().max(1.0),
            "circle loss {got} vs loop {want}"
        );
    }

    #[test]
    fn equals_the_loop_with_several_positives_and_odd_sizes() {
        // 3 rows × 5 columns; row 0 has two positives, row 2 one; DreamLIP's γ = 32, m = 0.25.
        let sim = vec![
            vec![0.9, 0.7, -0.2, 0.1, 0.3],
            vec![0.2, 0.4, 0.8, -0.5, 0.0],
            vec![-0.1, 0.05, 0.3, 0.6, 0.95],
        ];
        let pos = vec![
            vec![true, true, false, false, false],
            vec![false, false, true, false, false],
            vec![false, false, false, false, true],
        ];
        check(sim.clone(), pos.clone(), 0.25, 32.0);
        check(sim, pos, 0.4, 2.0);
    }

    #[test]
    fn a_row_without_positives_contributes_nothing() {
        let sim = vec![vec![0.3, -0.4], vec![0.8, 0.1]];
        let pos = vec![vec![false, false], vec![true, false]];
        check(sim, pos, 0.25, 32.0);
    }

    #[test]
    fn separated_pairs_cost_less_than_confused_ones() {
        let dev = default_device();
        let p = Tensor::<B, 2, Bool>::from_data(
            TensorData::new(vec![true, false, false, true], [2, 2]),
            &dev,
        );
        let good = Tensor::<B, 2>::from_floats([[0.95, -0.3], [-0.2, 0.9]], &dev);
        let bad = Tensor::<B, 2>::from_floats([[0.1, 0.6], [0.5, 0.2]], &dev);
        let g: f32 = circle_loss(good, p.clone(), 0.25, 32.0).into_scalar();
        let b: f32 = circle_loss(bad, p, 0.25, 32.0).into_scalar();
        // By hand: 0.11 and 29.
        assert!(g < 0.2 && b > 20.0, "separated {g}, confused {b}");
    }
}
