//! The pre-norm transformer encoder shared by the CLIP and SigLIP towers.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};

use super::activation::Activation;
use super::attention::{Attention, AttentionConfig};
use super::lora::LoraConfig;
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

    /// Applies the block and returns its attention probabilities too (differentiable, for
    /// GradCAM-style methods and attention maps).
    ///
    /// # Shapes
    /// - `x`: `[batch, tokens, d_model]`
    /// - returns: `[batch, tokens, d_model]` and `[batch, heads, tokens, tokens]`
    pub fn forward_with_weights(
        &self,
        x: Tensor<B, 3>,
        mask: Option<&AttentionMask<B>>,
    ) -> (Tensor<B, 3>, Tensor<B, 4>) {
        let a = self
            .self_attn
            .forward_with_weights(self.layer_norm1.forward(x.clone()), mask);
        let x = x + a.context;
        (
            x.clone() + self.mlp.forward(self.layer_norm2.forward(x)),
            a.weights,
        )
    }
}

/// What a caller can do between the blocks of a [`TransformerEncoder`]: insert, replace or
/// drop tokens (deep prompts, token merging), give a block its own mask, and read attention
/// probabilities. Every method has a do-nothing default; everything stays differentiable.
pub trait EncoderHook<B: Backend> {
    /// The tokens entering block `layer`, possibly edited. The default passes them through.
    ///
    /// # Shapes
    /// - `x`: `[batch, tokens, d_model]`; the result may have another token count, in which
    ///   case [`mask`](Self::mask) must match it
    fn before_layer(&mut self, layer: usize, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let _ = layer;
        x
    }

    /// The attention mask of block `layer`, given the encoder's own (`default`). Return a mask
    /// for the token count [`before_layer`](Self::before_layer) produced.
    fn mask(
        &mut self,
        layer: usize,
        default: Option<&AttentionMask<B>>,
    ) -> Option<AttentionMask<B>> {
        let _ = layer;
        default.cloned()
    }

    /// Whether block `layer` should report its attention probabilities to
    /// [`attention`](Self::attention) (computing them costs the fused attention kernel).
    fn wants_attention(&self, layer: usize) -> bool {
        let _ = layer;
        false
    }

    /// Attention probabilities of block `layer`, `[batch, heads, tokens, tokens]`.
    fn attention(&mut self, layer: usize, weights: Tensor<B, 4>) {
        let _ = (layer, weights);
    }

    /// The output of block `layer`, possibly edited (e.g. prompt tokens removed again).
    fn after_layer(&mut self, layer: usize, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let _ = layer;
        x
    }
}

/// The hook that changes nothing.
pub struct NoHook;

impl<B: Backend> EncoderHook<B> for NoHook {}

/// A hook that keeps every block's attention probabilities.
#[derive(Debug)]
pub struct AttentionRecorder<B: Backend> {
    /// `(layer, [batch, heads, tokens, tokens])`, in layer order.
    pub weights: Vec<(usize, Tensor<B, 4>)>,
    /// Which layers to record (`None` = all).
    pub layers: Option<Vec<usize>>,
}

impl<B: Backend> AttentionRecorder<B> {
    /// Records the given layers (`None` = every layer).
    pub fn new(layers: Option<Vec<usize>>) -> Self {
        Self {
            weights: Vec::new(),
            layers,
        }
    }
}

impl<B: Backend> EncoderHook<B> for AttentionRecorder<B> {
    fn wants_attention(&self, layer: usize) -> bool {
        self.layers.as_ref().is_none_or(|l| l.contains(&layer))
    }

    fn attention(&mut self, layer: usize, weights: Tensor<B, 4>) {
        self.weights.push((layer, weights));
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
    /// Adds LoRA updates to every block's attention ([`Attention::add_lora`]) and, with `mlp`,
    /// to both layers of its MLP ([`crate::nn::Mlp::add_lora`]; PEFT's "all-linear").
    pub fn add_lora(mut self, config: &LoraConfig, mlp: bool, device: &B::Device) -> Self {
        self.layers = self
            .layers
            .into_iter()
            .map(|mut l| {
                l.self_attn = l.self_attn.add_lora(config, device);
                if mlp {
                    l.mlp = l.mlp.add_lora(config, device);
                }
                l
            })
            .collect();
        self
    }

    /// Folds `weight` times every block's LoRA updates (attention and MLP) into its weights
    /// ([`Attention::merge_lora`], [`crate::nn::Mlp::merge_lora`]).
    pub fn merge_lora(mut self, weight: f64) -> Self {
        self.layers = self
            .layers
            .into_iter()
            .map(|mut l| {
                l.self_attn = l.self_attn.merge_lora(weight);
                l.mlp = l.mlp.merge_lora(weight);
                l
            })
            .collect();
        self
    }

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
        self.forward_hooked(x, mask, output_hidden_states, &mut NoHook)
    }

