//! k-shot adaptation: seeded splits, a harness any method plugs into, and the baselines
//! (zero-shot, linear probe, Tip-Adapter).

use burn::module::AutodiffModule;
use burn::tensor::ElementConversion;
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::{Deserialize, Serialize};
use vlp_align::ClipModel;
use vlp_align::adapter::{ClipAdapterConfig, SgvaConfig, fit_clip_adapter, fit_sgva};
use vlp_align::fit::FewShotFitConfig;
use vlp_align::prompt::{CoopConfig, CoopPromptLearner, CoopPrompts, fit_coop};
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
        let (learner, losses) = self.learn_context(shots, shot_labels)?;
        let prompts = CoopPrompts::new(self.tokenizer, self.classes, learner.ctx.dims()[1])?;
        let text = learner.class_embeddings(self.model, &prompts);
        Ok((Features::from_tensor(text), losses))
    }

    /// The trained context and the epochs' mean losses.
    fn learn_context(
        &self,
        shots: &Features,
        shot_labels: &[usize],
    ) -> Result<(CoopPromptLearner<B>, Vec<f64>)> {
        let (learner, prompts) = seeded::<B, _>(&self.device, self.fit.seed, || {
            self.config
                .init(self.model, self.tokenizer, self.classes, &self.device)
        })?;
        let x = shots.to_tensor::<B>(&self.device);
        Ok(fit_coop(
            self.model,
            learner,
            &prompts,
            x,
            shot_labels,
            &self.fit,
        )?)
    }
}

impl<B: AutodiffBackend> FewShotMethod for Coop<'_, B> {
    fn name(&self) -> String {
        "coop".into()
    }
    fn trainable_params(&self, _: usize, classes: usize) -> usize {
        coop_params(&self.config, self.tokenizer, self.model, classes)
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

/// The context parameters of a CoOp prompt for `classes` classes.
fn coop_params<B: Backend>(
    config: &CoopConfig,
    tokenizer: &dyn Tokenizer,
    model: &ClipModel<B>,
    classes: usize,
) -> usize {
    let n_ctx = match &config.init {
        // The phrase's tokens, as `CoopConfig::init` counts them.
        Some(phrase) => {
            let real = |t: &str| {
                tokenizer
                    .encode(t)
                    .map(|e| e.attention_mask.iter().filter(|&&m| m != 0).count())
                    .unwrap_or(0)
            };
            real(phrase).saturating_sub(real(""))
        }
        None => config.n_ctx,
    };
    let sets = if config.class_specific { classes } else { 1 };
    sets * n_ctx * model.text_model.hidden_size()
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
    fn trainable_params(&self, dim: usize, _: usize) -> usize {
        2 * dim * (dim / self.config.reduction.max(1))
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

/// SgVA-CLIP ([`vlp_align::adapter::sgva`]) as a k-shot method: a CoOp-style prompt and a visual
/// adapter trained on the shots' frozen features; test rows are classified by the cross-modal
/// logits plus β times the prototype logits of the adapted shots.
pub struct Sgva<'a, B: AutodiffBackend> {
    /// The frozen model whose features `shots` and `test` are.
    pub model: &'a ClipModel<B>,
    /// Its tokenizer.
    pub tokenizer: &'a dyn Tokenizer,
    /// Class names, in label order.
    pub classes: &'a [String],
    /// The method (adapter, prompt, loss weights, β).
    pub config: SgvaConfig,
    /// Its training (its seed also draws the adapter and a random context).
    pub fit: FewShotFitConfig,
    /// Device to train on.
    pub device: B::Device,
}

impl<B: AutodiffBackend> FewShotMethod for Sgva<'_, B> {
    fn name(&self) -> String {
        "sgva-clip".into()
    }
    fn trainable_params(&self, dim: usize, classes: usize) -> usize {
        coop_params(&self.config.prompt, self.tokenizer, self.model, classes)
            + 2 * dim * (dim / self.config.adapter.reduction.max(1))
    }
    fn predict(
        &self,
        shots: &Features,
        shot_labels: &[usize],
        ctx: &FewShotContext,
        test: &Features,
    ) -> Result<Vec<usize>> {
        if ctx.classes != self.classes.len() || shots.dim != self.model.embed_dim() {
            return Err(TaskError::Invalid {
                task: "sgva-clip".into(),
                reason: format!(
                    "{} classes to tell apart and {}-wide features, but {} class names and \
                     {}-wide embeddings",
                    ctx.classes,
                    shots.dim,
                    self.classes.len(),
                    self.model.embed_dim()
                ),
            });
        }
        let (sgva, prompts) = seeded::<B, _>(&self.device, self.fit.seed, || {
            let r = self
                .config
                .init(self.model, self.tokenizer, self.classes, &self.device);
            if let Ok((s, _)) = &r {
                vlp_core::backend::materialize(s);
            }
            r
        })?;
        let x = shots.to_tensor::<B>(&self.device);
        let (sgva, _) = fit_sgva(
            self.model,
            sgva,
            &prompts,
            x.clone(),
            shot_labels,
            &self.config,
            &self.fit,
        )?;
        // Inference on the inner backend: no autodiff graph.
        let (model, sgva) = (self.model.valid(), sgva.valid());
        let scale = model.logit_scale.val().exp().into_scalar().elem::<f64>();
        let text = sgva.text(&model, &prompts);
        let mu = sgva.prototypes(x.inner(), shot_labels, self.classes.len());
        let logits = sgva.logits(
            test.to_tensor::<B::InnerBackend>(&self.device),
            text,
            mu,
            scale,
            &self.config,
        );
        Ok(argmax_rows(&Features::from_tensor(logits)))
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
            });
        }
    }
    Ok(out)
}

