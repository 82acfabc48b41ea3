//! Pixel-Linguist (Xiao et al., 2024, "Pixel Sentence Representation Learning"; official code
//! `gowitheflow-1998/Pixel-Linguist`, `run_bash/0-run_unsup.sh`, `src/pixel/trainer.py`
//! `PIXELTrainerForContrastive`): sentence embeddings from text rendered as pixels
//! (`vlp_data::render`, `vlp_vision::pixel_text`), trained contrastively on the sentences of the
//! training data without any image.
//!
//! - `stage = "unsupervised"` (the paper's stage 1): the positive of a sentence is a visually
//!   grounded perturbation of it (`vlp_data::text::Perturbation`: character typos, or the
//!   words shuffled, as the code's `wiki1M-character-level` and `word-random-shuffle` sets).
//! - `stage = "supervised"` (stage 3, NLI with hard negatives): a sentence of the sample's long
//!   caption read as a `vlp_data::shapes::Statement`; the positive is the same statement
//!   written another way, the hard negative the statement with one attribute or the relation
//!   changed — a paraphrase/contradiction set generated from ShapesWorld's grammar.
//!
//! The loss is the code's: embeddings L2-normalised, similarities divided by a fixed
//! temperature 0.05, cross-entropy in both directions (anchor → positives, positive → anchors);
//! a hard negative is one more column of the anchor's softmax, as in SimCSE
//! (`vlp_align::loss::multi_label_loss_with_negatives` with one positive). Chaining the stages
//! is `[model] init_from` (`configs/pixel-linguist.toml`). Not ported: the topical-alignment
//! stage 2 (WikiSpan) and the multilingual "leapfrog" iterations; dropout 0.1 of the PIXEL
//! encoder (the shared transformer has attention dropout only).
//!
//! `[method.pixel_linguist]` (all optional): `stage` ("unsupervised"), `perturbations`
//! (["typo", "shuffle"]), `typo_edits` (2), `temperature` (0.05), `scripts` (["latin"]: each
//! training pair is written in one of them, `vlp_data::render::Script`), the encoder's `width`
//! (64), `layers` (2), `heads` (4), `mlp` (256), `patch_width` (8), `max_patches` (64), and
//! the evaluation's `eval_pairs` (400), `eval_sentences` (400), `eval_seed` (0).

use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor, TensorData};
use serde::Deserialize;
use vlp_align::loss::multi_label_loss_with_negatives;
use vlp_core::rng::Rng;
use vlp_data::preprocess::ImagePipeline;
use vlp_data::render::{Script, TextRenderer};
use vlp_data::sample::Field;
use vlp_data::shapes::{STYLES, Statement};
use vlp_data::text::{Perturbation, split_sentences};
use vlp_data::{TextInput, TextTransform};
use vlp_tasks::embed::{embed_rendered_texts, renderer_for};
use vlp_tasks::sts::{shapes_sentences, shapes_sts, sts_spearman, typo_robustness};
use vlp_vision::pixel_text::{
    PixelTextEncoder, PixelTextEncoderConfig, load_pixel_text, save_pixel_text,
};

use super::{
    BuildContext, Checks, DataRequest, Embeddings, EvalContext, ExportContext, Method, Metrics,
    Objective, StepInput,
};
use crate::config::TrainConfig;
use crate::error::{Result, TrainError};

/// Which of the paper's stages a run trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Positives are perturbations of the sentence.
    Unsupervised,
    /// Positives are paraphrases, hard negatives contradictions.
    Supervised,
}

