//! LXMERT (Tan & Bansal, 2019) pretraining: masked words, masked objects (feature regression
//! and label classification), image–sentence matching and image QA, summed with equal weights,
//! on `vlp_align::model::lxmert` with the boxes of the data (ShapesWorld's are an oracle
//! detector). Follows the official `src/pretrain/lxmert_pretrain.py`:
//! - a sample's sentence is its caption or, with probability `question_fraction`, one of its
//!   questions; with probability `mismatch_rate` it is replaced by another sample's sentence
//!   (here from the same batch; the code draws from the whole dataset) and labelled unmatched;
//! - words are masked with probability `word_mask_rate` (80 % `[MASK]`, 10 % a random word,
//!   10 % kept; start and end tokens never), objects with `object_mask_rate` (80 % zero feature,
//!   10 % another object's feature, 10 % kept), as `random_word` and `random_feat`;
//! - the QA loss applies to matched questions only; the object-label loss to every object (the
//!   code weighs it by detector confidence over all objects, not only masked ones, although the
//!   paper's §3.1.3 describes masked ones) and the feature loss to masked objects, both summed
//!   over objects, divided by the object count and multiplied by 1/0.15 as the code does.
//!
//! `[method.lxmert]` (all optional): `tasks` (`["mlm", "object", "matched", "qa"]`; `["qa"]`
//! trains on questions alone), `question_fraction` (0.5), `mismatch_rate` (0.5),
//! `word_mask_rate` (0.15), `object_mask_rate` (0.15), `answers` (`"shapes"`, or the path of a
//! JSON list; questions whose answer it lacks train without the QA loss, as LXMERT's pruned
//! answers do, and count wrong in evaluation), `num_object_labels` (30, ShapesWorld's shape × colour classes), and the model's
//! sizes `d_model` (64), `n_heads` (4), `d_hidden` (128), `l_layers` (2), `r_layers` (1),
//! `x_layers` (2), `cnn_channels` (32), `roi_size` (4).
//!
//! `[model] init` = a previous LXMERT run's `final/` continues from its weights (pretraining,
//! then `tasks = ["qa"]` to fine-tune, as the paper does for VQA); its sizes must match.

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::Deserialize;
use vlp_align::loss::{cross_entropy_per_position, smooth_l1_per_position};
use vlp_align::model::lxmert::{Lxmert, LxmertConfig, LxmertInput, load_lxmert, save_lxmert};
use vlp_core::rng::Rng;
use vlp_data::preprocess::ImagePipeline;
use vlp_data::sample::{Annotations, Field};
use vlp_tasks::battery::EvalImages;
use vlp_tasks::vqa::{AnswerTable, VqaReport, evaluate_vqa, object_boxes, visible_objects};

use super::{
    BuildContext, Checks, Embeddings, EvalContext, ExportContext, Method, Metrics, Objective,
    StepInput, batch_rng, sum_ratio,
};
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};
use crate::model::{BuiltTokenizer, build_tokenizer};

/// The four pretraining tasks.
const TASKS: [&str; 4] = ["mlm", "object", "matched", "qa"];

/// `[method.lxmert]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LxmertSettings {
    /// Tasks trained, a subset of `mlm`, `object`, `matched`, `qa`.
    pub tasks: Vec<String>,
    /// Probability that a sample's sentence is one of its questions rather than its caption.
    pub question_fraction: f64,
    /// Probability that the sentence is swapped for another sample's (matching task only).
    pub mismatch_rate: f64,
    /// Probability that a word is masked.
    pub word_mask_rate: f64,
    /// Probability that an object is masked.
    pub object_mask_rate: f64,
    /// The answer table: `shapes` (ShapesWorld's answers) or a JSON list's path.
    pub answers: String,
    /// Object classes the label head predicts.
    pub num_object_labels: usize,
    /// Hidden width.
    pub d_model: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Feed-forward width.
    pub d_hidden: usize,
    /// Language-encoder layers.
    pub l_layers: usize,
    /// Object-relationship-encoder layers.
    pub r_layers: usize,
    /// Cross-modality layers.
    pub x_layers: usize,
    /// Channels of the object CNN.
    pub cnn_channels: usize,
    /// RoIAlign bins per box side.
    pub roi_size: usize,
}

impl Default for LxmertSettings {
    fn default() -> Self {
        Self {
            tasks: TASKS.iter().map(|t| t.to_string()).collect(),
            question_fraction: 0.5,
            mismatch_rate: 0.5,
            word_mask_rate: 0.15,
            object_mask_rate: 0.15,
            answers: "shapes".into(),
            num_object_labels: 30,
            d_model: 64,
            n_heads: 4,
            d_hidden: 128,
            l_layers: 2,
            r_layers: 1,
            x_layers: 2,
            cnn_channels: 32,
            roi_size: 4,
        }
    }
}

