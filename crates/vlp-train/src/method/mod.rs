//! The seam between the runner and a training method.
//!
//! A [`Method`] owns its model type, turns a batch into features ([`Method::embed`]) and the
//! features of the whole batch into a loss ([`Method::objective`]), says which parameters train,
//! evaluates and exports itself. The runner does everything else once for every method: the
//! step, data-parallel gathering of features, open_clip's gradient accumulation, clipping, mixed
//! precision, non-finite losses, optimisers and schedules, checkpoints and resume, logging and
//! plots (open_clip's `task/` package is the model: `CLIPTask` wraps model and loss).
//!
//! Adding a method: a module here implementing [`Method`], one line in [`registry`], a config
//! under `configs/` (see CONTRIBUTING.md, "Adding a method"; FILIP is the worked example). A
//! method defined outside this crate trains with [`crate::run::train_method`].

mod checks;
pub mod clip;
pub mod clip_rocket;
pub mod cocu;
pub mod dreamlip;
mod embeddings;
pub mod filip;
pub mod lxmert;
pub mod pixel_linguist;
pub mod priorclip;
pub mod ptp;
pub mod registry;
pub mod semaim;
pub mod syvic;

pub use embeddings::{Embeddings, Entry, Tokens};

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Int, Tensor};
use vlp_data::loader::{Batch, TextTransform};
use vlp_data::preprocess::ImagePipeline;
use vlp_data::sample::Field;
use vlp_tasks::battery::EvalImages;
use vlp_text::Tokenizer;

pub use checks::Checks;

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::model::BuiltTokenizer;

/// Held-out metrics by name (`zero_shot_top1`, `retrieval_i2t_r5`, ...).
pub type Metrics = BTreeMap<String, f64>;

/// A training method: model, objective, trainable parameters, evaluation and export.
///
/// Methods are generic over the backend only through their functions, so one value serves the
/// autodiff backend that trains and the inner one that evaluates.
pub trait Method: Send + Sync + 'static {
    /// The module trained (checkpoints hold its fields).
    type Model<B: Backend>: Module<B>;

    /// Name in configs and logs (`[method] kind`).
    fn name(&self) -> &'static str;

    /// Sample fields the method reads; the runner checks the training data has them and stops
    /// at start-up naming both when it does not.
    fn requires(&self) -> Vec<Field> {
        vec![Field::Captions]
    }

    /// Whether the method learns from `[model] teacher` (or `teacher_from`); the runner refuses
    /// a teacher given to a method that would ignore it.
    fn uses_teacher(&self) -> bool {
        false
    }

    /// Views, texts and captions the loader must produce.
    fn data(&self) -> DataRequest {
        DataRequest::default()
    }

    /// The image pipeline the model expects (size and normalisation).
    fn pipeline(&self, ctx: &BuildContext<'_>) -> Result<ImagePipeline>;

    /// The model to train: fresh, or loaded as the configuration says.
    fn build<B: Backend>(
        &self,
        ctx: &BuildContext<'_>,
        device: &B::Device,
    ) -> Result<Self::Model<B>>;

    /// Which parameters train: the method freezes the rest (`Module::no_grad`). Default: all.
    fn freeze<B: Backend>(&self, model: Self::Model<B>) -> Self::Model<B> {
        model
    }

    /// Features of one micro-batch. The runner casts them to f32, gathers them across ranks
    /// (only this rank's rows carry gradient) and, under gradient accumulation, stacks them with
    /// the other micro-batches' cached features before [`objective`](Self::objective).
    fn embed<B: Backend>(
        &self,
        model: &Self::Model<B>,
        input: &StepInput<'_, B>,
    ) -> Result<Embeddings<B>>;

    /// The loss of the whole (global) batch from its features.
    fn objective<B: Backend>(
        &self,
        model: &Self::Model<B>,
        features: Embeddings<B>,
    ) -> Result<Objective<B>>;

    /// Parameters the objective reads directly rather than through the features (temperatures,
    /// biases). Every rank and every micro-batch computes their full gradient, so the runner
    /// averages it instead of summing.
    fn objective_params<B: Backend>(&self, model: &Self::Model<B>) -> Vec<ParamId> {
        let _ = model;
        Vec::new()
    }

    /// Applied after every optimiser update (CLIP clamps its logit scale).
    fn after_update<B: Backend>(&self, model: Self::Model<B>) -> Self::Model<B> {
        model
    }

    /// Scalars logged with every training line (e.g. the logit scale).
    fn log_values<B: Backend>(&self, model: &Self::Model<B>) -> Vec<(String, f64)> {
        let _ = model;
        Vec::new()
    }

    /// Metrics on the held-out sets.
    fn evaluate<B: Backend>(
        &self,
        model: &Self::Model<B>,
        ctx: &EvalContext<'_, B>,
    ) -> Result<Metrics>;

    /// Writes the trained model for use outside the runner (`<run>/final/`).
    fn export<B: Backend>(&self, model: &Self::Model<B>, ctx: &ExportContext<'_>) -> Result<()>;
}

/// What a method asks of the loader.
#[derive(Clone, Default)]
pub struct DataRequest {
    /// Independently augmented views per sample (0 or 1 = one).
    pub views: usize,
    /// Augmentation of view `k` for `k` below its length (at least that many views are made);
    /// other views use `[data.augment]`.
    pub view_augments: Vec<vlp_data::augment::AugmentConfig>,
    /// Skip samples without a caption (off for image-only methods). `None`: yes.
    pub require_caption: Option<bool>,
    /// The method's own choice of texts per sample.
    pub text_transform: Option<std::sync::Arc<dyn TextTransform>>,
}

/// What building a model needs.
pub struct BuildContext<'a> {
    /// The run's configuration.
    pub config: &'a TrainConfig,
    /// The tokenizer texts are encoded with.
    pub tokenizer: &'a BuiltTokenizer,
}

