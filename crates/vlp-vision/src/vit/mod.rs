//! The Vision Transformer (Dosovitskiy et al., 2021) as CLIP and SigLIP use it.

mod config;
mod embeddings;
mod pooling;

pub use config::{VitConfig, VitLayout};
pub use embeddings::VitEmbeddings;
pub use pooling::AttentionPoolingHead;

use burn::module::Module;
use burn::tensor::{Tensor, backend::Backend};
use vlp_core::nn::{EncoderHook, LayerNorm, NoHook, TransformerEncoder};

/// A Vision Transformer, with fields named after Hugging Face's `vision_model`.
#[derive(Module, Debug)]
pub struct Vit<B: Backend> {
    /// Patch, class and position embeddings.
    pub embeddings: VitEmbeddings<B>,
    /// LayerNorm before the blocks (CLIP only; HF spells it `pre_layrnorm`, open_clip `ln_pre`).
    pub pre_layrnorm: Option<LayerNorm<B>>,
    /// The transformer blocks.
    pub encoder: TransformerEncoder<B>,
    /// Final LayerNorm (open_clip `ln_post`): on the class token for CLIP, on every token for SigLIP.
    pub post_layernorm: LayerNorm<B>,
    /// SigLIP's multihead attention-pooling head.
    pub head: Option<AttentionPoolingHead<B>>,
    /// Which layout this is.
    pub layout: VitLayout,
}

/// What [`Vit::forward`] returns, as transformers' `BaseModelOutputWithPooling`.
#[derive(Debug, Clone)]
pub struct VitOutput<B: Backend> {
    /// Token features after the last block, `[batch, tokens, hidden]` (for SigLIP after
    /// `post_layernorm`, as in transformers; for CLIP before it).
    pub last_hidden_state: Tensor<B, 3>,
    /// Pooled image feature, `[batch, hidden]`: `post_layernorm(class token)` for CLIP, the
    /// attention-pooling head's output for SigLIP.
    pub pooler_output: Tensor<B, 2>,
    /// When requested: the encoder input and every block's output (`layers + 1` tensors).
    pub hidden_states: Option<Vec<Tensor<B, 3>>>,
}

impl<B: Backend> Vit<B> {
    /// Encodes images.
    ///
    /// # Shapes
    /// - `pixels`: `[batch, channels, image_size, image_size]`, normalised
    /// - returns: see [`VitOutput`]; tokens = patches (+1 class token for CLIP)
    pub fn forward(&self, pixels: Tensor<B, 4>) -> VitOutput<B> {
        self.forward_with(pixels, false)
    }

    /// Encodes images, optionally keeping every layer's hidden states.
    pub fn forward_with(&self, pixels: Tensor<B, 4>, output_hidden_states: bool) -> VitOutput<B> {
        let x = self.embeddings.forward(pixels);
        self.forward_tokens(x, output_hidden_states)
    }

    /// Runs everything after the embeddings, for callers that edit the token sequence first
    /// (visual prompts, patch dropout, token merging).
    ///
    /// # Shapes
    /// - `tokens`: `[batch, tokens, hidden]`, the output of [`VitEmbeddings::forward`] or an edit of it
    pub fn forward_tokens(&self, tokens: Tensor<B, 3>, output_hidden_states: bool) -> VitOutput<B> {
        self.forward_tokens_hooked(tokens, output_hidden_states, &mut NoHook)
    }

    /// Encodes images with a [hook](EncoderHook) around every block: deep visual prompts,
    /// per-layer masks, attention maps (see `vlp_core::nn::EncoderHook`).
    pub fn forward_hooked(
        &self,
        pixels: Tensor<B, 4>,
        output_hidden_states: bool,
        hook: &mut dyn EncoderHook<B>,
    ) -> VitOutput<B> {
        let x = self.embeddings.forward(pixels);
        self.forward_tokens_hooked(x, output_hidden_states, hook)
    }

    /// [`forward_tokens`](Self::forward_tokens) with a hook around every block. Hooks that
    /// add tokens must remove them again by the last block if the class token is to stay first.
    pub fn forward_tokens_hooked(
        &self,
        tokens: Tensor<B, 3>,
        output_hidden_states: bool,
        hook: &mut dyn EncoderHook<B>,
    ) -> VitOutput<B> {
        let x = match &self.pre_layrnorm {
            Some(ln) => ln.forward(tokens),
            None => tokens,
        };
        let enc = self
            .encoder
            .forward_hooked(x, None, output_hidden_states, hook);
        let x = enc.last_hidden_state;
        let (last_hidden_state, pooler_output) = match &self.head {
            None => {
                let [b, _, d] = x.dims();
                let cls = x.clone().slice([0..b, 0..1, 0..d]).reshape([b, d]);
                (x, self.post_layernorm.forward(cls))
            }
            Some(head) => {
                let x = self.post_layernorm.forward(x);
                let pooled = head.forward(x.clone());
                (x, pooled)
            }
        };
        VitOutput {
            last_hidden_state,
            pooler_output,
            hidden_states: enc.hidden_states,
        }
    }

