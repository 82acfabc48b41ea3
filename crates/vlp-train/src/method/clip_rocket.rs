//! The improved CLIP recipe, "CLIP-rocket" (Fini et al., 2023, "Improved baselines for
//! vision-language pre-training"): CLIP's global InfoNCE on a weakly augmented image and text,
//! plus a local InfoNCE over every pair of strongly augmented image and text views through
//! separate projectors with their own temperature and label smoothing; optionally the
//! non-contrastive add-ons BarLIP (Barlow Twins across modalities), SiamLIP (predictor and
//! negative cosine, SimSiam-style) and SwALIP (Sinkhorn assignments).
//!
//! Follows the official code (`facebookresearch/clip-rocket`: `losses.py` `CL2LLoss`,
//! `BarLIPLoss`, `SiamLIPLoss`, `SwALIPLoss`; `models.py` `CL2L`, `BARLIP`, `SIAMLIP`;
//! `datasets.py`, `tokenizer.py`, `main.py` and the `--separate-proj --text-augment
//! --label-smoothing 0.1` runs of `repro_exps.txt`):
//! - views: a weak global image view (RandomResizedCrop at scale 0.5–1) and `strong_views`
//!   strong ones (scale 0.08–1, colour jitter 0.4/0.4/0.4/0.1 with probability 0.8, grayscale
//!   0.2, blur σ 0.1–2 with probability 0.5, horizontal flip 0.5); a weak text (stop words
//!   removed with probability 0.8) and as many strong texts (the same, then one EDA operation),
//!   each from a caption drawn at random ([`CaptionViews`]);
//! - the local projectors are 3-layer MLPs with batch norm (`cl2l_*_proj_type = "mlp"`) on the
//!   towers' pooled features, the local temperature starts at 0.1 (`l2l_logit_scale`);
//! - per modality the loss is `(global + local · n) / (1 + n)` with `local` the mean over all
//!   `n²` strong image × strong text pairs, the two modalities averaged (× 2 with
//!   `loss_reduction = "sum"`);
//! - BarLIP, SiamLIP and SwALIP are added to that loss with their weights (1, 1 and 0.2 in the
//!   code when the model is chosen); their projectors are shared between the global and local
//!   views (`separate_proj_child` off).
//!
//! SiamLIP's momentum variant (BYOLIP, `--momentum`): `siamlip_momentum` > 0 keeps an
//! exponential moving average of the towers and SiamLIP's projectors that provides the targets.
//! Left out: text dropout and drop path in the strong text pass (`--text-dropout-prob`, 0 in
//! the YFCC and CC12M recipes). SwALIP is the code's: the other modality's strong views of the
//! batch serve as prototypes (no learned prototypes), which needs exactly 2 strong views.

use std::sync::Arc;

use burn::module::{Module, Param, ParamId};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor};
use serde::Deserialize;
use vlp_align::loss::clip_loss;
use vlp_align::{ClipModel, normalize};
use vlp_core::loss::{barlow_twins_loss, diagonal_smoothed_cross_entropy, swav_assignments};
use vlp_core::nn::{FinalNorm, ProjectionHead, ProjectionHeadConfig, ema_update, frozen_copy};
use vlp_data::augment::AugmentConfig;
use vlp_data::preprocess::ImagePipeline;
use vlp_data::text::CaptionViews;

use super::clip::{
    architecture, build_clip, clamp_logit_scale, evaluate_pooled, export_clip, lock_towers,
    log_scale_param, logged_scales, pipeline_of,
};
use super::{
    BuildContext, Checks, DataRequest, Embeddings, EvalContext, ExportContext, Method, Metrics,
    Objective, StepInput,
};
use crate::config::TrainConfig;
use crate::error::Result;

/// How the global and local losses are combined (`--loss-avg-or-sum`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossReduction {
    /// The mean of the two modalities' losses.
    Avg,
    /// Twice that (the YFCC and CC12M runs).
    Sum,
}

