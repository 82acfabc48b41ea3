//! FILIP (Yao et al., 2021): token-wise late interaction between image patches and words, on
//! the CLIP dual encoder. The similarities and loss are `vlp_align::loss::filip`; this module
//! wires them to the runner: token features of both towers, the top image tokens kept before
//! the all-gather, an optional CLIP loss on top, late-interaction zero-shot (prompt ensembles)
//! and retrieval, and a pointing-game metric on ShapesWorld's masks.
//!
//! `[method.filip]` (all optional):
//! - `image_token_fraction` (1.0): fraction of image tokens kept before the gather, by their
//!   token-wise max similarity to the local texts (the paper's efficiency trick uses 0.25);
//! - `clip_weight` (0.0): weight of CLIP's pooled InfoNCE added to FILIP's loss;
//! - `class_token` (false): whether the class token counts as an image token;
//! - `logit_scale_init` (ln(1/0.07)): FILIP's own temperature, learnable.

use burn::module::{Module, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, ElementConversion, FloatDType, Tensor};
use serde::Deserialize;
use vlp_align::loss::{clip_loss, filip_loss, late_interaction, select_image_tokens};
use vlp_align::{ClipModel, TokenFeatures, normalize, normalize_last};
use vlp_data::preprocess::ImagePipeline;
use vlp_tasks::battery::{EvalImages, metrics_of, zero_shot_report};
use vlp_tasks::localisation::pointing_game;
use vlp_tasks::retrieval::retrieval_scored;
use vlp_tasks::scoring::{LateInteractionScorer, TokenSet};
use vlp_text::Tokenizer;

use super::clip::{
    architecture, build_clip, clamp_logit_scale, export_clip, lock_towers, log_scale_param,
    logged_scales, pipeline_of,
};
use super::{
    BuildContext, Checks, Embeddings, EvalContext, ExportContext, Method, Metrics, Objective,
    StepInput,
};
use crate::config::TrainConfig;
use crate::error::Result;

/// `[method.filip]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilipSettings {
    /// Fraction of image tokens kept before the all-gather (FILIP §3.1.2 uses 0.25).
    pub image_token_fraction: f64,
    /// Weight of CLIP's pooled InfoNCE added to the late-interaction loss.
    pub clip_weight: f64,
    /// Whether a CLIP tower's class token counts as an image token.
    pub class_token: bool,
    /// Whether the text's start token counts as a text token. In a causal text tower (CLIP's)
    /// its feature is the same for every text: it says nothing about the text and only adds an
    /// image-dependent offset to the text→image similarity, so it is left out by default.
    pub start_token: bool,
    /// Initial log of FILIP's inverse temperature.
    pub logit_scale_init: f64,
}

impl Default for FilipSettings {
    fn default() -> Self {
        Self {
            image_token_fraction: 1.0,
            clip_weight: 0.0,
            class_token: false,
            start_token: false,
            logit_scale_init: (1.0f64 / 0.07).ln(),
        }
    }
}

/// FILIP's model: the dual encoder and the temperature of its token-wise similarities.
#[derive(Module, Debug)]
pub struct FilipModel<B: Backend> {
    /// The dual encoder (exported in transformers' layout).
    pub clip: ClipModel<B>,
    /// Log of the late-interaction logit scale, `[1]`.
    pub token_logit_scale: Param<Tensor<B, 1>>,
}

/// FILIP on a CLIP dual encoder.
#[derive(Debug, Clone)]
pub struct FilipMethod {
    /// Its settings.
    pub settings: FilipSettings,
    lock_image: bool,
    lock_text: bool,
}

impl FilipMethod {
    /// `[method] kind = "filip"`.
    pub fn from_config(cfg: &TrainConfig) -> Result<Self> {
        let settings: FilipSettings = cfg.method.parse("filip")?;
        Self::new(settings, cfg)
    }

