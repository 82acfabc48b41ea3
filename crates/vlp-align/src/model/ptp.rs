//! The heads PTP trains besides its dual encoder (Wang et al., 2023, "Position-guided Text
//! Prompt for Vision-Language Pre-training", §3.3; official code `sail-sg/ptp`, BLIP-based
//! `src/blip_src/models/blip_pretrain.py`): an image-grounded text encoder with a matching head
//! (ITM) and a causal decoder conditioned on the image tokens (LM). The contrastive part (ITC)
//! is the [`ClipModel`] itself; the position prompt is a text transform
//! (`vlp_data::text::PositionPrompt`), so nothing of PTP remains at inference but the decoder,
//! which captions.
//!
//! Where this departs from the code: BLIP shares one BERT between the text encoder (ITC), the
//! grounded encoder (ITM, the same weights with cross-attention switched on) and, except for
//! self-attention, the decoder; here the dual encoder's text tower is a CLIP tower, the grounded
//! encoder is a few BERT blocks with cross-attention *on top of* its tokens, and the decoder has
//! its own weights. Both read the image tower's output tokens in the joint space. The decoder
//! may add learned position embeddings to those tokens (`image_positions`): BLIP's ViT is
//! pretrained and its tokens keep where they came from, while a tower trained from scratch by
//! the contrastive loss does not, and the decoder then cannot tell the blocks apart (ShapesWorld
//! block filling after 4000 steps: 0.794 with them, mean of 3 seeds; without them 0.227, the
//! most frequent block, up to 2000 steps). PTP's paper and code have nothing of this.

use std::path::Path;

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Bool, DType, FloatDType, Int, Tensor, backend::Backend};
use vlp_core::checkpoint::{
    Source, StoredDType, TensorFile, check_sizes, collect_params, load_params, write_safetensors,
};
use vlp_core::nn::{AttentionMask, GroundedLayer, PostNormConfig, linear_2d};
use vlp_text::decoder::{CausalDecoder, CausalDecoderConfig};

use crate::error::{AlignError, Result};

/// The decoder's weights in an exported model directory.
pub const DECODER_FILE: &str = "decoder.safetensors";
/// Its architecture (a [`CausalDecoderConfig`]).
pub const DECODER_CONFIG_FILE: &str = "decoder_config.json";

/// Configuration of [`PtpHeads`].
#[derive(Config, Debug)]
pub struct PtpConfig {
    /// Width of the image and text tokens they read (the dual encoder's joint space), which is
    /// their own width.
    pub d_model: usize,
    /// The tokenizer's vocabulary (the decoder's input and output).
    pub vocab_size: usize,
    /// Longest token sequence (the tokenizer's context length).
    pub max_len: usize,
    /// Blocks of the image-grounded text encoder.
    #[config(default = 2)]
    pub itm_layers: usize,
    /// Blocks of the decoder.
    #[config(default = 2)]
    pub decoder_layers: usize,
    /// Attention heads of both; must divide `d_model`.
    #[config(default = 4)]
    pub n_heads: usize,
    /// Feed-forward width of both.
    #[config(default = 256)]
    pub d_hidden: usize,
    /// Image tokens (class token included) the decoder places with learned position
    /// embeddings before cross-attending to them; 0: none, as BLIP (see the module doc).
    #[config(default = 0)]
    pub image_positions: usize,
}

impl PtpConfig {
    /// The decoder's architecture.
    pub fn decoder(&self) -> CausalDecoderConfig {
        CausalDecoderConfig::new(
            self.vocab_size,
            self.max_len,
            self.d_model,
            self.decoder_layers,
            self.n_heads,
            self.d_hidden,
        )
        .with_cross_attention(true)
        .with_context_positions(self.image_positions)
    }

    /// Fresh heads.
    ///
    /// # Panics
    /// If `n_heads` does not divide `d_model` or a size is 0.
    pub fn init<B: Backend>(&self, device: &B::Device) -> PtpHeads<B> {
        let blocks = PostNormConfig::new(self.d_model, self.n_heads, self.d_hidden);
        PtpHeads {
            itm_layers: (0..self.itm_layers)
                .map(|_| blocks.init_grounded(device))
                .collect(),
            itm_head: LinearConfig::new(self.d_model, 2).init(device),
            decoder: self.decoder().init(device),
        }
    }
}

