//! SemAIM (Song et al., 2023; official code `skyoux/SemAIM`, `models/models_semaim.py`,
//! `engines/engine_pretrain.py`): image-only autoregressive pretraining of a ViT in a
//! semantic-aware order (`vlp_vision::semaim`). The attention-centre order reads its centre from
//! an EMA teacher of the encoder (the code's `use_ema_model` with `permutation_type =
//! 'attention_center'`, `attention_type = 'cls'`), kept in the model and updated after every
//! optimiser step; the targets are the blurred pixels (`predict_feature = 'none'`, kernel 9, σ 1).
//! Captions are not read.
//!
//! The encoder has the architecture of the run's CLIP vision tower (`[model]`), so the
//! pretrained encoder can start a CLIP run. Evaluation is a linear probe (CLIP's protocol,
//! `vlp_tasks::probe`) on the mean of the encoder's patch features, for the shape and the colour
//! of each held-out image's main object (two-fold over `data.eval`: each half fits, the other
//! tests).
//!
//! With `[model] teacher` (a pretrained dual encoder; `teacher_from` trains one first) the
//! targets are its image tokens after the final norm and the projection, as the code's
//! `predict_feature = 'clip'` (`engine_pretrain.py`, `forward_features_clip`): predictions and
//! targets L2-normalised, squared distance summed over the width (`forward_feature_loss`), no
//! blur. The attention centre is read from the teacher's pass as `attention_type` says: `cls`
//! (default) is the code's `calculate_similarity` of its tokens with its class token; `self`
//! (the code's `self_attention`, which the code reads only from its own EMA encoder) is where
//! the teacher's class token looks in its last block, and only that one starts on objects with a
//! CLIP teacher (below). The teacher is frozen and left out of the export. Not ported: DINO
//! teachers (`vlp_align::pretrained` reads dual encoders only) and the code's EMA schedule (a
//! fixed momentum here).
//!
//! `[method] kind = "semaim"`, `configs/semaim.toml` (pixel targets) and
//! `configs/semaim-clip.toml` (the default run's CLIP as teacher, `attention_type = "self"`).
//! **With the teacher both claims are reproduced**: the ignored claim test
//! `semaim_claim_with_a_clip_teacher_raises_the_probe_and_starts_on_objects` (one teacher of
//! seed 0 trained from `configs/shapes-clip.toml`, students of seeds 1–3 in the config's shape;
//! 2026-12-01, 2626 s on a slower 2-core machine than the 860 s before) measured probe shape
//! 0.219 → 0.416, 0.265 → 0.490, 0.271 → 0.477 (mean **+0.209** over the random encoder of each
//! seed; the issue asks +15 points), colour 0.45 → 0.78, and orders whose first quarter covers
//! **0.287** of the objects against 0.132 for a random quarter (**2.17×**; the issue asks 2×),
//! first patch on the main object 0.471 (raster 0.030). With the release binary
//! (`configs/semaim-clip.toml`, seed 0) probe shape 0.450 against 0.296, first quarter 0.290.
//! Read by `cls` instead, the same teacher's orders cover 0.149–0.191 (a CLIP's patch tokens are
//! not where its class token looks), and the EMA student's class token (which the content stream
//! never trains) gives 0.119, below a random quarter.
//!
//! With pixel targets the claim is reproduced only in part. Measured (2026-12-01, 2-core AMD
//! EPYC, release) with `configs/semaim.toml` (a 128-wide 3-layer tower in patches of 4 at
//! 32 px, 600 steps at batch 128, 507 s, seed 0) and the two-fold linear
//! probe standardising features as the code does, on 1000 held-out images: shape 0.379 against
//! 0.321 for the random encoder of the same seed (+6 points; the issue asks +15), colour 0.763
//! against 0.668. The gain does not grow with the probe's data: 0.328 vs 0.295 on 600 images,
//! 0.390 vs 0.331 on 4000, 0.408 vs 0.346 on 8000 (one probe half on 300 images had shown no
//! gain at all, hence the two folds). The attention-centre orders start on objects: first
//! quarter of patches 0.278 object coverage against 0.132 for a random quarter (2.1×; the random
//! encoder's teacher already gives 0.212, 1.6×, as objects are the patches that differ from the
//! background), first patch on the main object 0.46 (random encoder 0.23, raster 0.004). The
//! claim test (`tests/it/semaim.rs`, 64 wide, 2 layers, 400 steps, seeds 1–3): its module doc.
//! With `norm_pix_loss` the gain and the orders' advantage vanish (shape 0.316, first quarter
//! 0.151, one-fold probe). Probing L2-normalised features instead makes the random encoder look
//! far worse (shape 0.186, at chance) and the gain look like the issue's; the standardised probe
//! is the fair one.
//!
//! `[method.semaim]` (all optional): `order` ("attention_center"; "center_out", "stochastic",
//! "raster"), `query_depth` (= `model.layers`: a query block after every content block, as the
//! code's base model), `ema_momentum` (0.99), `blur_kernel` (9), `blur_sigma` (1.0),
//! `norm_pix_loss` (false: targets standardised per patch when true), `attention_type` ("cls";
//! "gap", "self": how the centre is read from the teacher).

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor};
use serde::Deserialize;
use vlp_align::pretrained::{load_pretrained, read_pretrained_config};
use vlp_align::{ClipModel, normalize_last};
use vlp_core::checkpoint::{
    Source, StoredDType, TensorFile, check_sizes, collect_params, load_params, write_safetensors,
};
use vlp_core::nn::ema_update;
use vlp_data::preprocess::ImagePipeline;
use vlp_data::sample::Field;
use vlp_data::shapes::{Colour, Shape};
use vlp_tasks::battery::EvalImages;
use vlp_tasks::embed::Features;
use vlp_tasks::probe::linear_probe;
use vlp_vision::semaim::{
    AttentionType, Order, SemAim, SemAimConfig, attention_centres, centres_of, gaussian_blur,
    order_values, patchify, teacher_pass,
};
use vlp_vision::{Vit, VitLayout};