/// `[method.clip_rocket]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClipRocketSettings {
    /// Strongly augmented image and text views per sample (`num_augs`).
    pub strong_views: usize,
    /// Label smoothing of the local InfoNCE.
    pub label_smoothing: f64,
    /// How the losses are combined.
    pub loss_reduction: LossReduction,
    /// Linear layers of the local projectors (1 = linear, 3 = the code's MLP).
    pub local_layers: usize,
    /// Hidden width of the local projectors (the code's 4096).
    pub local_hidden: usize,
    /// Initial log inverse temperature of the local InfoNCE (learnable, ≤ ln 100).
    pub local_logit_scale_init: f64,
    /// Crop scale range of the weak (global) image view.
    pub weak_scale: [f32; 2],
    /// Crop scale range of the strong image views.
    pub strong_scale: [f32; 2],
    /// Probability of colour jitter on a strong view.
    pub strong_jitter_prob: f32,
    /// Brightness, contrast and saturation jitter strength of the strong views.
    pub strong_jitter_strength: f32,
    /// Hue jitter of the strong views (fraction of the colour circle).
    pub strong_jitter_hue: f32,
    /// Probability of grayscale on a strong view.
    pub strong_grayscale: f32,
    /// Probability of Gaussian blur on a strong view.
    pub strong_blur_prob: f32,
    /// Range of the blur's σ in pixels of the view (the code's 0.1–2 at 224 pixels).
    pub strong_blur_sigma: [f32; 2],
    /// Probability of a horizontal flip of a strong view.
    pub strong_hflip: f32,
    /// Probability of removing stop words from a text (weak and strong).
    pub remove_stop_words: f32,
    /// Weights of a strong text's EDA operation: identity, synonym replacement, random swap,
    /// random deletion.
    pub eda_weights: [f32; 4],
    /// Weight of BarLIP's Barlow Twins loss (0 = off; the BarLIP runs use 1).
    pub barlip_weight: f64,
    /// Barlow Twins' off-diagonal weight λ.
    pub barlip_lambda: f64,
    /// Barlow Twins' loss scale.
    pub barlip_scale: f64,
    /// Hidden width of BarLIP's projectors.
    pub barlip_hidden: usize,
    /// Output width of BarLIP's projectors.
    pub barlip_dim: usize,
    /// Weight of SiamLIP's negative-cosine loss (0 = off; the SiamLIP runs use 1).
    pub siamlip_weight: f64,
    /// Hidden width of SiamLIP's projectors and predictors.
    pub siamlip_hidden: usize,
    /// Output width of SiamLIP's projectors.
    pub siamlip_dim: usize,
    /// Momentum of SiamLIP's target encoder (BYOLIP; the code's `--momentum-tau` 0.99); 0 = the
    /// online projections, stop-gradient (SimSiam).
    pub siamlip_momentum: f64,
    /// Weight of SwALIP's swapped-assignment loss (0 = off; the code's SwALIP uses 0.2).
    pub swalip_weight: f64,
    /// Entropic regularisation of SwALIP's Sinkhorn assignments.
    pub swalip_epsilon: f64,
    /// Sinkhorn rounds of SwALIP.
    pub swalip_iterations: usize,
}

impl Default for ClipRocketSettings {
    /// The code's defaults (`main.py`) with the paper's recipe switches: separate local
    /// projectors, text augmentation, label smoothing 0.1.
    fn default() -> Self {
        let text = CaptionViews::default();
        Self {
            strong_views: 2,
            label_smoothing: 0.1,
            loss_reduction: LossReduction::Avg,
            local_layers: 3,
            local_hidden: 4096,
            local_logit_scale_init: (1.0f64 / 0.1).ln(),
            weak_scale: [0.5, 1.0],
            strong_scale: [0.08, 1.0],
            strong_jitter_prob: 0.8,
            strong_jitter_strength: 0.4,
            strong_jitter_hue: 0.1,
            strong_grayscale: 0.2,
            strong_blur_prob: 0.5,
            strong_blur_sigma: [0.1, 2.0],
            strong_hflip: 0.5,
            remove_stop_words: text.remove_stop_words,
            eda_weights: text.eda_weights,
            barlip_weight: 0.0,
            barlip_lambda: 5e-3,
            barlip_scale: 0.025,
            barlip_hidden: 3000,
            barlip_dim: 8192,
            siamlip_weight: 0.0,
            siamlip_hidden: 2048,
            siamlip_dim: 128,
            siamlip_momentum: 0.0,
            swalip_weight: 0.0,
            swalip_epsilon: 0.05,
            swalip_iterations: 3,
        }
    }
}

