//! SyViC (Cascante-Bonilla et al., 2023, "Going Beyond Nouns With Vision & Language Models Using
//! Synthetic Data"): a pretrained dual encoder is fine-tuned on synthetic scenes whose dense
//! captions name attributes, materials, relations and actions, with LoRA adapters on both towers,
//! and the result is averaged with the original weights so that zero-shot recognition survives.
//!
//! What this module does, by the paper's sections (there is no official training code to read;
//! the paper is the reference):
//! - §3.2 caption splitting: the dense caption (ShapesWorld's long caption, built from the scene
//!   metadata by a grammar) is split into sentences and each image trains with its caption plus
//!   `positives` sentences drawn from it ([`SubCaptionSampler`], DreamLIP's sampler), all of them
//!   its positives under the multi-positive contrastive loss
//!   ([`vlp_align::loss::multi_label_loss`], with CLIP's
//!   own temperature, which stays frozen).
//! - §3.2 parameter-efficient fine-tuning: LoRA on the query and value projections of every
//!   attention block of the towers chosen ([`vlp_core::nn::lora`]), and of their MLPs with
//!   `lora_mlp`; nothing else trains.
//! - §3.2 model averaging: evaluation and export fold the adapters into the weights scaled by
//!   `average_weight`, which is exactly the average `(1 − λ)·θ₀ + λ·θ` of the original and the
//!   fine-tuned model because only the adapters moved. The fine-tuned model itself (λ = 1) is
//!   evaluated too, under `finetuned_*` keys, and the starting model (λ = 0) under `start_*`.
//! - **Departure: swap pairs.** Each image also trains with `swap_pairs` caption pairs built
//!   from its boxes — "a red circle and a blue square" as a positive, "a blue circle and a red
//!   square" (or the relation reversed, or an absent object) as a negative every image scores
//!   ([`multi_label_loss_with_negatives`]), as NegCLIP and TSVLC (Doveh et al., 2023, by
//!   SyViC's authors) generate them. The generator knows its scenes, so the pairs are exact.
//!   In-batch negatives of random scenes rarely need binding or word order; `swap_pairs = 0` is
//!   the paper's loss alone.
//! - Left out: the paper's style-transfer domain adaptation of the synthetic images (no
//!   real-image domain exists in ShapesWorld to adapt to).
//!
//! Evaluation adds the ARO-like benchmark ([`vlp_tasks::compositional`]) on the held-out
//! images: `swap_attribute`, `swap_relation`, `swap_object`.
//!
//! Measured (2026-12-01; details in configs/README.md): on the default run's model (zero-shot
//! 0.83 on the held-out set) `configs/syvic.toml` raises attribute swaps 0.531 → 0.658
//! (fine-tuned; 0.575 averaged at λ = 0.5) and keeps zero-shot (0.826 fine-tuned, 0.837
//! averaged); relation swaps stay at chance (0.50). Over seeds 1–3 (`tests/it/syvic.rs`, the
//! same recipe): attribute swaps +0.080 fine-tuned, +0.015 averaged; zero-shot −0.004 and +0.003
//! — the issue's +10 points on attributes and relations are not reached. On the claim tests'
//! smaller 64-wide 2-layer
//! model (zero-shot 0.25–0.35) nothing moved, with or without swap pairs, LoRA or full
//! fine-tuning, 32 or 64 px: on its own training batches it ranked the true pair caption first
//! 0.50–0.60 of the time after 300 steps, as before them.
//!
//! Why relations stay at chance (2026-12-02, `configs/syvic.toml`, seed 0, measured with
//! `vlp embed`): the first stage's captions never use "left", "right", "to" or "the", so those
//! rows of its token table are still at initialisation (norm 0.21 against 0.5–0.84 for words it
//! read), and its text embedding is that of the subject's noun phrase — "the red circle is to
//! the left of the blue square" against "… to the right of …" has cosine 1.000, against "a red
//! circle and a blue square" 0.987. Fine-tuning keeps it so: with three swap pairs per image
//! (every kind each step; 103 samples/s, 1507 s) attribute swaps rise 0.531 → 0.707 fine-tuned
//! (0.598 averaged) and relations stay 0.494 → 0.503; with a LoRA update of the token table too
//! (PEFT's embedding adapter; tried, not kept) relations 0.497, and "left" and "right" alone move
//! *closer* (cosine 0.915 → 0.994), so the loss itself pulls them together: the image side gives
//! the text no left-right signal to follow. Nor does the image tower gain one: an image and its
//! mirror have cosine 0.935 under the first stage and 0.951 after fine-tuning (40 test images).
//! Two more tries, one seed each, relations 0.493 and 0.510: LoRA on the MLPs too (`lora_mlp`,
//! kept as an option: attribute swaps 0.752 fine-tuned, zero-shot 0.861, but zero-shot on the
//! unseen colour–shape pairs 0.414 → 0.180 fine-tuned, 0.372 averaged), and half the relation
//! negatives worded with the converse relation and the nouns in the true order ("the A is to the
//! right of the B"), which asks the text tower to read the relation word (not kept). Relations
//! look like a saddle: the text has no reason to read the word while the image carries no side,
//! and the reverse.
//!
//! Three more tries (2026-12-02, seed 0, one run each, none kept; relations start 0.494):
//! - A first stage whose alt text states one of the main object's spatial relations 30 % of the
//!   time ("a red circle to the left of a blue square", as web alt text now and then does): its
//!   zero-shot falls 0.854 → 0.61 and relations still end at 0.507 fine-tuned (start 0.503).
//! - Minimal pairs across each image and its horizontal mirror: "the A is to the left of the B"
//!   is true of the image and its order swap true of the mirror, a 2 × 2 contrastive loss beside
//!   the shipped one (a second image-tower pass, 259 samples/s). The pair loss stays at its
//!   chance level (0.7174 → 0.7125 over 2000 steps of a 4800-step run) and relations end at
//!   0.458 after 1200 steps: with "left of" and "right of" phrasings equally likely, the image's
//!   gradient (towards the subject's noun, all the text reads) cancels between them, and the
//!   text's (towards image − mirror) has no consistent direction — the saddle, exactly.
//! - The same with "left of" phrasing only, which breaks the symmetry on the image side: the
//!   pair loss falls (0.7184 at step 110 → 0.695 over the last 100 steps) but relations reach
//!   only 0.511 (attribute swaps 0.656, zero-shot 0.813).

