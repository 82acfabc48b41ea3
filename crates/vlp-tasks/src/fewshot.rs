//! k-shot adaptation: seeded splits, a harness any method plugs into, and the baselines
//! (zero-shot, linear probe, Tip-Adapter).

use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::{Deserialize, Serialize};
use vlp_align::ClipModel;
use vlp_align::adapter::{ClipAdapterConfig, fit_clip_adapter};
use vlp_align::fit::FewShotFitConfig;
use vlp_align::prompt::{CoopConfig, fit_coop};
use vlp_core::backend::seeded;
use vlp_data::shapes::Rng;
use vlp_text::Tokenizer;

use crate::embed::Features;
use crate::error::{Result, TaskError};
use crate::probe::{accuracy, argmax_rows, fit};

/// What a method may use besides the shots.
pub struct FewShotContext<'a> {
    /// Number of classes.
    pub classes: usize,
    /// The zero-shot classifier (`[classes, dim]`, normalised text embeddings).
    pub zero_shot: &'a Features,
}

/// A k-shot method: fits on the shots, predicts test classes.
pub trait FewShotMethod {
    /// Name in reports.
    fn name(&self) -> String;
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

fn rows(f: &Features, idx: &[usize]) -> Features {
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

fn scores(x: &Features, w: &Features) -> Features {
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
    fn predict(
        &self,
        shots: &Features,
        shot_labels: &[usize],
        ctx: &FewShotContext,
        test: &Features,
    ) -> Result<Vec<usize>> {
        let zs = scores(test, ctx.zero_shot);
        let aff = scores(test, shots);
        let mut logits = Features {
            data: vec![0.0; test.rows * ctx.classes],
            rows: test.rows,
            dim: ctx.classes,
        };
        for i in 0..test.rows {
            for c in 0..ctx.classes {
                logits.data[i * ctx.classes + c] = 100.0 * zs.row(i)[c];
            }
            for (j, &l) in shot_labels.iter().enumerate() {
                logits.data[i * ctx.classes + l] +=
                    self.alpha * (-self.beta * (1.0 - aff.row(i)[j])).exp();
            }
        }
        Ok(argmax_rows(&logits))
    }
}

/// CoOp ([`vlp_align::prompt::coop`]) as a k-shot method: the context is learned on the shots'
/// features (computed once by the frozen image tower, as `shots` and `test` are), then every test
/// row is classified against the learned prompts of `classes`.
pub struct Coop<'a, B: AutodiffBackend> {
    /// The frozen model whose features `shots` and `test` are.
    pub model: &'a ClipModel<B>,
    /// Its tokenizer.
    pub tokenizer: &'a dyn Tokenizer,
    /// Class names, in label order.
    pub classes: &'a [String],
    /// The prompt learner.
    pub config: CoopConfig,
    /// Its training (its seed also draws a random context).
    pub fit: FewShotFitConfig,
    /// Device to train on.
    pub device: B::Device,
}

impl<B: AutodiffBackend> Coop<'_, B> {
    /// Learns the context on `shots` and returns every class's learned text embedding
    /// (`[classes, embed]`, normalised) and the epochs' mean losses.
    pub fn learn(&self, shots: &Features, shot_labels: &[usize]) -> Result<(Features, Vec<f64>)> {
        if shots.dim != self.model.embed_dim() {
            return Err(TaskError::Invalid {
                task: "coop".into(),
                reason: format!(
                    "features are {} wide, the model's embeddings {}",
                    shots.dim,
                    self.model.embed_dim()
                ),
            });
        }
        let (learner, prompts) = seeded::<B, _>(&self.device, self.fit.seed, || {
            self.config
                .init(self.model, self.tokenizer, self.classes, &self.device)
        })?;
        let x = shots.to_tensor::<B>(&self.device);
        let (learner, losses) = fit_coop(self.model, learner, &prompts, x, shot_labels, &self.fit)?;
        let text = learner.class_embeddings(self.model, &prompts);
        Ok((Features::from_tensor(text), losses))
    }
}

