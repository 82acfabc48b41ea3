//! The pre-norm transformer encoder shared by the CLIP and SigLIP towers.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};

use super::activation::Activation;
use super::attention::{Attention, AttentionConfig};
use super::mask::AttentionMask;
use super::mlp::{Mlp, MlpConfig};
use super::norm::{LayerNorm, LayerNormConfig};

/// Configuration of a [`TransformerEncoder`].
#[derive(Config, Debug)]
pub struct TransformerEncoderConfig {
    /// Residual width (HF `hidden_size`, open_clip `width`).
    pub d_model: usize,
    /// Number of blocks (HF `num_hidden_layers`, open_clip `layers`).
    pub n_layers: usize,
    /// Attention heads per block (HF `num_attention_heads`, open_clip `heads` or `width / head_width`).
    pub n_heads: usize,
    /// MLP hidden width (HF `intermediate_size`, open_clip `width * mlp_ratio`).
    pub d_hidden: usize,
    /// MLP non-linearity (HF `hidden_act`).
    #[config(default = "Activation::QuickGelu")]
    pub activation: Activation,
    /// LayerNorm epsilon (HF `layer_norm_eps`).
    #[config(default = 1e-5)]
    pub eps: f64,
    /// Fused q/k/v projection (open_clip layout) instead of separate ones (HF layout).
    #[config(default = false)]
    pub fused_qkv: bool,
    /// Dropout on attention probabilities while training.
    #[config(default = 0.0)]
    pub attention_dropout: f64,
}

/// One pre-norm block: `x + attn(ln1(x))`, then `x + mlp(ln2(x))`.
#[derive(Module, Debug)]
pub struct EncoderLayer<B: Backend> {
    /// Self-attention (open_clip: `attn`).
    pub self_attn: Attention<B>,
    /// Norm before attention (open_clip: `ln_1`).
    pub layer_norm1: LayerNorm<B>,
    /// Feed-forward block.
    pub mlp: Mlp<B>,
    /// Norm before the MLP (open_clip: `ln_2`).
    pub layer_norm2: LayerNorm<B>,
}

impl<B: Backend> EncoderLayer<B> {
    /// Applies the block.
    ///
    /// # Shapes
    /// - `x`: `[batch, tokens, d_model]`
    /// - returns: `[batch, tokens, d_model]`
    pub fn forward(&self, x: Tensor<B, 3>, mask: Option<&AttentionMask<B>>) -> Tensor<B, 3> {
        let x = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x), mask);
        x.clone() + self.mlp.forward(self.layer_norm2.forward(x))
    }
}

/// A stack of [`EncoderLayer`]s, named `encoder.layers.{i}` as in Hugging Face checkpoints.
///
/// The layers are public so that methods which act between blocks (deep prompts, token
/// merging, intermediate features) can run the stack themselves.
#[derive(Module, Debug)]
pub struct TransformerEncoder<B: Backend> {
    /// The blocks, first to last.
    pub layers: Vec<EncoderLayer<B>>,
}

/// Output of [`TransformerEncoder::forward`].
#[derive(Debug, Clone)]
pub struct EncoderOutput<B: Backend> {
    /// Output of the last block, `[batch, tokens, d_model]`.
    pub last_hidden_state: Tensor<B, 3>,
    /// When requested: the encoder input followed by every block's output (`n_layers + 1`
    /// tensors), as Hugging Face's `output_hidden_states` returns them.
    pub hidden_states: Option<Vec<Tensor<B, 3>>>,
}

impl TransformerEncoderConfig {
    /// Creates the encoder on `device`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> TransformerEncoder<B> {
        let layers = (0..self.n_layers)
            .map(|_| EncoderLayer {
                self_attn: AttentionConfig::new(self.d_model, self.n_heads)
                    .with_fused_qkv(self.fused_qkv)
                    .with_dropout(self.attention_dropout)
                    .init(device),
                layer_norm1: LayerNormConfig::new(self.d_model)
                    .with_eps(self.eps)
                    .init(device),
                mlp: MlpConfig::new(self.d_model, self.d_hidden)
                    .with_activation(self.activation)
                    .init(device),
                layer_norm2: LayerNormConfig::new(self.d_model)
                    .with_eps(self.eps)
                    .init(device),
            })
            .collect();
        TransformerEncoder { layers }
    }
}

impl<B: Backend> TransformerEncoder<B> {
    /// Runs every block.
    ///
    /// # Shapes
    /// - `x`: `[batch, tokens, d_model]`
    /// - `mask`: broadcastable to `[batch, heads, tokens, tokens]`, `true` = masked out
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        mask: Option<&AttentionMask<B>>,
        output_hidden_states: bool,
    ) -> EncoderOutput<B> {
        let mut hidden = output_hidden_states.then(|| Vec::with_capacity(self.layers.len() + 1));
        let mut x = x;
        for layer in &self.layers {
            if let Some(h) = hidden.as_mut() {
                h.push(x.clone());
            }
            x = layer.forward(x, mask);
        }
        if let Some(h) = hidden.as_mut() {
            h.push(x.clone());
        }
        EncoderOutput {
            last_hidden_state: x,
            hidden_states: hidden,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{DefaultBackend as B, default_device};
    use burn::tensor::{Distribution, Tolerance};

    #[test]
    fn block_is_two_residual_branches() {
        let dev = default_device();
        let enc = TransformerEncoderConfig::new(8, 1, 2, 16).init::<B>(&dev);
        let x = Tensor::<B, 3>::random([2, 3, 8], Distribution::Normal(0.0, 1.0), &dev);
        let l = &enc.layers[0];
        let h = x.clone() + l.self_attn.forward(l.layer_norm1.forward(x.clone()), None);
        let want = h.clone() + l.mlp.forward(l.layer_norm2.forward(h));
        let out = enc.forward(x.clone(), None, true);
        out.last_hidden_state
            .into_data()
            .assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-6));
        let hs = out.hidden_states.unwrap();
        assert_eq!(hs.len(), 2);
        hs[0].clone().into_data().assert_eq(&x.into_data(), true);
    }
}
