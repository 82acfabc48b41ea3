//! PTP (Wang et al., 2023, "Position-guided Text Prompt for Vision-Language Pre-training") on a
//! CLIP dual encoder: every caption gets the position prompt of one of its image's objects
//! ([`PositionPrompt`]: "… The block 4 has a red circle.", the block read after the view's
//! augmentation), and the model trains on the prompted text with image–text contrast (the dual
//! encoder's InfoNCE), image–text matching with hard negatives ([`PtpHeads::itm_logits`],
//! [`itm_loss`]) and language modelling by a decoder that reads the image tokens
//! ([`PtpHeads::lm_losses`]), summed with equal weights as BLIP's pretraining (which PTP's code,
//! `sail-sg/ptp` `src/blip_src/models/blip_pretrain.py`, runs) sums them.
//!
//! Nothing of PTP is needed at inference: the exported model is the dual encoder, plus the
//! decoder for captioning (`vlp caption`). Evaluation adds to CLIP's metrics how well the decoder
//! fills the prompt in ([`block_filling`]).

use std::sync::Arc;

use burn::module::{Module, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Int, Tensor, TensorData};
use serde::Deserialize;
use vlp_align::loss::{clip_loss, hard_negatives, itm_loss};
use vlp_align::model::ptp::{PtpConfig, PtpHeads, has_decoder, load_decoder, save_decoder};
use vlp_align::{ClipModel, normalize};
use vlp_core::rng::Rng;
use vlp_data::preprocess::ImagePipeline;
use vlp_data::sample::{Field, Geometry};
use vlp_data::text::{OUTSIDE, PositionPrompt};
use vlp_tasks::battery::EvalImages;
use vlp_tasks::vqa::visible_objects;
use vlp_text::Tokenizer;

use super::clip::{
    architecture, build_clip, clamp_logit_scale, evaluate_pooled, export_clip, lock_towers,
    logged_scales, pipeline_of,
};
use super::{
    BuildContext, Checks, DataRequest, Embeddings, EvalContext, ExportContext, Method, Metrics,
    Objective, StepInput, batch_rng, sum_ratio,
};
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};

/// `[method.ptp]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PtpSettings {
    /// Cells per side of the position grid (the paper's 3: blocks 0–8).
    pub grid: usize,
    /// Weight of the contrastive loss (BLIP: 1).
    pub itc_weight: f64,
    /// Weight of the matching loss (BLIP: 1).
    pub itm_weight: f64,
    /// Weight of the language-modelling loss (BLIP: 1).
    pub lm_weight: f64,
    /// Blocks of the image-grounded text encoder.
    pub itm_layers: usize,
    /// Blocks of the decoder.
    pub decoder_layers: usize,
    /// Attention heads of both (must divide the joint width).
    pub n_heads: usize,
    /// Feed-forward width of both.
    pub d_hidden: usize,
    /// Held-out images whose prompt the decoder fills in at evaluation (0: none).
    pub eval_prompts: usize,
    /// Whether the decoder adds learned position embeddings to the image tokens (not in BLIP
    /// or PTP: a tower trained from scratch loses where its tokens came from; see
    /// `vlp_align::model::ptp`).
    pub image_positions: bool,
}

impl Default for PtpSettings {
    fn default() -> Self {
        Self {
            grid: 3,
            itc_weight: 1.0,
            itm_weight: 1.0,
            lm_weight: 1.0,
            itm_layers: 2,
            decoder_layers: 2,
            n_heads: 4,
            d_hidden: 256,
            eval_prompts: 500,
            image_positions: true,
        }
    }
}

/// The dual encoder and PTP's heads.
#[derive(Module, Debug)]
pub struct PtpModel<B: Backend> {
    /// The dual encoder (exported in transformers' layout).
    pub clip: ClipModel<B>,
    /// Matching encoder and head, decoder.
    pub heads: PtpHeads<B>,
}

/// PTP pretraining.
#[derive(Debug, Clone)]
pub struct PtpMethod {
    /// Its settings.
    pub settings: PtpSettings,
    lock_image: bool,
    lock_text: bool,
    seed: u64,
}

