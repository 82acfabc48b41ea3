//! The two-layer feed-forward block of a transformer.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Tensor, backend::Backend};

use super::activation::Activation;
use super::lora::{Lora, LoraConfig};

/// Configuration of an [`Mlp`].
#[derive(Config, Debug)]
pub struct MlpConfig {
    /// Input and output width (HF `hidden_size`).
    pub d_model: usize,
    /// Hidden width (HF `intermediate_size`; open_clip `width * mlp_ratio`).
    pub d_hidden: usize,
    /// Non-linearity between the two layers (HF `hidden_act`).
    #[config(default = "Activation::QuickGelu")]
    pub activation: Activation,
}

/// `fc2(act(fc1(x)))`, named as in Hugging Face checkpoints (open_clip: `c_fc`, `c_proj`).
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// Expansion layer, `d_model → d_hidden`.
    pub fc1: Linear<B>,
    /// Projection back, `d_hidden → d_model`.
    pub fc2: Linear<B>,
    /// Non-linearity.
    pub activation: Activation,
    /// LoRA updates of `fc1` and `fc2` ([`Mlp::add_lora`]); absent from every checkpoint layout.
    pub lora: Option<MlpLora<B>>,
}

/// The LoRA updates of an MLP's two layers.
#[derive(Module, Debug)]
pub struct MlpLora<B: Backend> {
    /// Update of `fc1`.
    pub fc1: Lora<B>,
    /// Update of `fc2`.
    pub fc2: Lora<B>,
}

impl MlpConfig {
    /// Creates the block on `device`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Mlp<B> {
        Mlp {
            fc1: LinearConfig::new(self.d_model, self.d_hidden).init(device),
            fc2: LinearConfig::new(self.d_hidden, self.d_model).init(device),
            activation: self.activation,
            lora: None,
        }
    }
}

/// `layer.forward(x)` through `vlp_kernels::linear` (OpenBLAS on the CPU backend with the
/// `openblas` feature; Burn's own linear otherwise).
pub(crate) fn linear<B: Backend>(layer: &Linear<B>, x: Tensor<B, 2>) -> Tensor<B, 2> {
    vlp_kernels::linear(x, layer.weight.val(), layer.bias.as_ref().map(|b| b.val()))
}

/// Applies a Burn `Linear` as one 2-D product over the flattened leading dimensions.
///
/// Burn 0.21's CubeCL backends (wgpu at least) multiply rank-3 inputs with a unit axis
/// (`[n, 1, d]`) wrongly in `Linear::forward`; the 2-D product is right on every backend and costs
/// nothing (the reshapes are views).
pub fn linear_2d<B: Backend, const D: usize>(layer: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    let dims = x.dims();
    let rows: usize = dims[..D - 1].iter().product();
    let y = linear(layer, x.reshape([rows, dims[D - 1]]));
    let mut out = dims;
    out[D - 1] = y.dims()[1];
    y.reshape(out)
}

