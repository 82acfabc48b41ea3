//! The base-to-novel protocol (CoCoOp's, which MaPLe reports): learn from shots of the base
//! classes, then classify test images of the base classes among the base names and of the novel
//! classes among the novel names; and the open-vocabulary methods it compares (hand-written
//! prompts, CoOp's shared context, MaPLe's coupled prompts).

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};
use vlp_align::ClipModel;
use vlp_align::fit::FewShotFitConfig;
use vlp_align::prompt::{
    CoopPromptLearner, CoopPrompts, MapleConfig, MaplePromptLearner, fit_maple,
};
use vlp_text::Tokenizer;

use super::{Coop, drawn, k_shot_indices, rows, scores};
use crate::embed::Features;
use crate::error::{Result, TaskError};
use crate::probe::{accuracy, argmax_rows};

/// Images, one row each: `3 × image_size × image_size` normalised pixel values, row-major.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pixels {
    /// The values, `rows × 3 × image_size²`.
    pub data: Vec<f32>,
    /// Number of images.
    pub rows: usize,
    /// Side of each image.
    pub image_size: usize,
}

impl Pixels {
    fn per_row(&self) -> usize {
        3 * self.image_size * self.image_size
    }

    /// The images at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Pixels {
        let n = self.per_row();
        let mut data = Vec::with_capacity(idx.len() * n);
        for &i in idx {
            data.extend_from_slice(&self.data[i * n..(i + 1) * n]);
        }
        Pixels {
            data,
            rows: idx.len(),
            image_size: self.image_size,
        }
    }

    /// Normalised image embeddings of every row under `model`, 256 images at a time.
    pub fn embed<B: Backend>(&self, model: &ClipModel<B>, device: &B::Device) -> Features {
        self.embed_with(device, &|x| model.encode_image(x))
    }

    /// Normalised embeddings of every row under `encode` (`[n, 3, size, size]` to `[n, d]`),
    /// 256 images at a time.
    pub fn embed_with<B: Backend>(
        &self,
        device: &B::Device,
        encode: &dyn Fn(Tensor<B, 4>) -> Tensor<B, 2>,
    ) -> Features {
        let mut out = Features::default();
        for start in (0..self.rows).step_by(256) {
            let end = (start + 256).min(self.rows);
            let x = self.to_tensor::<B>(start..end, device);
            out.extend(Features::from_tensor(vlp_align::normalize(encode(x))));
        }
        out
    }

    /// Images `range` as a `[n, 3, size, size]` tensor.
    pub fn to_tensor<B: Backend>(
        &self,
        range: std::ops::Range<usize>,
        device: &B::Device,
    ) -> Tensor<B, 4> {
        let (n, s) = (self.per_row(), self.image_size);
        Tensor::from_data(
            TensorData::new(
                self.data[range.start * n..range.end * n].to_vec(),
                [range.len(), 3, s, s],
            ),
            device,
        )
    }
}

/// Images as the open-vocabulary protocols hand them to a method: their frozen features, and
/// their pixels for methods that run the image tower themselves (MaPLe).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageRows {
    /// Normalised features of the frozen model, `[n, embed]`.
    pub features: Features,
    /// The same images' pixels, when a method needs them.
    pub pixels: Option<Pixels>,
}

impl ImageRows {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.features.rows
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.features.rows == 0
    }

    /// The images at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> ImageRows {
        ImageRows {
            features: rows(&self.features, idx),
            pixels: self.pixels.as_ref().map(|p| p.select(idx)),
        }
    }

    /// The pixels, or an error naming the method that needs them.
    pub fn require_pixels(&self, method: &str) -> Result<&Pixels> {
        match &self.pixels {
            Some(p) if p.rows == self.features.rows => Ok(p),
            Some(p) => Err(TaskError::Invalid {
                task: method.into(),
                reason: format!("{} images but {} feature rows", p.rows, self.features.rows),
            }),
            None => Err(TaskError::Invalid {
                task: method.into(),
                reason: "it runs the image tower: give the images' pixels, not only features"
                    .into(),
            }),
        }
    }
}

