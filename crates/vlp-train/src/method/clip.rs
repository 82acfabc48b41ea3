//! CLIP (InfoNCE, Radford et al., 2021) and SigLIP (pairwise sigmoid, Zhai et al., 2023):
//! a dual encoder trained on pooled, normalised features of the global batch.

use burn::module::{Module, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor};
use serde::Deserialize;
use vlp_align::loss::{MAX_LOGIT_SCALE, clip_loss, siglip_loss};
use vlp_align::pretrained::{
    load_pretrained, read_hf_config, read_open_clip_config, read_pretrained_config,
};
use vlp_align::{ClipConfig, ClipModel, ModelKind, normalize};
use vlp_core::checkpoint::StoredDType;
use vlp_data::preprocess::ImagePipeline;
use vlp_tasks::battery::{clip_retrieval, clip_zero_shot, metrics_of};

use super::{BuildContext, EvalContext, ExportContext, Method, Metrics, Objective, StepInput};
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::method::Embeddings;

/// Which contrastive objective.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contrastive {
    /// CLIP's symmetric InfoNCE with a learnable temperature (clamped at 100).
    InfoNce,
    /// SigLIP's pairwise sigmoid loss with a learnable scale and bias.
    Sigmoid,
}

/// `[method.clip]` / `[method.siglip]`: no settings of their own yet (the towers to freeze are
/// `optim.lock_image` / `optim.lock_text`); any key is an error.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoSettings {}

/// CLIP or SigLIP on a [`ClipModel`].
#[derive(Debug, Clone)]
pub struct ClipMethod {
    /// The objective.
    pub objective: Contrastive,
    /// Freeze the image tower (LiT).
    pub lock_image: bool,
    /// Freeze the text tower.
    pub lock_text: bool,
}

impl ClipMethod {
    /// `[method] kind = "clip"`.
    pub fn clip(cfg: &TrainConfig) -> Result<Self> {
        let _: NoSettings = cfg.method.parse("clip")?;
        Ok(Self::new(Contrastive::InfoNce, cfg))
    }

    /// `[method] kind = "siglip"`.
    pub fn siglip(cfg: &TrainConfig) -> Result<Self> {
        let _: NoSettings = cfg.method.parse("siglip")?;
        Ok(Self::new(Contrastive::Sigmoid, cfg))
    }

    /// The method with the tower locks of `[optim]`.
    pub fn new(objective: Contrastive, cfg: &TrainConfig) -> Self {
        Self {
            objective,
            lock_image: cfg.optim.lock_image,
            lock_text: cfg.optim.lock_text,
        }
    }
}

/// The architecture `[model]` describes for the tokenizer of `ctx` (a pretrained `init`
/// directory's own, when set); `sigmoid` adds SigLIP's logit bias (and its initial scale, ln 10)
/// when a fresh architecture has none.
pub fn architecture(ctx: &BuildContext<'_>, sigmoid: bool) -> Result<ClipConfig> {
    let cfg = ctx.config;
    let tok = ctx.tokenizer;
    let m = &cfg.model;
    if let Some(dir) = &m.init {
        return Ok(read_pretrained_config(dir)?.0);
    }
    let mut config = if let Some(path) = &m.config {
        // transformers names its file config.json; open_clip uses open_clip_config.json or <model>.json.
        if std::path::Path::new(path)
            .file_name()
            .is_some_and(|f| f != "config.json")
        {
            read_open_clip_config(path)?.0
        } else {
            read_hf_config(path)?
        }
    } else if m.preset == "shapes-tiny" {
        let image = if m.image_size > 0 {
            m.image_size
        } else {
            cfg.data.shapes.image_size
        };
        ClipConfig::shapes_tiny(
            m.width,
            m.layers,
            m.heads,
            m.embed_dim,
            m.patch_size,
            image,
            tok.vocab_size,
            cfg.tokenizer.context_length,
            tok.pooling,
        )
    } else {
        ClipConfig::preset(&m.preset).ok_or_else(|| {
            TrainError::Config(format!(
                "`model.preset` = \"{}\" is unknown (shapes-tiny, {})",
                m.preset,
                ClipConfig::PRESETS.join(", ")
            ))
        })?
    };
    if m.preset != "shapes-tiny" || m.config.is_some() {
        if m.image_size > 0 {
            config.vision.image_size = m.image_size;
        }
        if config.text.vocab_size != tok.vocab_size {
            return Err(TrainError::Config(format!(
                "the model's vocabulary has {} ids but tokenizer `{}` has {}: pick a matching `tokenizer.kind`",
                config.text.vocab_size, cfg.tokenizer.kind, tok.vocab_size
            )));
        }
        config.text.max_position_embeddings = config
            .text
            .max_position_embeddings
            .max(cfg.tokenizer.context_length);
    }
    if sigmoid && config.logit_bias_init.is_none() {
        config.logit_bias_init = Some(-10.0);
        config.logit_scale_init = 10f64.ln();
    }
    config
        .validate()
        .map_err(|e| TrainError::Config(e.to_string()))?;
    Ok(config)
}

