//! Layer normalisation with PyTorch's parameter names (`weight`, `bias`).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Tensor, backend::Backend};

/// Configuration of a [`LayerNorm`].
#[derive(Config, Debug)]
pub struct LayerNormConfig {
    /// Size of the normalised (last) dimension.
    pub d_model: usize,
    /// Added to the variance before the square root (HF `layer_norm_eps`: 1e-5 for CLIP, 1e-6 for SigLIP).
    #[config(default = 1e-5)]
    pub eps: f64,
}

/// Layer normalisation over the last dimension.
///
/// Burn's own `LayerNorm` names its parameters `gamma`/`beta`; this one uses `weight`/`bias` so
/// that PyTorch checkpoints load without renaming.
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    /// Scale, `[d_model]`, initialised to one.
    pub weight: Param<Tensor<B, 1>>,
    /// Shift, `[d_model]`, initialised to zero.
    pub bias: Param<Tensor<B, 1>>,
    /// Variance epsilon.
    pub eps: f64,
}

impl LayerNormConfig {
    /// Creates the layer on `device`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> LayerNorm<B> {
        LayerNorm {
            weight: Initializer::Ones.init([self.d_model], device),
            bias: Initializer::Zeros.init([self.d_model], device),
            eps: self.eps,
        }
    }
}

impl<B: Backend> LayerNorm<B> {
    /// Normalises `x` over its last dimension.
    ///
    /// # Shapes
    /// - `x`: `[..., d_model]`
    /// - returns: same shape as `x`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        // Burn's backend op (CubeCL backends fuse it, Flex has a single-pass kernel), with
        // `vlp-kernels`' closed-form backward on `Autodiff<Flex>` instead of the recorded
        // composition.
        vlp_kernels::layer_norm(x, self.weight.val(), Some(self.bias.val()), self.eps)
    }
}

#[cfg(test)]
mod tests {
    crate::backend_tests! {
    use super::super::*;
    use burn::tensor::{Distribution, Tolerance};

    /// Straight loops over a row-major `[rows, d]` buffer.
    fn naive(x: &[f32], d: usize, w: &[f32], b: &[f32], eps: f64) -> Vec<f32> {
        x.chunks(d)
            .flat_map(|row| {
                let mean = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
                let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
                row.iter()
                    .enumerate()
                    .map(move |(i, &v)| {
                        ((v as f64 - mean) / (var + eps).sqrt() * w[i] as f64 + b[i] as f64) as f32
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn matches_naive_layer_norm() {
        let dev = default_device();
        for eps in [1e-5, 1e-6, 0.5] {
            let mut ln = LayerNormConfig::new(7).with_eps(eps).init::<B>(&dev);
            ln.weight =
                Param::from_tensor(Tensor::random([7], Distribution::Normal(1.0, 0.3), &dev));
            ln.bias = Param::from_tensor(Tensor::random([7], Distribution::Normal(0.0, 0.3), &dev));
            let x = Tensor::<B, 3>::random([2, 3, 7], Distribution::Normal(2.0, 3.0), &dev);
            let got = ln.forward(x.clone()).into_data();
            let want = naive(
                &x.into_data().to_vec::<f32>().unwrap(),
                7,
                &ln.weight.val().into_data().to_vec::<f32>().unwrap(),
                &ln.bias.val().into_data().to_vec::<f32>().unwrap(),
                eps,
            );
            got.assert_approx_eq::<f32>(
                &burn::tensor::TensorData::new(want, [2, 3, 7]),
                Tolerance::absolute(1e-5),
            );
        }
    }

    #[test]
    fn gradients_reach_weight_and_bias() {
        let dev = default_device();
        let ln = LayerNormConfig::new(4).init::<TrainBackend>(&dev);
        let x = Tensor::<TrainBackend, 2>::random([3, 4], Distribution::Normal(0.0, 1.0), &dev);
        let grads = (ln.forward(x) * 2.0).sum().backward();
        // d(sum(2 * y))/d(bias) = 2 per row, 3 rows.
        let gb: Vec<f32> = ln.bias.grad(&grads).unwrap().into_data().to_vec().unwrap();
        assert!(gb.iter().all(|g| (g - 6.0).abs() < 1e-5), "{gb:?}");
        assert!(ln.weight.grad(&grads).is_some());
    }
    }
}