use std::sync::Arc;

use burn::module::ParamId;
use burn::tensor::backend::Backend;
use burn::tensor::{FloatDType, Tensor};
use serde::Deserialize;
use vlp_align::ClipModel;
use vlp_align::loss::multi_label_loss_with_negatives;
use vlp_core::nn::{LoraConfig, train_only_lora};
use vlp_core::rng::Rng;
use vlp_data::preprocess::ImagePipeline;
use vlp_data::sample::{Annotations, Field, ObjectBox};
use vlp_data::text::SubCaptionSampler;
use vlp_data::{TextInput, TextTransform};
use vlp_tasks::compositional::{RELATION_MARGIN, clip_swaps, swap_items_with};

use super::clip::{architecture, build_clip, evaluate_pooled, export_clip, pipeline_of};
use super::clip::{image_and_texts, logged_scales};
use super::{
    BuildContext, Checks, DataRequest, Embeddings, EvalContext, ExportContext, Method, Metrics,
    Objective, StepInput,
};
use crate::config::TrainConfig;
use crate::error::Result;

/// `[method.syvic]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyvicSettings {
    /// Sentences of the dense caption drawn per image besides its caption.
    pub positives: usize,
    /// Rank of the LoRA updates.
    pub lora_rank: usize,
    /// LoRA's `α` (updates are scaled by `α / rank`).
    pub lora_alpha: f64,
    /// Adapt the image tower.
    pub lora_image: bool,
    /// Adapt the text tower.
    pub lora_text: bool,
    /// Also adapt the MLPs of the towers chosen (PEFT's "all-linear"), not only the attention's
    /// query and value projections.
    pub lora_mlp: bool,
    /// Weight λ of the fine-tuned model in the average `(1 − λ)·θ₀ + λ·θ` that is evaluated and
    /// exported (1 = no averaging).
    pub average_weight: f64,
    /// Swapped-caption pairs per image built from its boxes (attribute, relation or object
    /// swaps, [`vlp_tasks::compositional`]): the true caption joins the positives, the swapped
    /// one is a negative every image scores (NegCLIP/TSVLC-style; see the module doc). 0 = the
    /// paper's loss alone.
    pub swap_pairs: usize,
    /// Nouns an object swap may put in place of an object's (default: ShapesWorld's shapes).
    pub nouns: Vec<String>,
    /// Seed of the benchmark's caption draws.
    pub benchmark_seed: u64,
}