/// A method that learns from shots of some classes and can then classify among any class names
/// (prompt learners, hand-written prompts): what the base-to-novel protocol needs.
pub trait OpenVocabularyMethod {
    /// Name in reports.
    fn name(&self) -> String;
    /// Learns from `shots` of `classes` (labels index `classes`) and returns what classifies
    /// images among any class names.
    fn fit(
        &self,
        shots: &ImageRows,
        shot_labels: &[usize],
        classes: &[String],
    ) -> Result<Box<dyn OpenClassifier + '_>>;
}

/// What an [`OpenVocabularyMethod`] learned: scores of images against any class names.
pub trait OpenClassifier {
    /// Scores of every image against every class, `[images, classes]` (higher = more likely).
    fn scores(&self, images: &ImageRows, classes: &[String]) -> Result<Features>;
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
    train: &ImageRows,
    train_labels: &[usize],
    test: &ImageRows,
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
    if train.len() != train_labels.len() || test.len() != test_labels.len() {
        return Err(TaskError::Invalid {
            task: "base-to-novel".into(),
            reason: format!(
                "{} training images for {} labels, {} test images for {} labels",
                train.len(),
                train_labels.len(),
                test.len(),
                test_labels.len()
            ),
        });
    }
    let n_base = c.div_ceil(2);
    let (base_names, novel_names) = classes.split_at(n_base);
    let base_train: Vec<usize> = (0..train.len())
        .filter(|&i| train_labels[i] < n_base)
        .collect();
    let base_labels: Vec<usize> = base_train.iter().map(|&i| train_labels[i]).collect();
    let picked = k_shot_indices(&base_labels, n_base, k, seed);
    let idx: Vec<usize> = picked.iter().map(|&j| base_train[j]).collect();
    let labels: Vec<usize> = idx.iter().map(|&i| train_labels[i]).collect();
    let classifier = method.fit(&train.select(&idx), &labels, base_names)?;
    let score = |names: &[String], offset: usize, keep: &dyn Fn(usize) -> bool| -> Result<f64> {
        let which: Vec<usize> = (0..test.len()).filter(|&i| keep(test_labels[i])).collect();
        if which.is_empty() {
            return Err(TaskError::Invalid {
                task: "base-to-novel".into(),
                reason: format!("no test image of the classes {:?}", names),
            });
        }
        let s = classifier.scores(&test.select(&which), names)?;
        if (s.rows, s.dim) != (which.len(), names.len()) {
            return Err(TaskError::Invalid {
                task: method.name(),
                reason: format!(
                    "{} × {} scores for {} images and {} classes",
                    s.rows,
                    s.dim,
                    which.len(),
                    names.len()
                ),
            });
        }
        let truth: Vec<usize> = which.iter().map(|&i| test_labels[i] - offset).collect();
        Ok(accuracy(&argmax_rows(&s), &truth))
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

impl<B: Backend> OpenClassifier for HandWritten<'_, B> {
    fn scores(&self, images: &ImageRows, classes: &[String]) -> Result<Features> {
        let w = crate::zeroshot::classifier(
            self.model,
            self.tokenizer,
            classes,
            &self.templates,
            &self.device,
        )?;
        Ok(scores(&images.features, &w))
    }
}

impl<B: Backend> OpenVocabularyMethod for HandWritten<'_, B> {
    fn name(&self) -> String {
        "hand-written".into()
    }
    fn fit(
        &self,
        _: &ImageRows,
        _: &[usize],
        _: &[String],
    ) -> Result<Box<dyn OpenClassifier + '_>> {
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

impl<B: AutodiffBackend> OpenClassifier for LearnedContext<'_, B> {
    fn scores(&self, images: &ImageRows, classes: &[String]) -> Result<Features> {
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
        let w = Features::from_tensor(self.learner.class_embeddings(self.model, &prompts));
        Ok(scores(&images.features, &w))
    }
}

impl<'a, B: AutodiffBackend> OpenVocabularyMethod for Coop<'a, B> {
    fn name(&self) -> String {
        "coop".into()
    }
    fn fit(
        &self,
        shots: &ImageRows,
        shot_labels: &[usize],
        classes: &[String],
    ) -> Result<Box<dyn OpenClassifier + '_>> {
        let on = Coop {
            model: self.model,
            tokenizer: self.tokenizer,
            classes,
            config: self.config.clone(),
            fit: self.fit.clone(),
            device: self.device.clone(),
        };
        let (learner, _) = on.learn_context(&shots.features, shot_labels)?;
        Ok(Box::new(LearnedContext {
            model: self.model,
            tokenizer: self.tokenizer,
            trained: classes.to_vec(),
            learner,
        }))
    }
}