use super::clip::architecture;
use super::{
    BuildContext, Checks, DataRequest, Embeddings, EvalContext, ExportContext, Method, Metrics,
    Objective, StepInput, batch_rng, sum_ratio,
};
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};

/// `[method.semaim]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SemAimSettings {
    /// Prediction order.
    pub order: Order,
    /// Query blocks (0 = one per content block).
    pub query_depth: usize,
    /// Momentum of the teacher that finds the attention centre.
    pub ema_momentum: f64,
    /// Side of the targets' Gaussian blur (odd).
    pub blur_kernel: usize,
    /// Its standard deviation in pixels.
    pub blur_sigma: f64,
    /// Standardise each target patch (MAE's and the code's `norm_pix_loss`).
    pub norm_pix_loss: bool,
    /// How the attention centre is read from the teacher (the code's `attention_type`).
    pub attention_type: AttentionType,
}

impl Default for SemAimSettings {
    fn default() -> Self {
        Self {
            order: Order::AttentionCenter,
            query_depth: 0,
            ema_momentum: 0.99,
            blur_kernel: 9,
            blur_sigma: 1.0,
            norm_pix_loss: false,
            attention_type: AttentionType::Cls,
        }
    }
}

/// The model trained: SemAIM's two streams and head, and the EMA teacher of its encoder.
#[derive(Module, Debug)]
pub struct SemAimModel<B: Backend> {
    /// What trains.
    pub aim: SemAim<B>,
    /// The teacher (frozen; follows `aim.encoder` by EMA).
    pub teacher: Vit<B>,
    /// The feature teacher (`[model] teacher`; frozen, not exported).
    pub features: Option<ClipModel<B>>,
}

/// SemAIM pretraining.
#[derive(Debug, Clone)]
pub struct SemAimMethod {
    /// Its settings.
    pub settings: SemAimSettings,
    seed: u64,
}

/// File of an exported model's [`SemAimConfig`].
pub const CONFIG_FILE: &str = "semaim_config.json";
/// File of its weights (`aim.*` and `teacher.*`).
pub const WEIGHTS_FILE: &str = "model.safetensors";

impl SemAimMethod {
    /// `[method] kind = "semaim"`.
    pub fn from_config(cfg: &TrainConfig) -> Result<Self> {
        let mut m = Self::new(cfg.method.parse("semaim")?)?;
        m.seed = cfg.run.seed;
        Ok(m)
    }