impl Default for SyvicSettings {
    fn default() -> Self {
        Self {
            positives: 3,
            lora_rank: 8,
            lora_alpha: 16.0,
            lora_image: true,
            lora_text: true,
            lora_mlp: false,
            average_weight: 0.5,
            swap_pairs: 1,
            nouns: vlp_data::shapes::Shape::ALL
                .iter()
                .map(|s| s.name().to_string())
                .collect(),
            benchmark_seed: 0,
        }
    }
}

/// Each image's texts: its caption, `positives` sentences of its dense caption, then the true
/// captions of `pairs` swap pairs built from its boxes (mapped into the augmented view, so
/// relations hold for the pixels the model sees), then their swapped captions.
#[derive(Debug, Clone)]
pub struct SyvicTexts {
    /// The dense caption's sentences.
    pub sampler: SubCaptionSampler,
    /// Swap pairs per image.
    pub pairs: usize,
    /// Nouns an object swap may use.
    pub nouns: Vec<String>,
}

impl TextTransform for SyvicTexts {
    fn texts(&self, sample: &TextInput<'_>, rng: &mut Rng) -> Vec<String> {
        let (Some(caption), Some(long)) =
            (sample.captions.first(), &sample.annotations.long_caption)
        else {
            return Vec::new();
        };
        let mut out = self.sampler.sample(caption, long, rng);
        if out.is_empty() || self.pairs == 0 {
            return out;
        }
        let g = sample.geometry;
        let view = Annotations {
            boxes: sample
                .annotations
                .boxes
                .iter()
                .map(|b| ObjectBox {
                    bbox: g.map_box(b.bbox),
                    ..b.clone()
                })
                .collect(),
            ..Annotations::default()
        };
        let nouns: Vec<&str> = self.nouns.iter().map(String::as_str).collect();
        let items = swap_items_with(&[view], &nouns, g.size, RELATION_MARGIN, rng.next_u64());
        if items.is_empty() {
            return Vec::new();
        }
        let start = rng.below(items.len());
        let chosen: Vec<_> = (0..self.pairs)
            .map(|k| &items[(start + k) % items.len()])
            .collect();
        out.extend(chosen.iter().map(|i| i.positive.clone()));
        out.extend(chosen.iter().map(|i| i.negative.clone()));
        out
    }

    fn skip_reason(&self) -> &'static str {
        "no caption, no long caption, or no named box in view to build SyViC's texts from"
    }
}

/// SyViC fine-tuning of a dual encoder.
#[derive(Debug, Clone)]
pub struct SyvicMethod {
    /// Its settings.
    pub settings: SyvicSettings,
}

impl SyvicMethod {
    /// `[method] kind = "syvic"`.
    pub fn from_config(cfg: &TrainConfig) -> Result<Self> {
        Self::new(cfg.method.parse("syvic")?)
    }

    /// The method with explicit settings (checked).
    pub fn new(settings: SyvicSettings) -> Result<Self> {
        let c = Checks::new("syvic");
        let s = &settings;
        c.count("positives", s.positives, 1..=64)?;
        c.count("lora_rank", s.lora_rank, 1..=1024)?;
        c.real_above("lora_alpha", s.lora_alpha, 0.0, 1e4)?;
        c.real("average_weight", s.average_weight, 0.0, 1.0)?;
        c.count("swap_pairs", s.swap_pairs, 0..=8)?;
        if s.swap_pairs > 0 && s.nouns.len() < 2 {
            return Err(c.fail("nouns", "needs at least two nouns to swap objects"));
        }
        if !s.lora_image && !s.lora_text {
            return Err(c.fail("lora_image", "and lora_text are both false: nothing trains"));
        }
        Ok(Self { settings })
    }

    /// Texts per image: the caption, its sentences, the true and the swapped caption of each
    /// swap pair.
    pub fn texts_per_image(&self) -> usize {
        self.positives_per_image() + self.settings.swap_pairs
    }

    /// Positive texts per image (all but the swapped captions, which come last).
    pub fn positives_per_image(&self) -> usize {
        self.settings.positives + 1 + self.settings.swap_pairs
    }

    /// The loader's text transform.
    pub fn texts(&self) -> SyvicTexts {
        SyvicTexts {
            sampler: SubCaptionSampler {
                count: self.settings.positives,
                merged: 1,
            },
            pairs: self.settings.swap_pairs,
            nouns: self.settings.nouns.clone(),
        }
    }