/// MaPLe ([`vlp_align::prompt::maple`]) as an open-vocabulary method: its coupled prompts are
/// trained on the shots' pixels (both towers run at every step), then any class names are
/// prompted with the learned context and every image encoded with the learned image prompts.
pub struct Maple<'a, B: AutodiffBackend> {
    /// The frozen model.
    pub model: &'a ClipModel<B>,
    /// Its tokenizer.
    pub tokenizer: &'a dyn Tokenizer,
    /// The prompt learner.
    pub config: MapleConfig,
    /// Its training (the code's: lr 0.0035, batch 4); its seed draws the prompts and the order.
    pub fit: FewShotFitConfig,
    /// Device to train on.
    pub device: B::Device,
}

impl<B: AutodiffBackend> Maple<'_, B> {
    /// The trained prompt learner and each epoch's mean loss.
    pub fn learn(
        &self,
        shots: &ImageRows,
        shot_labels: &[usize],
        classes: &[String],
    ) -> Result<(MaplePromptLearner<B>, Vec<f64>)> {
        let pixels = shots.require_pixels("maple")?;
        let (learner, prompts) = drawn::<B, _, _, _>(&self.device, self.fit.seed, || {
            self.config
                .init(self.model, self.tokenizer, classes, &self.device)
        })?;
        let x = pixels.to_tensor::<B>(0..pixels.rows, &self.device);
        Ok(fit_maple(
            self.model,
            learner,
            &prompts,
            x,
            shot_labels,
            &self.fit,
        )?)
    }
}

/// MaPLe's learned prompts, for any class names (inference on the inner backend).
struct LearnedMaple<'a, B: AutodiffBackend> {
    model: ClipModel<B::InnerBackend>,
    tokenizer: &'a dyn Tokenizer,
    config: MapleConfig,
    learner: MaplePromptLearner<B::InnerBackend>,
    device: B::Device,
}

impl<B: AutodiffBackend> OpenClassifier for LearnedMaple<'_, B> {
    fn scores(&self, images: &ImageRows, classes: &[String]) -> Result<Features> {
        maple_scores(
            &self.learner,
            &self.model,
            &self.config,
            self.tokenizer,
            classes,
            images.require_pixels("maple")?,
            &self.device,
        )
    }
}

/// MaPLe's logits `exp(logit_scale)·img·txtᵀ` of `pixels` (256 images at a time through the
/// prompted image tower) against `classes` prompted with the learned context,
/// `[images, classes]`.
pub fn maple_scores<B: Backend>(
    learner: &MaplePromptLearner<B>,
    model: &ClipModel<B>,
    config: &MapleConfig,
    tokenizer: &dyn Tokenizer,
    classes: &[String],
    pixels: &Pixels,
    device: &B::Device,
) -> Result<Features> {
    let prompts = config.prompts(tokenizer, classes)?;
    let (text, _) = learner.encode_text(model, &prompts, false);
    let text = text * model.logit_scale.val().exp().unsqueeze::<2>();
    let mut out = Features {
        data: Vec::new(),
        rows: 0,
        dim: classes.len(),
    };
    for start in (0..pixels.rows).step_by(256) {
        let end = (start + 256).min(pixels.rows);
        let (image, _) =
            learner.encode_image(model, pixels.to_tensor::<B>(start..end, device), false);
        out.extend(Features::from_tensor(
            image.matmul(text.clone().transpose()),
        ));
    }
    Ok(out)
}