/// One projector per modality.
#[derive(Module, Debug)]
pub struct Heads<B: Backend> {
    /// On the image tower's pooled features.
    pub image: ProjectionHead<B>,
    /// On the text tower's pooled features.
    pub text: ProjectionHead<B>,
}

/// SiamLIP's projectors and the predictors that map each modality onto the other.
#[derive(Module, Debug)]
pub struct SiamHeads<B: Backend> {
    /// Projectors (`siamlip_*_projector`).
    pub projectors: Heads<B>,
    /// Image → text predictor (`image_text_predictor`).
    pub image_to_text: ProjectionHead<B>,
    /// Text → image predictor (`text_image_predictor`).
    pub text_to_image: ProjectionHead<B>,
}

/// SiamLIP's momentum (BYOLIP) target encoder: a moving average of the towers and of SiamLIP's
/// projectors.
#[derive(Module, Debug)]
pub struct MomentumBranch<B: Backend> {
    /// The towers' average (its joint projections are carried along, unused).
    pub clip: ClipModel<B>,
    /// SiamLIP's projectors' average.
    pub projectors: Heads<B>,
}

/// The dual encoder and what the recipe adds for training.
#[derive(Module, Debug)]
pub struct ClipRocketModel<B: Backend> {
    /// The dual encoder (exported in transformers' layout).
    pub clip: ClipModel<B>,
    /// The local projectors (`l2l_*_projector`).
    pub local: Heads<B>,
    /// Log of the local InfoNCE's logit scale (`l2l_logit_scale`), `[1]`.
    pub local_logit_scale: Param<Tensor<B, 1>>,
    /// BarLIP's projectors, when on.
    pub barlip: Option<Heads<B>>,
    /// SiamLIP's projectors and predictors, when on.
    pub siamlip: Option<SiamHeads<B>>,
    /// SiamLIP's momentum target encoder, when on.
    pub momentum: Option<MomentumBranch<B>>,
}

/// The improved CLIP recipe on a CLIP dual encoder.
#[derive(Debug, Clone)]
pub struct ClipRocketMethod {
    /// Its settings.
    pub settings: ClipRocketSettings,
    weak: AugmentConfig,
    strong: AugmentConfig,
    lock_image: bool,
    lock_text: bool,
}

impl ClipRocketMethod {
    /// `[method] kind = "clip_rocket"`.
    pub fn from_config(cfg: &TrainConfig) -> Result<Self> {
        let settings: ClipRocketSettings = cfg.method.parse("clip_rocket")?;
        Self::new(settings, cfg)
    }