/// The image pipeline of an architecture: a pretrained `init` directory's own, else CLIP's or
/// SigLIP's at its input size.
pub fn pipeline_of(ctx: &BuildContext<'_>, config: &ClipConfig) -> Result<ImagePipeline> {
    if let Some(dir) = &ctx.config.model.init {
        return Ok(read_pretrained_config(dir)?.1);
    }
    Ok(match config.kind {
        ModelKind::Clip => ImagePipeline::clip(config.vision.image_size),
        ModelKind::Siglip => ImagePipeline::siglip(config.vision.image_size),
    })
}

/// A dual encoder: fresh from the architecture, or `[model] init`'s checkpoint.
pub fn build_clip<B: Backend>(
    ctx: &BuildContext<'_>,
    sigmoid: bool,
    device: &B::Device,
) -> Result<ClipModel<B>> {
    match &ctx.config.model.init {
        Some(dir) => Ok(load_pretrained::<B>(dir, device)?.model),
        None => Ok(architecture(ctx, sigmoid)?.init::<B>(device)),
    }
}

/// Freezes the towers `[optim]` locks.
pub fn lock_towers<B: Backend>(
    mut model: ClipModel<B>,
    lock_image: bool,
    lock_text: bool,
) -> ClipModel<B> {
    if lock_image {
        model.vision_model = model.vision_model.no_grad();
        model.visual_projection = model.visual_projection.map(|p| p.no_grad());
    }
    if lock_text {
        model.text_model = model.text_model.no_grad();
        model.text_projection = model.text_projection.map(|p| p.no_grad());
    }
    model
}

/// Normalised pooled image and text features of a micro-batch, in f32.
pub fn pooled_features<B: Backend>(
    model: &ClipModel<B>,
    input: &StepInput<'_, B>,
) -> Result<Embeddings<B>> {
    let (ids, mask) = input.tokens()?;
    let mask = model.text_model.causal.then_some(mask);
    let img = model.encode_image(input.images()).cast(FloatDType::F32);
    let txt = model.encode_text(ids, mask).cast(FloatDType::F32);
    Ok(Embeddings::new()
        .with_rows("image", normalize(img))
        .with_rows("text", normalize(txt)))
}

/// Zero-shot and retrieval of a dual encoder's pooled features on the held-out sets
/// (`zero_shot_top1`, `zero_shot_top5`, `retrieval_*`, `zero_shot_top1_unseen`).
pub fn evaluate_pooled<B: Backend>(
    model: &ClipModel<B>,
    ctx: &EvalContext<'_, B>,
) -> Result<Metrics> {
    evaluate_with_images(model, ctx, &|t| model.encode_image(t))
}