    /// The method with explicit settings (checked).
    pub fn new(settings: FilipSettings, cfg: &TrainConfig) -> Result<Self> {
        let c = Checks::new("filip");
        c.real_above(
            "image_token_fraction",
            settings.image_token_fraction,
            0.0,
            1.0,
        )?;
        c.weight("clip_weight", settings.clip_weight)?;
        c.logit_scale("logit_scale_init", settings.logit_scale_init)?;
        Ok(Self {
            settings,
            lock_image: cfg.optim.lock_image,
            lock_text: cfg.optim.lock_text,
        })
    }

    /// Normalised image tokens (class token dropped unless configured) of `pixels`.
    fn image_tokens<B: Backend>(
        &self,
        model: &ClipModel<B>,
        pixels: Tensor<B, 4>,
    ) -> (Tensor<B, 2>, Tensor<B, 3>) {
        let (pooled, TokenFeatures { tokens, .. }) = model.encode_image_with_tokens(pixels);
        let tokens = self.patch_tokens(model, tokens.cast(FloatDType::F32));
        (pooled.cast(FloatDType::F32), normalize_last(tokens))
    }

    fn patch_tokens<B: Backend>(&self, model: &ClipModel<B>, tokens: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, d] = tokens.dims();
        if model.vision_model.has_class_token() && !self.settings.class_token {
            tokens.slice([0..b, 1..t, 0..d])
        } else {
            tokens
        }
    }

    /// The padding of text tokens, with the start token marked as padding unless it counts.
    fn text_padding<B: Backend>(
        &self,
        model: &ClipModel<B>,
        padding: Option<Tensor<B, 2, Bool>>,
    ) -> Option<Tensor<B, 2, Bool>> {
        if self.settings.start_token || !model.text_model.causal {
            return padding;
        }
        padding.map(|p| {
            let [n, _] = p.dims();
            let device = p.device();
            p.slice_assign([0..n, 0..1], Tensor::full([n, 1], true, &device))
        })
    }

    /// Token sets of `texts` (normalised, with padding), a few hundred at a time.
    pub fn text_tokens<B: Backend>(
        &self,
        model: &ClipModel<B>,
        tokenizer: &dyn Tokenizer,
        texts: &[String],
        device: &B::Device,
    ) -> Result<TokenSet> {
        let mut set = TokenSet::default();
        for chunk in texts.chunks(256) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            let (ids, mask) = tokenizer.encode_batch(&refs)?.to_tensors::<B>(device);
            let (_, t) = model.encode_text_with_tokens(ids, mask);
            let padding = self.text_padding(model, t.padding);
            set.extend(TokenSet::from_tensors(normalize_last(t.tokens), padding));
        }
        Ok(set)
    }

    /// Normalised image tokens of every image of `set` (class token as configured).
    pub fn image_set<B: Backend>(
        &self,
        model: &ClipModel<B>,
        set: &EvalImages,
        device: &B::Device,
    ) -> TokenSet {
        let mut out = TokenSet::default();
        for px in set.tensors::<B>(device) {
            let (_, tokens) = self.image_tokens(model, px);
            out.extend(TokenSet::from_tensors(tokens, None));
        }
        out
    }

    /// Late-interaction zero-shot: every class scores the mean of its prompts' `s^I`.
    fn zero_shot<B: Backend>(
        &self,
        model: &ClipModel<B>,
        images: &TokenSet,
        set: &EvalImages,
        ctx: &EvalContext<'_, B>,
    ) -> Result<Option<f64>> {
        let (Some(labels), Some(classes)) = (&set.labels, &set.classes) else {
            return Ok(None);
        };
        let prompts: Vec<String> = classes
            .iter()
            .flat_map(|c| ctx.templates.iter().map(move |t| t.replace("{}", c)))
            .collect();
        let texts = self.text_tokens(model, ctx.tokenizer, &prompts, ctx.device)?;
        let scorer = LateInteractionScorer::<B> {
            images,
            texts: &texts,
            device: ctx.device.clone(),
        };
        Ok(Some(
            zero_shot_report(&scorer, labels, classes, ctx.templates.len())?.top1,
        ))
    }

    /// The pointing game on images whose main object (box 0) has an instance mask: the patch
    /// scoring highest against the object's colour–shape phrase should lie on the object.
    pub fn pointing<B: Backend>(
        &self,
        model: &ClipModel<B>,
        set: &EvalImages,
        tokenizer: &dyn Tokenizer,
        device: &B::Device,
    ) -> Result<Option<vlp_tasks::localisation::PointingResult>> {
        let grid = model.vision_model.grid();
        let keep: Vec<usize> = (0..set.len())
            .filter(|&i| {
                let a = &set.annotations[i];
                a.instance_mask.is_some() && !a.boxes.is_empty()
            })
            .collect();
        if keep.is_empty() {
            return Ok(None);
        }
        let images = self.image_set(model, set, device);
        let patches = images.tokens;
        let with_cls =
            usize::from(model.vision_model.has_class_token() && self.settings.class_token);
        let phrases: Vec<String> = keep
            .iter()
            .map(|&i| set.annotations[i].boxes[0].name.clone())
            .collect();
        let texts = self.text_tokens(model, tokenizer, &phrases, device)?;
        let d = images.dim;
        let mut scores = Vec::with_capacity(keep.len());
        for (q, &i) in keep.iter().enumerate() {
            // The phrase's words: its tokens without the start and end tokens.
            let valid: Vec<usize> = (1..texts.tokens)
                .filter(|&r| !texts.padding[q * texts.tokens + r])
                .collect();
            let words = if valid.len() > 1 {
                &valid[..valid.len() - 1]
            } else {
                &valid[..]
            };
            let row: Vec<f32> = (with_cls..patches)
                .map(|k| {
                    let x = &images.data[(i * patches + k) * d..(i * patches + k + 1) * d];
                    words
                        .iter()
                        .map(|&r| {
                            let y = &texts.data
                                [(q * texts.tokens + r) * d..(q * texts.tokens + r + 1) * d];
                            x.iter().zip(y).map(|(a, b)| a * b).sum::<f32>()
                        })
                        .fold(f32::NEG_INFINITY, f32::max)
                })
                .collect();
            scores.push(row);
        }
        let masks: Vec<&vlp_data::sample::Mask> = keep
            .iter()
            .map(|&i| set.annotations[i].instance_mask.as_ref().expect("filtered"))
            .collect();
        let ids = vec![1u8; keep.len()];
        Ok(Some(pointing_game(&scores, &masks, &ids, grid, 0.25)?))
    }
}

