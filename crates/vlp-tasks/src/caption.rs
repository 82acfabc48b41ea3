//! Captioning with a dual encoder's image tower and a decoder that reads its tokens (the
//! `final/` of a `kind = "ptp"` run): the image's tokens condition the decoder, which writes from
//! the start token until the end token by beam search (one beam: greedy), as BLIP's
//! `generate` does without a prompt.

use std::path::Path;
use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor};
use serde::Serialize;
use vlp_align::ClipModel;
use vlp_align::model::ptp::{has_decoder, load_decoder};
use vlp_align::pretrained::load_pretrained;
use vlp_data::ImagePipeline;
use vlp_text::decoder::{CausalDecoder, DecoderLm};
use vlp_text::generate::{GenerateConfig, beam_search};
use vlp_text::tokenizer::resolve_for_model;
use vlp_text::{Padding, Tokenizer};

use crate::error::{Result, TaskError};

fn invalid(reason: String) -> TaskError {
    TaskError::Invalid {
        task: "caption".into(),
        reason,
    }
}

/// A dual encoder with a decoder, and what captioning needs.
pub struct Captioner<B: Backend> {
    /// The dual encoder (its image tower feeds the decoder).
    pub clip: ClipModel<B>,
    /// The decoder.
    pub decoder: CausalDecoder<B>,
    /// Its tokenizer.
    pub tokenizer: Arc<dyn Tokenizer>,
    /// Image preprocessing.
    pub pipeline: ImagePipeline,
    /// The start and end tokens.
    pub start: u32,
    /// The end token: writing stops after it.
    pub end: u32,
}

/// Loads a [`Captioner`] from `dir` (the dual encoder in transformers' layout, `decoder.safetensors`
/// with `decoder_config.json`, `tokenizer.json`); a model without a decoder is an error saying so.
pub fn load_captioner<B: Backend>(dir: &Path, device: &B::Device) -> Result<Captioner<B>> {
    if !has_decoder(dir) {
        return Err(invalid(format!(
            "{}: the model has no decoder ({} is missing; train one with `[method] kind = \"ptp\"`)",
            dir.display(),
            vlp_align::model::ptp::DECODER_CONFIG_FILE
        )));
    }
    let p = load_pretrained::<B>(dir, device)?;
    let (decoder, config) = load_decoder::<B>(dir, device)?;
    if config.d_model != p.model.embed_dim() {
        return Err(invalid(format!(
            "{}: the decoder reads width {}, the image tower writes {}",
            dir.display(),
            config.d_model,
            p.model.embed_dim()
        )));
    }
    // A decoder that places the image tokens by index reads exactly the tower's tokens.
    let tokens = p.model.vision_model.num_positions();
    if config.context_positions > 0 && config.context_positions != tokens {
        return Err(invalid(format!(
            "{}: the decoder places {} image tokens, the image tower writes {tokens}",
            dir.display(),
            config.context_positions
        )));
    }
    let tokenizer = resolve_for_model(dir, None, config.max_len, Padding::Zero)
        .map_err(|e| invalid(e.to_string()))?;
    if tokenizer.vocab_size != config.vocab_size {
        return Err(invalid(format!(
            "{}: the tokenizer has {} ids, the decoder {}",
            dir.display(),
            tokenizer.vocab_size,
            config.vocab_size
        )));
    }
    // The frame of an empty text: start, end, then padding.
    let frame = tokenizer
        .tokenizer
        .encode("")
        .map_err(|e| invalid(e.to_string()))?;
    let (start, end) = match (
        frame.ids.first(),
        frame.ids.get(1),
        frame.attention_mask.get(1),
    ) {
        (Some(&s), Some(&e), Some(1)) => (s, e),
        _ => {
            return Err(invalid(format!(
                "{}: the tokenizer frames no text with start and end tokens",
                dir.display()
            )));
        }
    };
    Ok(Captioner {
        clip: p.model,
        decoder,
        tokenizer: tokenizer.tokenizer,
        pipeline: p.preprocess,
        start,
        end,
    })
}

/// One caption and its score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Caption {
    /// The text (start and end tokens dropped).
    pub text: String,
    /// Its log-probability under the decoder (the end token included when reached).
    pub log_prob: f64,
    /// Whether the decoder ended it (rather than the length limit).
    pub finished: bool,
}

impl<B: Backend> Captioner<B> {
    /// Captions each image of `pixels` with `beams` beams (1: greedy), up to the decoder's
    /// length.
    ///
    /// # Shapes
    /// - `pixels`: `[n, 3, size, size]` as [`Self::pipeline`] makes them; returns `n` captions
    pub fn caption(&self, pixels: Tensor<B, 4>, beams: usize) -> Result<Vec<Caption>> {
        let n = pixels.dims()[0];
        let (_, tokens) = self.clip.encode_image_with_tokens(pixels);
        let tokens = tokens.tokens.cast(FloatDType::F32);
        let [_, t, d] = tokens.dims();
        let cfg = GenerateConfig {
            max_new_tokens: self.decoder.max_len() - 1,
            eos: Some(self.end),
        };
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let context = tokens.clone().slice([i..i + 1, 0..t, 0..d]);
            let mut lm = DecoderLm::new(&self.decoder).with_context(context, None);
            let best = beam_search(&mut lm, &[self.start], beams, 1.0, &cfg)
                .map_err(|e| invalid(format!("image {i}: {e}")))?
                .into_iter()
                .next()
                .ok_or_else(|| invalid("beam search returned no caption".into()))?;
            let finished = best.tokens.last() == Some(&self.end);
            let words: Vec<u32> = best
                .tokens
                .iter()
                .copied()
                .filter(|&id| id != self.end)
                .collect();
            out.push(Caption {
                text: self.tokenizer.decode(&words),
                log_prob: best.log_prob,
                finished,
            });
        }
        Ok(out)
    }
}
