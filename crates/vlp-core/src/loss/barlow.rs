//! Barlow Twins' redundancy-reduction loss (Zbontar et al., 2021), as the improved CLIP recipe's
//! BarLIP applies it across modalities (`BarLIPLoss.barlip_loss` in
//! `facebookresearch/clip-rocket`, `losses.py`).

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// `scale · (Σ_i (C_ii − 1)² + λ Σ_{i≠j} C_ij²)` with the cross-correlation `C = z1ᵀ z2 / n`.
///
/// The features are used as given: the projectors end in batch normalisation, which is what
/// makes `C` a correlation (the code does not normalise inside the loss either).
///
/// # Shapes
/// - `z1`, `z2`: `[n, d]`, row `i` of each from the same sample
/// - returns: `[1]`
pub fn barlow_twins_loss<B: Backend>(
    z1: Tensor<B, 2>,
    z2: Tensor<B, 2>,
    lambda: f32,
    scale: f32,
) -> Tensor<B, 1> {
    let [n, d] = z1.dims();
    let corr = z1.transpose().matmul(z2) / n as f64;
    let eye = Tensor::<B, 2>::eye(d, &corr.device());
    let diff = (corr - eye.clone()).powi_scalar(2);
    // Off-diagonal entries weighted by λ, the diagonal by 1.
    let weights = eye.clone() * (1.0 - lambda as f64) + lambda as f64;
    (diff * weights).sum() * scale as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{DefaultBackend as B, default_device};
    use burn::tensor::TensorData;

    #[test]
    fn zero_for_an_identity_correlation() {
        let dev = default_device();
        // n = 4 samples, d = 4: z = 2·I gives zᵀz / 4 = I.
        let z = Tensor::<B, 2>::eye(4, &dev) * 2.0;
        let l: f32 = barlow_twins_loss(z.clone(), z, 5e-3, 0.025).into_scalar();
        assert!(l.abs() < 1e-7, "{l}");
    }

    #[test]
    fn matches_a_loop_at_odd_sizes() {
        let dev = default_device();
        let (n, d) = (5, 3);
        let a: Vec<f32> = (0..n * d)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 4.0)
            .collect();
        let b: Vec<f32> = (0..n * d)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let (lambda, scale) = (0.3f64, 0.5f64);
        let mut want = 0.0f64;
        for i in 0..d {
            for j in 0..d {
                let c: f64 = (0..n)
                    .map(|k| a[k * d + i] as f64 * b[k * d + j] as f64)
                    .sum::<f64>()
                    / n as f64;
                want += if i == j {
                    (c - 1.0).powi(2)
                } else {
                    lambda * c * c
                };
            }
        }
        want *= scale;
        let t = |v: Vec<f32>| Tensor::<B, 2>::from_data(TensorData::new(v, [n, d]), &dev);
        let got: f32 = barlow_twins_loss(t(a), t(b), lambda as f32, scale as f32).into_scalar();
        assert!(
            (got as f64 - want).abs() < 1e-5 * want.abs().max(1.0),
            "{got} vs {want}"
        );
    }
}
