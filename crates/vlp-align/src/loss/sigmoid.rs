//! SigLIP's pairwise sigmoid loss (Zhai et al., 2023; open_clip's `SigLipLoss`).

use burn::tensor::activation::log_sigmoid;
use burn::tensor::{Tensor, backend::Backend};

/// `-Σ log σ(zᵢⱼ · (t · xᵢ·yⱼ + b)) / n` with `zᵢⱼ = +1` on the diagonal, `-1` elsewhere.
///
/// # Shapes
/// - `image`, `text`: `[n, d]`, L2-normalised, row `i` of each forming the positive pair
/// - `logit_scale`: `[1]`, log of the scale `t`; `logit_bias`: `[1]`, the bias `b`
/// - returns: `[1]`
pub fn siglip_loss<B: Backend>(
    image: Tensor<B, 2>,
    text: Tensor<B, 2>,
    logit_scale: Tensor<B, 1>,
    logit_bias: Tensor<B, 1>,
) -> Tensor<B, 1> {
    let n = image.dims()[0];
    let device = image.device();
    let logits = image.matmul(text.transpose()) * logit_scale.exp().unsqueeze::<2>()
        + logit_bias.unsqueeze::<2>();
    // +1 on the diagonal, -1 off it.
    let labels = Tensor::<B, 2>::eye(n, &device) * 2.0 - 1.0;
    log_sigmoid(logits * labels).sum().neg() / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};
    use vlp_core::backend::{DefaultBackend as B, TrainBackend as A, default_device};

    fn log_sig(x: f64) -> f64 {
        -(1.0 + (-x).exp()).ln()
    }

    #[test]
    fn matches_a_hand_computation() {
        let dev = default_device();
        let img = Tensor::<B, 2>::from_floats([[1.0, 0.0], [0.0, 1.0]], &dev);
        let txt = Tensor::<B, 2>::from_floats([[1.0, 0.0], [0.8, 0.6]], &dev);
        let (t, b) = (10f64, -10f64);
        let s = [[1.0, 0.8], [0.0, 0.6]];
        let mut total = 0.0;
        for (i, row) in s.iter().enumerate() {
            for (j, sim) in row.iter().enumerate() {
                let z = if i == j { 1.0 } else { -1.0 };
                total += log_sig(z * (t * sim + b));
            }
        }
        let want = -total / 2.0;
        let got: f32 = siglip_loss(
            img,
            txt,
            Tensor::from_floats([t.ln() as f32], &dev),
            Tensor::from_floats([b as f32], &dev),
        )
        .into_scalar();
        assert!((got as f64 - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let dev = default_device();
        let x = Tensor::<B, 2>::random([3, 4], Distribution::Normal(0.0, 0.5), &dev)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let y = Tensor::<B, 2>::random([3, 4], Distribution::Normal(0.0, 0.5), &dev)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let f = |x: &[f32], s: f32, b: f32| -> f64 {
            let img = Tensor::<B, 2>::from_data(TensorData::new(x.to_vec(), [3, 4]), &dev);
            let txt = Tensor::<B, 2>::from_data(TensorData::new(y.clone(), [3, 4]), &dev);
            siglip_loss(
                img,
                txt,
                Tensor::from_floats([s], &dev),
                Tensor::from_floats([b], &dev),
            )
            .into_scalar() as f64
        };
        let img =
            Tensor::<A, 2>::from_data(TensorData::new(x.clone(), [3, 4]), &dev).require_grad();
        let txt = Tensor::<A, 2>::from_data(TensorData::new(y.clone(), [3, 4]), &dev);
        let s = Tensor::<A, 1>::from_floats([1.0], &dev).require_grad();
        let b = Tensor::<A, 1>::from_floats([-2.0], &dev).require_grad();
        let grads = siglip_loss(img.clone(), txt, s.clone(), b.clone()).backward();
        let gi = img
            .grad(&grads)
            .unwrap()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let eps = 1e-2f32;
        for k in 0..12 {
            let (mut p, mut m) = (x.clone(), x.clone());
            p[k] += eps;
            m[k] -= eps;
            let fd = (f(&p, 1.0, -2.0) - f(&m, 1.0, -2.0)) / (2.0 * eps as f64);
            assert!(
                (fd - gi[k] as f64).abs() < 2e-3,
                "d/dimg[{k}]: {fd} vs {}",
                gi[k]
            );
        }
        let gs: f32 = s.grad(&grads).unwrap().into_scalar();
        let gb: f32 = b.grad(&grads).unwrap().into_scalar();
        let fds = (f(&x, 1.0 + eps, -2.0) - f(&x, 1.0 - eps, -2.0)) / (2.0 * eps as f64);
        let fdb = (f(&x, 1.0, -2.0 + eps) - f(&x, 1.0, -2.0 - eps)) / (2.0 * eps as f64);
        assert!((fds - gs as f64).abs() < 2e-3, "{fds} vs {gs}");
        assert!((fdb - gb as f64).abs() < 2e-3, "{fdb} vs {gb}");
    }
}