    /// The method with explicit settings (checked).
    pub fn new(settings: SemAimSettings) -> Result<Self> {
        let c = Checks::new("semaim");
        let s = &settings;
        c.real("ema_momentum", s.ema_momentum, 0.0, 1.0)?;
        c.count("blur_kernel", s.blur_kernel, 1..=63)?;
        if s.blur_kernel.is_multiple_of(2) {
            return Err(c.fail("blur_kernel", "must be odd"));
        }
        c.real_above("blur_sigma", s.blur_sigma, 0.0, 100.0)?;
        c.count("query_depth", s.query_depth, 0..=64)?;
        // Only the attention-centre order reads a centre; another kind elsewhere would be
        // silently ignored (and `self` would record attention for nothing).
        if s.attention_type != AttentionType::Cls && s.order != Order::AttentionCenter {
            return Err(c.fail(
                "attention_type",
                format!(
                    "is read only by order = \"attention_center\", not {:?}",
                    s.order
                ),
            ));
        }
        Ok(Self { settings, seed: 0 })
    }

    /// The model's configuration for a run.
    pub fn architecture(&self, ctx: &BuildContext<'_>) -> Result<SemAimConfig> {
        let vit = architecture(ctx, false)?.vision;
        let depth = match self.settings.query_depth {
            0 => vit.num_hidden_layers,
            d => d,
        };
        let target_dim = match &ctx.config.model.teacher {
            Some(dir) => {
                let (t, _, _) = read_pretrained_config(dir).map_err(|e| teacher_error(dir, e))?;
                if t.vision.layout != VitLayout::Clip {
                    return Err(teacher_error(
                        dir,
                        "its image tower has no class token to find the attention centre with",
                    ));
                }
                // The teacher reads the run's images: same size, and one token per patch.
                let (ts, tp) = (t.vision.image_size, t.vision.patch_size);
                if (ts, tp) != (vit.image_size, vit.patch_size) {
                    return Err(teacher_error(
                        dir,
                        format!(
                            "its image tower reads {ts}-pixel images in patches of {tp}, this \
                             run's encoder {}-pixel images in patches of {}",
                            vit.image_size, vit.patch_size
                        ),
                    ));
                }
                t.projection_dim.unwrap_or(t.vision.hidden_size)
            }
            None => 0,
        };
        let cfg = SemAimConfig::new(vit)
            .with_query_depth(depth)
            .with_blur_kernel(self.settings.blur_kernel)
            .with_blur_sigma(self.settings.blur_sigma)
            .with_target_dim(target_dim);
        cfg.validate()?;
        Ok(cfg)
    }

    /// The feature teacher's image tokens in the joint space, `[n, 1 + patches, d]` in f32, out
    /// of the graph, with its class token's last-block attention when the centre is read from it.
    fn teacher_tokens<B: Backend>(
        &self,
        model: &SemAimModel<B>,
        images: &Tensor<B, 4>,
    ) -> Option<(Tensor<B, 3>, Option<Tensor<B, 2>>)> {
        let clip = model.features.as_ref()?;
        let kind = self.settings.attention_type;
        let pass = teacher_pass(&clip.vision_model, images.clone().detach(), kind);
        let tokens = clip.project_image_tokens(pass.tokens);
        let f32 = |t: Tensor<B, 2>| t.detach().cast(FloatDType::F32);
        Some((
            tokens.detach().cast(FloatDType::F32),
            pass.class_attention.map(f32),
        ))
    }

    /// Each image's order.
    fn orders<B: Backend>(
        &self,
        model: &SemAimModel<B>,
        images: Tensor<B, 4>,
        rng: &mut vlp_core::rng::Rng,
    ) -> Vec<Vec<f32>> {
        let teacher = self.teacher_tokens(model, &images);
        self.orders_from(model, images, teacher, rng)
    }