/// [`evaluate_pooled`] with images embedded by `encode_image` (`[n, 3, s, s]` to `[n, embed]`,
/// not normalised) and texts by `model`'s text tower: for methods that change only the image
/// side (a prior-guided tower, ...).
pub fn evaluate_with_images<B: Backend>(
    model: &ClipModel<B>,
    ctx: &EvalContext<'_, B>,
    encode_image: &dyn Fn(Tensor<B, 4>) -> Tensor<B, 2>,
) -> Result<Metrics> {
    let mut m = Metrics::new();
    if let Some(set) = ctx.eval {
        let feats = set.embed_with(ctx.device, encode_image);
        let zs = match (&set.labels, &set.classes) {
            (Some(labels), Some(classes)) => Some(clip_zero_shot(
                model,
                ctx.tokenizer,
                &feats,
                labels,
                classes,
                ctx.templates,
                ctx.device,
            )?),
            _ => None,
        };
        let (texts, links) = set.caption_links(true)?;
        let r = clip_retrieval(model, ctx.tokenizer, &feats, &texts, &links, ctx.device)?;
        m.extend(metrics_of(zs.as_ref(), Some(&r)));
    }
    if let Some(set) = ctx.unseen
        && let (Some(labels), Some(classes)) = (&set.labels, &set.classes)
    {
        let feats = set.embed_with(ctx.device, encode_image);
        let z = clip_zero_shot(
            model,
            ctx.tokenizer,
            &feats,
            labels,
            classes,
            ctx.templates,
            ctx.device,
        )?;
        m.insert("zero_shot_top1_unseen".into(), z.top1);
    }
    Ok(m)
}

/// Writes a dual encoder in transformers' layout with its preprocessing and tokenizer.
pub fn export_clip<B: Backend>(model: &ClipModel<B>, ctx: &ExportContext<'_>) -> Result<()> {
    let build = BuildContext {
        config: ctx.config,
        tokenizer: ctx.tokenizer,
    };
    let arch = architecture(&build, model.logit_bias.is_some())?;
    vlp_align::pretrained::save_hf(model, &arch, ctx.dir, StoredDType::F32)?;
    let pre = pipeline_of(&build, &arch)?;
    vlp_align::pretrained::save_preprocessor_config(&pre, ctx.dir)?;
    if let Some(t) = &ctx.tokenizer.hf {
        t.save(ctx.dir.join("tokenizer.json"))?;
    }
    Ok(())
}

/// The method's own texts of a step (its text transform's, `per_sample` for each image, sample
/// after sample), encoded and normalised in f32 (DreamLIP's sub-captions, CoCu's prompts).
///
/// # Shapes
/// - returns: `[batch, per_sample, embed_dim]`
pub fn texts_per_sample<B: Backend>(
    clip: &ClipModel<B>,
    input: &StepInput<'_, B>,
    per_sample: usize,
) -> Result<Tensor<B, 3>> {
    let (ids, mask) = input.texts(per_sample)?;
    let mask = clip.text_model.causal.then_some(mask);
    let texts = normalize(clip.encode_text(ids, mask).cast(FloatDType::F32));
    let [nk, d] = texts.dims();
    Ok(texts.reshape([nk / per_sample, per_sample, d]))
}

/// Normalised pooled image features (`image`, `[n, embed_dim]`) and each image's `per_sample`
/// texts of the method's text transform (`texts`, `[n, per_sample, embed_dim]`), in f32: the
/// features of methods that contrast an image with several texts (CoCu, SyViC).
pub fn image_and_texts<B: Backend>(
    clip: &ClipModel<B>,
    input: &StepInput<'_, B>,
    per_sample: usize,
) -> Result<Embeddings<B>> {
    let texts = texts_per_sample(clip, input, per_sample)?;
    let image = normalize(clip.encode_image(input.images()).cast(FloatDType::F32));
    Ok(Embeddings::new()
        .with_rows("image", image)
        .with_tokens("texts", texts, None))
}

/// A learnable log inverse temperature, `[1]`, starting at `init` (methods' own scales
/// beside CLIP's; clamp it after each update with [`clamp_logit_scale`]).
pub fn log_scale_param<B: Backend>(init: f64, device: &B::Device) -> Param<Tensor<B, 1>> {
    Param::from_tensor(Tensor::from_floats([init as f32], device))
}

