//! DreamLIP (Zheng et al., 2024, "DreamLIP: Language-Image Pre-training with Long Captions"):
//! each image trains with its caption and sub-captions drawn from its long caption
//! ([`SubCaptionSampler`]), under CLIP's loss on the caption, a multi-positive loss that pulls
//! every sub-caption to its image, and a sub-caption-specific grouping loss that pools each
//! sub-caption's patches and contrasts them with it (optionally an optimal-transport local
//! loss). The objectives are `vlp_align::loss::{multi_positive_loss, grouping_loss, ot_loss}`;
//! this module wires them to the runner and evaluates, besides CLIP's metrics, long-caption
//! retrieval and where the grouping of an object's sentence points (ShapesWorld's masks).
//!
//! Weights follow the official code (`open_clip/loss.py`, `training/params.py`): CLIP's loss
//! on the caption is divided by the number of texts per image, the multi-positive loss by 10,
//! the grouping loss has weight 1 and its own learnable temperature; `sgl_delta` 0.

use std::sync::Arc;

use burn::module::{Module, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, FloatDType, Tensor, TensorData};
use serde::Deserialize;
use vlp_align::loss::{
    clip_loss, grouped_patches, grouping_loss, grouping_weights, multi_positive_loss, ot_loss,
};
use vlp_align::{ClipModel, TokenFeatures, normalize, normalize_last};
use vlp_data::preprocess::ImagePipeline;
use vlp_data::sample::{Field, Mask};
use vlp_data::text::{SubCaptionSampler, split_sentences};
use vlp_tasks::battery::{EvalImages, clip_retrieval};
use vlp_tasks::embed::embed_texts;
use vlp_tasks::localisation::{PointingResult, centroid_game};
use vlp_text::Tokenizer;

use super::clip::{
    architecture, build_clip, clamp_logit_scale, evaluate_pooled, export_clip, lock_towers,
    log_scale_param, logged_scales, pipeline_of, texts_per_sample,
};
use super::{
    BuildContext, Checks, DataRequest, Embeddings, EvalContext, ExportContext, Method, Metrics,
    Objective, StepInput,
};
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};

/// `[method.dreamlip]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DreamLipSettings {
    /// Sub-captions drawn per image (the code's `num_text`).
    pub subcaptions: usize,
    /// Consecutive sentences joined into one sub-caption (the code's `merged_num`).
    pub merged: usize,
    /// Weight of CLIP's loss on the caption (the code's `clip_lossweight`; the loss itself is
    /// divided by the texts per image, as the code does).
    pub clip_weight: f64,
    /// Weight of the multi-positive circle loss (the code divides it by 10).
    pub multi_positive_weight: f64,
    /// Circle-loss margin `m`.
    pub margin: f64,
    /// Circle-loss scale `γ`.
    pub gamma: f64,
    /// Weight of the sub-caption-specific grouping loss (the code's `sgl_lossweight`).
    pub grouping_weight: f64,
    /// Grouping threshold on min–max normalised similarities (`sgl_delta`; negative:
    /// 1/patches).
    pub grouping_delta: f64,
    /// Weight of the optimal-transport local loss (0 = off, the code's default).
    pub ot_weight: f64,
    /// Entropic regularisation of the transport plan.
    pub ot_epsilon: f64,
    /// Sinkhorn iterations at most.
    pub ot_iterations: usize,
    /// Initial log inverse temperature of the grouping loss (learnable, ≤ ln 100).
    pub local_logit_scale_init: f64,
}

impl Default for DreamLipSettings {
    fn default() -> Self {
        Self {
            subcaptions: 6,
            merged: 1,
            clip_weight: 1.0,
            multi_positive_weight: 0.1,
            margin: 0.25,
            gamma: 32.0,
            grouping_weight: 1.0,
            grouping_delta: 0.0,
            ot_weight: 0.0,
            ot_epsilon: 0.1,
            ot_iterations: 100,
            local_logit_scale_init: (1.0f64 / 0.07).ln(),
        }
    }
}

/// DreamLIP's model: the dual encoder and the temperature of its grouping loss.
#[derive(Module, Debug)]
pub struct DreamLipModel<B: Backend> {
    /// The dual encoder (exported in transformers' layout).
    pub clip: ClipModel<B>,
    /// Log of the grouping loss's logit scale, `[1]`.
    pub local_logit_scale: Param<Tensor<B, 1>>,
}

/// DreamLIP on a CLIP dual encoder.
#[derive(Debug, Clone)]
pub struct DreamLipMethod {
    /// Its settings.
    pub settings: DreamLipSettings,
    lock_image: bool,
    lock_text: bool,
}