    /// Each image's order, the attention centre from the feature teacher's pass when there is
    /// one (the code: `calculate_similarity(enc_tokens)`), else from the EMA teacher.
    fn orders_from<B: Backend>(
        &self,
        model: &SemAimModel<B>,
        images: Tensor<B, 4>,
        teacher: Option<(Tensor<B, 3>, Option<Tensor<B, 2>>)>,
        rng: &mut vlp_core::rng::Rng,
    ) -> Vec<Vec<f32>> {
        let n = images.dims()[0];
        let grid = model.aim.encoder.grid();
        let kind = self.settings.attention_type;
        let centres = match (self.settings.order, teacher) {
            (Order::AttentionCenter, Some((tokens, attention))) => {
                centres_of(kind, tokens, attention)
                    .into_iter()
                    .map(Some)
                    .collect()
            }
            (Order::AttentionCenter, None) => {
                attention_centres(&model.teacher, images.detach(), kind)
                    .into_iter()
                    .map(Some)
                    .collect()
            }
            _ => vec![None; n],
        };
        centres
            .into_iter()
            .map(|c| order_values(self.settings.order, grid, c, rng))
            .collect()
    }

    /// Mean patch features of the encoder, normalised, for every image of `set`.
    pub fn features<B: Backend>(
        &self,
        encoder: &Vit<B>,
        set: &EvalImages,
        device: &B::Device,
    ) -> Features {
        set.embed_with::<B>(device, &|t| {
            let out = encoder.forward(t);
            let x = encoder.token_features(&out);
            let [n, k, d] = x.dims();
            x.slice([0..n, 1..k, 0..d]).mean_dim(1).reshape([n, d])
        })
    }
}

/// Where the prediction orders of held-out images start, against object masks.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct OrderReport {
    /// Images counted (those with instance and semantic masks).
    pub images: usize,
    /// Share of images whose first patch (its centre pixel) lies on the main object.
    pub first_patch_on_main_object: f64,
    /// The same for the raster order (the top-left patch).
    pub raster_first_patch_on_main_object: f64,
    /// Mean object coverage of the first quarter of the patches in the order.
    pub first_quarter_on_objects: f64,
    /// Mean object coverage of a random quarter (exactly: of all patches).
    pub random_quarter_on_objects: f64,
}

impl OrderReport {
    /// As metrics.
    pub fn metrics(&self) -> Metrics {
        let mut m = Metrics::new();
        m.insert(
            "first_patch_on_main_object".into(),
            self.first_patch_on_main_object,
        );
        m.insert(
            "raster_first_patch_on_main_object".into(),
            self.raster_first_patch_on_main_object,
        );
        m.insert(
            "first_quarter_on_objects".into(),
            self.first_quarter_on_objects,
        );
        m.insert(
            "random_quarter_on_objects".into(),
            self.random_quarter_on_objects,
        );
        m
    }
}

/// The orders `method` draws for the images of `set` (seeded), measured against their masks.
pub fn order_report<B: Backend>(
    method: &SemAimMethod,
    model: &SemAimModel<B>,
    set: &EvalImages,
    device: &B::Device,
) -> OrderReport {
    let grid = model.aim.encoder.grid();
    let cell = set.image_size / grid;
    let mut rng = vlp_core::rng::Rng::new(0);
    let mut r = OrderReport::default();
    let mut index = 0;
    for t in set.tensors::<B>(device) {
        let orders = method.orders(model, t, &mut rng);
        for pi in orders {
            let a = set.annotations.get(index);
            index += 1;
            let Some((Some(inst), Some(sem))) = a.map(|a| (&a.instance_mask, &a.semantic_mask))
            else {
                continue;
            };
            r.images += 1;
            let centre = |k: usize| ((k % grid) * cell + cell / 2, (k / grid) * cell + cell / 2);
            let on_main = |k: usize| {
                let (x, y) = centre(k);
                f64::from(u8::from(inst.at(x, y) == 1))
            };
            let coverage: Vec<f64> = (0..grid * grid)
                .map(|k| {
                    let (x0, y0) = ((k % grid) * cell, (k / grid) * cell);
                    let mut on = 0;
                    for y in y0..y0 + cell {
                        for x in x0..x0 + cell {
                            on += usize::from(sem.at(x, y) != 0);
                        }
                    }
                    on as f64 / (cell * cell) as f64
                })
                .collect();
            let mut ranked: Vec<usize> = (0..pi.len()).collect();
            ranked.sort_by(|x, y| pi[*x].total_cmp(&pi[*y]));
            let quarter = (pi.len() / 4).max(1);
            r.first_patch_on_main_object += on_main(ranked[0]);
            r.raster_first_patch_on_main_object += on_main(0);
            r.first_quarter_on_objects +=
                ranked[..quarter].iter().map(|k| coverage[*k]).sum::<f64>() / quarter as f64;
            r.random_quarter_on_objects += coverage.iter().sum::<f64>() / coverage.len() as f64;
        }
    }
    let n = r.images.max(1) as f64;
    r.first_patch_on_main_object /= n;
    r.raster_first_patch_on_main_object /= n;
    r.first_quarter_on_objects /= n;
    r.random_quarter_on_objects /= n;
    r
}