/// `[method.pixel_linguist]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PixelLinguistSettings {
    /// The stage trained.
    pub stage: Stage,
    /// Perturbations an unsupervised positive is drawn from (uniformly).
    pub perturbations: Vec<Perturbation>,
    /// Character edits of a typo positive.
    pub typo_edits: usize,
    /// Softmax temperature (fixed; the code's 0.05).
    pub temperature: f64,
    /// Scripts a training pair is written in (one drawn per pair).
    pub scripts: Vec<Script>,
    /// Encoder width.
    pub width: usize,
    /// Encoder blocks.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// MLP hidden width.
    pub mlp: usize,
    /// Patch width in pixels.
    pub patch_width: usize,
    /// Patches per strip.
    pub max_patches: usize,
    /// Pairs of the synthetic STS benchmark evaluated.
    pub eval_pairs: usize,
    /// Sentences of the typo-robustness check.
    pub eval_sentences: usize,
    /// Seed of both benchmarks.
    pub eval_seed: u64,
}

impl Default for PixelLinguistSettings {
    fn default() -> Self {
        Self {
            stage: Stage::Unsupervised,
            perturbations: vec![Perturbation::Typo, Perturbation::Shuffle],
            typo_edits: 2,
            temperature: 0.05,
            scripts: vec![Script::Latin],
            width: 64,
            layers: 2,
            heads: 4,
            mlp: 256,
            patch_width: 8,
            max_patches: 64,
            eval_pairs: 400,
            eval_sentences: 400,
            eval_seed: 0,
        }
    }
}

/// Each sample's texts: anchor, positive and (supervised) hard negative.
#[derive(Debug, Clone)]
pub struct PixelTexts {
    /// The stage.
    pub stage: Stage,
    /// Perturbations for unsupervised positives.
    pub perturbations: Vec<Perturbation>,
    /// Edits per typo.
    pub typo_edits: usize,
    /// Scripts a pair is written in.
    pub scripts: Vec<Script>,
}

impl TextTransform for PixelTexts {
    fn texts(&self, sample: &TextInput<'_>, rng: &mut Rng) -> Vec<String> {
        let mut sentences: Vec<String> = sample
            .annotations
            .long_caption
            .as_deref()
            .map(split_sentences)
            .unwrap_or_default();
        let out = match self.stage {
            Stage::Unsupervised => {
                sentences.extend(sample.captions.iter().cloned());
                if sentences.is_empty() {
                    return Vec::new();
                }
                let anchor = rng.pick(&sentences).clone();
                let kind = *rng.pick(&self.perturbations);
                let positive = kind.apply(&anchor, self.typo_edits, rng);
                vec![anchor, positive]
            }
            Stage::Supervised => {
                let statements: Vec<Statement> = sentences
                    .iter()
                    .filter_map(|s| Statement::parse(s))
                    .collect();
                if statements.is_empty() {
                    return Vec::new();
                }
                let s = *rng.pick(&statements);
                let a = rng.below(STYLES);
                let b = (a + 1 + rng.below(STYLES - 1)) % STYLES;
                let negative = s.contradict(rng).write(rng.below(STYLES));
                vec![s.write(a), s.write(b), negative]
            }
        };
        let script = *rng.pick(&self.scripts);
        out.iter().map(|t| script.transliterate(t)).collect()
    }

    fn skip_reason(&self) -> &'static str {
        match self.stage {
            Stage::Unsupervised => "no sentence to perturb",
            Stage::Supervised => "no long-caption sentence in ShapesWorld's grammar",
        }
    }
}

/// Pixel-Linguist's contrastive training of a pixel sentence encoder.
#[derive(Debug, Clone)]
pub struct PixelLinguistMethod {
    /// Its settings.
    pub settings: PixelLinguistSettings,
    image_size: usize,
}

impl PixelLinguistMethod {
    /// `[method] kind = "pixel_linguist"`.
    pub fn from_config(cfg: &TrainConfig) -> Result<Self> {
        let mut m = Self::new(cfg.method.parse("pixel_linguist")?)?;
        m.image_size = if cfg.model.image_size > 0 {
            cfg.model.image_size
        } else {
            cfg.data.shapes.image_size
        };
        Ok(m)
    }