impl PtpMethod {
    /// `[method] kind = "ptp"`.
    pub fn from_config(cfg: &TrainConfig) -> Result<Self> {
        let settings: PtpSettings = cfg.method.parse("ptp")?;
        Self::new(settings, cfg)
    }

    /// The method with explicit settings (checked).
    pub fn new(settings: PtpSettings, cfg: &TrainConfig) -> Result<Self> {
        let c = Checks::new("ptp");
        let s = &settings;
        // Block names are single words of the vocabulary: "0" to "8".
        c.count("grid", s.grid, 1..=3)?;
        for (f, v) in [
            ("itc_weight", s.itc_weight),
            ("itm_weight", s.itm_weight),
            ("lm_weight", s.lm_weight),
        ] {
            c.real(f, v, 0.0, 1e3)?;
        }
        if s.itc_weight + s.itm_weight + s.lm_weight == 0.0 {
            return Err(c.fail("itc_weight", "and the other weights are 0: nothing trains"));
        }
        // BLIP draws the matching negatives by the contrastive similarities: without the
        // contrastive loss they would come from an untrained similarity.
        if s.itm_weight > 0.0 && s.itc_weight == 0.0 {
            return Err(c.fail(
                "itm_weight",
                "needs itc_weight > 0: the hard negatives are drawn by the contrastive similarity",
            ));
        }
        c.count("itm_layers", s.itm_layers, 1..=24)?;
        c.count("decoder_layers", s.decoder_layers, 1..=24)?;
        c.count("n_heads", s.n_heads, 1..=64)?;
        c.count("d_hidden", s.d_hidden, 1..=65_536)?;
        c.count("eval_prompts", s.eval_prompts, 0..=1_000_000)?;
        Ok(Self {
            settings,
            lock_image: cfg.optim.lock_image,
            lock_text: cfg.optim.lock_text,
            seed: cfg.run.seed,
        })
    }

    /// The heads' architecture for `clip` (its joint width and image tokens).
    pub fn heads_config<B: Backend>(
        &self,
        clip: &ClipModel<B>,
        ctx: &BuildContext<'_>,
    ) -> Result<PtpConfig> {
        let s = &self.settings;
        let d_model = clip.embed_dim();
        let image_tokens = clip.vision_model.num_positions();
        if !d_model.is_multiple_of(s.n_heads) {
            return Err(Checks::new("ptp").fail(
                "n_heads",
                format!("= {} does not divide the joint width {d_model}", s.n_heads),
            ));
        }
        Ok(PtpConfig::new(
            d_model,
            ctx.tokenizer.vocab_size,
            ctx.tokenizer.tokenizer.context_length(),
        )
        .with_itm_layers(s.itm_layers)
        .with_decoder_layers(s.decoder_layers)
        .with_n_heads(s.n_heads)
        .with_d_hidden(s.d_hidden)
        .with_image_positions(if s.image_positions { image_tokens } else { 0 }))
    }

    /// The position prompt it trains with.
    pub fn prompt(&self) -> PositionPrompt {
        PositionPrompt {
            grid: self.settings.grid,
        }
    }
}

/// Image tokens of `pixels` in the joint space (class token first), what the heads read.
///
/// # Shapes
/// - `pixels`: `[n, 3, size, size]`; returns `[n, d]` (pooled, normalised) and `[n, tokens, d]`
fn image_features<B: Backend>(
    clip: &ClipModel<B>,
    pixels: Tensor<B, 4>,
) -> (Tensor<B, 2>, Tensor<B, 3>) {
    let (pooled, tokens) = clip.encode_image_with_tokens(pixels);
    (
        normalize(pooled.cast(FloatDType::F32)),
        tokens.tokens.cast(FloatDType::F32),
    )
}

impl Method for PtpMethod {
    type Model<B: Backend> = PtpModel<B>;