/// Shape and colour of each image's main object, from ShapesWorld's class names
/// ("red circle"); `None` when the set is not labelled that way.
pub fn shape_and_colour(set: &EvalImages) -> Option<(Vec<usize>, Vec<usize>)> {
    let (labels, classes) = (set.labels.as_ref()?, set.classes.as_ref()?);
    let parse = |name: &str| {
        let words: Vec<&str> = name.split_whitespace().collect();
        let s = Shape::ALL.iter().position(|s| words.contains(&s.name()))?;
        let c = Colour::ALL.iter().position(|c| words.contains(&c.name()))?;
        Some((s, c))
    };
    let table: Vec<(usize, usize)> = classes.iter().map(|c| parse(c)).collect::<Option<_>>()?;
    Some(labels.iter().map(|&l| table[l]).unzip())
}

/// Linear-probe accuracy of `features` for `labels` (`classes` values), two-fold: the first
/// half of the rows fits and the second tests, then the other way round; the accuracy is over
/// every row (one probe on 500 images spreads by as much as SemAIM's gain at this scale). Every
/// feature is standardised with the fitting half's mean and deviation first, as the code's
/// linear probe does (`BatchNorm1d(affine=False)` before the head, `main_linprobe.py`).
pub fn probe_halves<B: Backend>(
    features: &Features,
    labels: &[usize],
    classes: usize,
    seed: u64,
    device: &B::Device,
) -> Result<f64> {
    let half = features.rows / 2;
    let (first, second) = (0..half, half..features.rows);
    let a = probe_fold::<B>(features, labels, classes, &first, &second, seed, device)?;
    let b = probe_fold::<B>(features, labels, classes, &second, &first, seed, device)?;
    Ok((a * second.len() as f64 + b * first.len() as f64) / features.rows as f64)
}

/// Accuracy on rows `test` of a probe fitted on rows `fit`, features standardised with the
/// fitting rows' statistics.
fn probe_fold<B: Backend>(
    features: &Features,
    labels: &[usize],
    classes: usize,
    fit: &std::ops::Range<usize>,
    test: &std::ops::Range<usize>,
    seed: u64,
    device: &B::Device,
) -> Result<f64> {
    let (n, d) = (fit.len() as f64, features.dim);
    let mut mean = vec![0.0f64; d];
    let mut var = vec![0.0f64; d];
    for i in fit.clone() {
        for (k, v) in features.row(i).iter().enumerate() {
            mean[k] += *v as f64 / n;
        }
    }
    for i in fit.clone() {
        for (k, v) in features.row(i).iter().enumerate() {
            var[k] += (*v as f64 - mean[k]).powi(2) / n;
        }
    }
    let part = |r: &std::ops::Range<usize>| Features {
        data: r
            .clone()
            .flat_map(|i| {
                features
                    .row(i)
                    .iter()
                    .enumerate()
                    .map(|(k, v)| ((*v as f64 - mean[k]) / (var[k] + 1e-6).sqrt()) as f32)
                    .collect::<Vec<f32>>()
            })
            .collect(),
        rows: r.len(),
        dim: d,
    };
    Ok(linear_probe::<B>(
        &part(fit),
        &labels[fit.clone()],
        &part(test),
        &labels[test.clone()],
        classes,
        0.2,
        seed,
        device,
    )?
    .accuracy)
}

impl Method for SemAimMethod {
    type Model<B: Backend> = SemAimModel<B>;