/// One micro-batch as a method sees it.
pub struct StepInput<'a, B: Backend> {
    /// The samples (this rank's share).
    pub batch: &'a Batch,
    /// Where tensors go.
    pub device: &'a B::Device,
    /// Mixed precision: the compute dtype the model's parameters were cast to.
    pub dtype: Option<FloatDType>,
}

impl<B: Backend> StepInput<'_, B> {
    /// The first view, `[n, 3, size, size]`, in the compute dtype.
    pub fn images(&self) -> Tensor<B, 4> {
        self.view(0)
    }

    /// View `k` (0 = the first), in the compute dtype.
    pub fn view(&self, k: usize) -> Tensor<B, 4> {
        let t = self.batch.view_tensor::<B>(k, self.device);
        match self.dtype {
            Some(dt) => t.cast(dt),
            None => t,
        }
    }

    /// Token ids and attention mask of the captions, `[n, context]` each.
    pub fn tokens(&self) -> Result<(Tensor<B, 2, Int>, Tensor<B, 2, Int>)> {
        let t = self.batch.tokens.as_ref().ok_or_else(|| {
            TrainError::Config("the training loader must tokenise captions".into())
        })?;
        Ok(t.to_tensors::<B>(self.device))
    }

    /// Token ids and attention mask of the method's own texts (its text transform's), sample
    /// after sample with `per_sample` texts each: `[n · per_sample, context]` each.
    pub fn texts(&self, per_sample: usize) -> Result<(Tensor<B, 2, Int>, Tensor<B, 2, Int>)> {
        let t = self.batch.text_tokens.as_ref().ok_or_else(|| {
            TrainError::Config("the method's texts were not tokenised by the loader".into())
        })?;
        if t.batch != self.batch.len() * per_sample {
            return Err(TrainError::Config(format!(
                "{} texts for {} samples, expected {per_sample} each",
                t.batch,
                self.batch.len()
            )));
        }
        Ok(t.to_tensors::<B>(self.device))
    }
}

/// The loss of a step, and named parts worth logging.
pub struct Objective<B: Backend> {
    /// What is minimised, `[1]`.
    pub loss: Tensor<B, 1>,
    /// Components (`[1]` each), logged next to the loss.
    pub parts: Vec<(String, Tensor<B, 1>)>,
}

impl<B: Backend> Objective<B> {
    /// A loss without parts.
    pub fn new(loss: Tensor<B, 1>) -> Self {
        Self {
            loss,
            parts: Vec::new(),
        }
    }
}

/// The held-out data and what evaluation needs.
pub struct EvalContext<'a, B: Backend> {
    /// Labelled held-out images (zero-shot, retrieval), when configured.
    pub eval: Option<&'a EvalImages>,
    /// Held-out images of unseen attribute combinations, when configured.
    pub unseen: Option<&'a EvalImages>,
    /// The tokenizer.
    pub tokenizer: &'a dyn Tokenizer,
    /// Zero-shot prompt templates.
    pub templates: &'a [String],
    /// Where to compute.
    pub device: &'a B::Device,
}

/// Where and with what the final model is written.
pub struct ExportContext<'a> {
    /// The output directory (created).
    pub dir: &'a Path,
    /// The run's configuration.
    pub config: &'a TrainConfig,
    /// The tokenizer (its `tokenizer.json` goes next to the weights when it has one).
    pub tokenizer: &'a BuiltTokenizer,
}

impl ExportContext<'_> {
    /// Writes a method's own settings or parameters (a temperature, ...) as pretty JSON to
    /// `file` next to the exported weights.
    pub fn write_json(&self, file: &str, value: &serde_json::Value) -> Result<()> {
        let path = self.dir.join(file);
        let text = serde_json::to_string_pretty(value).expect("a JSON value serialises");
        std::fs::write(&path, text).map_err(|e| TrainError::Io { path, source: e })
    }
}

/// A seed for one batch: the run's, the batch's position and its keys, so a resumed run draws
/// the same masks and negatives (methods that draw per step: LXMERT, PTP).
pub(crate) fn batch_rng(seed: u64, batch: &Batch) -> vlp_core::rng::Rng {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for k in &batch.keys {
        for b in k.bytes().chain([0]) {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    vlp_core::rng::Rng::new(h ^ batch.index as u64)
}

/// `Σ column 0 / Σ column 1` of gathered `[n, 2]` per-sample sums (a loss summed over a sample's
/// positions, and how many positions counted): the mean over every counted position of the
/// global batch, 0 when nothing counted.
pub(crate) fn sum_ratio<B: Backend>(rows: Tensor<B, 2>) -> Tensor<B, 1> {
    let [n, _] = rows.dims();
    let total = rows.clone().slice([0..n, 0..1]).sum();
    let count = rows.slice([0..n, 1..2]).sum().clamp_min(1.0);
    total / count
}