    fn name(&self) -> &'static str {
        "ptp"
    }

    fn requires(&self) -> Vec<Field> {
        vec![Field::Captions, Field::Boxes]
    }

    fn data(&self) -> DataRequest {
        DataRequest {
            text_transform: Some(Arc::new(self.prompt())),
            ..DataRequest::default()
        }
    }

    fn pipeline(&self, ctx: &BuildContext<'_>) -> Result<ImagePipeline> {
        pipeline_of(ctx, &architecture(ctx, false)?)
    }

    fn build<B: Backend>(&self, ctx: &BuildContext<'_>, device: &B::Device) -> Result<PtpModel<B>> {
        let clip = build_clip::<B>(ctx, false, device)?;
        let config = self.heads_config(&clip, ctx)?;
        let mut heads = config.init::<B>(device);
        // Fine-tuning from a PTP run's final/ keeps its decoder (the matching head is not
        // exported: it is a pretraining device).
        if let Some(dir) = &ctx.config.model.init
            && has_decoder(std::path::Path::new(dir))
        {
            let dir = std::path::Path::new(dir);
            let (decoder, c) = load_decoder::<B>(dir, device)?;
            let want = config.decoder();
            let shape = |c: &vlp_text::decoder::CausalDecoderConfig| {
                (c.vocab_size, c.max_len, c.d_model, c.context_positions)
            };
            if shape(&c) != shape(&want) {
                return Err(TrainError::Config(format!(
                    "{}: its decoder reads {} tokens of {} ids at width {} and places {} image                      tokens, this run {} of {} at {} and {} (`image_positions`)",
                    dir.display(),
                    c.max_len,
                    c.vocab_size,
                    c.d_model,
                    c.context_positions,
                    want.max_len,
                    want.vocab_size,
                    want.d_model,
                    want.context_positions
                )));
            }
            heads.decoder = decoder;
        }
        Ok(PtpModel { clip, heads })
    }

    fn freeze<B: Backend>(&self, mut model: PtpModel<B>) -> PtpModel<B> {
        model.clip = lock_towers(model.clip, self.lock_image, self.lock_text);
        model
    }

    fn embed<B: Backend>(
        &self,
        model: &PtpModel<B>,
        input: &StepInput<'_, B>,
    ) -> Result<Embeddings<B>> {
        let clip = &model.clip;
        let n = input.batch.len();
        let (ids, mask) = input.texts(1)?;
        let s = &self.settings;
        // Features are computed only for the losses that read them: Burn's autodiff keeps the
        // graph of a tracked tensor that never reaches the loss (the text tower's cost 13 MB a
        // step when only the decoder trained).
        let (image, image_tokens) = if s.itm_weight > 0.0 || s.lm_weight > 0.0 {
            let (pooled, tokens) = image_features(clip, input.images());
            (pooled, Some(tokens))
        } else {
            let pooled = clip.encode_image(input.images()).cast(FloatDType::F32);
            (normalize(pooled), None)
        };
        let mut e = Embeddings::new();
        if s.itc_weight > 0.0 {
            e = e.with_rows("image", image);
            if s.itm_weight > 0.0 {
                let (text, words) = clip.encode_text_with_tokens(ids.clone(), mask.clone());
                // The negatives' draws, from the batch so a resumed run draws the same.
                let mut rng = batch_rng(self.seed, input.batch);
                let draws: Vec<f32> = (0..2 * n).map(|_| rng.unit()).collect();
                let draws = Tensor::<B, 2>::from_data(TensorData::new(draws, [n, 2]), input.device);
                let tokens = image_tokens
                    .clone()
                    .expect("computed for the matching loss");
                e = e
                    .with_rows("text", normalize(text.cast(FloatDType::F32)))
                    .with_rows("itm_draws", draws)
                    .with_tokens("image_tokens", tokens, None)
                    .with_tokens("words", words.tokens.cast(FloatDType::F32), words.padding);
            } else {
                let m = clip.text_model.causal.then_some(mask.clone());
                let text = clip.encode_text(ids.clone(), m).cast(FloatDType::F32);
                e = e.with_rows("text", normalize(text));
            }
        }
        if let Some(tokens) = image_tokens.filter(|_| s.lm_weight > 0.0) {
            let losses = model.heads.lm_losses(ids, mask.clone(), tokens);
            let [_, t] = mask.dims();
            let counted = mask.slice([0..n, 1..t]).float().sum_dim(1);
            e = e.with_rows("lm", Tensor::cat(vec![losses.sum_dim(1), counted], 1));
        }
        Ok(e)
    }

    fn objective<B: Backend>(&self, model: &PtpModel<B>, e: Embeddings<B>) -> Result<Objective<B>> {
        let s = &self.settings;
        let scale = model.clip.logit_scale.val().cast(FloatDType::F32);
        let mut parts = Vec::new();
        let mut loss: Option<Tensor<B, 1>> = None;
        let mut add =
            |name: &str, l: Tensor<B, 1>, w: f64, parts: &mut Vec<(String, Tensor<B, 1>)>| {
                let weighted = l.clone() * w;
                loss = Some(match loss.take() {
                    Some(acc) => acc + weighted,
                    None => weighted,
                });
                parts.push((name.to_string(), l));
            };
        if s.itc_weight > 0.0 {
            let (image, text) = (e.rows("image")?, e.rows("text")?);
            let itc = clip_loss(image.clone(), text.clone(), scale.clone());
            add("itc", itc, s.itc_weight, &mut parts);
            if s.itm_weight > 0.0 {
                let itm = self.matching_loss(model, &e, image, text, scale)?;
                add("itm", itm, s.itm_weight, &mut parts);
            }
        }
        if s.lm_weight > 0.0 {
            add("lm", sum_ratio(e.rows("lm")?), s.lm_weight, &mut parts);
        }
        let loss = loss.expect("checked: some weight is positive");
        Ok(Objective { loss, parts })
    }

    fn objective_params<B: Backend>(&self, model: &PtpModel<B>) -> Vec<ParamId> {
        vec![model.clip.logit_scale.id]
    }

    fn after_update<B: Backend>(&self, mut model: PtpModel<B>) -> PtpModel<B> {
        model.clip.logit_scale = clamp_logit_scale(model.clip.logit_scale);
        model
    }

    fn log_values<B: Backend>(&self, model: &PtpModel<B>) -> Vec<(String, f64)> {
        logged_scales(&[("logit_scale", &model.clip.logit_scale)])
    }

    fn evaluate<B: Backend>(
        &self,
        model: &PtpModel<B>,
        ctx: &EvalContext<'_, B>,
    ) -> Result<Metrics> {
        let mut m = evaluate_pooled(&model.clip, ctx)?;
        if let Some(set) = ctx.eval
            && self.settings.eval_prompts > 0
            && let Some(r) = block_filling(
                model,
                set,
                ctx.tokenizer,
                &self.prompt(),
                self.settings.eval_prompts,
                ctx.device,
            )?
        {
            m.insert("block_accuracy".into(), r.accuracy());
            m.insert("block_prompts".into(), r.prompts as f64);
        }
        Ok(m)
    }

    fn export<B: Backend>(&self, model: &PtpModel<B>, ctx: &ExportContext<'_>) -> Result<()> {
        export_clip(&model.clip, ctx)?;
        let build = BuildContext {
            config: ctx.config,
            tokenizer: ctx.tokenizer,
        };
        let config = self.heads_config(&model.clip, &build)?;
        save_decoder(&model.heads.decoder, &config.decoder(), ctx.dir)?;
        Ok(())
    }
}