/// A method that learns from shots of some classes and can then classify among any class names
/// (prompt learners, hand-written prompts): what the base-to-novel protocol needs.
pub trait OpenVocabularyMethod {
    /// Name in reports.
    fn name(&self) -> String;
    /// Learns from `shots` of `classes` (labels index `classes`) and returns what embeds any
    /// class names.
    fn fit(
        &self,
        shots: &Features,
        shot_labels: &[usize],
        classes: &[String],
    ) -> Result<Box<dyn ClassEmbedder + '_>>;
}

/// Text embeddings for class names, `[classes, dim]`, normalised.
pub trait ClassEmbedder {
    /// The classifier of `classes`.
    fn embed(&self, classes: &[String]) -> Result<Features>;
}

/// Base and novel accuracy and their harmonic mean.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BaseToNovel {
    /// Accuracy on test images of the base classes, among the base classes.
    pub base: f64,
    /// Accuracy on test images of the novel classes, among the novel classes.
    pub novel: f64,
    /// `2·base·novel / (base + novel)` (0 when both are 0).
    pub harmonic: f64,
}

/// The harmonic mean CoOp's successors report, `H = 2BN / (B + N)` (0 when both are 0).
pub fn harmonic_mean(base: f64, novel: f64) -> f64 {
    if base + novel == 0.0 {
        0.0
    } else {
        2.0 * base * novel / (base + novel)
    }
}