/// LXMERT pretraining (or QA training, with `tasks = ["qa"]`).
#[derive(Clone)]
pub struct LxmertMethod {
    /// Its settings.
    pub settings: LxmertSettings,
    /// The answers the QA head scores.
    pub answers: AnswerTable,
    tokenizer: BuiltTokenizer,
    image_size: usize,
    seed: u64,
}

impl std::fmt::Debug for LxmertMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LxmertMethod")
            .field("settings", &self.settings)
            .field("answers", &self.answers.len())
            .finish()
    }
}

/// What one step trains on, drawn from a batch ([`LxmertMethod::draw`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Draw {
    /// Token ids after masking, `[n, context]` row-major (`vocab_size` = `[MASK]`).
    pub ids: Vec<i64>,
    /// Attention mask, `[n, context]`.
    pub mask: Vec<i64>,
    /// Masked-word targets, `[n, context]` (−1 = none).
    pub word_labels: Vec<i64>,
    /// Boxes per sample.
    pub boxes: Vec<Vec<[f32; 4]>>,
    /// Object-label targets, `[n, objects]` (−1 = none).
    pub object_labels: Vec<i64>,
    /// 1 at masked objects, `[n, objects]`.
    pub object_masked: Vec<f32>,
    /// Real objects per sample.
    pub object_counts: Vec<f32>,
    /// Feature replacements for the model.
    pub replacements: Vec<Option<Option<usize>>>,
    /// 1 = matched, per sample.
    pub matched: Vec<i64>,
    /// Answer targets per sample (−1 = none).
    pub answers: Vec<i64>,
    /// The sentence each sample trains with.
    pub sentences: Vec<String>,
}

impl LxmertMethod {
    /// `[method] kind = "lxmert"`.
    pub fn from_config(cfg: &TrainConfig) -> Result<Self> {
        let settings: LxmertSettings = cfg.method.parse("lxmert")?;
        Self::new(settings, cfg)
    }

    /// The method with explicit settings (checked).
    pub fn new(settings: LxmertSettings, cfg: &TrainConfig) -> Result<Self> {
        let c = Checks::new("lxmert");
        if settings.tasks.is_empty() {
            return Err(c.fail("tasks", "name at least one task"));
        }
        for t in &settings.tasks {
            if !TASKS.contains(&t.as_str()) {
                return Err(c.fail(
                    "tasks",
                    format!("unknown task `{t}` (tasks: {})", TASKS.join(", ")),
                ));
            }
        }
        for (name, v) in [
            ("question_fraction", settings.question_fraction),
            ("mismatch_rate", settings.mismatch_rate),
            ("word_mask_rate", settings.word_mask_rate),
            ("object_mask_rate", settings.object_mask_rate),
        ] {
            c.real(name, v, 0.0, 1.0)?;
        }
        for (name, v) in [
            ("d_model", settings.d_model),
            ("n_heads", settings.n_heads),
            ("d_hidden", settings.d_hidden),
            ("cnn_channels", settings.cnn_channels),
            ("roi_size", settings.roi_size),
            ("num_object_labels", settings.num_object_labels),
        ] {
            c.count(name, v, 1..=65536)?;
        }
        if !settings.d_model.is_multiple_of(settings.n_heads) {
            return Err(c.fail(
                "n_heads",
                format!(
                    "{} heads do not divide d_model {}",
                    settings.n_heads, settings.d_model
                ),
            ));
        }
        if settings.x_layers == 0 {
            return Err(c.fail(
                "x_layers",
                "the cross-modality encoder needs at least one layer",
            ));
        }
        let answers = if settings.answers == "shapes" {
            AnswerTable::shapes_world()
        } else {
            AnswerTable::read(&PathBuf::from(&settings.answers))
                .map_err(|e| c.fail("answers", e))?
        };
        let image_size = if cfg.model.image_size > 0 {
            cfg.model.image_size
        } else {
            cfg.data.shapes.image_size
        };
        Ok(Self {
            settings,
            answers,
            tokenizer: build_tokenizer(cfg)?,
            image_size,
            seed: cfg.run.seed,
        })
    }

    fn task(&self, name: &str) -> bool {
        self.settings.tasks.iter().any(|t| t == name)
    }