    /// The adapters' configuration.
    pub fn lora(&self) -> LoraConfig {
        LoraConfig::new()
            .with_rank(self.settings.lora_rank)
            .with_alpha(self.settings.lora_alpha)
    }

    /// The model that is evaluated and exported: adapters folded in with `weight`.
    pub fn averaged<B: Backend>(&self, model: &ClipModel<B>, weight: f64) -> ClipModel<B> {
        model.clone().merge_lora(weight)
    }
}

/// Zero-shot, retrieval and the compositional benchmark of `model` (keys prefixed by `prefix`).
fn metrics_of<B: Backend>(
    model: &ClipModel<B>,
    ctx: &EvalContext<'_, B>,
    seed: u64,
    prefix: &str,
) -> Result<Metrics> {
    let mut m = evaluate_pooled(model, ctx)?;
    if let Some(set) = ctx.eval
        && let Some(r) = clip_swaps(model, ctx.tokenizer, set, seed, ctx.device)?
    {
        m.extend(r.metrics());
    }
    Ok(m.into_iter()
        .map(|(k, v)| (format!("{prefix}{k}"), v))
        .collect())
}

impl Method for SyvicMethod {
    type Model<B: Backend> = ClipModel<B>;

    fn name(&self) -> &'static str {
        "syvic"
    }

    fn requires(&self) -> Vec<Field> {
        vec![Field::Captions, Field::LongCaption]
    }

    fn data(&self) -> DataRequest {
        DataRequest {
            text_transform: Some(Arc::new(self.texts())),
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
    ) -> Result<ClipModel<B>> {
        let s = &self.settings;
        Ok(build_clip::<B>(ctx, false, device)?.add_lora(
            &self.lora(),
            s.lora_image,
            s.lora_text,
            s.lora_mlp,
            device,
        ))
    }

    fn freeze<B: Backend>(&self, model: ClipModel<B>) -> ClipModel<B> {
        train_only_lora(model)
    }

    fn embed<B: Backend>(
        &self,
        model: &ClipModel<B>,
        input: &StepInput<'_, B>,
    ) -> Result<Embeddings<B>> {
        image_and_texts(model, input, self.texts_per_image())
    }

    fn objective<B: Backend>(
        &self,
        model: &ClipModel<B>,
        e: Embeddings<B>,
    ) -> Result<Objective<B>> {
        let image = e.rows("image")?;
        let (texts, _) = e.tokens("texts")?;
        let [n, t, d] = texts.dims();
        let p = self.positives_per_image();
        let scale: Tensor<B, 1> = model.logit_scale.val().cast(FloatDType::F32);
        let positives = texts.clone().slice([0..n, 0..p, 0..d]);
        let negatives = texts.slice([0..n, p..t, 0..d]);
        let loss = multi_label_loss_with_negatives(image, positives, negatives, scale);
        Ok(Objective {
            loss: loss.clone(),
            parts: vec![("multi_positive".into(), loss)],
        })
    }

    fn objective_params<B: Backend>(&self, _model: &ClipModel<B>) -> Vec<ParamId> {
        // The temperature is frozen with the rest of the pretrained model.
        Vec::new()
    }

    fn log_values<B: Backend>(&self, model: &ClipModel<B>) -> Vec<(String, f64)> {
        logged_scales(&[("logit_scale", &model.logit_scale)])
    }

    fn evaluate<B: Backend>(
        &self,
        model: &ClipModel<B>,
        ctx: &EvalContext<'_, B>,
    ) -> Result<Metrics> {
        let seed = self.settings.benchmark_seed;
        let avg = self.averaged(model, self.settings.average_weight);
        let mut m = metrics_of(&avg, ctx, seed, "")?;
        if self.settings.average_weight < 1.0 {
            m.extend(metrics_of(
                &self.averaged(model, 1.0),
                ctx,
                seed,
                "finetuned_",
            )?);
        }
        // The model the run started from (adapters ignored), so that one report shows the gain.
        m.extend(metrics_of(&self.averaged(model, 0.0), ctx, seed, "start_")?);
        Ok(m)
    }

    fn export<B: Backend>(&self, model: &ClipModel<B>, ctx: &ExportContext<'_>) -> Result<()> {
        // Plain weights in transformers' layout: the adapters are folded in, averaged.
        export_clip(&self.averaged(model, self.settings.average_weight), ctx)?;
        ctx.write_json(
            "syvic.json",
            &serde_json::json!({
                "average_weight": self.settings.average_weight,
                "lora_rank": self.settings.lora_rank,
                "lora_alpha": self.settings.lora_alpha,
                "lora_image": self.settings.lora_image,
                "lora_text": self.settings.lora_text,
                "lora_mlp": self.settings.lora_mlp,
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_naming_the_field() {
        let bad = |f: &dyn Fn(&mut SyvicSettings)| {
            let mut s = SyvicSettings::default();
            f(&mut s);
            SyvicMethod::new(s).unwrap_err().to_string()
        };
        assert!(bad(&|s| s.positives = 0).contains("positives"));
        assert!(bad(&|s| s.lora_rank = 0).contains("lora_rank"));
        assert!(bad(&|s| s.lora_alpha = 0.0).contains("lora_alpha"));
        assert!(bad(&|s| s.average_weight = 1.5).contains("average_weight"));
        let e = bad(&|s| {
            s.lora_image = false;
            s.lora_text = false;
        });
        assert!(e.contains("nothing trains"), "{e}");
        let m = SyvicMethod::new(SyvicSettings::default()).unwrap();
        assert_eq!(m.texts_per_image(), 6);
        assert_eq!(m.positives_per_image(), 5);
        assert!(bad(&|s| s.nouns = vec!["circle".into()]).contains("nouns"));
        assert!(m.requires().contains(&Field::LongCaption));
    }

    fn sample(boxes: &[(&str, [f32; 4])]) -> Annotations {
        Annotations {
            long_caption: Some(
                "There is a large red circle. There is a small blue square. The red circle is \
                 to the left of the blue square."
                    .into(),
            ),
            boxes: boxes
                .iter()
                .map(|(n, b)| ObjectBox {
                    bbox: *b,
                    label: None,
                    name: n.to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn texts_are_positives_then_swapped_negatives_in_the_view() {
        let m = SyvicMethod::new(SyvicSettings {
            swap_pairs: 2,
            ..SyvicSettings::default()
        })
        .unwrap();
        let t = m.texts();
        let a = sample(&[
            ("red circle", [4.0, 4.0, 24.0, 24.0]),
            ("blue square", [40.0, 40.0, 52.0, 52.0]),
        ]);
        let caption = vec!["a red circle".to_string()];
        fn at<'a>(
            captions: &'a [String],
            annotations: &'a Annotations,
            geometry: &'a vlp_data::sample::Geometry,
        ) -> TextInput<'a> {
            TextInput {
                key: "k",
                captions,
                annotations,
                label: None,
                geometry,
            }
        }
        let id = vlp_data::sample::Geometry::identity(64);
        for seed in 0..30 {
            let out = t.texts(&at(&caption, &a, &id), &mut Rng::new(seed));
            assert_eq!(out.len(), m.texts_per_image());
            assert_eq!(out[0], "a red circle");
            let (pos, neg) = (&out[4..6], &out[6..8]);
            for (p, n) in pos.iter().zip(neg) {
                assert_ne!(p, n);
                // A true caption never reappears as a negative and vice versa.
                assert!(!neg.contains(p) && !pos.contains(n));
            }
            assert_eq!(out, t.texts(&at(&caption, &a, &id), &mut Rng::new(seed)));
        }
        // Flipped left–right, the relation pairs say the opposite.
        let flip = vlp_data::sample::Geometry { flip: true, ..id };
        let said = |g: &vlp_data::sample::Geometry| {
            (0..40)
                .flat_map(|seed| t.texts(&at(&caption, &a, g), &mut Rng::new(seed))[4..6].to_vec())
                .filter(|s| s.contains("left of"))
                .collect::<std::collections::BTreeSet<_>>()
        };
        let (plain, mirrored) = (said(&id), said(&flip));
        assert!(plain.contains("the red circle is to the left of the blue square"));
        assert!(!plain.contains("the blue square is to the left of the red circle"));
        assert!(mirrored.contains("the blue square is to the left of the red circle"));
        assert!(!mirrored.contains("the red circle is to the left of the blue square"));
        // Nothing named in view: the sample is skipped (the loader counts it).
        let none = Annotations {
            boxes: Vec::new(),
            ..a.clone()
        };
        let bare = at(&caption, &none, &id);
        assert!(t.texts(&bare, &mut Rng::new(1)).is_empty());
    }
}