    /// The method with explicit settings (checked).
    pub fn new(settings: ClipRocketSettings, cfg: &TrainConfig) -> Result<Self> {
        let c = Checks::new("clip_rocket");
        let s = &settings;
        c.count("strong_views", s.strong_views, 1..=8)?;
        c.real("label_smoothing", s.label_smoothing, 0.0, 1.0)?;
        c.count("local_layers", s.local_layers, 1..=8)?;
        c.count("local_hidden", s.local_hidden, 1..=65_536)?;
        c.logit_scale("local_logit_scale_init", s.local_logit_scale_init)?;
        c.real("remove_stop_words", s.remove_stop_words as f64, 0.0, 1.0)?;
        for (k, w) in s.eda_weights.iter().enumerate() {
            c.weight(&format!("eda_weights[{k}]"), *w as f64)?;
        }
        if s.eda_weights.iter().sum::<f32>() <= 0.0 {
            return Err(c.fail("eda_weights", "are all 0: pick at least one operation"));
        }
        for (f, v) in [
            ("barlip_weight", s.barlip_weight),
            ("siamlip_weight", s.siamlip_weight),
            ("swalip_weight", s.swalip_weight),
        ] {
            c.weight(f, v)?;
        }
        c.real_above("barlip_lambda", s.barlip_lambda, 0.0, 1.0)?;
        c.real_above("barlip_scale", s.barlip_scale, 0.0, 1e3)?;
        for (f, v) in [
            ("barlip_hidden", s.barlip_hidden),
            ("barlip_dim", s.barlip_dim),
            ("siamlip_hidden", s.siamlip_hidden),
            ("siamlip_dim", s.siamlip_dim),
        ] {
            c.count(f, v, 1..=65_536)?;
        }
        if s.swalip_weight > 0.0 {
            // The code's SwALIP swaps the two strong views and asserts no smoothing.
            if s.strong_views != 2 {
                return Err(c.fail("strong_views", "must be 2 with SwALIP (swalip_weight > 0)"));
            }
            if s.label_smoothing != 0.0 {
                return Err(c.fail(
                    "label_smoothing",
                    "must be 0 with SwALIP (swalip_weight > 0), as the code asserts",
                ));
            }
        }
        c.real("siamlip_momentum", s.siamlip_momentum, 0.0, 0.999_999)?;
        if s.siamlip_momentum > 0.0 && s.siamlip_weight == 0.0 {
            return Err(c.fail(
                "siamlip_momentum",
                "needs SiamLIP on (siamlip_weight > 0): the momentum encoder gives its targets",
            ));
        }
        c.real_above("swalip_epsilon", s.swalip_epsilon, 0.0, 10.0)?;
        c.count("swalip_iterations", s.swalip_iterations, 1..=1000)?;
        let weak = AugmentConfig {
            scale: s.weak_scale,
            two_views: false,
            ..cfg.data.augment.clone()
        };
        let strong = AugmentConfig {
            scale: s.strong_scale,
            ratio: cfg.data.augment.ratio,
            hflip: s.strong_hflip,
            jitter_prob: s.strong_jitter_prob,
            jitter_strength: s.strong_jitter_strength,
            jitter_hue: s.strong_jitter_hue,
            grayscale: s.strong_grayscale,
            blur_prob: s.strong_blur_prob,
            blur_sigma: s.strong_blur_sigma,
            two_views: false,
        };
        for (name, a) in [("weak", &weak), ("strong", &strong)] {
            a.validate()
                .map_err(|e| c.fail(&format!("{name}_* view settings"), e))?;
        }
        Ok(Self {
            settings,
            weak,
            strong,
            lock_image: cfg.optim.lock_image,
            lock_text: cfg.optim.lock_text,
        })
    }

    /// The text views: one weak, then the strong ones.
    pub fn caption_views(&self) -> CaptionViews {
        CaptionViews {
            strong: self.settings.strong_views,
            remove_stop_words: self.settings.remove_stop_words,
            eda_weights: self.settings.eda_weights,
            ..CaptionViews::default()
        }
    }

    /// The image views: the weak one, then the strong ones.
    pub fn view_augments(&self) -> Vec<AugmentConfig> {
        let mut v = vec![self.weak.clone()];
        v.extend(std::iter::repeat_n(
            self.strong.clone(),
            self.settings.strong_views,
        ));
        v
    }
}

/// The negative cosine of SimSiam, `2 − 2·mean cos(p, stop-grad v)`.
fn negative_cosine<B: Backend>(p: Tensor<B, 2>, v: Tensor<B, 2>) -> Tensor<B, 1> {
    let cos = (normalize(p) * normalize(v.detach())).sum_dim(1).mean();
    cos.neg() * 2.0 + 2.0
}

/// `−mean_i Σ_j targets_ij log softmax(logits)_ij`.
fn soft_cross_entropy<B: Backend>(logits: Tensor<B, 2>, targets: Tensor<B, 2>) -> Tensor<B, 1> {
    (targets * log_softmax(logits, 1)).sum_dim(1).mean().neg()
}

impl Method for ClipRocketMethod {
    type Model<B: Backend> = ClipRocketModel<B>;