    /// The model's architecture.
    pub fn architecture(&self) -> LxmertConfig {
        let s = &self.settings;
        LxmertConfig::new(
            self.tokenizer.vocab_size,
            self.tokenizer.tokenizer.context_length(),
            self.answers.len(),
            s.num_object_labels,
        )
        .with_d_model(s.d_model)
        .with_n_heads(s.n_heads)
        .with_d_hidden(s.d_hidden)
        .with_l_layers(s.l_layers)
        .with_r_layers(s.r_layers)
        .with_x_layers(s.x_layers)
        .with_cnn_channels(s.cnn_channels)
        .with_roi_size(s.roi_size)
    }

    /// A sample's boxes in pixels ([`object_boxes`]: the whole image when it has none) and their
    /// labels; a label outside the label head is an error naming the sample.
    fn boxes(&self, a: &Annotations, key: &str, size: usize) -> Result<(Vec<[f32; 4]>, Vec<i64>)> {
        let visible = visible_objects(a);
        let mut labels = Vec::with_capacity(visible.len().max(1));
        for b in &visible {
            labels.push(match b.label {
                Some(l) if l < self.settings.num_object_labels => l as i64,
                Some(l) => {
                    return Err(TrainError::Config(format!(
                        "lxmert: sample {key}: object label {l} is outside num_object_labels {}",
                        self.settings.num_object_labels
                    )));
                }
                None => -1,
            });
        }
        if labels.is_empty() {
            labels.push(-1);
        }
        Ok((object_boxes(a, size), labels))
    }

    /// Sentences, masks and targets of one batch; `rng` draws every random choice.
    pub fn draw(&self, input_batch: &vlp_data::loader::Batch, rng: &mut Rng) -> Result<Draw> {
        let n = input_batch.len();
        let s = &self.settings;
        // Sentence per sample: a question (with its answer) or the caption.
        let mut sentences = Vec::with_capacity(n);
        let mut answers = Vec::with_capacity(n);
        for i in 0..n {
            let qa = &input_batch.annotations[i].qa;
            let ask =
                self.task("qa") && !qa.is_empty() && (rng.unit() as f64) < s.question_fraction;
            if ask || input_batch.captions[i].is_empty() && !qa.is_empty() {
                let q = &qa[rng.below(qa.len())];
                sentences.push(q.question.clone());
                answers.push(self.answers.index(&q.answer).map_or(-1, |a| a as i64));
            } else {
                sentences.push(input_batch.captions[i].clone());
                answers.push(-1);
            }
        }
        // Mismatched pairs: another sample's sentence, no answer.
        let mut matched = vec![1i64; n];
        if self.task("matched") && n > 1 {
            let original = sentences.clone();
            for i in 0..n {
                if (rng.unit() as f64) < s.mismatch_rate {
                    let j = (i + 1 + rng.below(n - 1)) % n;
                    sentences[i] = original[j].clone();
                    matched[i] = 0;
                    answers[i] = -1;
                }
            }
        }
        if !self.task("qa") {
            answers.iter_mut().for_each(|a| *a = -1);
        }
        let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
        let tokens = self.tokenizer.tokenizer.encode_batch(&refs)?;
        let ctx = tokens.context_length;
        let vocab = self.tokenizer.vocab_size;
        let mask_id = vocab as i64;
        let mut ids: Vec<i64> = tokens.ids.iter().map(|&t| t as i64).collect();
        let mask: Vec<i64> = tokens.attention_mask.iter().map(|&m| m as i64).collect();
        let mut word_labels = vec![-1i64; n * ctx];
        if self.task("mlm") {
            for i in 0..n {
                let len = mask[i * ctx..(i + 1) * ctx]
                    .iter()
                    .filter(|&&m| m != 0)
                    .count();
                // Words only: the start and end tokens stay.
                for p in 1..len.saturating_sub(1) {
                    let at = i * ctx + p;
                    let u = rng.unit() as f64;
                    if u >= s.word_mask_rate {
                        continue;
                    }
                    word_labels[at] = ids[at];
                    let u = u / s.word_mask_rate;
                    if u < 0.8 {
                        ids[at] = mask_id;
                    } else if u < 0.9 {
                        ids[at] = rng.below(vocab) as i64;
                    }
                }
            }
        }
        // Objects.
        let mut boxes = Vec::with_capacity(n);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let (b, l) = self.boxes(
                &input_batch.annotations[i],
                &input_batch.keys[i],
                input_batch.image_size,
            )?;
            boxes.push(b);
            labels.push(l);
        }
        let objects = boxes.iter().map(Vec::len).max().unwrap_or(1);
        let mut object_labels = vec![-1i64; n * objects];
        let mut object_masked = vec![0f32; n * objects];
        let mut replacements = vec![None; n * objects];
        let real: Vec<usize> = (0..n)
            .flat_map(|i| (0..boxes[i].len()).map(move |j| i * objects + j))
            .collect();
        for (i, ls) in labels.iter().enumerate() {
            for (j, &l) in ls.iter().enumerate() {
                let at = i * objects + j;
                if self.task("object") {
                    object_labels[at] = l;
                    let u = rng.unit() as f64;
                    if u < s.object_mask_rate {
                        object_masked[at] = 1.0;
                        let u = u / s.object_mask_rate;
                        if u < 0.8 {
                            replacements[at] = Some(None);
                        } else if u < 0.9 {
                            replacements[at] = Some(Some(real[rng.below(real.len())]));
                        }
                    }
                }
            }
        }
        Ok(Draw {
            sentences,
            ids,
            mask,
            word_labels,
            object_counts: boxes.iter().map(|b| b.len() as f32).collect(),
            boxes,
            object_labels,
            object_masked,
            replacements,
            matched,
            answers,
        })
    }

    /// VQA accuracy on every question of `set`'s images.
    pub fn vqa<B: Backend>(
        &self,
        model: &Lxmert<B>,
        set: &EvalImages,
        device: &B::Device,
    ) -> Result<Option<VqaReport>> {
        Ok(evaluate_vqa(
            model,
            self.tokenizer.tokenizer.as_ref(),
            &self.answers,
            set,
            device,
        )?)
    }
}