/// The base-to-novel protocol (CoCoOp's, used by MaPLe): the first ⌈C/2⌉ classes are the base,
/// the rest novel; `k` shots per base class (drawn with `seed` from `train`) train the method;
/// base test images are classified among the base classes, novel ones among the novel classes.
#[allow(clippy::too_many_arguments)]
pub fn base_to_novel(
    method: &dyn OpenVocabularyMethod,
    train: &Features,
    train_labels: &[usize],
    test: &Features,
    test_labels: &[usize],
    classes: &[String],
    k: usize,
    seed: u64,
) -> Result<BaseToNovel> {
    let c = classes.len();
    if c < 2 {
        return Err(TaskError::Invalid {
            task: "base-to-novel".into(),
            reason: format!("{c} classes: need at least one base and one novel class"),
        });
    }
    let n_base = c.div_ceil(2);
    let (base_names, novel_names) = classes.split_at(n_base);
    let base_train: Vec<usize> = (0..train.rows)
        .filter(|&i| train_labels[i] < n_base)
        .collect();
    let base_labels: Vec<usize> = base_train.iter().map(|&i| train_labels[i]).collect();
    let picked = k_shot_indices(&base_labels, n_base, k, seed);
    let idx: Vec<usize> = picked.iter().map(|&j| base_train[j]).collect();
    let shots = rows(train, &idx);
    let labels: Vec<usize> = idx.iter().map(|&i| train_labels[i]).collect();
    let embedder = method.fit(&shots, &labels, base_names)?;
    let score = |names: &[String], offset: usize, keep: &dyn Fn(usize) -> bool| -> Result<f64> {
        let which: Vec<usize> = (0..test.rows).filter(|&i| keep(test_labels[i])).collect();
        if which.is_empty() {
            return Err(TaskError::Invalid {
                task: "base-to-novel".into(),
                reason: format!("no test image of the classes {:?}", names),
            });
        }
        let w = embedder.embed(names)?;
        let pred = argmax_rows(&scores(&rows(test, &which), &w));
        let truth: Vec<usize> = which.iter().map(|&i| test_labels[i] - offset).collect();
        Ok(accuracy(&pred, &truth))
    };
    let base = score(base_names, 0, &|l| l < n_base)?;
    let novel = score(novel_names, n_base, &|l| l >= n_base && l < c)?;
    Ok(BaseToNovel {
        base,
        novel,
        harmonic: harmonic_mean(base, novel),
    })
}

/// Hand-written prompts as an [`OpenVocabularyMethod`]: the shots are ignored; classes are
/// embedded with every template ([`crate::zeroshot::classifier`]).
pub struct HandWritten<'a, B: Backend> {
    /// The model.
    pub model: &'a ClipModel<B>,
    /// Its tokenizer.
    pub tokenizer: &'a dyn Tokenizer,
    /// Templates with a `{}` for the class name.
    pub templates: Vec<String>,
    /// Device.
    pub device: B::Device,
}

impl<B: Backend> ClassEmbedder for HandWritten<'_, B> {
    fn embed(&self, classes: &[String]) -> Result<Features> {
        crate::zeroshot::classifier(
            self.model,
            self.tokenizer,
            classes,
            &self.templates,
            &self.device,
        )
    }
}

impl<B: Backend> OpenVocabularyMethod for HandWritten<'_, B> {
    fn name(&self) -> String {
        "hand-written".into()
    }
    fn fit(&self, _: &Features, _: &[usize], _: &[String]) -> Result<Box<dyn ClassEmbedder + '_>> {
        Ok(Box::new(HandWritten {
            model: self.model,
            tokenizer: self.tokenizer,
            templates: self.templates.clone(),
            device: self.device.clone(),
        }))
    }
}

/// CoOp's learned context, put in front of any class names (a shared context only: a
/// class-specific one has no vectors for classes it was not trained on).
struct LearnedContext<'a, B: AutodiffBackend> {
    model: &'a ClipModel<B>,
    tokenizer: &'a dyn Tokenizer,
    /// The classes it was trained on (all a class-specific context can embed).
    trained: Vec<String>,
    learner: CoopPromptLearner<B>,
}

impl<B: AutodiffBackend> ClassEmbedder for LearnedContext<'_, B> {
    fn embed(&self, classes: &[String]) -> Result<Features> {
        let sets = self.learner.ctx.dims()[0];
        if sets > 1 && classes != self.trained {
            return Err(TaskError::Invalid {
                task: "coop".into(),
                reason: format!(
                    "a class-specific context ({sets} sets) cannot embed classes it was not \
                     trained on"
                ),
            });
        }
        let n_ctx = self.learner.ctx.dims()[1];
        let prompts = CoopPrompts::new(self.tokenizer, classes, n_ctx)?;
        Ok(Features::from_tensor(
            self.learner.class_embeddings(self.model, &prompts),
        ))
    }
}