/// Normalised pooled features and patch tokens (class token dropped) of `pixels`, in f32.
///
/// # Shapes
/// - `pixels`: `[n, 3, size, size]`; returns `[n, d]` and `[n, patches, d]`
pub fn image_patches<B: Backend>(
    model: &ClipModel<B>,
    pixels: Tensor<B, 4>,
) -> (Tensor<B, 2>, Tensor<B, 3>) {
    let (pooled, TokenFeatures { tokens, .. }) = model.encode_image_with_tokens(pixels);
    let tokens = tokens.cast(FloatDType::F32);
    let [b, t, d] = tokens.dims();
    let patches = if model.vision_model.has_class_token() {
        tokens.slice([0..b, 1..t, 0..d])
    } else {
        tokens
    };
    (
        normalize(pooled.cast(FloatDType::F32)),
        normalize_last(patches),
    )
}

/// Where the grouping of an object's own sentence points: for held-out images whose main
/// object (instance 1) has a mask and a sentence, the grouping weights of that sentence
/// ("There is a large red circle") over the image's patches, and whether their weighted
/// centroid lies on the object ([`centroid_game`]). Works on any dual encoder (the CLIP
/// baseline of the claim test runs it too). `None` when no image qualifies.
pub fn grouping_localisation<B: Backend>(
    model: &ClipModel<B>,
    set: &EvalImages,
    tokenizer: &dyn Tokenizer,
    delta: f32,
    device: &B::Device,
) -> Result<Option<PointingResult>> {
    let keep: Vec<usize> = (0..set.len())
        .filter(|&i| {
            let a = &set.annotations[i];
            a.instance_mask.is_some() && !a.object_captions.is_empty()
        })
        .collect();
    if keep.is_empty() {
        return Ok(None);
    }
    let phrases: Vec<String> = keep
        .iter()
        .map(|&i| {
            let s = &set.annotations[i].object_captions[0];
            split_sentences(s)
                .into_iter()
                .next()
                .unwrap_or_else(|| s.clone())
        })
        .collect();
    let refs: Vec<&str> = phrases.iter().map(String::as_str).collect();
    let texts = embed_texts(model, tokenizer, &refs, 256, device)?;
    let mut patches: Vec<f32> = Vec::new();
    let (mut p, mut d) = (0, 0);
    for px in set.tensors::<B>(device) {
        let (_, t) = image_patches(model, px);
        [_, p, d] = t.dims();
        patches.extend(
            t.into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .map_err(|e| TrainError::Config(format!("reading patch features back: {e:?}")))?,
        );
    }
    let q = keep.len();
    let mut chosen = Vec::with_capacity(q * p * d);
    for &i in &keep {
        chosen.extend_from_slice(&patches[i * p * d..(i + 1) * p * d]);
    }
    let patches = Tensor::<B, 3>::from_data(TensorData::new(chosen, [q, p, d]), device);
    let texts = Tensor::<B, 2>::from_data(TensorData::new(texts.data.clone(), [q, d]), device)
        .reshape([q, 1, d]);
    let w: Vec<f32> = grouping_weights(texts, patches, delta)
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| TrainError::Config(format!("reading grouping weights back: {e:?}")))?;
    let rows: Vec<Vec<f32>> = w.chunks(p).map(<[f32]>::to_vec).collect();
    let masks: Vec<&Mask> = keep
        .iter()
        .map(|&i| set.annotations[i].instance_mask.as_ref().expect("filtered"))
        .collect();
    let ids = vec![1u8; q];
    Ok(Some(centroid_game(
        &rows,
        &masks,
        &ids,
        model.vision_model.grid(),
    )?))
}

/// Image↔long-caption retrieval on pooled features (`None` when an image has no long caption).
pub fn long_caption_retrieval<B: Backend>(
    model: &ClipModel<B>,
    set: &EvalImages,
    tokenizer: &dyn Tokenizer,
    device: &B::Device,
) -> Result<Option<vlp_tasks::retrieval::RetrievalResult>> {
    if set.is_empty() || set.annotations.iter().any(|a| a.long_caption.is_none()) {
        return Ok(None);
    }
    let (texts, links) = set.long_caption_links()?;
    let feats = set.embed(model, device);
    Ok(Some(clip_retrieval(
        model, tokenizer, &feats, &texts, &links, device,
    )?))
}

impl DreamLipMethod {
    /// `[method] kind = "dreamlip"`.
    pub fn from_config(cfg: &TrainConfig) -> Result<Self> {
        let settings: DreamLipSettings = cfg.method.parse("dreamlip")?;
        Self::new(settings, cfg)
    }

