//! k-shot adaptation: seeded splits, a harness any method plugs into, the baselines (zero-shot,
//! linear probe, Tip-Adapter), the methods that learn on a frozen model
//! ([`learned`]: CoOp, CLIP-Adapter, SgVA-CLIP) and the base-to-novel protocol
//! ([`base_to_novel`](mod@base_to_novel), with MaPLe).

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use vlp_data::shapes::Rng;

use crate::embed::Features;
use crate::error::{Result, TaskError};
use crate::probe::{accuracy, argmax_rows, fit};

pub mod base_to_novel;
pub mod cross_domain;
pub mod gist;
pub mod learned;
pub mod proapo;
pub mod views;

pub use base_to_novel::Maple;
pub use base_to_novel::{
    BaseToNovel, HandWritten, ImageRows, OpenClassifier, OpenVocabularyMethod, Pixels,
    base_to_novel, harmonic_mean,
};
pub use cross_domain::{CrossDomainRow, Domain, cross_domain};
pub use gist::{Gist, GistConfig, GistFit};
pub use learned::{ClipAdapter, Coop, LearnedSgva, Sgva};
pub use proapo::{Proapo, ProapoConfig};
pub use views::{AugmentedShots, ShotViews};

/// What a method may use besides the shots.
pub struct FewShotContext<'a> {
    /// Number of classes.
    pub classes: usize,
    /// The zero-shot classifier (`[classes, dim]`, normalised text embeddings).
    pub zero_shot: &'a Features,
}

/// The survey's families of few-shot methods (Liu et al., 2024, "Few-shot Adaptation of
/// Multi-modal Foundation Models: A Survey"), plus the baselines they are measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// Zero-shot prompts and the linear probe.
    Baseline,
    /// Prompt-based: learned or searched prompts (CoOp, MaPLe, ProAPO's templates).
    Prompt,
    /// Adapter-based: modules or caches on the frozen features (CLIP-Adapter, Tip-Adapter,
    /// SgVA-CLIP).
    Adapter,
    /// External-knowledge-based: text from a language model (GIST, descriptions).
    ExternalKnowledge,
}

impl FewShotContext<'_> {
    /// Checks that a method given class names has one per class to tell apart.
    pub fn check_names(&self, method: &str, names: &[String]) -> Result<()> {
        if self.classes == names.len() {
            return Ok(());
        }
        Err(TaskError::Invalid {
            task: method.into(),
            reason: format!(
                "{} classes to tell apart, {} class names",
                self.classes,
                names.len()
            ),
        })
    }
}

/// A k-shot method: fits on the shots, predicts test classes.
pub trait FewShotMethod {
    /// Name in reports.
    fn name(&self) -> String;
    /// Its family in the survey's taxonomy.
    fn family(&self) -> Family;
    /// Parameters it trains for `classes` classes of `dim`-wide features (the survey's second
    /// factor; 0 for training-free methods).
    fn trainable_params(&self, dim: usize, classes: usize) -> usize;
    /// Predicted class of every test row.
    fn predict(
        &self,
        shots: &Features,
        shot_labels: &[usize],
        ctx: &FewShotContext,
        test: &Features,
    ) -> Result<Vec<usize>>;
}

/// Indices of `k` samples per class drawn with `seed` (all of a class's samples when it has
/// fewer), in increasing order.
pub fn k_shot_indices(labels: &[usize], classes: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l].push(i);
    }
    let mut rng = Rng::new(seed ^ (k as u64) << 32);
    let mut out = Vec::new();
    for mut c in by_class {
        rng.shuffle(&mut c);
        out.extend(c.into_iter().take(k));
    }
    out.sort_unstable();
    out
}

/// `init` run under `seed` with every parameter of its module drawn there and then: a lazily
/// initialised parameter would otherwise be drawn at first use, outside the seed (and each clone
/// would draw its own).
pub(crate) fn drawn<B, M, P, E>(
    device: &B::Device,
    seed: u64,
    init: impl FnOnce() -> std::result::Result<(M, P), E>,
) -> std::result::Result<(M, P), E>
where
    B: Backend,
    M: burn::module::Module<B>,
{
    vlp_core::backend::seeded::<B, _>(device, seed, || {
        let r = init();
        if let Ok((m, _)) = &r {
            vlp_core::backend::materialize(m);
        }
        r
    })
}

pub(crate) fn rows(f: &Features, idx: &[usize]) -> Features {
    let mut out = Features {
        data: Vec::with_capacity(idx.len() * f.dim),
        rows: idx.len(),
        dim: f.dim,
    };
    for &i in idx {
        out.data.extend_from_slice(f.row(i));
    }
    out
}

pub(crate) fn scores(x: &Features, w: &Features) -> Features {
    let mut data = Vec::with_capacity(x.rows * w.rows);
    for i in 0..x.rows {
        for c in 0..w.rows {
            data.push(x.row(i).iter().zip(w.row(c)).map(|(a, b)| a * b).sum());
        }
    }
    Features {
        data,
        rows: x.rows,
        dim: w.rows,
    }
}