    fn name(&self) -> &'static str {
        "semaim"
    }

    fn requires(&self) -> Vec<Field> {
        Vec::new()
    }

    fn uses_teacher(&self) -> bool {
        true
    }

    fn data(&self) -> DataRequest {
        DataRequest {
            require_caption: Some(false),
            ..DataRequest::default()
        }
    }

    fn pipeline(&self, ctx: &BuildContext<'_>) -> Result<ImagePipeline> {
        Ok(ImagePipeline::clip(self.architecture(ctx)?.vit.image_size))
    }

    fn build<B: Backend>(
        &self,
        ctx: &BuildContext<'_>,
        device: &B::Device,
    ) -> Result<SemAimModel<B>> {
        let cfg = self.architecture(ctx)?;
        let aim = cfg.init::<B>(device);
        let teacher = vlp_core::nn::frozen_copy(&aim.encoder);
        let features = match &ctx.config.model.teacher {
            Some(dir) => Some(
                load_pretrained::<B>(dir, device)
                    .map_err(|e| teacher_error(dir, e))?
                    .model
                    .no_grad(),
            ),
            None => None,
        };
        Ok(SemAimModel {
            aim,
            teacher,
            features,
        })
    }

    fn freeze<B: Backend>(&self, model: SemAimModel<B>) -> SemAimModel<B> {
        SemAimModel {
            aim: model.aim,
            teacher: model.teacher.no_grad(),
            features: model.features.map(|f| f.no_grad()),
        }
    }

    fn embed<B: Backend>(
        &self,
        model: &SemAimModel<B>,
        input: &StepInput<'_, B>,
    ) -> Result<Embeddings<B>> {
        let images = input.images();
        let [n, _, _, _] = images.dims();
        let mut rng = batch_rng(self.seed, input.batch);
        let teacher = self.teacher_tokens(model, &images);
        let tokens = teacher.as_ref().map(|t| t.0.clone());
        let orders = self.orders_from(model, images.clone(), teacher, &mut rng);
        let pred = model.aim.predict(images.clone(), &orders);
        if let Some(feature) = tokens {
            let per_image = feature_loss(pred, feature).reshape([n, 1]);
            let ones = Tensor::<B, 2>::ones([n, 1], input.device);
            return Ok(Embeddings::new()
                .with_rows("prediction_loss", Tensor::cat(vec![per_image, ones], 1)));
        }
        let patch = model
            .aim
            .encoder
            .embeddings
            .patch_embedding
            .weight
            .val()
            .dims()[2];
        let s = &self.settings;
        // Targets from the f32 pixels (under mixed precision `images` are in the compute type).
        let pixels = input.batch.view_tensor::<B>(0, input.device);
        let mut target =
            patchify(gaussian_blur(pixels, s.blur_kernel, s.blur_sigma), patch).detach();
        if s.norm_pix_loss {
            // The code's `(target - mean) / (var + 1e-6) ** .5` with torch's unbiased variance.
            let k = target.dims()[2] as f64;
            let mean = target.clone().mean_dim(2);
            let centred = target - mean;
            let var = centred.clone().powf_scalar(2.0).sum_dim(2) / (k - 1.0).max(1.0);
            target = centred / (var + 1e-6).sqrt();
        }
        let [_, t, d] = pred.dims();
        let per_image = (pred
            .slice([0..n, 1..t, 0..d])
            .cast(burn::tensor::FloatDType::F32)
            - target.cast(burn::tensor::FloatDType::F32))
        .powf_scalar(2.0)
        .mean_dim(2)
        .mean_dim(1)
        .reshape([n, 1]);
        let ones = Tensor::<B, 2>::ones([n, 1], input.device);
        Ok(Embeddings::new().with_rows("prediction_loss", Tensor::cat(vec![per_image, ones], 1)))
    }

    fn objective<B: Backend>(
        &self,
        _model: &SemAimModel<B>,
        e: Embeddings<B>,
    ) -> Result<Objective<B>> {
        Ok(Objective::new(sum_ratio(e.rows("prediction_loss")?)))
    }

    fn after_update<B: Backend>(&self, model: SemAimModel<B>) -> SemAimModel<B> {
        let teacher = ema_update(
            model.teacher,
            &model.aim.encoder,
            self.settings.ema_momentum,
        );
        SemAimModel {
            aim: model.aim,
            teacher,
            features: model.features,
        }
    }

    fn evaluate<B: Backend>(
        &self,
        model: &SemAimModel<B>,
        ctx: &EvalContext<'_, B>,
    ) -> Result<Metrics> {
        let mut m = Metrics::new();
        let Some(set) = ctx.eval else {
            return Ok(m);
        };
        let Some((shapes, colours)) = shape_and_colour(set) else {
            return Err(TrainError::Config(format!(
                "semaim: the held-out set {} has no ShapesWorld class names to probe shape and colour",
                set.name
            )));
        };
        if set.len() < 20 {
            return Err(TrainError::Config(format!(
                "semaim: {} held-out images; the linear probe needs at least 20",
                set.len()
            )));
        }
        let f = self.features(&model.aim.encoder, set, ctx.device);
        m.insert(
            "probe_shape".into(),
            probe_halves::<B>(&f, &shapes, Shape::ALL.len(), 0, ctx.device)?,
        );
        m.insert(
            "probe_colour".into(),
            probe_halves::<B>(&f, &colours, Colour::ALL.len(), 0, ctx.device)?,
        );
        m.extend(order_report(self, model, set, ctx.device).metrics());
        Ok(m)
    }

    fn export<B: Backend>(&self, model: &SemAimModel<B>, ctx: &ExportContext<'_>) -> Result<()> {
        let tok = ctx.tokenizer;
        let bctx = BuildContext {
            config: ctx.config,
            tokenizer: tok,
        };
        let cfg = self.architecture(&bctx)?;
        vlp_core::io::write_atomic(ctx.dir.join(CONFIG_FILE), cfg.to_string().as_bytes())?;
        // The feature teacher is an input of the run, not part of what it made.
        let kept = SemAimModel {
            aim: model.aim.clone(),
            teacher: model.teacher.clone(),
            features: None,
        };
        write_safetensors(
            ctx.dir.join(WEIGHTS_FILE),
            &collect_params(&kept),
            StoredDType::F32,
            None,
        )?;
        Ok(())
    }
}