/// `Σ_positions weight · loss` and `Σ weight` per sample, as `[n, 2]`.
fn sums<B: Backend>(loss: Tensor<B, 2>, weights: Vec<f32>, norm: Vec<f32>) -> Tensor<B, 2> {
    let [n, t] = loss.dims();
    let device = loss.device();
    let w = Tensor::<B, 2>::from_data(TensorData::new(weights, [n, t]), &device);
    let norm = Tensor::<B, 2>::from_data(TensorData::new(norm, [n, 1]), &device);
    Tensor::cat(vec![(loss * w).sum_dim(1), norm], 1)
}

impl Method for LxmertMethod {
    type Model<B: Backend> = Lxmert<B>;

    fn name(&self) -> &'static str {
        "lxmert"
    }

    fn requires(&self) -> Vec<Field> {
        let mut f = vec![Field::Captions, Field::Boxes];
        if self.task("qa") {
            f.push(Field::QuestionAnswers);
        }
        f
    }

    fn pipeline(&self, _ctx: &BuildContext<'_>) -> Result<ImagePipeline> {
        Ok(ImagePipeline::clip(self.image_size))
    }

    fn build<B: Backend>(&self, ctx: &BuildContext<'_>, device: &B::Device) -> Result<Lxmert<B>> {
        let want = self.architecture();
        let Some(dir) = &ctx.config.model.init else {
            return Ok(want.init(device));
        };
        let (model, got) = load_lxmert::<B>(std::path::Path::new(dir), device)?;
        for (field, a, b) in [
            ("vocab_size (tokenizer)", got.vocab_size, want.vocab_size),
            (
                "max_len (tokenizer.context_length)",
                got.max_len,
                want.max_len,
            ),
            ("num_answers (answers)", got.num_answers, want.num_answers),
            (
                "num_object_labels",
                got.num_object_labels,
                want.num_object_labels,
            ),
            ("d_model", got.d_model, want.d_model),
            ("n_heads", got.n_heads, want.n_heads),
            ("d_hidden", got.d_hidden, want.d_hidden),
            ("l_layers", got.l_layers, want.l_layers),
            ("r_layers", got.r_layers, want.r_layers),
            ("x_layers", got.x_layers, want.x_layers),
            ("cnn_channels", got.cnn_channels, want.cnn_channels),
            ("roi_size", got.roi_size, want.roi_size),
        ] {
            if a != b {
                return Err(TrainError::Config(format!(
                    "model.init: {dir:?} has {field} {a}, this run's lxmert settings {b}"
                )));
            }
        }
        Ok(model)
    }

    fn embed<B: Backend>(
        &self,
        model: &Lxmert<B>,
        input: &StepInput<'_, B>,
    ) -> Result<Embeddings<B>> {
        let batch = input.batch;
        let n = batch.len();
        let d = self.draw(batch, &mut batch_rng(self.seed, batch))?;
        let ctx = d.ids.len() / n;
        let objects = d.object_labels.len() / n;
        let device = input.device;
        let ints = |v: Vec<i64>, shape: [usize; 2]| {
            Tensor::<B, 2, Int>::from_data(TensorData::new(v, shape), device)
        };
        let out = model.forward(LxmertInput {
            images: input.images(),
            boxes: d.boxes.clone(),
            input_ids: ints(d.ids, [n, ctx]),
            attention_mask: ints(d.mask, [n, ctx]),
            feature_replacements: d.replacements,
        })?;
        let mut e = Embeddings::new();
        if self.task("mlm") {
            let ce = cross_entropy_per_position(model.mlm_logits(out.lang.clone()), &d.word_labels);
            let w: Vec<f32> = d
                .word_labels
                .iter()
                .map(|&l| f32::from(u8::from(l >= 0)))
                .collect();
            let norm = w.chunks(ctx).map(|c| c.iter().sum()).collect();
            e = e.with_rows("mlm", sums(ce, w, norm));
        }
        if self.task("object") {
            let (label_logits, feat) = model.object_heads(out.visn.clone());
            let ce = cross_entropy_per_position(label_logits, &d.object_labels);
            let ones: Vec<f32> = vec![1.0; n * objects];
            // Both visual losses: summed over objects, per object of the sample (`.mean()` over
            // LXMERT's fixed 36 objects), times 1/0.15 in the objective.
            e = e.with_rows("object_label", sums(ce, ones, d.object_counts.clone()));
            let l1 = smooth_l1_per_position(feat, out.roi_pixels.clone());
            e = e.with_rows("object_feat", sums(l1, d.object_masked, d.object_counts));
        }
        if self.task("matched") {
            let logits = model.matched_logits(out.pooled.clone()).reshape([n, 1, 2]);
            let ce = cross_entropy_per_position(logits, &d.matched);
            e = e.with_rows("matched", sums(ce, vec![1.0; n], vec![1.0; n]));
        }
        if self.task("qa") {
            let logits = model
                .answer_logits(out.pooled)
                .reshape([n, 1, self.answers.len()]);
            let ce = cross_entropy_per_position(logits, &d.answers);
            let has: Vec<f32> = d
                .answers
                .iter()
                .map(|&a| f32::from(u8::from(a >= 0)))
                .collect();
            e = e.with_rows("qa", sums(ce, has.clone(), has));
        }
        Ok(e)
    }

    fn objective<B: Backend>(&self, _model: &Lxmert<B>, e: Embeddings<B>) -> Result<Objective<B>> {
        let mut parts = Vec::new();
        for (name, weight) in [
            ("mlm", 1.0),
            ("object_label", 1.0 / 0.15),
            ("object_feat", 1.0 / 0.15),
            ("matched", 1.0),
            ("qa", 1.0),
        ] {
            let task = if name.starts_with("object") {
                "object"
            } else {
                name
            };
            if self.task(task) {
                parts.push((name.to_string(), sum_ratio(e.rows(name)?) * weight));
            }
        }
        let loss = parts
            .iter()
            .map(|(_, l)| l.clone())
            .reduce(|a, b| a + b)
            .expect("at least one task");
        Ok(Objective { loss, parts })
    }

    fn evaluate<B: Backend>(&self, model: &Lxmert<B>, ctx: &EvalContext<'_, B>) -> Result<Metrics> {
        let mut m = Metrics::new();
        if let Some(set) = ctx.eval
            && let Some(r) = self.vqa(model, set, ctx.device)?
        {
            m.insert("vqa_accuracy".into(), r.overall.accuracy());
            // What the accuracy stands on: nothing uncounted (answers outside the table count
            // wrong, images without boxes are answered from the whole image).
            m.insert("vqa_questions".into(), r.overall.total as f64);
            m.insert("vqa_out_of_table".into(), r.out_of_table as f64);
            m.insert("vqa_whole_image".into(), r.whole_image as f64);
            for (kind, t) in &r.per_kind {
                m.insert(format!("vqa_accuracy_{kind}"), t.accuracy());
            }
        }
        Ok(m)
    }

    fn export<B: Backend>(&self, model: &Lxmert<B>, ctx: &ExportContext<'_>) -> Result<()> {
        save_lxmert(model, &self.architecture(), ctx.dir)?;
        vlp_align::pretrained::save_preprocessor_config(
            &ImagePipeline::clip(self.image_size),
            ctx.dir,
        )?;
        self.answers.write(&ctx.dir.join("answers.json"))?;
        if let Some(t) = &ctx.tokenizer.hf {
            t.save(ctx.dir.join("tokenizer.json"))?;
        }
        Ok(())
    }
}