    /// Resamples the position embeddings for `image_size`-pixel inputs (bicubic, as
    /// transformers' `interpolate_pos_encoding`), so one checkpoint serves other resolutions.
    ///
    /// # Panics
    /// If the patch size does not divide `image_size`.
    pub fn with_image_size(mut self, image_size: usize) -> Self {
        let patch = self
            .embeddings
            .patch_embedding
            .weight
            .lazy_shape()
            .dims::<4>()[2];
        assert!(
            image_size.is_multiple_of(patch),
            "ViT: patch size {patch} does not divide image size {image_size}"
        );
        let e = self.embeddings;
        self.embeddings = e.with_grid(image_size / patch);
        self
    }

    /// Every output token normalised as the pooled feature is (CLIP applies `post_layernorm` to
    /// the class token only; here to every token, as FILIP and MaskCLIP-style dense features
    /// need), ready for the image projection.
    ///
    /// # Shapes
    /// - returns: `[batch, tokens, hidden]`
    pub fn token_features(&self, out: &VitOutput<B>) -> Tensor<B, 3> {
        match &self.head {
            // SigLIP's last_hidden_state is already after post_layernorm.
            Some(_) => out.last_hidden_state.clone(),
            None => self.post_layernorm.forward(out.last_hidden_state.clone()),
        }
    }

    /// Whether the first output token is a class token (CLIP) rather than a patch (SigLIP).
    pub fn has_class_token(&self) -> bool {
        self.embeddings.class_embedding.is_some()
    }

    /// Side of the patch grid (`image_size / patch_size`); patch tokens are row-major over it.
    pub fn grid(&self) -> usize {
        self.embeddings.grid()
    }

    /// Tokens of its output at its own resolution: the patches and the class token, if any
    /// (as [`VitConfig::num_positions`]).
    pub fn num_positions(&self) -> usize {
        self.grid() * self.grid() + usize::from(self.has_class_token())
    }

    /// Width of the token features.
    pub fn hidden_size(&self) -> usize {
        self.post_layernorm.weight.lazy_shape().dims::<1>()[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use vlp_core::backend::{DefaultBackend as B, default_device};

    fn vit(layout: VitLayout) -> Vit<B> {
        VitConfig::new(16, 1, 2, 32)
            .with_image_size(16)
            .with_patch_size(4)
            .with_layout(layout)
            .init(&default_device())
    }

    #[test]
    fn token_counts_and_hidden_states() {
        let dev = default_device();
        let px = Tensor::<B, 4>::random([2, 3, 16, 16], Distribution::Normal(0.0, 1.0), &dev);
        for (layout, tokens) in [(VitLayout::Clip, 17), (VitLayout::Siglip, 16)] {
            let m = vit(layout);
            assert_eq!(m.num_positions(), tokens);
            let out = m.forward_with(px.clone(), true);
            assert_eq!(out.last_hidden_state.dims(), [2, tokens, 16]);
            assert_eq!(out.pooler_output.dims(), [2, 16]);
            assert_eq!(out.hidden_states.unwrap().len(), 2);
        }
    }

    #[test]
    fn position_interpolation_keeps_the_table_at_the_same_grid_and_runs_larger_images() {
        let dev = default_device();
        let m = vit(VitLayout::Clip);
        let px = Tensor::<B, 4>::random([1, 3, 16, 16], Distribution::Normal(0.0, 1.0), &dev);
        let before = m.forward(px.clone()).pooler_output.into_data();
        let same = m.with_image_size(16);
        same.forward(px)
            .pooler_output
            .into_data()
            .assert_eq(&before, true);
        let cls = same
            .embeddings
            .position_embedding
            .weight
            .val()
            .slice([0..1, 0..16])
            .into_data();
        let big = same.with_image_size(24);
        assert_eq!(big.embeddings.position_embedding.weight.dims(), [37, 16]);
        // The class-token position is not interpolated.
        big.embeddings
            .position_embedding
            .weight
            .val()
            .slice([0..1, 0..16])
            .into_data()
            .assert_eq(&cls, true);
        let px = Tensor::<B, 4>::random([1, 3, 24, 24], Distribution::Normal(0.0, 1.0), &dev);
        assert_eq!(big.forward(px).last_hidden_state.dims(), [1, 37, 16]);
    }
}
