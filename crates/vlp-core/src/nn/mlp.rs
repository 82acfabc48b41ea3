//! The two-layer feed-forward block of a transformer.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Tensor, backend::Backend};

use super::activation::Activation;

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
}

impl MlpConfig {
    /// Creates the block on `device`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Mlp<B> {
        Mlp {
            fc1: LinearConfig::new(self.d_model, self.d_hidden).init(device),
            fc2: LinearConfig::new(self.d_hidden, self.d_model).init(device),
            activation: self.activation,
        }
    }
}

impl<B: Backend> Mlp<B> {
    /// Applies the block.
    ///
    /// # Shapes
    /// - `x`: `[..., d_model]`
    /// - returns: `[..., d_model]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.fc2
            .forward(self.activation.forward(self.fc1.forward(x)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{DefaultBackend as B, default_device};
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