    /// The method with explicit settings (checked).
    pub fn new(settings: PixelLinguistSettings) -> Result<Self> {
        let c = Checks::new("pixel_linguist");
        let s = &settings;
        if s.stage == Stage::Unsupervised && s.perturbations.is_empty() {
            return Err(c.fail("perturbations", "is empty: nothing to draw positives from"));
        }
        if s.scripts.is_empty() {
            return Err(c.fail("scripts", "is empty"));
        }
        c.count("typo_edits", s.typo_edits, 1..=16)?;
        c.real_above("temperature", s.temperature, 0.0, 10.0)?;
        c.count("width", s.width, 1..=4096)?;
        c.count("layers", s.layers, 1..=48)?;
        c.count("heads", s.heads, 1..=64)?;
        c.count("mlp", s.mlp, 1..=16384)?;
        c.count("patch_width", s.patch_width, 1..=64)?;
        c.count("max_patches", s.max_patches, 1..=1024)?;
        c.count("eval_pairs", s.eval_pairs, 0..=100_000)?;
        c.count("eval_sentences", s.eval_sentences, 0..=100_000)?;
        if !s.width.is_multiple_of(s.heads) {
            return Err(c.fail(
                "heads",
                format!("{} do not divide width {}", s.heads, s.width),
            ));
        }
        Ok(Self {
            settings,
            image_size: 32,
        })
    }

    /// The encoder the settings describe.
    pub fn architecture(&self) -> PixelTextEncoderConfig {
        let s = &self.settings;
        PixelTextEncoderConfig::new()
            .with_patch_width(s.patch_width)
            .with_max_patches(s.max_patches)
            .with_d_model(s.width)
            .with_n_layers(s.layers)
            .with_n_heads(s.heads)
            .with_d_hidden(s.mlp)
    }

    /// The renderer matching the encoder.
    pub fn renderer(&self) -> TextRenderer {
        renderer_for(&self.architecture())
    }

    /// The loader's texts.
    pub fn texts(&self) -> PixelTexts {
        let s = &self.settings;
        PixelTexts {
            stage: s.stage,
            perturbations: s.perturbations.clone(),
            typo_edits: s.typo_edits,
            scripts: s.scripts.clone(),
        }
    }

    fn per_sample(&self) -> usize {
        match self.settings.stage {
            Stage::Unsupervised => 2,
            Stage::Supervised => 3,
        }
    }

    /// Sentence embeddings of `texts` (not normalised), `[texts, width]`; the strips are cast
    /// to `dtype` (mixed precision: the parameters' compute type).
    pub fn encode<B: Backend>(
        &self,
        model: &PixelTextEncoder<B>,
        texts: &[String],
        device: &B::Device,
        dtype: Option<FloatDType>,
    ) -> Result<Tensor<B, 2>> {
        let r = self.renderer();
        let (pixels, patches) = r.render_batch(texts);
        let mut strips = Tensor::<B, 3>::from_data(
            TensorData::new(pixels, [texts.len(), r.height, r.width()]),
            device,
        );
        if let Some(dt) = dtype {
            strips = strips.cast(dt);
        }
        Ok(model.forward(strips, &patches)?)
    }

    /// L2-normalised sentence embeddings of `texts` as host vectors
    /// (`vlp_tasks::embed::embed_rendered_texts`).
    pub fn embed_texts<B: Backend>(
        &self,
        model: &PixelTextEncoder<B>,
        texts: &[String],
        device: &B::Device,
    ) -> Result<Vec<Vec<f32>>> {
        let (f, _) = embed_rendered_texts(model, &self.architecture(), texts, 256, device)?;
        Ok((0..f.rows).map(|i| f.row(i).to_vec()).collect())
    }
}

impl Method for PixelLinguistMethod {
    type Model<B: Backend> = PixelTextEncoder<B>;