    /// The method with explicit settings (checked).
    pub fn new(settings: DreamLipSettings, cfg: &TrainConfig) -> Result<Self> {
        let c = Checks::new("dreamlip");
        let s = &settings;
        c.count("subcaptions", s.subcaptions, 1..=64)?;
        c.count("merged", s.merged, 1..=16)?;
        for (f, v) in [
            ("clip_weight", s.clip_weight),
            ("multi_positive_weight", s.multi_positive_weight),
            ("grouping_weight", s.grouping_weight),
            ("ot_weight", s.ot_weight),
        ] {
            c.real(f, v, 0.0, 1e3)?;
        }
        if s.clip_weight + s.multi_positive_weight + s.grouping_weight + s.ot_weight == 0.0 {
            return Err(c.fail(
                "clip_weight",
                "and every other weight are 0: nothing trains",
            ));
        }
        c.real("margin", s.margin, 0.0, 1.0)?;
        c.real_above("gamma", s.gamma, 0.0, 1e3)?;
        if !(s.grouping_delta.is_finite() && s.grouping_delta < 1.0) {
            return Err(c.fail(
                "grouping_delta",
                format!(
                    "= {} must be below 1 (negative: 1/patches)",
                    s.grouping_delta
                ),
            ));
        }
        c.real("ot_epsilon", s.ot_epsilon, 0.01, 10.0)?;
        c.count("ot_iterations", s.ot_iterations, 1..=10_000)?;
        c.logit_scale("local_logit_scale_init", s.local_logit_scale_init)?;
        Ok(Self {
            settings,
            lock_image: cfg.optim.lock_image,
            lock_text: cfg.optim.lock_text,
        })
    }

    /// Texts per image: the caption and its sub-captions.
    pub fn texts_per_image(&self) -> usize {
        self.settings.subcaptions + 1
    }

    fn uses_patches(&self) -> bool {
        self.settings.grouping_weight > 0.0 || self.settings.ot_weight > 0.0
    }
}

impl Method for DreamLipMethod {
    type Model<B: Backend> = DreamLipModel<B>;

