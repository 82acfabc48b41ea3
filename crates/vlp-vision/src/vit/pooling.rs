//! SigLIP's multihead attention-pooling head (Lee et al., 2019's PMA with one learned probe).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::{Tensor, backend::Backend};
use vlp_core::nn::{
    Activation, Attention, AttentionConfig, LayerNorm, LayerNormConfig, Mlp, MlpConfig,
};

/// Configuration of an [`AttentionPoolingHead`].
#[derive(Config, Debug)]
pub struct AttentionPoolingHeadConfig {
    /// Token width.
    pub d_model: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Hidden width of the head's MLP.
    pub d_hidden: usize,
    /// MLP non-linearity.
    #[config(default = "Activation::GeluTanh")]
    pub activation: Activation,
    /// LayerNorm epsilon.
    #[config(default = 1e-6)]
    pub eps: f64,
}

/// A learned probe attends over all tokens; `x + mlp(ln(x))` refines the result.
///
/// Fields follow HF's `vision_model.head`; its attention is a PyTorch `nn.MultiheadAttention`,
/// hence the fused `in_proj`.
#[derive(Module, Debug)]
pub struct AttentionPoolingHead<B: Backend> {
    /// The query, `[1, 1, d_model]`.
    pub probe: Param<Tensor<B, 3>>,
    /// Cross-attention from the probe to the tokens.
    pub attention: Attention<B>,
    /// Norm before the MLP.
    pub layernorm: LayerNorm<B>,
    /// Feed-forward refinement.
    pub mlp: Mlp<B>,
}

impl AttentionPoolingHeadConfig {
    /// Creates the head on `device`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> AttentionPoolingHead<B> {
        AttentionPoolingHead {
            probe: Initializer::Normal {
                mean: 0.0,
                std: 1.0 / (self.d_model as f64).sqrt(),
            }
            .init([1, 1, self.d_model], device),
            attention: AttentionConfig::new(self.d_model, self.n_heads)
                .with_fused_qkv(true)
                .init(device),
            layernorm: LayerNormConfig::new(self.d_model)
                .with_eps(self.eps)
                .init(device),
            mlp: MlpConfig::new(self.d_model, self.d_hidden)
                .with_activation(self.activation)
                .init(device),
        }
    }
}

impl<B: Backend> AttentionPoolingHead<B> {
    /// Pools tokens into one vector.
    ///
    /// # Shapes
    /// - `tokens`: `[batch, tokens, d_model]`
    /// - returns: `[batch, d_model]`
    pub fn forward(&self, tokens: Tensor<B, 3>) -> Tensor<B, 2> {
        let [b, _, d] = tokens.dims();
        // A real copy per image rather than a stride-0 view, which not every backend's matmul takes.
        let probe = self.probe.val().repeat_dim(0, b);
        // One token per image: work on `[batch, width]` (Burn 0.21 on wgpu mishandled the unit
        // token axis, see `vlp_core::nn::linear_2d`; caught by the SigLIP parity test).
        let x = self
            .attention
            .forward_cross(probe, tokens, None)
            .reshape([b, d]);
        x.clone() + self.mlp.forward(self.layernorm.forward(x))
    }
}