    fn name(&self) -> &'static str {
        "clip_rocket"
    }

    fn data(&self) -> DataRequest {
        DataRequest {
            views: 1 + self.settings.strong_views,
            view_augments: self.view_augments(),
            text_transform: Some(Arc::new(self.caption_views())),
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
    ) -> Result<ClipRocketModel<B>> {
        let s = &self.settings;
        let arch = architecture(ctx, false)?;
        let (dv, dt, embed) = (
            arch.vision.hidden_size,
            arch.text.hidden_size,
            arch.embed_dim(),
        );
        let local = |d| {
            ProjectionHeadConfig::new(d, s.local_hidden, embed)
                .with_layers(s.local_layers)
                .init(device)
        };
        let barlip = |d| {
            ProjectionHeadConfig::new(d, s.barlip_hidden, s.barlip_dim)
                .with_final_norm(FinalNorm::Affine)
                .init(device)
        };
        // SimSiam's shapes: no hidden biases, a plain batch norm at the projector's end.
        let siam_projector = |d| {
            ProjectionHeadConfig::new(d, s.siamlip_hidden, s.siamlip_dim)
                .with_layers(2)
                .with_hidden_bias(false)
                .with_output_bias(false)
                .with_final_norm(FinalNorm::Plain)
                .init(device)
        };
        let predictor = || {
            ProjectionHeadConfig::new(s.siamlip_dim, s.siamlip_hidden, s.siamlip_dim)
                .with_layers(2)
                .with_hidden_bias(false)
                .init(device)
        };
        let clip = build_clip::<B>(ctx, false, device)?;
        let siamlip = (s.siamlip_weight > 0.0).then(|| SiamHeads {
            projectors: Heads {
                image: siam_projector(dv),
                text: siam_projector(dt),
            },
            image_to_text: predictor(),
            text_to_image: predictor(),
        });
        // The code starts the momentum model from the online one's weights.
        let momentum = match &siamlip {
            Some(siam) if s.siamlip_momentum > 0.0 => Some(MomentumBranch {
                clip: frozen_copy(&clip),
                projectors: frozen_copy(&siam.projectors),
            }),
            _ => None,
        };
        Ok(ClipRocketModel {
            clip,
            local: Heads {
                image: local(dv),
                text: local(dt),
            },
            local_logit_scale: log_scale_param(s.local_logit_scale_init, device),
            barlip: (s.barlip_weight > 0.0).then(|| Heads {
                image: barlip(dv),
                text: barlip(dt),
            }),
            siamlip,
            momentum,
        })
    }

    fn freeze<B: Backend>(&self, mut model: ClipRocketModel<B>) -> ClipRocketModel<B> {
        model.clip = lock_towers(model.clip, self.lock_image, self.lock_text);
        model
    }

    /// Rows: `z_image`, `z_text` (global, normalised), `h_image_k`, `h_text_k` (local,
    /// normalised) for each strong view `k`, and the add-ons' `v_*` / `p_*` features.
    fn embed<B: Backend>(
        &self,
        model: &ClipRocketModel<B>,
        input: &StepInput<'_, B>,
    ) -> Result<Embeddings<B>> {
        let clip = &model.clip;
        let n = self.settings.strong_views;
        let f32 = |t: Tensor<B, 2>| t.cast(FloatDType::F32);
        // Pooled features (before the joint projection) of every image view, from one pass over
        // the views stacked along the batch (larger products than one pass per view).
        let b = input.batch.len();
        let views: Vec<Tensor<B, 4>> = (0..=n).map(|k| input.view(k)).collect();
        let pooled = clip
            .vision_model
            .forward(Tensor::cat(views, 0))
            .pooler_output;
        let wv = pooled.dims()[1];
        let images: Vec<Tensor<B, 2>> = (0..=n)
            .map(|k| pooled.clone().slice([k * b..(k + 1) * b, 0..wv]))
            .collect();
        let (ids, mask) = input.texts(n + 1)?;
        let mask = clip.text_model.causal.then_some(mask);
        let pooled = clip.text_model.forward(ids, mask).pooler_output;
        let w = pooled.dims()[1];
        let pooled = pooled.reshape([b, n + 1, w]);
        let texts: Vec<Tensor<B, 2>> = (0..=n)
            .map(|k| pooled.clone().slice([0..b, k..k + 1, 0..w]).reshape([b, w]))
            .collect();

        let mut e = Embeddings::new()
            .with_rows(
                "z_image",
                normalize(f32(clip.project_image(images[0].clone()))),
            )
            .with_rows(
                "z_text",
                normalize(f32(clip.project_text(texts[0].clone()))),
            );
        for k in 1..=n {
            let hi = normalize(f32(model.local.image.forward(images[k].clone())));
            let ht = normalize(f32(model.local.text.forward(texts[k].clone())));
            e = e
                .with_rows(&format!("h_image_{k}"), hi)
                .with_rows(&format!("h_text_{k}"), ht);
        }
        if let Some(heads) = &model.barlip {
            for k in 0..=n {
                e = e
                    .with_rows(
                        &format!("barlip_image_{k}"),
                        f32(heads.image.forward(images[k].clone())),
                    )
                    .with_rows(
                        &format!("barlip_text_{k}"),
                        f32(heads.text.forward(texts[k].clone())),
                    );
            }
        }
        if let Some(siam) = &model.siamlip {
            // The momentum encoder's projections of the same views and texts, when on.
            let targets = match &model.momentum {
                None => None,
                Some(m) => {
                    let (ids, mask) = input.texts(n + 1)?;
                    let mask = m.clip.text_model.causal.then_some(mask);
                    let pooled = m.clip.text_model.forward(ids, mask).pooler_output;
                    let w = pooled.dims()[1];
                    let pooled = pooled.reshape([b, n + 1, w]);
                    // Projected view by view, as online: batch norm's statistics per view.
                    let per_view: Vec<(Tensor<B, 2>, Tensor<B, 2>)> = (0..=n)
                        .map(|k| {
                            let v = m.clip.vision_model.forward(input.view(k)).pooler_output;
                            let t = pooled.clone().slice([0..b, k..k + 1, 0..w]).reshape([b, w]);
                            (
                                m.projectors.image.forward(v).detach(),
                                m.projectors.text.forward(t).detach(),
                            )
                        })
                        .collect();
                    Some(per_view)
                }
            };
            for k in 0..=n {
                let vi = siam.projectors.image.forward(images[k].clone());
                let vt = siam.projectors.text.forward(texts[k].clone());
                let pi = siam.image_to_text.forward(vi.clone());
                let pt = siam.text_to_image.forward(vt.clone());
                let (vi, vt) = match &targets {
                    Some(t) => t[k].clone(),
                    None => (vi, vt),
                };
                e = e
                    .with_rows(&format!("siam_v_image_{k}"), f32(vi))
                    .with_rows(&format!("siam_v_text_{k}"), f32(vt))
                    .with_rows(&format!("siam_p_image_{k}"), f32(pi))
                    .with_rows(&format!("siam_p_text_{k}"), f32(pt));
            }
        }
        Ok(e)
    }

    fn objective<B: Backend>(
        &self,
        model: &ClipRocketModel<B>,
        e: Embeddings<B>,
    ) -> Result<Objective<B>> {
        let s = &self.settings;
        let n = s.strong_views;
        let scale = model.clip.logit_scale.val().cast(FloatDType::F32);
        let global = clip_loss(e.rows("z_image")?, e.rows("z_text")?, scale);
        let local_scale = model
            .local_logit_scale
            .val()
            .cast(FloatDType::F32)
            .clamp_max(100f64.ln())
            .exp()
            .unsqueeze::<2>();
        let hi: Vec<Tensor<B, 2>> = (1..=n)
            .map(|k| e.rows(&format!("h_image_{k}")))
            .collect::<Result<_>>()?;
        let ht: Vec<Tensor<B, 2>> = (1..=n)
            .map(|k| e.rows(&format!("h_text_{k}")))
            .collect::<Result<_>>()?;
        // Every strong image view against every strong text view; each pair's two directions
        // averaged, then the pairs.
        let mut local = None;
        for i in &hi {
            for t in &ht {
                let logits = i.clone().matmul(t.clone().transpose()) * local_scale.clone();
                let l = diagonal_smoothed_cross_entropy(logits, s.label_smoothing as f32);
                local = Some(match local {
                    None => l,
                    Some(acc) => acc + l,
                });
            }
        }
        let local = local.expect("at least one strong view") / (n * n) as f64;
        let mut clip = (global.clone() + local.clone() * n as f64) / (1 + n) as f64;
        if s.loss_reduction == LossReduction::Sum {
            clip = clip * 2.0;
        }
        let mut loss = clip.clone();
        let mut parts = vec![
            ("clip".to_string(), clip),
            ("clip_global".to_string(), global),
            ("clip_local".to_string(), local),
        ];
        if s.barlip_weight > 0.0 {
            let v = |m: &str, k: usize| e.rows(&format!("barlip_{m}_{k}"));
            let bt = |a, b| barlow_twins_loss(a, b, s.barlip_lambda as f32, s.barlip_scale as f32);
            // Global with global, then every strong image view with every strong text view.
            let mut barlip = bt(v("image", 0)?, v("text", 0)?);
            for i in 1..=n {
                for j in 1..=n {
                    barlip = barlip + bt(v("image", i)?, v("text", j)?);
                }
            }
            let barlip = barlip / (1 + n * n) as f64;
            loss = loss + barlip.clone() * s.barlip_weight;
            parts.push(("barlip".into(), barlip));
        }
        if s.siamlip_weight > 0.0 {
            let r = |m: &str, k: usize| e.rows(&format!("siam_{m}_{k}"));
            let mut siam = negative_cosine(r("p_image", 0)?, r("v_text", 0)?)
                + negative_cosine(r("p_text", 0)?, r("v_image", 0)?);
            for i in 1..=n {
                for j in 1..=n {
                    siam = siam
                        + negative_cosine(r("p_image", i)?, r("v_text", j)?)
                        + negative_cosine(r("p_text", j)?, r("v_image", i)?);
                }
            }
            let siam = siam / (2 + 2 * n * n) as f64;
            loss = loss + siam.clone() * s.siamlip_weight;
            parts.push(("siamlip".into(), siam));
        }
        if s.swalip_weight > 0.0 {
            // Cosine logits of strong view l1 of one modality against strong view l2 of the
            // other; each is trained towards the Sinkhorn assignments of the other pair of
            // views (`t = 1 − l`), at the local temperature.
            let eps = s.swalip_epsilon as f32;
            let mut swalip = None;
            for l1 in 0..2 {
                for l2 in 0..2 {
                    let (t1, t2) = (1 - l1, 1 - l2);
                    let image = hi[l1].clone().matmul(ht[l2].clone().transpose());
                    let text = ht[l1].clone().matmul(hi[l2].clone().transpose());
                    let target_image = swav_assignments(
                        hi[t1].clone().matmul(ht[t2].clone().transpose()),
                        eps,
                        s.swalip_iterations,
                    );
                    let target_text = swav_assignments(
                        ht[t1].clone().matmul(hi[t2].clone().transpose()),
                        eps,
                        s.swalip_iterations,
                    );
                    let term = (soft_cross_entropy(image * local_scale.clone(), target_image)
                        + soft_cross_entropy(text * local_scale.clone(), target_text))
                        / 2.0;
                    swalip = Some(match swalip {
                        None => term,
                        Some(acc) => acc + term,
                    });
                }
            }
            let swalip = swalip.expect("two strong views") / 4.0;
            loss = loss + swalip.clone() * s.swalip_weight;
            parts.push(("swalip".into(), swalip));
        }
        Ok(Objective { loss, parts })
    }

    fn objective_params<B: Backend>(&self, model: &ClipRocketModel<B>) -> Vec<ParamId> {
        vec![model.clip.logit_scale.id, model.local_logit_scale.id]
    }

    fn after_update<B: Backend>(&self, mut model: ClipRocketModel<B>) -> ClipRocketModel<B> {
        model.clip.logit_scale = clamp_logit_scale(model.clip.logit_scale);
        model.local_logit_scale = clamp_logit_scale(model.local_logit_scale);
        if let (Some(target), Some(siam)) = (model.momentum.take(), &model.siamlip) {
            let online = MomentumBranch {
                clip: model.clip.clone(),
                projectors: siam.projectors.clone(),
            };
            model.momentum = Some(ema_update(target, &online, self.settings.siamlip_momentum));
        }
        model
    }

    fn log_values<B: Backend>(&self, model: &ClipRocketModel<B>) -> Vec<(String, f64)> {
        logged_scales(&[
            ("logit_scale", &model.clip.logit_scale),
            ("local_logit_scale", &model.local_logit_scale),
        ])
    }

    /// CLIP's metrics on the global projection (the code's zero-shot uses `z`).
    fn evaluate<B: Backend>(
        &self,
        model: &ClipRocketModel<B>,
        ctx: &EvalContext<'_, B>,
    ) -> Result<Metrics> {
        evaluate_pooled(&model.clip, ctx)
    }

    /// The dual encoder; the projectors and the local temperature serve only training.
    fn export<B: Backend>(
        &self,
        model: &ClipRocketModel<B>,
        ctx: &ExportContext<'_>,
    ) -> Result<()> {
        export_clip(&model.clip, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_naming_the_field() {
        let cfg = TrainConfig::default();
        let bad = |f: &dyn Fn(&mut ClipRocketSettings)| {
            let mut s = ClipRocketSettings::default();
            f(&mut s);
            ClipRocketMethod::new(s, &cfg).unwrap_err().to_string()
        };
        assert!(bad(&|s| s.strong_views = 0).contains("strong_views"));
        assert!(bad(&|s| s.label_smoothing = 1.5).contains("label_smoothing"));
        assert!(bad(&|s| s.eda_weights = [0.0; 4]).contains("eda_weights"));
        assert!(bad(&|s| s.eda_weights[2] = -1.0).contains("eda_weights[2]"));
        assert!(bad(&|s| s.barlip_lambda = 0.0).contains("barlip_lambda"));
        assert!(bad(&|s| s.strong_grayscale = 2.0).contains("grayscale"));
        assert!(bad(&|s| s.strong_scale = [0.9, 0.1]).contains("scale"));
        let e = bad(&|s| s.swalip_weight = 0.2);
        assert!(e.contains("label_smoothing"), "{e}");
        let e = bad(&|s| {
            s.swalip_weight = 0.2;
            s.label_smoothing = 0.0;
            s.strong_views = 3;
        });
        assert!(e.contains("strong_views"), "{e}");
        assert!(bad(&|s| s.siamlip_momentum = 0.99).contains("siamlip_momentum"));
        assert!(
            bad(&|s| {
                s.siamlip_weight = 1.0;
                s.siamlip_momentum = 1.0;
            })
            .contains("siamlip_momentum")
        );
    }

    #[test]
    fn the_loader_is_asked_for_one_weak_and_n_strong_views() {
        let cfg = TrainConfig::default();
        let s = ClipRocketSettings {
            strong_views: 3,
            ..ClipRocketSettings::default()
        };
        let m = ClipRocketMethod::new(s, &cfg).unwrap();
        let d = m.data();
        assert_eq!(d.views, 4);
        assert_eq!(d.view_augments.len(), 4);
        assert_eq!(d.view_augments[0].scale, [0.5, 1.0]);
        assert_eq!(d.view_augments[0].grayscale, 0.0);
        assert_eq!(d.view_augments[0].ratio, cfg.data.augment.ratio);
        for a in &d.view_augments[1..] {
            assert_eq!(a.scale, [0.08, 1.0]);
            assert_eq!((a.grayscale, a.blur_prob, a.jitter_prob), (0.2, 0.5, 0.8));
            assert_eq!(a.jitter_hue, 0.1);
        }
        assert_eq!(m.caption_views().strong, 3);
    }
}