impl PtpMethod {
    /// BLIP's matching loss on the (gathered) batch: each image with its text and with a text
    /// drawn by similarity, each text with an image drawn likewise.
    fn matching_loss<B: Backend>(
        &self,
        model: &PtpModel<B>,
        e: &Embeddings<B>,
        image: Tensor<B, 2>,
        text: Tensor<B, 2>,
        scale: Tensor<B, 1>,
    ) -> Result<Tensor<B, 1>> {
        let [n, _] = image.dims();
        let (image_tokens, _) = e.tokens("image_tokens")?;
        let (words, padding) = e.tokens("words")?;
        let draws = to_vec(e.rows("itm_draws")?)?;
        let sim = image.matmul(text.transpose()).detach() * scale.detach().exp().reshape([1, 1]);
        let i2t = to_vec(sim.clone())?;
        let t2i = to_vec(sim.transpose())?;
        let column = |k: usize| {
            draws
                .iter()
                .skip(k)
                .step_by(2)
                .copied()
                .collect::<Vec<f32>>()
        };
        let fail = |e: vlp_align::AlignError| TrainError::Config(format!("ptp: {e}"));
        let neg_text = hard_negatives(&i2t, n, &column(0)).map_err(fail)?;
        let neg_image = hard_negatives(&t2i, n, &column(1)).map_err(fail)?;
        let device = image_tokens.device();
        let pick = |v: &[usize]| {
            Tensor::<B, 1, Int>::from_data(
                TensorData::new(v.iter().map(|&i| i as i64).collect::<Vec<_>>(), [v.len()]),
                &device,
            )
        };
        let (text_rows, image_rows) = itm_pairs(&neg_text, &neg_image);
        let (text_rows, image_rows) = (pick(&text_rows), pick(&image_rows));
        let all_words = words.select(0, text_rows.clone());
        // Through integers: Flex's `select` on a bool tensor returns bytes, which later
        // operations refuse next to bools ("cat: dtype mismatch: expected Bool(Native), got U8").
        let all_padding = padding.map(|p| p.int().select(0, text_rows).equal_elem(1));
        let all_images = image_tokens.select(0, image_rows);
        let logits = model.heads.itm_logits(all_words, all_padding, all_images);
        Ok(itm_loss(logits))
    }
}