    fn name(&self) -> &'static str {
        "dreamlip"
    }

    fn requires(&self) -> Vec<Field> {
        vec![Field::Captions, Field::LongCaption]
    }

    fn data(&self) -> DataRequest {
        DataRequest {
            text_transform: Some(Arc::new(SubCaptionSampler {
                count: self.settings.subcaptions,
                merged: self.settings.merged,
            })),
            ..DataRequest::default()
        }
    }

    fn pipeline(&self, ctx: &BuildContext<'_>) -> Result<ImagePipeline> {
        pipeline_of(ctx, &architecture(ctx, false)?)
    }

    fn build<B: Backend>(
        &self,
        ctx: &BuildContext<'_>,
        device: &B::Device,
    ) -> Result<DreamLipModel<B>> {
        Ok(DreamLipModel {
            clip: build_clip::<B>(ctx, false, device)?,
            local_logit_scale: log_scale_param(self.settings.local_logit_scale_init, device),
        })
    }

    fn freeze<B: Backend>(&self, mut model: DreamLipModel<B>) -> DreamLipModel<B> {
        model.clip = lock_towers(model.clip, self.lock_image, self.lock_text);
        model
    }

    fn embed<B: Backend>(
        &self,
        model: &DreamLipModel<B>,
        input: &StepInput<'_, B>,
    ) -> Result<Embeddings<B>> {
        let clip = &model.clip;
        let texts = texts_per_sample(clip, input, self.texts_per_image())?;
        let (image, patches) = image_patches(clip, input.images());
        let mut e = Embeddings::new()
            .with_rows("image", image)
            .with_tokens("texts", texts, None);
        if self.uses_patches() {
            e = e.with_tokens("patches", patches, None);
        }
        Ok(e)
    }

    fn objective<B: Backend>(
        &self,
        model: &DreamLipModel<B>,
        e: Embeddings<B>,
    ) -> Result<Objective<B>> {
        let s = &self.settings;
        let image = e.rows("image")?;
        let (texts, _) = e.tokens("texts")?;
        let [n, k, d] = texts.dims();
        let scale = model.clip.logit_scale.val().cast(FloatDType::F32);
        let caption = texts.clone().slice([0..n, 0..1, 0..d]).reshape([n, d]);
        // The code's `(CE_i + CE_t) / (2 · number_text)`.
        let clip = clip_loss(image.clone(), caption, scale.clone()) / k as f64;
        let mut loss = clip.clone() * s.clip_weight;
        let mut parts = vec![("clip".to_string(), clip)];
        if s.multi_positive_weight > 0.0 {
            let mp = multi_positive_loss(image, texts.clone(), s.margin as f32, s.gamma as f32);
            loss = loss + mp.clone() * s.multi_positive_weight;
            parts.push(("multi_positive".into(), mp));
        }
        if self.uses_patches() {
            let (patches, _) = e.tokens("patches")?;
            if s.grouping_weight > 0.0 {
                let w = grouping_weights(texts.clone(), patches.clone(), s.grouping_delta as f32);
                let grouped = grouped_patches(w, patches.clone());
                let local = model.local_logit_scale.val().cast(FloatDType::F32);
                let g = grouping_loss(texts.clone(), grouped, local);
                loss = loss + g.clone() * s.grouping_weight;
                parts.push(("grouping".into(), g));
            }
            if s.ot_weight > 0.0 {
                let ot = ot_loss(patches, texts, scale, s.ot_epsilon as f32, s.ot_iterations);
                loss = loss + ot.clone() * s.ot_weight;
                parts.push(("ot".into(), ot));
            }
        }
        Ok(Objective { loss, parts })
    }

    fn objective_params<B: Backend>(&self, model: &DreamLipModel<B>) -> Vec<ParamId> {
        vec![model.local_logit_scale.id, model.clip.logit_scale.id]
    }

    fn after_update<B: Backend>(&self, mut model: DreamLipModel<B>) -> DreamLipModel<B> {
        model.local_logit_scale = clamp_logit_scale(model.local_logit_scale);
        model.clip.logit_scale = clamp_logit_scale(model.clip.logit_scale);
        model
    }

    fn log_values<B: Backend>(&self, model: &DreamLipModel<B>) -> Vec<(String, f64)> {
        logged_scales(&[
            ("logit_scale", &model.clip.logit_scale),
            ("local_logit_scale", &model.local_logit_scale),
        ])
    }

    fn evaluate<B: Backend>(
        &self,
        model: &DreamLipModel<B>,
        ctx: &EvalContext<'_, B>,
    ) -> Result<Metrics> {
        let clip = &model.clip;
        let mut m = evaluate_pooled(clip, ctx)?;
        if let Some(set) = ctx.eval {
            if let Some(r) = long_caption_retrieval(clip, set, ctx.tokenizer, ctx.device)? {
                m.insert("long_retrieval_i2t_r1".into(), r.i2t_recall[0]);
                m.insert("long_retrieval_i2t_r5".into(), r.i2t_recall[1]);
                m.insert("long_retrieval_t2i_r1".into(), r.t2i_recall[0]);
                m.insert("long_retrieval_t2i_r5".into(), r.t2i_recall[1]);
            }
            let delta = self.settings.grouping_delta as f32;
            if let Some(p) = grouping_localisation(clip, set, ctx.tokenizer, delta, ctx.device)? {
                m.insert("grouping_centroid_accuracy".into(), p.accuracy);
                m.insert("grouping_centroid_chance".into(), p.chance);
            }
        }
        Ok(m)
    }

    fn export<B: Backend>(&self, model: &DreamLipModel<B>, ctx: &ExportContext<'_>) -> Result<()> {
        export_clip(&model.clip, ctx)?;
        // The grouping temperature is DreamLIP's own: kept next to the weights.
        let s: f32 = model.local_logit_scale.val().into_scalar().elem();
        ctx.write_json(
            "dreamlip.json",
            &serde_json::json!({
                "local_logit_scale": s,
                "grouping_delta": self.settings.grouping_delta,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_naming_the_field() {
        let cfg = TrainConfig::default();
        let bad = |f: &dyn Fn(&mut DreamLipSettings)| {
            let mut s = DreamLipSettings::default();
            f(&mut s);
            DreamLipMethod::new(s, &cfg).unwrap_err().to_string()
        };
        assert!(bad(&|s| s.subcaptions = 0).contains("subcaptions"));
        assert!(bad(&|s| s.gamma = f64::NAN).contains("gamma"));
        assert!(bad(&|s| s.grouping_delta = 1.5).contains("grouping_delta"));
        assert!(bad(&|s| s.ot_epsilon = 0.0).contains("ot_epsilon"));
        assert!(bad(&|s| s.multi_positive_weight = -1.0).contains("multi_positive_weight"));
        let e = bad(&|s| {
            s.clip_weight = 0.0;
            s.multi_positive_weight = 0.0;
            s.grouping_weight = 0.0;
        });
        assert!(e.contains("nothing trains"), "{e}");
        let m = DreamLipMethod::new(DreamLipSettings::default(), &cfg).unwrap();
        assert_eq!(m.texts_per_image(), 7);
        assert!(m.requires().contains(&Field::LongCaption));
    }
}