/// PTP's matching encoder and head, and its decoder.
#[derive(Module, Debug)]
pub struct PtpHeads<B: Backend> {
    /// Image-grounded text encoder: bidirectional blocks over the text tokens, each
    /// cross-attending to the image tokens (BLIP's text encoder in `mode='multimodal'`).
    pub itm_layers: Vec<GroundedLayer<B>>,
    /// First token's encoding → (not matched, matched) logits (BLIP's `itm_head`).
    pub itm_head: Linear<B>,
    /// Causal language model cross-attending to the image tokens (BLIP's `text_decoder`).
    pub decoder: CausalDecoder<B>,
}

impl<B: Backend> PtpHeads<B> {
    /// The heads' parameter type: their inputs are cast to it (half precision under mixed
    /// precision, where the towers' tokens arrive in f32) and their outputs come back in f32.
    fn dtype(&self) -> DType {
        self.itm_head.weight.val().dtype()
    }

    /// Matching logits of text `i` with image `i`: the grounded encoding of the text's first
    /// token through the head; index 1 is "matched".
    ///
    /// # Shapes
    /// - `text`: `[n, words, d]` with padding `[n, words]` (`true` = not a token)
    /// - `image`: `[n, image_tokens, d]`
    /// - returns: `[n, 2]`
    pub fn itm_logits(
        &self,
        text: Tensor<B, 3>,
        padding: Option<Tensor<B, 2, Bool>>,
        image: Tensor<B, 3>,
    ) -> Tensor<B, 2> {
        let mask = padding.map(AttentionMask::key_padding);
        let (mut x, image) = (text.cast(self.dtype()), image.cast(self.dtype()));
        for layer in &self.itm_layers {
            x = layer.forward(x, mask.as_ref(), image.clone(), None);
        }
        let [n, _, d] = x.dims();
        linear_2d(&self.itm_head, x.slice([0..n, 0..1, 0..d]).reshape([n, d])).cast(FloatDType::F32)
    }

    /// The decoder's loss at every position of the captions: token `t + 1` predicted from the
    /// tokens up to `t` and the image (BLIP's `loss_lm`); 0 where the target is padding.
    ///
    /// # Shapes
    /// - `ids`, `mask`: `[n, tokens]` (`mask` 1 = token, 0 = padding), tokens ≥ 2
    /// - `image`: `[n, image_tokens, d]`
    /// - returns: `[n, tokens − 1]`
    pub fn lm_losses(
        &self,
        ids: Tensor<B, 2, Int>,
        mask: Tensor<B, 2, Int>,
        image: Tensor<B, 3>,
    ) -> Tensor<B, 2> {
        let [n, t] = ids.dims();
        let inputs = ids.clone().slice([0..n, 0..t - 1]);
        let targets = ids.slice([0..n, 1..t]);
        let keep = mask.slice([0..n, 1..t]).float();
        let image = image.cast(self.dtype());
        let logits = self.decoder.forward(inputs, Some((&image, None)));
        let nll = -log_softmax(logits.cast(FloatDType::F32), 2)
            .gather(2, targets.reshape([n, t - 1, 1]))
            .reshape([n, t - 1]);
        nll * keep
    }

    /// Log-likelihood of each whole caption given its image (the sum of [`Self::lm_losses`],
    /// negated): how PTP's prompt is filled in, by scoring each candidate block.
    ///
    /// # Shapes
    /// - as [`Self::lm_losses`]; returns `[n]`
    pub fn log_likelihood(
        &self,
        ids: Tensor<B, 2, Int>,
        mask: Tensor<B, 2, Int>,
        image: Tensor<B, 3>,
    ) -> Tensor<B, 1> {
        let [n, _] = ids.dims();
        -self.lm_losses(ids, mask, image).sum_dim(1).reshape([n])
    }
}

/// Writes `decoder` and its architecture into `dir` (next to an exported dual encoder).
pub fn save_decoder<B: Backend>(
    decoder: &CausalDecoder<B>,
    config: &CausalDecoderConfig,
    dir: &Path,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| AlignError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    vlp_core::io::write_atomic(dir.join(DECODER_CONFIG_FILE), config.to_string().as_bytes())?;
    write_safetensors(
        dir.join(DECODER_FILE),
        &collect_params(decoder),
        StoredDType::F32,
        None,
    )?;
    Ok(())
}