impl<B: AutodiffBackend> FewShotMethod for Coop<'_, B> {
    fn name(&self) -> String {
        "coop".into()
    }
    fn predict(
        &self,
        shots: &Features,
        shot_labels: &[usize],
        ctx: &FewShotContext,
        test: &Features,
    ) -> Result<Vec<usize>> {
        if ctx.classes != self.classes.len() {
            return Err(TaskError::Invalid {
                task: "coop".into(),
                reason: format!(
                    "{} classes to tell apart, {} class names",
                    ctx.classes,
                    self.classes.len()
                ),
            });
        }
        let (text, _) = self.learn(shots, shot_labels)?;
        Ok(argmax_rows(&scores(test, &text)))
    }
}

/// CLIP-Adapter ([`vlp_align::adapter::clip_adapter`]) as a k-shot method: a bottleneck adapter
/// on the shots' features, trained against the zero-shot classifier's text features
/// (`FewShotContext::zero_shot`), which stay fixed.
pub struct ClipAdapter<B: AutodiffBackend> {
    /// The adapter (its `d_model` is the features' width).
    pub config: ClipAdapterConfig,
    /// Its training (the seed also draws the adapter's initial weights).
    pub fit: FewShotFitConfig,
    /// The model's `exp(logit_scale)` (100 for OpenAI's CLIP).
    pub logit_scale: f64,
    /// Device to train on.
    pub device: B::Device,
}

