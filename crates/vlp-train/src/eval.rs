//! Evaluation during training: zero-shot accuracy and retrieval on held-out images, decoded once
//! and re-embedded at every evaluation.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};
use vlp_align::{ClipModel, normalize};
use vlp_data::loader::{Loader, LoaderConfig};
use vlp_data::preprocess::ImagePipeline;
use vlp_data::shapes::ShapesWorldConfig;
use vlp_data::source::open_source;
use vlp_tasks::embed::{Features, embed_texts};
use vlp_tasks::retrieval::retrieval;
use vlp_tasks::zeroshot::{classifier, evaluate};
use vlp_text::Tokenizer;

use crate::error::{Result, TrainError};

/// Held-out images kept in memory, preprocessed.
pub struct EvalSet {
    /// Source spec.
    pub name: String,
    batches: Vec<(Vec<f32>, usize)>,
    image_size: usize,
    /// Labels (all present, or the set is retrieval-only).
    pub labels: Option<Vec<usize>>,
    /// First caption of each image.
    pub captions: Vec<String>,
    /// Class names, for zero-shot.
    pub classes: Option<Vec<String>>,
}

impl EvalSet {
    /// Loads and preprocesses every image of `spec`.
    pub fn load(
        spec: &str,
        shapes: &ShapesWorldConfig,
        pipeline: &ImagePipeline,
        workers: usize,
    ) -> Result<Self> {
        let source = open_source(spec, shapes)?;
        let classes = source.class_names();
        let cfg = LoaderConfig {
            batch_size: 256,
            workers,
            shuffle: false,
            drop_last: false,
            ..Default::default()
        };
        let loader = Loader::new(source, pipeline.clone(), None, cfg)?;
        let mut batches = Vec::new();
        let mut labels = Vec::new();
        let mut captions = Vec::new();
        for b in loader.epoch(0, 0) {
            let b = b?;
            labels.extend(b.labels.iter().copied());
            captions.extend(b.captions.iter().cloned());
            let n = b.len();
            batches.push((b.images, n));
        }
        if captions.is_empty() {
            return Err(TrainError::Config(format!(
                "evaluation data \"{spec}\" has no usable image"
            )));
        }
        let labels = labels
            .iter()
            .all(Option::is_some)
            .then(|| labels.into_iter().map(|l| l.expect("checked")).collect());
        Ok(Self {
            name: spec.to_string(),
            batches,
            image_size: pipeline.size,
            labels,
            captions,
            classes,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.captions.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.captions.is_empty()
    }

    /// Normalised image embeddings under `model`.
    pub fn embed<B: Backend>(&self, model: &ClipModel<B>, device: &B::Device) -> Features {
        let mut f = Features::default();
        let s = self.image_size;
        for (px, n) in &self.batches {
            let t = Tensor::<B, 4>::from_data(TensorData::new(px.clone(), [*n, 3, s, s]), device);
            f.extend(Features::from_tensor(normalize(model.encode_image(t))));
        }
        f
    }
}

/// Metrics of one evaluation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Zero-shot top-1 on the held-out set.
    pub zero_shot_top1: Option<f64>,
    /// Zero-shot top-5 on the held-out set.
    pub zero_shot_top5: Option<f64>,
    /// Zero-shot top-1 on images of unseen attribute combinations.
    pub zero_shot_top1_unseen: Option<f64>,
    /// Image→text R@1 on the held-out set (its captions as the gallery).
    pub retrieval_i2t_r1: Option<f64>,
    /// Text→image R@1.
    pub retrieval_t2i_r1: Option<f64>,
    /// Image→text R@5.
    pub retrieval_i2t_r5: Option<f64>,
    /// Text→image R@5.
    pub retrieval_t2i_r5: Option<f64>,
}

/// Evaluates `model` on the held-out set and the unseen set.
pub fn run_eval<B: Backend>(
    model: &ClipModel<B>,
    tokenizer: &dyn Tokenizer,
    eval: Option<&EvalSet>,
    unseen: Option<&EvalSet>,
    templates: &[String],
    device: &B::Device,
) -> Result<EvalMetrics> {
    let mut m = EvalMetrics::default();
    let zs = |set: &EvalSet, feats: &Features| -> Result<Option<(f64, f64)>> {
        match (&set.labels, &set.classes) {
            (Some(labels), Some(classes)) => {
                let cls = classifier(model, tokenizer, classes, templates, device)?;
                let r = evaluate(feats, labels, &cls)?;
                Ok(Some((r.top1, r.top5)))
            }
            _ => Ok(None),
        }
    };
    if let Some(set) = eval {
        let feats = set.embed(model, device);
        if let Some((t1, t5)) = zs(set, &feats)? {
            m.zero_shot_top1 = Some(t1);
            m.zero_shot_top5 = Some(t5);
        }
        let caps: Vec<&str> = set.captions.iter().map(String::as_str).collect();
        let texts = embed_texts(model, tokenizer, &caps, 256, device);
        let link: Vec<usize> = (0..caps.len()).collect();
        let r = retrieval(&feats, &texts, &link)?;
        m.retrieval_i2t_r1 = Some(r.i2t_recall[0]);
        m.retrieval_i2t_r5 = Some(r.i2t_recall[1]);
        m.retrieval_t2i_r1 = Some(r.t2i_recall[0]);
        m.retrieval_t2i_r5 = Some(r.t2i_recall[1]);
    }
    if let Some(set) = unseen {
        let feats = set.embed(model, device);
        m.zero_shot_top1_unseen = zs(set, &feats)?.map(|(t1, _)| t1);
    }
    Ok(m)
}