/// The `3n` (text, image) pairs BLIP's matching head scores, as row indices into the batch's
/// texts and images: the `n` matched pairs, then each image with its drawn text, then each text
/// with its drawn image (labels 1, 0, 0; [`itm_loss`] expects this order).
pub fn itm_pairs(neg_text: &[usize], neg_image: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let n = neg_text.len();
    let texts = (0..n).chain(neg_text.iter().copied()).chain(0..n).collect();
    let images = (0..n)
        .chain(0..n)
        .chain(neg_image.iter().copied())
        .collect();
    (texts, images)
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| TrainError::Config(format!("reading features back: {e:?}")))
}

/// How well the decoder fills PTP's prompt in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockFilling {
    /// Prompts whose best-scored block holds an object of the prompt's name.
    pub correct: usize,
    /// Prompts scored.
    pub prompts: usize,
}

impl BlockFilling {
    /// Fraction right (0 without prompts).
    pub fn accuracy(&self) -> f64 {
        if self.prompts == 0 {
            0.0
        } else {
            self.correct as f64 / self.prompts as f64
        }
    }
}

/// PTP's prompt filled in by the decoder on up to `limit` held-out images: for one named,
/// visible object of each (drawn from the image's key), every block's prompt
/// ("{caption}. The block {b} has a {object}.", the image's first caption as in training) is
/// scored by its log-likelihood under the decoder, and the best block is right when it holds an
/// object of that name (a name can occur twice). `None` when no image has a caption and a named
/// visible object.
pub fn block_filling<B: Backend>(
    model: &PtpModel<B>,
    set: &EvalImages,
    tokenizer: &dyn Tokenizer,
    prompt: &PositionPrompt,
    limit: usize,
    device: &B::Device,
) -> Result<Option<BlockFilling>> {
    let view = Geometry::identity(set.image_size);
    let blocks = prompt.grid * prompt.grid;
    // (image, object name, blocks holding that name)
    let mut cases: Vec<(usize, String, Vec<String>)> = Vec::new();
    for (i, a) in set.annotations.iter().enumerate() {
        if cases.len() == limit {
            break;
        }
        let named: Vec<_> = visible_objects(a)
            .into_iter()
            .filter(|b| !b.name.trim().is_empty())
            .collect();
        if named.is_empty() || set.captions[i].is_empty() {
            continue;
        }
        let mut rng = Rng::new(key_seed(&set.keys[i]));
        let name = named[rng.below(named.len())].name.trim().to_string();
        let right: Vec<String> = named
            .iter()
            .filter(|b| b.name.trim() == name)
            .map(|b| {
                let [x0, y0, x1, y1] = b.bbox;
                prompt.block(&view, (x0 + x1) / 2.0, (y0 + y1) / 2.0)
            })
            .filter(|b| b != OUTSIDE)
            .collect();
        if !right.is_empty() {
            cases.push((i, name, right));
        }
    }
    if cases.is_empty() {
        return Ok(None);
    }
    // Image tokens of the chosen images.
    let mut tokens: Vec<Option<Tensor<B, 3>>> = vec![None; set.len()];
    let mut start = 0;
    for px in set.tensors::<B>(device) {
        let b = px.dims()[0];
        let (_, t) = image_features(&model.clip, px);
        for (k, slot) in tokens[start..start + b].iter_mut().enumerate() {
            if cases.iter().any(|c| c.0 == start + k) {
                let [_, p, d] = t.dims();
                *slot = Some(t.clone().slice([k..k + 1, 0..p, 0..d]));
            }
        }
        start += b;
    }
    let mut correct = 0;
    for (i, name, right) in &cases {
        let texts: Vec<String> = (0..blocks)
            .map(|b| PositionPrompt::prompt(&set.captions[*i][0], &b.to_string(), name))
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let batch = tokenizer.encode_batch(&refs)?;
        // A prompt that fills the whole context may have been cut off: it cannot be scored.
        let ctx_len = batch.context_length;
        if let Some(k) = (0..blocks).find(|&k| batch.attention_mask[(k + 1) * ctx_len - 1] == 1) {
            return Err(TrainError::Config(format!(
                "ptp: the prompt \"{}\" fills all {ctx_len} tokens of the tokenizer's context \
                 and may be cut off; raise `[tokenizer] context_length`",
                texts[k]
            )));
        }
        let (ids, mask) = batch.to_tensors::<B>(device);
        let image = tokens[*i].clone().expect("chosen above");
        let [_, p, d] = image.dims();
        let image = image.expand([blocks, p, d]);
        let ll = to_vec(model.heads.log_likelihood(ids, mask, image))?;
        let best = ll
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(b, _)| b.to_string())
            .expect("at least one block");
        correct += usize::from(right.contains(&best));
    }
    Ok(Some(BlockFilling {
        correct,
        prompts: cases.len(),
    }))
}