    /// [`forward`](Self::forward) with a [`hook`](EncoderHook) called around every block.
    /// Hidden states are recorded as each block receives them (after `before_layer`).
    ///
    /// # Shapes
    /// - `x`: `[batch, tokens, d_model]`
    /// - `mask`: broadcastable to `[batch, heads, tokens, tokens]`, `true` = masked out
    pub fn forward_hooked(
        &self,
        x: Tensor<B, 3>,
        mask: Option<&AttentionMask<B>>,
        output_hidden_states: bool,
        hook: &mut dyn EncoderHook<B>,
    ) -> EncoderOutput<B> {
        let mut hidden = output_hidden_states.then(|| Vec::with_capacity(self.layers.len() + 1));
        let mut x = x;
        for (i, layer) in self.layers.iter().enumerate() {
            x = hook.before_layer(i, x);
            if let Some(h) = hidden.as_mut() {
                h.push(x.clone());
            }
            let m = hook.mask(i, mask);
            x = if hook.wants_attention(i) {
                let (y, w) = layer.forward_with_weights(x, m.as_ref());
                hook.attention(i, w);
                y
            } else {
                layer.forward(x, m.as_ref())
            };
            x = hook.after_layer(i, x);
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
    crate::backend_tests! {
    use super::super::*;
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
}

/// The encoder hooks are compositions of the layers tested on every backend above: they run on
/// the CPU only, keeping the software-Vulkan tier short.
#[cfg(test)]
mod hook_tests {
    use super::*;
    use crate::backend::{DefaultBackend as B, TrainBackend, default_device};
    use burn::tensor::{Distribution, Tolerance};

    /// Prompt tokens inserted before block 1 and removed after the last block, as VPT/MaPLe
    /// deep prompts do, written out by hand.
    struct DeepPrompt {
        prompts: Tensor<B, 3>,
    }

    impl EncoderHook<B> for DeepPrompt {
        fn before_layer(&mut self, layer: usize, x: Tensor<B, 3>) -> Tensor<B, 3> {
            if layer == 1 {
                Tensor::cat(vec![x, self.prompts.clone()], 1)
            } else {
                x
            }
        }
        fn after_layer(&mut self, layer: usize, x: Tensor<B, 3>) -> Tensor<B, 3> {
            let [b, t, d] = x.dims();
            if layer == 2 {
                x.slice([0..b, 0..t - 2, 0..d])
            } else {
                x
            }
        }
    }

    #[test]
    fn hooks_insert_and_remove_tokens_between_blocks() {
        let dev = default_device();
        let enc = TransformerEncoderConfig::new(8, 3, 2, 16).init::<B>(&dev);
        let x = Tensor::<B, 3>::random([2, 5, 8], Distribution::Normal(0.0, 1.0), &dev);
        let prompts = Tensor::<B, 3>::random([2, 2, 8], Distribution::Normal(0.0, 1.0), &dev);
        let h0 = enc.layers[0].forward(x.clone(), None);
        let h1 = enc.layers[1].forward(Tensor::cat(vec![h0, prompts.clone()], 1), None);
        let want = enc.layers[2].forward(h1, None).slice([0..2, 0..5, 0..8]);
        let out = enc.forward_hooked(x, None, true, &mut DeepPrompt { prompts });
        out.last_hidden_state
            .into_data()
            .assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-5));
        let hs = out.hidden_states.unwrap();
        let tokens: Vec<usize> = hs.iter().map(|h| h.dims()[1]).collect();
        assert_eq!(tokens, vec![5, 7, 7, 5]);
    }

    struct CausalFirst;

    impl EncoderHook<B> for CausalFirst {
        fn mask(
            &mut self,
            layer: usize,
            default: Option<&AttentionMask<B>>,
        ) -> Option<AttentionMask<B>> {
            if layer == 0 {
                Some(AttentionMask::causal(4, &default_device()))
            } else {
                default.cloned()
            }
        }
    }

    #[test]
    fn hooks_give_a_block_its_own_mask() {
        let dev = default_device();
        let enc = TransformerEncoderConfig::new(8, 2, 2, 16).init::<B>(&dev);
        let x = Tensor::<B, 3>::random([1, 4, 8], Distribution::Normal(0.0, 1.0), &dev);
        let causal = AttentionMask::causal(4, &dev);
        let want = enc.layers[1].forward(enc.layers[0].forward(x.clone(), Some(&causal)), None);
        let got = enc
            .forward_hooked(x, None, false, &mut CausalFirst)
            .last_hidden_state;
        got.into_data()
            .assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-5));
    }

    #[test]
    fn recorded_attention_is_a_distribution_with_a_gradient() {
        let dev = default_device();
        let enc = TransformerEncoderConfig::new(8, 2, 2, 16).init::<TrainBackend>(&dev);
        let x = Tensor::<TrainBackend, 3>::random([2, 3, 8], Distribution::Normal(0.0, 1.0), &dev)
            .require_grad();
        let mut rec = AttentionRecorder::new(Some(vec![1]));
        let out = enc.forward_hooked(x.clone(), None, false, &mut rec);
        assert_eq!(rec.weights.len(), 1);
        let (layer, w) = rec.weights.pop().unwrap();
        assert_eq!((layer, w.dims()), (1, [2, 2, 3, 3]));
        let sums: Vec<f32> = w.clone().sum_dim(3).into_data().to_vec().unwrap();
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5), "{sums:?}");
        // Recording attention does not change the output.
        let plain = enc.forward(x.clone(), None, false).last_hidden_state;
        out.last_hidden_state
            .clone()
            .into_data()
            .assert_approx_eq::<f32>(&plain.into_data(), Tolerance::absolute(1e-5));
        // GradCAM needs d(attention)/d(input): it exists and is not zero.
        let g = (w.slice([0..1, 0..1, 0..1, 0..3]).powi_scalar(2))
            .sum()
            .backward();
        let gx: Vec<f32> = x.grad(&g).unwrap().into_data().to_vec().unwrap();
        assert!(
            gx.iter().any(|v| v.abs() > 1e-6),
            "attention has no gradient"
        );
    }
}