/// Zero-shot classification: ignores the shots.
pub struct ZeroShot;

impl FewShotMethod for ZeroShot {
    fn name(&self) -> String {
        "zero-shot".into()
    }
    fn family(&self) -> Family {
        Family::Baseline
    }
    fn trainable_params(&self, _: usize, _: usize) -> usize {
        0
    }
    fn predict(
        &self,
        _: &Features,
        _: &[usize],
        ctx: &FewShotContext,
        test: &Features,
    ) -> Result<Vec<usize>> {
        Ok(argmax_rows(&scores(test, ctx.zero_shot)))
    }
}

/// Logistic regression on the shots (L2 strength fixed: there is no validation split at k = 1).
pub struct LinearProbe<B: Backend> {
    /// L2 strength.
    pub lambda: f64,
    /// Device to fit on.
    pub device: B::Device,
}

impl<B: Backend> FewShotMethod for LinearProbe<B> {
    fn name(&self) -> String {
        "linear-probe".into()
    }
    fn family(&self) -> Family {
        Family::Baseline
    }
    fn trainable_params(&self, dim: usize, classes: usize) -> usize {
        dim * classes + classes
    }
    fn predict(
        &self,
        shots: &Features,
        shot_labels: &[usize],
        ctx: &FewShotContext,
        test: &Features,
    ) -> Result<Vec<usize>> {
        Ok(fit::<B>(
            shots,
            shot_labels,
            ctx.classes,
            self.lambda,
            100,
            &self.device,
        )?
        .predict(test, &self.device))
    }
}

/// Tip-Adapter (Zhang et al., 2022), training-free: a cache of the shots' features and one-hot
/// labels added to the zero-shot logits, `100·f·Wᵀ + α·exp(−β(1 − f·Kᵀ))·L`.
pub struct TipAdapter {
    /// Weight of the cache logits (paper default 1).
    pub alpha: f32,
    /// Sharpness of the affinities (paper default 5.5).
    pub beta: f32,
}

impl Default for TipAdapter {
    fn default() -> Self {
        Self {
            alpha: 1.0,
            beta: 5.5,
        }
    }
}

impl FewShotMethod for TipAdapter {
    fn name(&self) -> String {
        "tip-adapter".into()
    }
    fn family(&self) -> Family {
        Family::Adapter
    }
    fn trainable_params(&self, _: usize, _: usize) -> usize {
        0
    }
    fn predict(
        &self,
        shots: &Features,
        shot_labels: &[usize],
        ctx: &FewShotContext,
        test: &Features,
    ) -> Result<Vec<usize>> {
        Ok(argmax_rows(&self.logits(
            shots,
            shot_labels,
            ctx.zero_shot,
            test,
        )))
    }
}

impl TipAdapter {
    /// Tip-Adapter's logits, `100·test·zero_shotᵀ + α·Σ_shots exp(−β(1 − test·shot))` per class
    /// of each shot, `[test rows, classes]` (`zero_shot` has one row per class).
    pub fn logits(
        &self,
        shots: &Features,
        shot_labels: &[usize],
        zero_shot: &Features,
        test: &Features,
    ) -> Features {
        let classes = zero_shot.rows;
        let zs = scores(test, zero_shot);
        let aff = scores(test, shots);
        let mut logits = Features {
            data: vec![0.0; test.rows * classes],
            rows: test.rows,
            dim: classes,
        };
        for i in 0..test.rows {
            for c in 0..classes {
                logits.data[i * classes + c] = 100.0 * zs.row(i)[c];
            }
            for (j, &l) in shot_labels.iter().enumerate() {
                logits.data[i * classes + l] +=
                    self.alpha * (-self.beta * (1.0 - aff.row(i)[j])).exp();
            }
        }
        logits
    }
}

/// Mean and spread of one method at one k.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FewShotRow {
    /// Method name.
    pub method: String,
    /// Shots per class.
    pub k: usize,
    /// Mean test accuracy over seeds.
    pub mean: f64,
    /// Standard deviation over seeds.
    pub std: f64,
    /// Accuracy of each seed.
    pub accuracies: Vec<f64>,
    /// Parameters the method trains (the survey's second factor).
    #[serde(default)]
    pub trainable_params: usize,
    /// Labelled images it learned from (the survey's third factor; the first seed's draw).
    #[serde(default)]
    pub samples: usize,
    /// The method's family (absent in reports written before it was recorded).
    #[serde(default)]
    pub family: Option<Family>,
}

