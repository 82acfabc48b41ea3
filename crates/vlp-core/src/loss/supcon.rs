//! Supervised contrastive loss (Khosla et al., 2020, "Supervised Contrastive Learning", eq. 2,
//! `L^sup_out`) and the softmax KL divergence used for logit distillation.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor};

use super::logsumexp;

/// For every anchor `i` that has a positive, `−1/|P(i)| Σ_{p ∈ P(i)} log(exp(zᵢ·z_p/τ) /
/// Σ_{a ≠ i} exp(zᵢ·z_a/τ))`, averaged over those anchors; `P(i)` are the other rows with `i`'s
/// label. Anchors without a positive are left out (the reference code would divide by zero);
/// when no anchor has one the loss is 0.
///
/// # Shapes
/// - `features`: `[n, d]`, normally L2-normalised; `labels`: `[n]`
/// - returns: `[1]`
pub fn supervised_contrastive_loss<B: Backend>(
    features: Tensor<B, 2>,
    labels: Tensor<B, 1, Int>,
    temperature: f64,
) -> Tensor<B, 1> {
    let [n, _] = features.dims();
    let device = features.device();
    let sim = features.clone().matmul(features.transpose()) / temperature;
    let eye: Tensor<B, 2, Bool> = Tensor::<B, 2, Int>::eye(n, &device).equal_elem(1);
    // Self-similarity leaves the denominator: −∞ on the diagonal.
    let logits = sim.mask_fill(eye.clone(), f32::NEG_INFINITY);
    let log_prob = logits.clone() - logsumexp(logits, 1);
    let same = labels.clone().reshape([n, 1]).equal(labels.reshape([1, n]));
    let positive = same.bool_and(eye.bool_not()).float();
    let count = positive.clone().sum_dim(1); // [n, 1]
    // 0 · (−∞) on the diagonal would be NaN: the diagonal's log-probabilities become 0 first.
    let log_prob = log_prob.mask_fill(Tensor::<B, 2, Int>::eye(n, &device).equal_elem(1), 0.0);
    let per_anchor = (positive * log_prob).sum_dim(1).neg() / count.clone().clamp_min(1.0);
    let has = count.greater_elem(0.0).float();
    let anchors = has.clone().sum();
    (per_anchor * has).sum() / anchors.clamp_min(1.0)
}

/// `KL(softmax(teacher) ‖ softmax(student))`, averaged over rows (PyTorch's
/// `F.kl_div(log_softmax(student), softmax(teacher), reduction="batchmean")`).
///
/// # Shapes
/// - `teacher`, `student`: `[n, classes]`; returns `[1]`
pub fn softmax_kl_divergence<B: Backend>(
    teacher: Tensor<B, 2>,
    student: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let n = teacher.dims()[0];
    let log_p = log_softmax(teacher, 1);
    let log_q = log_softmax(student, 1);
    (log_p.clone().exp() * (log_p - log_q)).sum() / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{DefaultBackend as B, default_device};
    use burn::tensor::TensorData;

    /// Eq. 2 of the paper written as loops, in f64.
    fn brute_force(z: &[Vec<f64>], y: &[usize], t: f64) -> f64 {
        let n = z.len();
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>() / t;
        let (mut total, mut anchors) = (0.0, 0);
        for i in 0..n {
            let pos: Vec<usize> = (0..n).filter(|&p| p != i && y[p] == y[i]).collect();
            if pos.is_empty() {
                continue;
            }
            let denom: f64 = (0..n)
                .filter(|&a| a != i)
                .map(|a| dot(&z[i], &z[a]).exp())
                .sum();
            let s: f64 = pos
                .iter()
                .map(|&p| (dot(&z[i], &z[p]).exp() / denom).ln())
                .sum();
            total += -s / pos.len() as f64;
            anchors += 1;
        }
        if anchors == 0 {
            0.0
        } else {
            total / anchors as f64
        }
    }

    fn features(n: usize, d: usize) -> Vec<Vec<f64>> {
        (0..n)
            .map(|i| {
                let v: Vec<f64> = (0..d)
                    .map(|j| (((i * 7 + j * 3) % 11) as f64 - 5.0) * 0.3 + (i as f64 * 0.1))
                    .collect();
                let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
                v.into_iter().map(|x| x / norm).collect()
            })
            .collect()
    }

    fn run(z: &[Vec<f64>], y: &[usize], t: f64) -> f64 {
        let dev = default_device();
        let (n, d) = (z.len(), z[0].len());
        let flat: Vec<f32> = z.iter().flatten().map(|v| *v as f32).collect();
        let x = Tensor::<B, 2>::from_data(TensorData::new(flat, [n, d]), &dev);
        let l = Tensor::<B, 1, Int>::from_data(
            TensorData::new(y.iter().map(|&v| v as i64).collect::<Vec<_>>(), [n]),
            &dev,
        );
        let v: f32 = supervised_contrastive_loss(x, l, t).into_scalar();
        v as f64
    }

    #[test]
    fn supcon_equals_the_loop_with_repeated_and_single_labels() {
        let z = features(7, 5);
        // Class 3 and class 9 have one member each: they are no anchors, only negatives.
        for (y, t) in [
            (vec![0usize, 1, 0, 3, 1, 1, 9], 0.07),
            (vec![2, 2, 2, 2, 2, 2, 2], 0.5),
            (vec![0, 1, 0, 1, 0, 1, 4], 1.0),
        ] {
            let got = run(&z, &y, t);
            let want = brute_force(&z, &y, t);
            assert!(
                (got - want).abs() < 1e-4 * want.abs().max(1.0),
                "labels {y:?}, τ {t}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn supcon_without_any_positive_is_zero() {
        let z = features(4, 3);
        assert_eq!(run(&z, &[0, 1, 2, 3], 0.1), 0.0);
    }

    #[test]
    fn kl_matches_the_sum_and_vanishes_on_equal_logits() {
        let dev = default_device();
        let p = [[1.0f64, 0.0, -1.0], [0.5, 2.0, 0.0]];
        let q = [[0.0f64, 0.3, 0.1], [1.0, -1.0, 0.5]];
        let softmax = |r: &[f64; 3]| {
            let s: f64 = r.iter().map(|v| v.exp()).sum();
            r.map(|v| v.exp() / s)
        };
        let want: f64 = p
            .iter()
            .zip(&q)
            .map(|(a, b)| {
                let (pa, qb) = (softmax(a), softmax(b));
                (0..3).map(|c| pa[c] * (pa[c] / qb[c]).ln()).sum::<f64>()
            })
            .sum::<f64>()
            / 2.0;
        let t = |m: &[[f64; 3]; 2]| {
            let flat: Vec<f32> = m.iter().flatten().map(|v| *v as f32).collect();
            Tensor::<B, 2>::from_data(TensorData::new(flat, [2, 3]), &dev)
        };
        let got: f32 = softmax_kl_divergence(t(&p), t(&q)).into_scalar();
        assert!((got as f64 - want).abs() < 1e-5, "{got} vs {want}");
        let same: f32 = softmax_kl_divergence(t(&p), t(&p)).into_scalar();
        assert!(same.abs() < 1e-6);
    }
}