/// The learnable temperatures a method logs: each named log-scale parameter as its scale
/// (`exp`), in the given order.
pub fn logged_scales<B: Backend>(
    scales: &[(&str, &Param<burn::tensor::Tensor<B, 1>>)],
) -> Vec<(String, f64)> {
    scales
        .iter()
        .map(|(name, p)| {
            let s: f32 = p.val().exp().into_scalar().elem();
            (name.to_string(), s as f64)
        })
        .collect()
}

/// The logit scale clamped to [0, ln 100] after a step, as open_clip does.
pub fn clamp_logit_scale<B: Backend>(
    p: Param<burn::tensor::Tensor<B, 1>>,
) -> Param<burn::tensor::Tensor<B, 1>> {
    p.map(|t| t.clamp(0.0, MAX_LOGIT_SCALE.ln()).detach().require_grad())
}

impl Method for ClipMethod {
    type Model<B: Backend> = ClipModel<B>;

    fn name(&self) -> &'static str {
        match self.objective {
            Contrastive::InfoNce => "clip",
            Contrastive::Sigmoid => "siglip",
        }
    }

    fn pipeline(&self, ctx: &BuildContext<'_>) -> Result<ImagePipeline> {
        let arch = architecture(ctx, self.objective == Contrastive::Sigmoid)?;
        pipeline_of(ctx, &arch)
    }

    fn build<B: Backend>(
        &self,
        ctx: &BuildContext<'_>,
        device: &B::Device,
    ) -> Result<ClipModel<B>> {
        let model = build_clip::<B>(ctx, self.objective == Contrastive::Sigmoid, device)?;
        if self.objective == Contrastive::Sigmoid && model.logit_bias.is_none() {
            return Err(TrainError::Config(
                "method `siglip` needs a model with a logit bias; this checkpoint has none".into(),
            ));
        }
        Ok(model)
    }

    fn freeze<B: Backend>(&self, model: ClipModel<B>) -> ClipModel<B> {
        lock_towers(model, self.lock_image, self.lock_text)
    }

    fn embed<B: Backend>(
        &self,
        model: &ClipModel<B>,
        input: &StepInput<'_, B>,
    ) -> Result<Embeddings<B>> {
        pooled_features(model, input)
    }

    fn objective<B: Backend>(
        &self,
        model: &ClipModel<B>,
        features: Embeddings<B>,
    ) -> Result<Objective<B>> {
        let (img, txt) = (features.rows("image")?, features.rows("text")?);
        let scale = model.logit_scale.val().cast(FloatDType::F32);
        let loss = match self.objective {
            Contrastive::InfoNce => clip_loss(img, txt, scale),
            Contrastive::Sigmoid => {
                let bias = model
                    .logit_bias
                    .as_ref()
                    .ok_or_else(|| {
                        TrainError::Config("the sigmoid loss needs a logit bias".into())
                    })?
                    .val()
                    .cast(FloatDType::F32);
                siglip_loss(img, txt, scale, bias)
            }
        };
        Ok(Objective::new(loss))
    }

    fn objective_params<B: Backend>(&self, model: &ClipModel<B>) -> Vec<ParamId> {
        let mut ids = vec![model.logit_scale.id];
        ids.extend(model.logit_bias.as_ref().map(|b| b.id));
        ids
    }

    fn after_update<B: Backend>(&self, mut model: ClipModel<B>) -> ClipModel<B> {
        if self.objective == Contrastive::InfoNce {
            model.logit_scale = clamp_logit_scale(model.logit_scale);
        }
        model
    }

    fn log_values<B: Backend>(&self, model: &ClipModel<B>) -> Vec<(String, f64)> {
        logged_scales(&[("logit_scale", &model.logit_scale)])
    }

    fn evaluate<B: Backend>(
        &self,
        model: &ClipModel<B>,
        ctx: &EvalContext<'_, B>,
    ) -> Result<Metrics> {
        evaluate_pooled(model, ctx)
    }

    fn export<B: Backend>(&self, model: &ClipModel<B>, ctx: &ExportContext<'_>) -> Result<()> {
        export_clip(model, ctx)
    }
}

use burn::tensor::ElementConversion;