/// Whether `dir` holds a decoder written by [`save_decoder`].
pub fn has_decoder(dir: &Path) -> bool {
    dir.join(DECODER_CONFIG_FILE).is_file()
}

/// Reads the decoder of `dir` (written by [`save_decoder`]); every weight must be present with
/// the shape its configuration gives.
pub fn load_decoder<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(CausalDecoder<B>, CausalDecoderConfig)> {
    let cfg_path = dir.join(DECODER_CONFIG_FILE);
    if !cfg_path.is_file() {
        return Err(AlignError::ModelDir {
            path: dir.to_path_buf(),
            reason: format!(
                "no {DECODER_CONFIG_FILE}: the model has no decoder (train one with \
                 `[method] kind = \"ptp\"`)"
            ),
        });
    }
    let text = std::fs::read_to_string(&cfg_path).map_err(|source| AlignError::Io {
        path: cfg_path.clone(),
        source,
    })?;
    let config: CausalDecoderConfig =
        serde_json::from_str(&text).map_err(|e| AlignError::Config {
            path: cfg_path.clone(),
            reason: e.to_string(),
        })?;
    let bad = |reason: String| AlignError::Config {
        path: cfg_path.clone(),
        reason,
    };
    // Sizes come from a file: bounded before anything is allocated.
    let c = &config;
    check_sizes(&[
        ("vocab_size", c.vocab_size, 1..=1 << 20),
        ("max_len", c.max_len, 1..=1 << 16),
        ("d_model", c.d_model, 1..=1 << 14),
        ("n_layers", c.n_layers, 1..=256),
        ("n_heads", c.n_heads, 1..=1 << 10),
        ("d_hidden", c.d_hidden, 1..=1 << 16),
        ("context_positions", c.context_positions, 0..=1 << 16),
    ])
    .map_err(bad)?;
    if !c.d_model.is_multiple_of(c.n_heads) {
        return Err(bad(format!(
            "{} heads do not divide width {}",
            c.n_heads, c.d_model
        )));
    }
    if !c.cross_attention {
        return Err(bad(
            "cross_attention is false: the decoder does not read the image".into(),
        ));
    }
    let file = TensorFile::open(dir.join(DECODER_FILE))?;
    let decoder = load_params(
        config.init::<B>(device),
        &file,
        |p| Source::Key(p.to_string()),
        |_| false,
    )?;
    Ok((decoder, config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};
    use vlp_core::backend::{DefaultBackend as B, default_device};

    fn heads() -> PtpHeads<B> {
        // Odd sizes: width 12 in 3 heads, 11 ids, 7 positions; 4 image tokens placed.
        PtpConfig::new(12, 11, 7)
            .with_n_heads(3)
            .with_d_hidden(20)
            .with_image_positions(4)
            .init::<B>(&default_device())
    }

    fn floats<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec().unwrap()
    }

    fn ints(v: Vec<i64>, shape: [usize; 2]) -> Tensor<B, 2, Int> {
        Tensor::from_data(TensorData::new(v, shape), &default_device())
    }

    #[test]
    fn language_model_losses_are_next_token_cross_entropy_without_padding() {
        let h = heads();
        let dev = default_device();
        let image = Tensor::<B, 3>::random([2, 4, 12], Distribution::Normal(0.0, 1.0), &dev);
        let ids = vec![1i64, 5, 7, 2, 0, 0, 1, 3, 9, 4, 10, 2];
        let mask = vec![1i64, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1];
        let got = floats(h.lm_losses(
            ints(ids.clone(), [2, 6]),
            ints(mask.clone(), [2, 6]),
            image.clone(),
        ));
        // Logits of every prefix from the full forward, cross-entropy by hand.
        let logits = floats(h.decoder.forward(
            ints(ids.clone(), [2, 6]).slice([0..2, 0..5]),
            Some((&image, None)),
        ));
        assert_eq!(got.len(), 10);
        for b in 0..2 {
            for t in 0..5 {
                let row = &logits[(b * 5 + t) * 11..(b * 5 + t + 1) * 11];
                let lse = row.iter().map(|&v| f64::from(v).exp()).sum::<f64>().ln();
                let target = ids[b * 6 + t + 1] as usize;
                let want = if mask[b * 6 + t + 1] == 1 {
                    lse - f64::from(row[target])
                } else {
                    0.0
                };
                let g = f64::from(got[b * 5 + t]);
                assert!(
                    (g - want).abs() < 1e-5,
                    "sample {b} position {t}: {g} vs {want}"
                );
            }
        }
        let ll = floats(h.log_likelihood(ints(ids, [2, 6]), ints(mask, [2, 6]), image));
        let sum0: f32 = got[..5].iter().sum();
        assert!((ll[0] + sum0).abs() < 1e-4, "{} vs {}", ll[0], -sum0);
    }

    #[test]
    fn matching_logits_ignore_the_text_padding() {
        let h = heads();
        let dev = default_device();
        let image = Tensor::<B, 3>::random([1, 4, 12], Distribution::Normal(0.0, 1.0), &dev);
        let text = Tensor::<B, 3>::random([1, 3, 12], Distribution::Normal(0.0, 1.0), &dev);
        let short = floats(h.itm_logits(text.clone(), None, image.clone()));
        assert_eq!(short.len(), 2);
        let junk = Tensor::<B, 3>::random([1, 2, 12], Distribution::Normal(0.0, 50.0), &dev);
        let padded = Tensor::cat(vec![text, junk], 1);
        let padding =
            Tensor::<B, 2, Int>::from_data(TensorData::new(vec![0i64, 0, 0, 1, 1], [1, 5]), &dev)
                .equal_elem(1);
        let long = floats(h.itm_logits(padded.clone(), Some(padding), image.clone()));
        for (a, b) in short.iter().zip(&long) {
            assert!(
                (a - b).abs() < 1e-5,
                "padding changed the logits: {short:?} vs {long:?}"
            );
        }
        // Unmasked, the same junk does change them.
        let open = floats(h.itm_logits(padded, None, image));
        assert!(short.iter().zip(&open).any(|(a, b)| (a - b).abs() > 1e-3));
    }

    #[test]
    fn the_decoder_round_trips_and_bad_directories_are_errors() {
        let h = heads();
        let dev = default_device();
        let dir = tempfile::tempdir().unwrap();
        let config = PtpConfig::new(12, 11, 7)
            .with_n_heads(3)
            .with_d_hidden(20)
            .with_image_positions(4)
            .decoder();
        assert!(!has_decoder(dir.path()));
        let e = load_decoder::<B>(dir.path(), &dev).unwrap_err().to_string();
        assert!(
            e.contains(DECODER_CONFIG_FILE) && e.contains("no decoder"),
            "{e}"
        );
        save_decoder(&h.decoder, &config, dir.path()).unwrap();
        assert!(has_decoder(dir.path()));
        let (back, c) = load_decoder::<B>(dir.path(), &dev).unwrap();
        assert_eq!(
            (c.vocab_size, c.max_len, c.d_model, c.context_positions),
            (11, 7, 12, 4)
        );
        let ids = ints(vec![1, 4, 2], [1, 3]);
        let image = Tensor::<B, 3>::random([1, 4, 12], Distribution::Normal(0.0, 1.0), &dev);
        let (a, b) = (
            floats(h.decoder.forward(ids.clone(), Some((&image, None)))),
            floats(back.forward(ids, Some((&image, None)))),
        );
        assert_eq!(a, b);
        // A configuration whose sizes are out of bounds is refused before allocating.
        let cfg_path = dir.path().join(DECODER_CONFIG_FILE);
        let text = std::fs::read_to_string(&cfg_path).unwrap();
        let huge = text.replace("\"vocab_size\": 11", "\"vocab_size\": 99999999999");
        assert_ne!(huge, text, "the field is written as expected");
        std::fs::write(&cfg_path, huge).unwrap();
        let e = load_decoder::<B>(dir.path(), &dev).unwrap_err().to_string();
        assert!(
            e.contains("vocab_size") && e.contains(DECODER_CONFIG_FILE),
            "{e}"
        );
        let huge = text.replace(
            "\"context_positions\": 4",
            "\"context_positions\": 99999999999",
        );
        assert_ne!(huge, text, "the field is written as expected");
        std::fs::write(&cfg_path, huge).unwrap();
        let e = load_decoder::<B>(dir.path(), &dev).unwrap_err().to_string();
        assert!(e.contains("context_positions"), "{e}");
        let blind = text.replace("\"cross_attention\": true", "\"cross_attention\": false");
        std::fs::write(&cfg_path, blind).unwrap();
        let e = load_decoder::<B>(dir.path(), &dev).unwrap_err().to_string();
        assert!(e.contains("cross_attention"), "{e}");
    }
}