impl<B: AutodiffBackend> FewShotMethod for ClipAdapter<B> {
    fn name(&self) -> String {
        "clip-adapter".into()
    }
    fn predict(
        &self,
        shots: &Features,
        shot_labels: &[usize],
        ctx: &FewShotContext,
        test: &Features,
    ) -> Result<Vec<usize>> {
        if shots.dim != self.config.d_model || ctx.zero_shot.dim != self.config.d_model {
            return Err(TaskError::Invalid {
                task: "clip-adapter".into(),
                reason: format!(
                    "features {} and class embeddings {} wide, the adapter {}",
                    shots.dim, ctx.zero_shot.dim, self.config.d_model
                ),
            });
        }
        let adapter = seeded::<B, _>(&self.device, self.fit.seed, || {
            let a = self.config.init::<B>(&self.device);
            if let Ok(a) = &a {
                vlp_core::backend::materialize(a);
            }
            a
        })?;
        let (adapter, _) = fit_clip_adapter(
            adapter,
            shots.to_tensor::<B>(&self.device),
            ctx.zero_shot.to_tensor::<B>(&self.device),
            self.logit_scale,
            shot_labels,
            &self.fit,
        )?;
        let adapted = Features::from_tensor(adapter.forward(test.to_tensor::<B>(&self.device)));
        Ok(argmax_rows(&scores(&adapted, ctx.zero_shot)))
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
            let mut accs = Vec::new();
            for &seed in seeds {
                let idx = k_shot_indices(train_labels, ctx.classes, k, seed);
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
            });
        }
    }
    Ok(out)
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

    /// CoOp through the harness: one row per k with the method's seeded accuracy; wrong widths
    /// and class counts are refused.
    #[test]
    fn coop_learns_prompts_through_the_harness() {
        use burn::module::Param;
        use vlp_align::ClipConfig;
        use vlp_align::prompt::CoopPromptLearner;
        use vlp_core::backend::{TrainBackend as B, default_device};
        use vlp_text::TextPooling;
        use vlp_text::tokenizer::word_tokenizer;

        let dev = default_device();
        let tok = word_tokenizer(&["red", "blue", "circle", "star", "photo", "."], 10);
        let eot = tok.encode("").unwrap().ids[1];
        let classes: Vec<String> = ["red circle", "blue star", "photo"]
            .map(String::from)
            .to_vec();
        let config = CoopConfig::new().with_n_ctx(3).with_class_specific(true);
        let (model, targets) = seeded::<B, _>(&dev, 3, || {
            let model = ClipConfig::shapes_tiny(
                8,
                1,
                2,
                6,
                8,
                16,
                tok.vocab_size(),
                10,
                TextPooling::FirstEos { eos_token_id: eot },
            )
            .init::<B>(&dev);
            vlp_core::backend::materialize(&model);
            let (hidden, prompts) = config.init(&model, &tok, &classes, &dev).unwrap();
            let hidden = CoopPromptLearner {
                ctx: Param::from_tensor(hidden.ctx.val().detach()),
                position: hidden.position,
            };
            let targets = Features::from_tensor(hidden.class_embeddings(&model, &prompts));
            (model, targets)
        });
        let coop = Coop {
            model: &model,
            tokenizer: &tok,
            classes: &classes,
            config,
            fit: FewShotFitConfig::new()
                .with_epochs(60)
                .with_batch_size(1)
                .with_lr(0.05),
            device: dev,
        };
        let zs = Features {
            data: vec![0.0; 18],
            rows: 3,
            dim: 6,
        };
        let ctx = FewShotContext {
            classes: 3,
            zero_shot: &zs,
        };
        let rows = run_few_shot(
            &[&coop],
            &targets,
            &[1, 2, 0],
            &targets,
            &[1, 2, 0],
            &ctx,
            &[1],
            &[0],
        )
        .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].method.as_str(), rows[0].k), ("coop", 1));
        // The harness's number is the method's own: learning is seeded, so a second fit predicts
        // the same (CoOp's claim in vlp-train's tests measures what it learns).
        let again = coop.predict(&targets, &[1, 2, 0], &ctx, &targets).unwrap();
        assert_eq!(
            rows[0].accuracies,
            vec![crate::probe::accuracy(&again, &[1, 2, 0])]
        );

        let narrow = Features {
            data: vec![1.0; 15],
            rows: 3,
            dim: 5,
        };
        let err = coop
            .predict(&narrow, &[0, 1, 2], &ctx, &targets)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("features are 5 wide, the model's embeddings 6"),
            "{err}"
        );
        let four = FewShotContext {
            classes: 4,
            zero_shot: &zs,
        };
        let err = coop
            .predict(&targets, &[0, 1, 2], &four, &targets)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("4 classes to tell apart, 3 class names"),
            "{err}"
        );
    }

    /// CLIP-Adapter through the harness: a label per test row and a width mismatch refused.
    /// What it learns is tested in `vlp-align` (the loss on the shots falls) and measured on the
    /// pretrained fixture in vlp-train's CoOp claim test.
    #[test]
    fn clip_adapter_predicts_every_row_and_refuses_other_widths() {
        use vlp_core::backend::{TrainBackend as B, default_device};
        let d = 16;
        let feats = |n: usize, phase: usize| Features {
            data: (0..n * d)
                .map(|i| ((i * 7 + phase) % 11) as f32 / 11.0)
                .collect(),
            rows: n,
            dim: d,
        };
        let (shots, test) = (feats(8, 0), feats(5, 3));
        let labels: Vec<usize> = (0..8).map(|i| i % 2).collect();
        let zs = feats(2, 5);
        let ctx = FewShotContext {
            classes: 2,
            zero_shot: &zs,
        };
        let method = ClipAdapter::<B> {
            config: ClipAdapterConfig::new(d),
            fit: FewShotFitConfig::new().with_epochs(5).with_batch_size(4),
            logit_scale: 100.0,
            device: default_device(),
        };
        let pred = method.predict(&shots, &labels, &ctx, &test).unwrap();
        assert_eq!(pred.len(), 5);
        assert!(pred.iter().all(|&p| p < 2));
        let narrow = ClipAdapter::<B> {
            config: ClipAdapterConfig::new(8),
            ..method
        };
        let err = narrow
            .predict(&shots, &labels, &ctx, &test)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("features 16 and class embeddings 16 wide, the adapter 8"),
            "{err}"
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