impl<'a, B: AutodiffBackend> OpenVocabularyMethod for Coop<'a, B> {
    fn name(&self) -> String {
        "coop".into()
    }
    fn fit(
        &self,
        shots: &Features,
        shot_labels: &[usize],
        classes: &[String],
    ) -> Result<Box<dyn ClassEmbedder + '_>> {
        let on = Coop {
            model: self.model,
            tokenizer: self.tokenizer,
            classes,
            config: self.config.clone(),
            fit: self.fit.clone(),
            device: self.device.clone(),
        };
        let (learner, _) = on.learn_context(shots, shot_labels)?;
        Ok(Box::new(LearnedContext {
            model: self.model,
            tokenizer: self.tokenizer,
            trained: classes.to_vec(),
            learner,
        }))
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
        // Three classes × three context vectors × an 8-wide tower; one shot of each class.
        assert_eq!((rows[0].trainable_params, rows[0].samples), (3 * 3 * 8, 3));
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

    /// SgVA-CLIP through the harness on a random tower: its prompt's text weights mean
    /// nothing, but its prototype logits classify three well-separated clusters of features
    /// perfectly once β lets them lead. Parameters counted; wrong sizes refused.
    #[test]
    fn sgva_classifies_by_its_prototypes_through_the_harness() {
        use vlp_align::ClipConfig;
        use vlp_core::backend::{TrainBackend as B, default_device};
        use vlp_text::TextPooling;
        use vlp_text::tokenizer::word_tokenizer;

        let dev = default_device();
        let tok = word_tokenizer(&["red", "blue", "circle", "star", "photo", "."], 10);
        let eot = tok.encode("").unwrap().ids[1];
        let classes: Vec<String> = ["red circle", "blue star", "photo"]
            .map(String::from)
            .to_vec();
        let model = seeded::<B, _>(&dev, 4, || {
            let m = ClipConfig::shapes_tiny(
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
            vlp_core::backend::materialize(&m);
            m
        });
        // Class c's rows: the unit vector on axis 2c, tilted a little towards axis 2c + 1.
        let cluster = |n: usize, tilt: f32| {
            let mut data = Vec::new();
            let mut labels = Vec::new();
            for i in 0..n {
                let c = i % 3;
                let t = tilt * (1 + i % 4) as f32;
                let mut row = [0.0f32; 6];
                row[2 * c] = 1.0;
                row[2 * c + 1] = t;
                let norm = (1.0 + t * t).sqrt();
                data.extend(row.iter().map(|v| v / norm));
                labels.push(c);
            }
            (
                Features {
                    data,
                    rows: n,
                    dim: 6,
                },
                labels,
            )
        };
        let (shots, shot_labels) = cluster(6, 0.1);
        let (test, test_labels) = cluster(12, -0.2);
        let method = Sgva {
            model: &model,
            tokenizer: &tok,
            classes: &classes,
            config: SgvaConfig::new(
                ClipAdapterConfig::new(6).with_reduction(2),
                CoopConfig::new().with_n_ctx(2),
            )
            .with_beta(20.0),
            fit: FewShotFitConfig::new().with_epochs(3).with_batch_size(3),
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
        let pred = method.predict(&shots, &shot_labels, &ctx, &test).unwrap();
        assert_eq!(pred, test_labels);
        // Two shared context vectors of the 8-wide tower, and a 6 → 3 → 6 adapter.
        assert_eq!(method.trainable_params(6, 3), 2 * 8 + 2 * 6 * 3);
        let four = FewShotContext {
            classes: 4,
            zero_shot: &zs,
        };
        let err = method
            .predict(&shots, &shot_labels, &four, &test)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("4 classes to tell apart and 6-wide features, but 3 class names"),
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
        assert_eq!(method.trainable_params(d, 2), 2 * 16 * 4);
        let probe = LinearProbe::<vlp_core::backend::DefaultBackend> {
            lambda: 1e-3,
            device: default_device(),
        };
        assert_eq!(probe.trainable_params(d, 2), 16 * 2 + 2);
        assert_eq!(TipAdapter::default().trainable_params(d, 2), 0);
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
    fn harmonic_mean_is_cocoops_h() {
        assert!((harmonic_mean(0.8, 0.6) - 0.96 / 1.4).abs() < 1e-12);
        assert_eq!(harmonic_mean(0.0, 0.0), 0.0);
        assert_eq!(harmonic_mean(1.0, 0.0), 0.0);
        assert_eq!(harmonic_mean(0.7, 0.7), 0.7);
    }

    /// One-hot class embeddings, except that novel class "e" is embedded like "d"; it records
    /// what it was trained on.
    struct Stub(std::cell::RefCell<Vec<(Vec<usize>, Vec<String>)>>);

    impl ClassEmbedder for Stub {
        fn embed(&self, classes: &[String]) -> Result<Features> {
            let all = ["a", "b", "c", "d", "e"];
            let mut data = Vec::new();
            for c in classes {
                let c = if c == "e" { "d" } else { c.as_str() };
                let k = all.iter().position(|x| *x == c).unwrap();
                data.extend((0..5).map(|i| if i == k { 1.0 } else { 0.0 }));
            }
            Ok(Features {
                data,
                rows: classes.len(),
                dim: 5,
            })
        }
    }

    impl OpenVocabularyMethod for Stub {
        fn name(&self) -> String {
            "stub".into()
        }
        fn fit(
            &self,
            shots: &Features,
            labels: &[usize],
            classes: &[String],
        ) -> Result<Box<dyn ClassEmbedder + '_>> {
            assert_eq!(shots.rows, labels.len());
            self.0
                .borrow_mut()
                .push((labels.to_vec(), classes.to_vec()));
            Ok(Box::new(Stub(Default::default())))
        }
    }

    #[test]
    fn base_to_novel_trains_on_base_shots_and_scores_each_half_among_its_own_classes() {
        let names: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        let one_hot = |labels: &[usize]| Features {
            data: labels
                .iter()
                .flat_map(|&l| (0..5).map(move |i| if i == l { 1.0 } else { 0.0 }))
                .collect(),
            rows: labels.len(),
            dim: 5,
        };
        let train_labels: Vec<usize> = (0..20).map(|i| i % 5).collect();
        let test_labels = vec![0, 1, 2, 3, 4, 4];
        let stub = Stub(Default::default());
        let r = base_to_novel(
            &stub,
            &one_hot(&train_labels),
            &train_labels,
            &one_hot(&test_labels),
            &test_labels,
            &names,
            2,
            7,
        )
        .unwrap();
        // Base: a, b, c all right; novel: d right, both e wrong (embedded as d, the first).
        assert_eq!(r.base, 1.0);
        assert!((r.novel - 1.0 / 3.0).abs() < 1e-12);
        assert!((r.harmonic - 0.5).abs() < 1e-12);
        let seen = stub.0.borrow();
        assert_eq!(seen.len(), 1);
        let (labels, classes) = &seen[0];
        assert_eq!(classes, &names[..3]);
        let mut per = [0; 5];
        labels.iter().for_each(|&l| per[l] += 1);
        assert_eq!(
            per,
            [2, 2, 2, 0, 0],
            "two shots of each base class, none of the novel"
        );
        drop(seen);
        let err = base_to_novel(
            &stub,
            &one_hot(&[0]),
            &[0],
            &one_hot(&[0]),
            &[0],
            &names[..1],
            1,
            0,
        )
        .unwrap_err();
        assert!(err.to_string().contains("1 classes"), "{err}");
        let err = base_to_novel(
            &stub,
            &one_hot(&train_labels),
            &train_labels,
            &one_hot(&[0, 1]),
            &[0, 1],
            &names,
            1,
            0,
        )
        .unwrap_err();
        assert!(err.to_string().contains("no test image"), "{err}");
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