/// Runs every method at every k with every seed; shots come from `train`, accuracy from `test`.
#[allow(clippy::too_many_arguments)]
pub fn run_few_shot(
    methods: &[&dyn FewShotMethod],
    train: &Features,
    train_labels: &[usize],
    test: &Features,
    test_labels: &[usize],
    ctx: &FewShotContext,
    ks: &[usize],
    seeds: &[u64],
) -> Result<Vec<FewShotRow>> {
    if seeds.is_empty() || ks.is_empty() {
        return Err(TaskError::Invalid {
            task: "few-shot".into(),
            reason: "need at least one k and one seed".into(),
        });
    }
    let mut out = Vec::new();
    for &k in ks {
        for m in methods {
            let (mut accs, mut samples) = (Vec::new(), None);
            for &seed in seeds {
                let idx = k_shot_indices(train_labels, ctx.classes, k, seed);
                samples.get_or_insert(idx.len());
                let shots = rows(train, &idx);
                let labels: Vec<usize> = idx.iter().map(|&i| train_labels[i]).collect();
                accs.push(accuracy(
                    &m.predict(&shots, &labels, ctx, test)?,
                    test_labels,
                ));
            }
            let mean = accs.iter().sum::<f64>() / accs.len() as f64;
            let std =
                (accs.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / accs.len() as f64).sqrt();
            out.push(FewShotRow {
                method: m.name(),
                k,
                mean,
                std,
                accuracies: accs,
                trainable_params: m.trainable_params(train.dim, ctx.classes),
                samples: samples.unwrap_or(0),
                family: Some(m.family()),
            });
        }
    }
    Ok(out)
}

/// What the few-shot and adapter tests share.
#[cfg(test)]
pub(crate) mod testing {
    use vlp_align::{ClipConfig, ClipModel};
    use vlp_core::backend::{TrainBackend, default_device, seeded};
    use vlp_text::tokenizer::word_tokenizer;
    use vlp_text::{HfTokenizer, TextPooling, Tokenizer};

    /// `rows` deterministic 16-pixel images in [-1, 1] for [`tiny_clip`]: a pattern that
    /// `step` (a small prime) varies.
    pub(crate) fn pattern_pixels(rows: usize, step: usize) -> super::Pixels {
        super::Pixels {
            data: (0..rows * 3 * 256)
                .map(|v| ((v * step) % 97) as f32 / 48.0 - 1.0)
                .collect(),
            rows,
            image_size: 16,
        }
    }

    /// A random CLIP drawn under `seed`: both towers 8 wide with `layers` blocks, 16-pixel
    /// images in patches of 8, a 6-wide joint space; and a word tokenizer over `words` with 10
    /// positions.
    pub(crate) fn tiny_clip(
        words: &[&str],
        layers: usize,
        seed: u64,
    ) -> (ClipModel<TrainBackend>, HfTokenizer) {
        let tok = word_tokenizer(words, 10);
        let eot = tok.encode("").unwrap().ids[1];
        let dev = default_device();
        let model = seeded::<TrainBackend, _>(&dev, seed, || {
            let m = ClipConfig::shapes_tiny(
                8,
                layers,
                2,
                6,
                8,
                16,
                tok.vocab_size(),
                10,
                TextPooling::FirstEos { eos_token_id: eot },
            )
            .init::<TrainBackend>(&dev);
            vlp_core::backend::materialize(&m);
            m
        });
        (model, tok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_seeded_and_balanced() {
        let labels: Vec<usize> = (0..40).map(|i| i % 4).chain([0, 0]).collect();
        let a = k_shot_indices(&labels, 4, 3, 7);
        assert_eq!(a, k_shot_indices(&labels, 4, 3, 7));
        assert_ne!(a, k_shot_indices(&labels, 4, 3, 8));
        let mut per = [0; 4];
        for i in &a {
            per[labels[*i]] += 1;
        }
        assert_eq!(per, [3; 4]);
        assert_eq!(
            k_shot_indices(&[0, 1, 1], 2, 5, 0),
            vec![0, 1, 2],
            "short classes give what they have"
        );
    }

    #[test]
    fn tip_adapter_cache_fixes_a_wrong_zero_shot_classifier() {
        // The zero-shot classifier swaps classes 0 and 1; one shot per class is enough for the
        // cache to override it when alpha is large.
        let zs = Features {
            data: vec![0.0, 1.0, 1.0, 0.0],
            rows: 2,
            dim: 2,
        };
        let shots = Features {
            data: vec![1.0, 0.0, 0.0, 1.0],
            rows: 2,
            dim: 2,
        };
        let test = Features {
            data: vec![0.9, 0.1, 0.1, 0.9],
            rows: 2,
            dim: 2,
        };
        let ctx = FewShotContext {
            classes: 2,
            zero_shot: &zs,
        };
        assert_eq!(
            ZeroShot.predict(&shots, &[0, 1], &ctx, &test).unwrap(),
            vec![1, 0]
        );
        let tip = TipAdapter {
            alpha: 1000.0,
            beta: 5.5,
        };
        assert_eq!(
            tip.predict(&shots, &[0, 1], &ctx, &test).unwrap(),
            vec![0, 1]
        );
    }
}