/// The code's `forward_feature_loss` per image: predictions and teacher features of every
/// patch (the class token dropped) L2-normalised, squared distance summed over the width,
/// averaged over the patches; in f32.
///
/// # Shapes
/// - `pred`, `feature`: `[n, 1 + patches, d]`
/// - returns: `[n]`
pub fn feature_loss<B: Backend>(pred: Tensor<B, 3>, feature: Tensor<B, 3>) -> Tensor<B, 1> {
    let [n, t, d] = pred.dims();
    let pred = normalize_last(pred.slice([0..n, 1..t, 0..d]).cast(FloatDType::F32));
    let target = normalize_last(feature.slice([0..n, 1..t, 0..d]).cast(FloatDType::F32));
    (pred - target)
        .powf_scalar(2.0)
        .sum_dim(2)
        .mean_dim(1)
        .reshape([n])
}

/// An error about the feature teacher, naming the setting and the directory.
fn teacher_error(dir: &str, reason: impl std::fmt::Display) -> TrainError {
    TrainError::Config(format!("`model.teacher` = {dir:?}: {reason}"))
}

/// Reads a model [`SemAimMethod`] exported; every weight must be there with its shape.
pub fn load_semaim<B: Backend>(
    dir: &std::path::Path,
    device: &B::Device,
) -> Result<(SemAimModel<B>, SemAimConfig)> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| TrainError::Io {
        path: path.clone(),
        source,
    })?;
    let cfg: SemAimConfig = serde_json::from_str(&text)
        .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
    cfg.validate()
        .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
    // Sizes from the file are bounded before anything is allocated from them.
    let v = &cfg.vit;
    check_sizes(&[
        ("vit.hidden_size", v.hidden_size, 0..=1 << 14),
        ("vit.intermediate_size", v.intermediate_size, 0..=1 << 16),
        ("vit.num_hidden_layers", v.num_hidden_layers, 0..=128),
        ("vit.image_size", v.image_size, 0..=4096),
        ("vit.num_channels", v.num_channels, 0..=16),
        ("blur_kernel", cfg.blur_kernel, 0..=63),
        ("target_dim", cfg.target_dim, 0..=1 << 14),
    ])
    .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
    let aim = cfg.init::<B>(device);
    let teacher = cfg.vit.init::<B>(device);
    let file = TensorFile::open(dir.join(WEIGHTS_FILE))?;
    let model = load_params(
        SemAimModel {
            aim,
            teacher,
            features: None,
        },
        &file,
        |p| Source::Key(p.to_string()),
        |_| false,
    )?;
    Ok((model, cfg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vlp_core::backend::{DefaultBackend as B, default_device};

    #[test]
    fn the_feature_loss_matches_a_loop_and_ignores_the_class_token_and_scale() {
        // 2 images, a class token and 3 patches, width 5 (odd sizes).
        let (n, t, d) = (2, 4, 5);
        let p: Vec<f32> = (0..n * t * d)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.3)
            .collect();
        let f: Vec<f32> = (0..n * t * d)
            .map(|i| ((i * 5 % 13) as f32 - 6.0) * 0.2)
            .collect();
        let dev = default_device();
        let tensor = |v: &[f32]| {
            Tensor::<B, 3>::from_data(burn::tensor::TensorData::new(v.to_vec(), [n, t, d]), &dev)
        };
        let got: Vec<f32> = feature_loss(tensor(&p), tensor(&f))
            .into_data()
            .to_vec()
            .unwrap();
        assert_eq!(got.len(), n);
        let unit = |v: &[f32]| {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter().map(|x| x / norm).collect::<Vec<f32>>()
        };
        for (i, g) in got.iter().enumerate() {
            let mut want = 0.0;
            for j in 1..t {
                let at = (i * t + j) * d;
                let (a, b) = (unit(&p[at..at + d]), unit(&f[at..at + d]));
                want +=
                    a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum::<f32>() / (t - 1) as f32;
            }
            assert!((g - want).abs() < 1e-5, "image {i}: {g} vs {want}");
        }
        // A prediction that is the target times 3 (and any class token) costs nothing.
        let scaled: Vec<f32> = f
            .iter()
            .enumerate()
            .map(|(k, x)| if (k / d) % t == 0 { 9.0 } else { x * 3.0 })
            .collect();
        let zero: Vec<f32> = feature_loss(tensor(&scaled), tensor(&f))
            .into_data()
            .to_vec()
            .unwrap();
        assert!(zero.iter().all(|z| z.abs() < 1e-5), "{zero:?}");
    }

    #[test]
    fn settings_are_checked_naming_the_field() {
        let bad = |f: &dyn Fn(&mut SemAimSettings)| {
            let mut s = SemAimSettings::default();
            f(&mut s);
            SemAimMethod::new(s).unwrap_err().to_string()
        };
        assert!(bad(&|s| s.blur_kernel = 8).contains("blur_kernel"));
        assert!(bad(&|s| s.blur_sigma = 0.0).contains("blur_sigma"));
        assert!(bad(&|s| s.ema_momentum = 1.5).contains("ema_momentum"));
        assert!(
            bad(&|s| {
                s.order = Order::Raster;
                s.attention_type = AttentionType::SelfAttention;
            })
            .contains("attention_type")
        );
        let ok = SemAimSettings {
            attention_type: AttentionType::Gap,
            ..SemAimSettings::default()
        };
        assert!(SemAimMethod::new(ok).is_ok());
    }

    #[test]
    fn the_probe_standardises_with_the_fitting_half_only_both_ways() {
        // Two classes told apart by feature 0 around a large offset: standardised, they separate;
        // feature 1 is noise a thousand times larger, which an unstandardised probe would weigh.
        let mut rng = vlp_core::rng::Rng::new(2);
        let (mut data, mut labels) = (Vec::new(), Vec::new());
        for i in 0..80 {
            let y = i % 2;
            data.push(100.0 + y as f32 * 0.01 + rng.range(-0.002, 0.002));
            data.push(rng.range(-1000.0, 1000.0));
            labels.push(y);
        }
        let f = Features {
            data,
            rows: 80,
            dim: 2,
        };
        let acc = probe_halves::<B>(&f, &labels, 2, 0, &default_device()).unwrap();
        assert!(acc > 0.95, "{acc}");
    }
}