impl Method for FilipMethod {
    type Model<B: Backend> = FilipModel<B>;

    fn name(&self) -> &'static str {
        "filip"
    }

    fn pipeline(&self, ctx: &BuildContext<'_>) -> Result<ImagePipeline> {
        pipeline_of(ctx, &architecture(ctx, false)?)
    }

    fn build<B: Backend>(
        &self,
        ctx: &BuildContext<'_>,
        device: &B::Device,
    ) -> Result<FilipModel<B>> {
        Ok(FilipModel {
            clip: build_clip::<B>(ctx, false, device)?,
            token_logit_scale: log_scale_param(self.settings.logit_scale_init, device),
        })
    }

    fn freeze<B: Backend>(&self, mut model: FilipModel<B>) -> FilipModel<B> {
        model.clip = lock_towers(model.clip, self.lock_image, self.lock_text);
        model
    }

    fn embed<B: Backend>(
        &self,
        model: &FilipModel<B>,
        input: &StepInput<'_, B>,
    ) -> Result<Embeddings<B>> {
        let clip = &model.clip;
        let (ids, mask) = input.tokens()?;
        let (img_pooled, img_tokens) = self.image_tokens(clip, input.images());
        let (txt_pooled, txt) = clip.encode_text_with_tokens(ids, mask);
        let txt_tokens = normalize_last(txt.tokens.cast(FloatDType::F32));
        let txt_padding = self.text_padding(clip, txt.padding);
        // Keep the best-matching image tokens before the gather (§3.1.2): fewer tokens cross
        // the network and enter the n × n × tokens² product.
        let [_, t, _] = img_tokens.dims();
        let keep = ((t as f64 * self.settings.image_token_fraction).ceil() as usize).clamp(1, t);
        let (img_tokens, img_pad) = select_image_tokens(
            img_tokens,
            None,
            txt_tokens.clone(),
            txt_padding.clone(),
            keep,
        );
        let mut e = Embeddings::new()
            .with_tokens("image_tokens", img_tokens, img_pad)
            .with_tokens("text_tokens", txt_tokens, txt_padding);
        if self.settings.clip_weight > 0.0 {
            e = e
                .with_rows("image", normalize(img_pooled))
                .with_rows("text", normalize(txt_pooled.cast(FloatDType::F32)));
        }
        Ok(e)
    }

    fn objective<B: Backend>(
        &self,
        model: &FilipModel<B>,
        e: Embeddings<B>,
    ) -> Result<Objective<B>> {
        let (x, xp) = e.tokens("image_tokens")?;
        let (y, yp) = e.tokens("text_tokens")?;
        let (s_i2t, s_t2i) = late_interaction(x, xp, y, yp);
        let filip = filip_loss(
            s_i2t,
            s_t2i,
            model.token_logit_scale.val().cast(FloatDType::F32),
        );
        let mut parts = vec![("filip".to_string(), filip.clone())];
        let loss = if self.settings.clip_weight > 0.0 {
            let clip = clip_loss(
                e.rows("image")?,
                e.rows("text")?,
                model.clip.logit_scale.val().cast(FloatDType::F32),
            );
            parts.push(("clip".into(), clip.clone()));
            filip + clip * self.settings.clip_weight
        } else {
            filip
        };
        Ok(Objective { loss, parts })
    }

    fn objective_params<B: Backend>(&self, model: &FilipModel<B>) -> Vec<ParamId> {
        vec![model.token_logit_scale.id, model.clip.logit_scale.id]
    }

    fn after_update<B: Backend>(&self, mut model: FilipModel<B>) -> FilipModel<B> {
        model.token_logit_scale = clamp_logit_scale(model.token_logit_scale);
        model.clip.logit_scale = clamp_logit_scale(model.clip.logit_scale);
        model
    }

    fn log_values<B: Backend>(&self, model: &FilipModel<B>) -> Vec<(String, f64)> {
        logged_scales(&[("token_logit_scale", &model.token_logit_scale)])
    }

    fn evaluate<B: Backend>(
        &self,
        model: &FilipModel<B>,
        ctx: &EvalContext<'_, B>,
    ) -> Result<Metrics> {
        let clip = &model.clip;
        let mut m = Metrics::new();
        if let Some(set) = ctx.eval {
            let images = self.image_set(clip, set, ctx.device);
            let zs = self.zero_shot(clip, &images, set, ctx)?;
            let (texts, links) = set.caption_links(true)?;
            let texts = self.text_tokens(clip, ctx.tokenizer, &texts, ctx.device)?;
            let scorer = LateInteractionScorer::<B> {
                images: &images,
                texts: &texts,
                device: ctx.device.clone(),
            };
            let r = retrieval_scored(&scorer, &links)?;
            m.extend(metrics_of(None, Some(&r)));
            if let Some(top1) = zs {
                m.insert("zero_shot_top1".into(), top1);
            }
            if let Some(p) = self.pointing(clip, set, ctx.tokenizer, ctx.device)? {
                m.insert("pointing_accuracy".into(), p.accuracy);
                m.insert("pointing_chance".into(), p.chance);
            }
        }
        if let Some(set) = ctx.unseen {
            let images = self.image_set(clip, set, ctx.device);
            if let Some(top1) = self.zero_shot(clip, &images, set, ctx)? {
                m.insert("zero_shot_top1_unseen".into(), top1);
            }
        }
        Ok(m)
    }

    fn export<B: Backend>(&self, model: &FilipModel<B>, ctx: &ExportContext<'_>) -> Result<()> {
        export_clip(&model.clip, ctx)?;
        // The late-interaction temperature is FILIP's own: kept next to the weights.
        let s: f32 = model.token_logit_scale.val().into_scalar().elem();
        ctx.write_json(
            "filip.json",
            &serde_json::json!({
                "token_logit_scale": s,
                "settings": {
                    "image_token_fraction": self.settings.image_token_fraction,
                    "clip_weight": self.settings.clip_weight,
                    "class_token": self.settings.class_token,
                }
            }),
        )
    }
}