impl<'a, B: AutodiffBackend> OpenVocabularyMethod for Maple<'a, B> {
    fn name(&self) -> String {
        "maple".into()
    }
    fn fit(
        &self,
        shots: &ImageRows,
        shot_labels: &[usize],
        classes: &[String],
    ) -> Result<Box<dyn OpenClassifier + '_>> {
        let (learner, _) = self.learn(shots, shot_labels, classes)?;
        Ok(Box::new(LearnedMaple::<B> {
            model: self.model.valid(),
            tokenizer: self.tokenizer,
            config: self.config.clone(),
            learner: learner.valid(),
            device: self.device.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vlp_core::backend::seeded;

    fn features_only(f: Features) -> ImageRows {
        ImageRows {
            features: f,
            pixels: None,
        }
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

    impl Stub {
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

    impl OpenClassifier for Stub {
        fn scores(&self, images: &ImageRows, classes: &[String]) -> Result<Features> {
            Ok(scores(&images.features, &self.embed(classes)?))
        }
    }

    impl OpenVocabularyMethod for Stub {
        fn name(&self) -> String {
            "stub".into()
        }
        fn fit(
            &self,
            shots: &ImageRows,
            labels: &[usize],
            classes: &[String],
        ) -> Result<Box<dyn OpenClassifier + '_>> {
            assert_eq!(shots.len(), labels.len());
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
            &features_only(one_hot(&train_labels)),
            &train_labels,
            &features_only(one_hot(&test_labels)),
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
            &features_only(one_hot(&[0])),
            &[0],
            &features_only(one_hot(&[0])),
            &[0],
            &names[..1],
            1,
            0,
        )
        .unwrap_err();
        assert!(err.to_string().contains("1 classes"), "{err}");
        let err = base_to_novel(
            &stub,
            &features_only(one_hot(&train_labels)),
            &train_labels,
            &features_only(one_hot(&[0, 1])),
            &[0, 1],
            &names,
            1,
            0,
        )
        .unwrap_err();
        assert!(err.to_string().contains("no test image"), "{err}");
    }

    /// MaPLe through the protocol on a random 3-block tower and random images: it needs pixels,
    /// trains on the base shots only, and the same seed gives the same result (the harness is
    /// deterministic: shots, prompts and order all come from the seed).
    #[test]
    fn maple_runs_base_to_novel_deterministically_and_needs_pixels() {
        use burn::tensor::Distribution;
        use vlp_core::backend::{TrainBackend as B, default_device};

        let dev = default_device();
        let (model, tok) = crate::fewshot::testing::tiny_clip(
            &["a", "photo", "of", "red", "blue", "circle", "star", "."],
            3,
            21,
        );
        let names: Vec<String> = ["red circle", "blue star", "red star", "blue circle"]
            .map(String::from)
            .to_vec();
        let images = seeded::<B, _>(&dev, 22, || {
            Tensor::<B, 4>::random([12, 3, 16, 16], Distribution::Normal(0.0, 1.0), &dev)
        });
        let inner = model.valid();
        let features = Features::from_tensor(vlp_align::model::normalize(
            inner.encode_image(images.clone().inner()),
        ));
        let pixels = Pixels {
            data: images.into_data().to_vec().unwrap(),
            rows: 12,
            image_size: 16,
        };
        let set = ImageRows {
            features,
            pixels: Some(pixels),
        };
        let labels: Vec<usize> = (0..12).map(|i| i % 4).collect();
        let maple = Maple {
            model: &model,
            tokenizer: &tok,
            config: MapleConfig::new().with_depth(3),
            fit: FewShotFitConfig::new()
                .with_epochs(2)
                .with_batch_size(4)
                .with_lr(0.0035)
                .with_seed(5),
            device: dev,
        };
        let run = || base_to_novel(&maple, &set, &labels, &set, &labels, &names, 2, 3).unwrap();
        let (a, b) = (run(), run());
        assert_eq!(a, b);
        assert!((a.harmonic - harmonic_mean(a.base, a.novel)).abs() < 1e-12);
        // 2 base classes × 2 shots; the scores cover every image and class asked for.
        let (learner, losses) = maple
            .learn(&set.select(&[0, 1, 4, 5]), &[0, 1, 0, 1], &names[..2])
            .unwrap();
        assert_eq!(losses.len(), 2);
        assert_eq!(learner.compound_prompts_text.len(), 2);
        let c = maple
            .fit(&set.select(&[0, 1, 4, 5]), &[0, 1, 0, 1], &names[..2])
            .unwrap();
        let s = c.scores(&set.select(&[2, 3, 7]), &names[2..]).unwrap();
        assert_eq!((s.rows, s.dim), (3, 2));
        let blind = features_only(set.features.clone());
        let err = base_to_novel(&maple, &blind, &labels, &blind, &labels, &names, 2, 3)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("give the images' pixels"), "{err}");
    }
}
