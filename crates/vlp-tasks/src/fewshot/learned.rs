//! Few-shot methods that train on a frozen model's features: CoOp's prompt context, CLIP-Adapter
//! and SgVA-CLIP (prompt and adapter).

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use vlp_align::ClipModel;
use vlp_align::adapter::{ClipAdapterConfig, SgvaConfig, fit_clip_adapter, fit_sgva};
use vlp_align::fit::FewShotFitConfig;
use vlp_align::prompt::{CoopConfig, CoopPromptLearner, CoopPrompts, fit_coop};
use vlp_text::Tokenizer;

use super::{Family, FewShotContext, FewShotMethod, drawn, scores};
use crate::embed::Features;
use crate::error::{Result, TaskError};
use crate::probe::argmax_rows;

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
    pub fn learn_context(
        &self,
        shots: &Features,
        shot_labels: &[usize],
    ) -> Result<(CoopPromptLearner<B>, Vec<f64>)> {
        let (learner, prompts) = drawn::<B, _, _, _>(&self.device, self.fit.seed, || {
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
    fn family(&self) -> Family {
        Family::Prompt
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
        ctx.check_names("coop", self.classes)?;
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
    fn family(&self) -> Family {
        Family::Adapter
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
        let (adapter, ()) = drawn::<B, _, _, _>(&self.device, self.fit.seed, || {
            self.config.init::<B>(&self.device).map(|a| (a, ()))
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

/// SgVA-CLIP after training, on the inner backend: what classifies new images.
pub struct LearnedSgva<B: AutodiffBackend> {
    /// The frozen model.
    pub model: ClipModel<B::InnerBackend>,
    /// The trained prompt and adapter.
    pub sgva: vlp_align::adapter::Sgva<B::InnerBackend>,
    /// The prompts of the classes.
    pub prompts: CoopPrompts,
    /// The adapted support prototypes, `[classes, embed]`.
    pub prototypes: burn::tensor::Tensor<B::InnerBackend, 2>,
    /// The method's settings (β, τ).
    pub config: SgvaConfig,
    /// Each epoch's mean loss.
    pub losses: Vec<f64>,
    /// Device.
    pub device: B::Device,
}

impl<B: AutodiffBackend> LearnedSgva<B> {
    /// Inference logits (`cross-modal + β·prototype`) of frozen image features, `[n, classes]`.
    pub fn scores(&self, images: &Features) -> Features {
        let scale = self.model.scale();
        let text = self.sgva.text(&self.model, &self.prompts);
        Features::from_tensor(self.sgva.logits(
            images.to_tensor::<B::InnerBackend>(&self.device),
            text,
            self.prototypes.clone(),
            scale,
            &self.config,
        ))
    }
}

impl<B: AutodiffBackend> Sgva<'_, B> {
    /// Trains the prompt and adapter on `shots` and computes the support prototypes.
    pub fn learn(&self, shots: &Features, shot_labels: &[usize]) -> Result<LearnedSgva<B>> {
        let (sgva, prompts) = drawn::<B, _, _, _>(&self.device, self.fit.seed, || {
            self.config
                .init(self.model, self.tokenizer, self.classes, &self.device)
        })?;
        let x = shots.to_tensor::<B>(&self.device);
        let (sgva, losses) = fit_sgva(
            self.model,
            sgva,
            &prompts,
            x.clone(),
            shot_labels,
            &self.config,
            &self.fit,
        )?;
        // Inference on the inner backend: no autodiff graph.
        let sgva = sgva.valid();
        let prototypes = sgva.prototypes(x.inner(), shot_labels, self.classes.len());
        Ok(LearnedSgva {
            model: self.model.valid(),
            sgva,
            prompts,
            prototypes,
            config: self.config.clone(),
            losses,
            device: self.device.clone(),
        })
    }
}

impl<B: AutodiffBackend> FewShotMethod for Sgva<'_, B> {
    fn name(&self) -> String {
        "sgva-clip".into()
    }
    fn family(&self) -> Family {
        Family::Adapter
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
        let learned = self.learn(shots, shot_labels)?;
        Ok(argmax_rows(&learned.scores(test)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fewshot::{LinearProbe, TipAdapter, run_few_shot};
    use vlp_core::backend::seeded;

    /// CoOp through the harness: one row per k with the method's seeded accuracy; wrong widths
    /// and class counts are refused.
    #[test]
    fn coop_learns_prompts_through_the_harness() {
        use burn::module::Param;
        use vlp_align::prompt::CoopPromptLearner;
        use vlp_core::backend::{TrainBackend as B, default_device};

        let dev = default_device();
        let (model, tok) = crate::fewshot::testing::tiny_clip(
            &["red", "blue", "circle", "star", "photo", "."],
            1,
            3,
        );
        let classes: Vec<String> = ["red circle", "blue star", "photo"]
            .map(String::from)
            .to_vec();
        let config = CoopConfig::new().with_n_ctx(3).with_class_specific(true);
        let targets = seeded::<B, _>(&dev, 3, || {
            let (hidden, prompts) = config.init(&model, &tok, &classes, &dev).unwrap();
            let hidden = CoopPromptLearner {
                ctx: Param::from_tensor(hidden.ctx.val().detach()),
                position: hidden.position,
            };
            Features::from_tensor(hidden.class_embeddings(&model, &prompts))
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
        use vlp_core::backend::default_device;

        let dev = default_device();
        let (model, tok) = crate::fewshot::testing::tiny_clip(
            &["red", "blue", "circle", "star", "photo", "."],
            1,
            4,
        );
        let classes: Vec<String> = ["red circle", "blue star", "photo"]
            .map(String::from)
            .to_vec();
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
}