impl<B: Backend> Mlp<B> {
    /// Applies the block.
    ///
    /// # Shapes
    /// - `x`: `[..., d_model]`
    /// - returns: `[..., d_model]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        // The whole block on the flattened `[rows, d_model]` view (see `linear_2d`).
        let dims = x.dims();
        let rows: usize = dims[..D - 1].iter().product();
        let x = x.reshape([rows, dims[D - 1]]);
        let Some(lora) = &self.lora else {
            let h = linear(&self.fc1, x);
            return linear(&self.fc2, self.activation.forward(h)).reshape(dims);
        };
        let h = self
            .activation
            .forward(linear(&self.fc1, x.clone()) + lora.fc1.forward(x));
        (linear(&self.fc2, h.clone()) + lora.fc2.forward(h)).reshape(dims)
    }

    /// Adds zero-initialised LoRA updates to both layers (replacing any present); PEFT's
    /// `target_modules="all-linear"` adapts them with the attention.
    pub fn add_lora(mut self, config: &LoraConfig, device: &B::Device) -> Self {
        let [d, h] = self.fc1.weight.lazy_shape().dims::<2>();
        self.lora = Some(MlpLora {
            fc1: config.init(d, h, device),
            fc2: config.init(h, d, device),
        });
        self
    }

    /// Folds `weight` times the updates into `fc1` and `fc2` and drops them (see
    /// [`crate::nn::Attention::merge_lora`]). No-op without adapters.
    pub fn merge_lora(mut self, weight: f64) -> Self {
        if let Some(lora) = self.lora.take() {
            let (d1, d2) = (
                lora.fc1.delta().detach() * weight,
                lora.fc2.delta().detach() * weight,
            );
            self.fc1.weight = self.fc1.weight.map(|w| w + d1);
            self.fc2.weight = self.fc2.weight.map(|w| w + d2);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    crate::backend_tests! {
    use super::super::*;
    use burn::tensor::Distribution;

    fn vec(t: Tensor<B, 2>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    /// `y = W2 act(W1 x + b1) + b2` with loops, weights in Burn's `[in, out]` layout.
    #[test]
    fn matches_naive_mlp_for_every_activation() {
        let dev = default_device();
        for act in [
            Activation::QuickGelu,
            Activation::Gelu,
            Activation::GeluTanh,
        ] {
            let mlp = MlpConfig::new(5, 9).with_activation(act).init::<B>(&dev);
            let x = Tensor::<B, 2>::random([3, 5], Distribution::Normal(0.0, 2.0), &dev);
            let got = vec(mlp.forward(x.clone()));
            let (w1, b1) = (
                vec(mlp.fc1.weight.val()),
                mlp.fc1.bias.as_ref().unwrap().val(),
            );
            let (w2, b2) = (
                vec(mlp.fc2.weight.val()),
                mlp.fc2.bias.as_ref().unwrap().val(),
            );
            let (b1, b2): (Vec<f32>, Vec<f32>) = (
                b1.into_data().to_vec().unwrap(),
                b2.into_data().to_vec().unwrap(),
            );
            let x = vec(x);
            for r in 0..3 {
                let hidden: Vec<f32> = (0..9)
                    .map(|j| {
                        let pre = b1[j] + (0..5).map(|i| x[r * 5 + i] * w1[i * 9 + j]).sum::<f32>();
                        let t = Tensor::<B, 1>::from_floats([pre], &dev);
                        act.forward(t).into_scalar()
                    })
                    .collect();
                for o in 0..5 {
                    let want = b2[o] + (0..9).map(|j| hidden[j] * w2[j * 5 + o]).sum::<f32>();
                    let g = got[r * 5 + o];
                    assert!(
                        (g - want).abs() < 1e-4,
                        "{act:?} row {r} out {o}: {g} vs {want}"
                    );
                }
            }
        }
    }
    }
}

#[cfg(test)]
mod unit_axis_tests {
    crate::backend_tests! {
    use super::super::*;
    use burn::tensor::{Distribution, Tolerance};

    /// The same rows through the MLP as `[n, 1, d]` and as `[n, d]` (SigLIP's pooling head
    /// runs on one token per image).
    #[test]
    fn unit_token_axis_changes_nothing() {
        let dev = default_device();
        for act in [
            Activation::QuickGelu,
            Activation::Gelu,
            Activation::GeluTanh,
        ] {
            let mlp = MlpConfig::new(64, 128).with_activation(act).init::<B>(&dev);
            let x = Tensor::<B, 2>::random([4, 64], Distribution::Normal(0.0, 1.0), &dev);
            let flat = mlp.forward(x.clone());
            let axis = mlp.forward(x.reshape([4, 1, 64])).reshape([4, 64]);
            axis.into_data()
                .assert_approx_eq::<f32>(&flat.into_data(), Tolerance::absolute(1e-5));
        }
    }
    }
}

#[cfg(test)]
mod linear_axis_tests {
    use super::*;
    crate::backend_tests! {
    use super::linear_2d;
    use burn::nn::LinearConfig;
    use burn::tensor::{Distribution, Tensor, Tolerance};

    /// Regression test for Burn 0.21 on wgpu, where `Linear::forward` on `[4, 1, 64]` got every
    /// row after the first wrong.
    #[test]
    fn linear_2d_handles_a_unit_axis() {
        let dev = default_device();
        let lin = LinearConfig::new(64, 128).init::<B>(&dev);
        let x = Tensor::<B, 2>::random([4, 64], Distribution::Normal(0.0, 1.0), &dev);
        let flat = lin.forward(x.clone());
        let axis = linear_2d(&lin, x.reshape([4, 1, 64])).reshape([4, 128]);
        axis.into_data()
            .assert_approx_eq::<f32>(&flat.into_data(), Tolerance::absolute(1e-5));
    }
    }
}

#[cfg(test)]
mod lora_tests {
    use super::*;
    use burn::module::Param;
    use burn::tensor::Distribution;

    use crate::backend::{DefaultBackend as B, default_device};
    use crate::nn::{num_trainable, train_only_lora};

    fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    /// `fc2(act(fc1(x) + x·A₁B₁s) ) + h·A₂B₂s` by loops, against the block; fresh adapters
    /// change nothing; merging with λ is the weight average and with 1 the adapted block.
    #[test]
    fn mlp_adapters_match_loops_start_unchanged_and_merge_exactly() {
        let dev = default_device();
        let (d, h, r) = (5usize, 7usize, 2usize);
        let cfg = LoraConfig::new().with_rank(r).with_alpha(3.0);
        let base = MlpConfig::new(d, h).init::<B>(&dev);
        let x = Tensor::<B, 2>::random([3, d], Distribution::Normal(0.0, 1.0), &dev);
        let plain = values(base.forward(x.clone()));
        let mut adapted = base.clone().add_lora(&cfg, &dev);
        assert_eq!(plain, values(adapted.forward(x.clone())));
        let lora = adapted.lora.as_mut().unwrap();
        lora.fc1.up =
            Param::from_tensor(Tensor::random([r, h], Distribution::Normal(0.0, 0.5), &dev));
        lora.fc2.up =
            Param::from_tensor(Tensor::random([r, d], Distribution::Normal(0.0, 0.5), &dev));
        let out = values(adapted.forward(x.clone()));

        let w = |t: Tensor<B, 2>| values(t);
        let lora = adapted.lora.as_ref().unwrap();
        let (d1, d2) = (w(lora.fc1.delta()), w(lora.fc2.delta()));
        let (w1, w2) = (w(base.fc1.weight.val()), w(base.fc2.weight.val()));
        let b1 = values(base.fc1.bias.as_ref().unwrap().val());
        let b2 = values(base.fc2.bias.as_ref().unwrap().val());
        let xs = values(x.clone());
        for row in 0..3 {
            let hidden: Vec<f32> = (0..h)
                .map(|j| {
                    let pre = b1[j]
                        + (0..d)
                            .map(|i| xs[row * d + i] * (w1[i * h + j] + d1[i * h + j]))
                            .sum::<f32>();
                    base.activation
                        .forward(Tensor::<B, 1>::from_floats([pre], &dev))
                        .into_scalar()
                })
                .collect();
            for o in 0..d {
                let want = b2[o]
                    + (0..h)
                        .map(|j| hidden[j] * (w2[j * d + o] + d2[j * d + o]))
                        .sum::<f32>();
                assert!((out[row * d + o] - want).abs() < 1e-4, "row {row} out {o}");
            }
        }
        assert!(out.iter().zip(&plain).any(|(a, b)| (a - b).abs() > 1e-3));

        let merged = adapted.clone().merge_lora(1.0);
        assert!(merged.lora.is_none());
        let back = values(merged.forward(x));
        assert!(out.iter().zip(&back).all(|(a, b)| (a - b).abs() < 1e-5));
        let quarter = adapted.clone().merge_lora(0.25);
        let (q1, m1) = (w(quarter.fc1.weight.val()), w(merged.fc1.weight.val()));
        for ((q, a), b) in q1.iter().zip(&w1).zip(&m1) {
            assert!((q - (0.75 * a + 0.25 * b)).abs() < 1e-6);
        }
    }

    #[test]
    fn only_the_mlp_adapters_train() {
        use crate::backend::TrainBackend as T;
        let dev = default_device();
        let (d, h, r) = (6usize, 10usize, 3usize);
        let cfg = LoraConfig::new().with_rank(r);
        let mlp = train_only_lora(MlpConfig::new(d, h).init::<T>(&dev).add_lora(&cfg, &dev));
        // r·(d_in + d_out) for each of the two layers.
        assert_eq!(num_trainable(&mlp), r * (d + h) + r * (h + d));
    }
}