    fn name(&self) -> &'static str {
        "pixel_linguist"
    }

    fn requires(&self) -> Vec<Field> {
        match self.settings.stage {
            Stage::Unsupervised => vec![Field::Captions],
            Stage::Supervised => vec![Field::LongCaption],
        }
    }

    fn data(&self) -> DataRequest {
        DataRequest {
            text_transform: Some(Arc::new(self.texts())),
            ..DataRequest::default()
        }
    }

    fn pipeline(&self, _ctx: &BuildContext<'_>) -> Result<ImagePipeline> {
        // Images are loaded (the loader's samples are image–text pairs) but never used.
        Ok(ImagePipeline::clip(self.image_size))
    }

    fn build<B: Backend>(
        &self,
        ctx: &BuildContext<'_>,
        device: &B::Device,
    ) -> Result<PixelTextEncoder<B>> {
        let want = self.architecture();
        let Some(dir) = &ctx.config.model.init else {
            return Ok(want.init(device));
        };
        let (model, got) = load_pixel_text::<B>(std::path::Path::new(dir), device)?;
        if got != want {
            return Err(TrainError::Config(format!(
                "model.init: {dir:?} holds a pixel text encoder {got:?}, this run's \
                 [method.pixel_linguist] describes {want:?}"
            )));
        }
        Ok(model)
    }

    fn embed<B: Backend>(
        &self,
        model: &PixelTextEncoder<B>,
        input: &StepInput<'_, B>,
    ) -> Result<Embeddings<B>> {
        let k = self.per_sample();
        let batch = input.batch;
        let n = batch.len();
        if batch.texts.len() != n || batch.texts.iter().any(|t| t.len() != k) {
            return Err(TrainError::Config(format!(
                "pixel_linguist: expected {k} texts for each of {n} samples"
            )));
        }
        let flat: Vec<String> = batch.texts.iter().flatten().cloned().collect();
        let e = self.encode(model, &flat, input.device, input.dtype)?;
        let d = e.dims()[1];
        let e = e.reshape([n, k, d]);
        let row = |j: usize| e.clone().slice([0..n, j..j + 1, 0..d]).reshape([n, d]);
        let mut out = Embeddings::new()
            .with_rows("anchor", row(0))
            .with_rows("positive", row(1));
        if k == 3 {
            out = out.with_rows("negative", row(2));
        }
        Ok(out)
    }

    fn objective<B: Backend>(
        &self,
        _model: &PixelTextEncoder<B>,
        e: Embeddings<B>,
    ) -> Result<Objective<B>> {
        let unit = |t: Tensor<B, 2>| vlp_align::normalize(t);
        let anchor = unit(e.rows("anchor")?);
        let positive = unit(e.rows("positive")?);
        let [n, d] = anchor.dims();
        let negatives = match self.settings.stage {
            Stage::Supervised => unit(e.rows("negative")?).reshape([n, 1, d]),
            Stage::Unsupervised => Tensor::zeros([n, 0, d], &anchor.device()),
        };
        let log_scale = Tensor::<B, 1>::from_floats(
            [(1.0 / self.settings.temperature).ln() as f32],
            &anchor.device(),
        );
        let loss = multi_label_loss_with_negatives(
            anchor,
            positive.reshape([n, 1, d]),
            negatives,
            log_scale,
        );
        Ok(Objective::new(loss))
    }

    fn evaluate<B: Backend>(
        &self,
        model: &PixelTextEncoder<B>,
        ctx: &EvalContext<'_, B>,
    ) -> Result<Metrics> {
        let s = &self.settings;
        let mut m = Metrics::new();
        let embed = |t: &[String]| {
            self.embed_texts(model, t, ctx.device)
                .map_err(|e| vlp_tasks::TaskError::Invalid {
                    task: "pixel_linguist".into(),
                    reason: e.to_string(),
                })
        };
        for script in Script::ALL {
            let suffix = match script {
                Script::Latin => String::new(),
                other => format!("_{}", other.name()),
            };
            if s.eval_pairs >= 2 {
                let pairs: Vec<_> = shapes_sts(s.eval_pairs, s.eval_seed)
                    .into_iter()
                    .map(|mut p| {
                        p.a = script.transliterate(&p.a);
                        p.b = script.transliterate(&p.b);
                        p
                    })
                    .collect();
                m.insert(
                    format!("sts_spearman{suffix}"),
                    sts_spearman(&pairs, embed)?,
                );
            }
            if s.eval_sentences >= 2 {
                // Typos are made in Latin and then transliterated, so every script sees the
                // same edits.
                let latin = shapes_sentences(s.eval_sentences, s.eval_seed);
                let rate = typo_robustness(&latin, 1, s.eval_seed, |t: &[String]| {
                    let w: Vec<String> = t.iter().map(|x| script.transliterate(x)).collect();
                    embed(&w)
                })?;
                m.insert(format!("typo_robustness{suffix}"), rate);
            }
        }
        Ok(m)
    }

    fn export<B: Backend>(
        &self,
        model: &PixelTextEncoder<B>,
        ctx: &ExportContext<'_>,
    ) -> Result<()> {
        save_pixel_text(model, &self.architecture(), ctx.dir)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vlp_data::sample::{Annotations, Geometry};

    fn input<'a>(
        captions: &'a [String],
        annotations: &'a Annotations,
        geometry: &'a Geometry,
    ) -> TextInput<'a> {
        TextInput {
            key: "k",
            captions,
            annotations,
            label: None,
            geometry,
        }
    }

    #[test]
    fn settings_are_checked_naming_the_field() {
        let bad = |f: &dyn Fn(&mut PixelLinguistSettings)| {
            let mut s = PixelLinguistSettings::default();
            f(&mut s);
            PixelLinguistMethod::new(s).unwrap_err().to_string()
        };
        assert!(bad(&|s| s.perturbations.clear()).contains("perturbations"));
        assert!(bad(&|s| s.scripts.clear()).contains("scripts"));
        assert!(bad(&|s| s.temperature = 0.0).contains("temperature"));
        assert!(bad(&|s| s.heads = 3).contains("heads"));
        assert!(bad(&|s| s.max_patches = 0).contains("max_patches"));
    }

    #[test]
    fn texts_are_anchor_positive_and_contradiction() {
        let long = "There is a large red circle. There is a small blue square. The red \
                    circle is to the left of the blue square.";
        let a = Annotations {
            long_caption: Some(long.into()),
            ..Default::default()
        };
        let g = Geometry::identity(32);
        let captions = vec!["a red circle".to_string()];
        let sup = PixelLinguistMethod::new(PixelLinguistSettings {
            stage: Stage::Supervised,
            ..Default::default()
        })
        .unwrap()
        .texts();
        for seed in 0..50 {
            let t = sup.texts(&input(&captions, &a, &g), &mut Rng::new(seed));
            assert_eq!(t.len(), 3);
            assert_ne!(t[0], t[1]);
            // The paraphrase reads as the same statement or its converse; the negative not.
            let (s0, s2) = (Statement::parse(&t[0]), Statement::parse(&t[2]));
            if let (Some(x), Some(y)) = (s0, s2) {
                assert_ne!(x, y);
            }
            assert_eq!(t, sup.texts(&input(&captions, &a, &g), &mut Rng::new(seed)));
        }
        let none = Annotations {
            long_caption: Some("a photo. of things".into()),
            ..Default::default()
        };
        assert!(
            sup.texts(&input(&captions, &none, &g), &mut Rng::new(0))
                .is_empty()
        );

        let unsup = PixelLinguistMethod::new(PixelLinguistSettings {
            scripts: vec![Script::Mirrored],
            ..Default::default()
        })
        .unwrap()
        .texts();
        let t = unsup.texts(&input(&captions, &a, &g), &mut Rng::new(3));
        assert_eq!(t.len(), 2);
        assert_ne!(t[0], t[1]);
        assert!(
            t[0].chars()
                .all(|c| c == ' ' || Script::of(c).unwrap().0 == Script::Mirrored)
        );
    }
}