/// A seed from a sample key (FNV-1a), so the object chosen per image is fixed.
fn key_seed(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::build_tokenizer;

    #[test]
    fn matching_pairs_are_matched_then_drawn_text_then_drawn_image() {
        let (t, i) = itm_pairs(&[2, 0, 1], &[1, 2, 0]);
        assert_eq!(t, vec![0, 1, 2, 2, 0, 1, 0, 1, 2]);
        assert_eq!(i, vec![0, 1, 2, 0, 1, 2, 1, 2, 0]);
    }

    #[test]
    fn settings_are_checked_naming_the_field() {
        let cfg = TrainConfig::default();
        let bad = |f: &dyn Fn(&mut PtpSettings)| {
            let mut s = PtpSettings::default();
            f(&mut s);
            PtpMethod::new(s, &cfg).unwrap_err().to_string()
        };
        assert!(bad(&|s| s.grid = 4).contains("grid"));
        assert!(bad(&|s| s.grid = 0).contains("grid"));
        assert!(bad(&|s| s.lm_weight = f64::NAN).contains("lm_weight"));
        assert!(bad(&|s| s.itm_layers = 0).contains("itm_layers"));
        let e = bad(&|s| s.itc_weight = 0.0);
        assert!(e.contains("itm_weight") && e.contains("itc_weight"), "{e}");
        let e = bad(&|s| {
            s.itc_weight = 0.0;
            s.itm_weight = 0.0;
            s.lm_weight = 0.0;
        });
        assert!(e.contains("nothing trains"), "{e}");
        // The decoder alone is a valid run.
        let lm_only = PtpSettings {
            itc_weight: 0.0,
            itm_weight: 0.0,
            ..PtpSettings::default()
        };
        assert!(PtpMethod::new(lm_only, &cfg).is_ok());
    }

    #[test]
    fn every_block_prompt_tokenises_without_unknowns() {
        let mut cfg = TrainConfig::default();
        cfg.tokenizer.context_length = 40;
        let tok = build_tokenizer(&cfg).unwrap();
        let caption = "There is a large red circle to the left of a small blue square.";
        let mut seen = Vec::new();
        for b in (0..9).map(|b| b.to_string()).chain([OUTSIDE.to_string()]) {
            let text = PositionPrompt::prompt(caption, &b, "red circle");
            let e = tok.tokenizer.encode(&text).unwrap();
            let back = tok.tokenizer.decode(&e.ids);
            assert!(!back.contains("<unk>"), "{text:?} → {back:?}");
            assert!(
                back.contains(&format!("block {b} has a red circle")),
                "{back:?}"
            );
            assert!(!seen.contains(&e.ids), "block {b} encodes like another");
            seen.push(e.ids);
        }
    }
}
