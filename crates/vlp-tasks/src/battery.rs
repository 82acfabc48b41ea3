//! The evaluation battery as functions with serde reports, shared by `vlp eval` and evaluation
//! during training: held-out images kept in memory ([`EvalImages`]), pooled embeddings of a
//! dual encoder, and zero-shot and retrieval reports under any [`Scorer`].

use std::collections::BTreeMap;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};
use vlp_align::{ClipModel, normalize};
use vlp_data::loader::{Loader, LoaderConfig, SkipStats};
use vlp_data::preprocess::ImagePipeline;
use vlp_data::source::Source;
use vlp_text::Tokenizer;

use crate::embed::{Features, embed_texts};
use crate::error::{Result, TaskError};
use crate::retrieval::{RetrievalResult, retrieval_scored};
use crate::scoring::{DotScorer, Scorer};
use crate::zeroshot::{classifier, evaluate_scored};

/// Held-out images decoded and preprocessed once, kept in memory for repeated evaluation.
#[derive(Debug, Clone)]
pub struct EvalImages {
    /// Source name.
    pub name: String,
    batches: Vec<(Vec<f32>, usize)>,
    /// Image side.
    pub image_size: usize,
    /// Labels (all present), or `None` when some image has none.
    pub labels: Option<Vec<usize>>,
    /// Every caption of each image.
    pub captions: Vec<Vec<String>>,
    /// Sample keys.
    pub keys: Vec<String>,
    /// Class names, when the source is labelled.
    pub classes: Option<Vec<String>>,
    /// Annotations of each image (boxes and masks in model pixels), for localisation checks.
    pub annotations: Vec<vlp_data::sample::Annotations>,
    /// What the loader skipped.
    pub skipped: SkipStats,
}

impl EvalImages {
    /// Reads every image of `source` through `pipeline` (no augmentation, source order).
    pub fn load(source: Source, pipeline: &ImagePipeline, workers: usize) -> Result<Self> {
        Self::load_where(source, pipeline, workers, &|_| true)
    }

    /// [`load`](Self::load), keeping only the images whose position among the source's usable
    /// images (source order, as `load` numbers them) `keep` accepts: a few shots of a large
    /// training set without holding every image's pixels.
    pub fn load_where(
        source: Source,
        pipeline: &ImagePipeline,
        workers: usize,
        keep: &dyn Fn(usize) -> bool,
    ) -> Result<Self> {
        let name = source.name();
        let classes = source.class_names();
        let cfg = LoaderConfig {
            batch_size: 256,
            workers,
            shuffle: false,
            drop_last: false,
            require_caption: false,
            max_skip_fraction: 1.0,
            ..Default::default()
        };
        let loader = Loader::new(source, pipeline.clone(), None, cfg)?;
        let mut out = Self {
            name: name.clone(),
            batches: Vec::new(),
            image_size: pipeline.size,
            labels: None,
            captions: Vec::new(),
            keys: Vec::new(),
            classes,
            annotations: Vec::new(),
            skipped: SkipStats::default(),
        };
        let mut labels = Vec::new();
        let mut epoch = loader.epoch(0, 0);
        let per_image = 3 * pipeline.size * pipeline.size;
        let mut seen = 0;
        for b in epoch.by_ref() {
            let b = b?;
            let kept: Vec<usize> = (0..b.len()).filter(|&j| keep(seen + j)).collect();
            seen += b.len();
            if kept.is_empty() {
                continue;
            }
            labels.extend(kept.iter().map(|&j| b.labels[j]));
            out.captions
                .extend(kept.iter().map(|&j| b.all_captions[j].clone()));
            out.keys.extend(kept.iter().map(|&j| b.keys[j].clone()));
            out.annotations
                .extend(kept.iter().map(|&j| b.annotations[j].clone()));
            let images = if kept.len() == b.len() {
                b.images
            } else {
                kept.iter()
                    .flat_map(|&j| b.images[j * per_image..(j + 1) * per_image].iter().copied())
                    .collect()
            };
            out.batches.push((images, kept.len()));
        }
        out.skipped = epoch.stats().clone();
        if out.keys.is_empty() && seen > 0 {
            return Err(TaskError::Invalid {
                task: "evaluation".into(),
                reason: format!("{name}: none of its {seen} usable images was asked for"),
            });
        }
        if out.keys.is_empty() {
            return Err(TaskError::Invalid {
                task: "evaluation".into(),
                reason: format!("{name}: no usable image ({})", out.skipped.summary()),
            });
        }
        out.labels = labels
            .iter()
            .all(Option::is_some)
            .then(|| labels.into_iter().map(|l| l.expect("checked")).collect());
        Ok(out)
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The images in batches of up to 256, as `[n, 3, size, size]` tensors.
    pub fn tensors<'a, B: Backend>(
        &'a self,
        device: &'a B::Device,
    ) -> impl Iterator<Item = Tensor<B, 4>> + 'a {
        let s = self.image_size;
        self.batches.iter().map(move |(px, n)| {
            Tensor::<B, 4>::from_data(TensorData::new(px.clone(), [*n, 3, s, s]), device)
        })
    }

    /// Every image's pixels, one row each, in source order.
    pub fn pixels(&self) -> crate::fewshot::Pixels {
        let mut data = Vec::with_capacity(self.len() * 3 * self.image_size * self.image_size);
        for (px, _) in &self.batches {
            data.extend_from_slice(px);
        }
        crate::fewshot::Pixels {
            data,
            rows: self.len(),
            image_size: self.image_size,
        }
    }

    /// Frozen features of `model` and the pixels, as the open-vocabulary protocols take them.
    pub fn image_rows<B: Backend>(
        &self,
        model: &ClipModel<B>,
        device: &B::Device,
    ) -> crate::fewshot::ImageRows {
        crate::fewshot::ImageRows {
            features: self.embed(model, device),
            pixels: Some(self.pixels()),
        }
    }

    /// Normalised pooled image embeddings of a dual encoder.
    pub fn embed<B: Backend>(&self, model: &ClipModel<B>, device: &B::Device) -> Features {
        self.embed_with::<B>(device, &|t| model.encode_image(t))
    }

    /// Normalised embeddings of every image under `encode` (`[n, 3, size, size]` to `[n, d]`),
    /// for image encoders other than [`ClipModel::encode_image`] (a prior-guided tower, ...).
    pub fn embed_with<B: Backend>(
        &self,
        device: &B::Device,
        encode: &dyn Fn(Tensor<B, 4>) -> Tensor<B, 2>,
    ) -> Features {
        let mut f = Features::default();
        for t in self.tensors::<B>(device) {
            f.extend(Features::from_tensor(normalize(encode(t))));
        }
        f
    }

    /// Each image's long caption (one sentence per object, then relations, on ShapesWorld) with
    /// the image it describes: fine-grained retrieval.
    pub fn long_caption_links(&self) -> Result<(Vec<String>, Vec<usize>)> {
        let mut texts = Vec::with_capacity(self.len());
        for (i, a) in self.annotations.iter().enumerate() {
            let Some(long) = &a.long_caption else {
                return Err(TaskError::Invalid {
                    task: "long-caption retrieval".into(),
                    reason: format!(
                        "{}: image \"{}\" has no long caption",
                        self.name, self.keys[i]
                    ),
                });
            };
            texts.push(long.clone());
        }
        Ok((texts, (0..self.len()).collect()))
    }

    /// Captions as a flat list with the image each describes (`first_only`: one per image,
    /// the training-time protocol; otherwise all, COCO's).
    pub fn caption_links(&self, first_only: bool) -> Result<(Vec<String>, Vec<usize>)> {
        let mut texts = Vec::new();
        let mut links = Vec::new();
        for (i, caps) in self.captions.iter().enumerate() {
            if caps.is_empty() {
                return Err(TaskError::Invalid {
                    task: "retrieval".into(),
                    reason: format!("{}: image \"{}\" has no caption", self.name, self.keys[i]),
                });
            }
            let take = if first_only { 1 } else { caps.len() };
            for c in caps.iter().take(take) {
                texts.push(c.clone());
                links.push(i);
            }
        }
        Ok((texts, links))
    }
}

/// The classes of a labelled source checked against a user's list `listed` by name: the same
/// names, each once, in any order. Returns the names in the data's label order (what its labels
/// index), so a list in another order cannot misalign prompts and labels.
pub fn match_classes(
    data: &[String],
    listed: &[String],
    data_name: &str,
    list_name: &str,
) -> Result<Vec<String>> {
    let bad = |reason: String| TaskError::Invalid {
        task: "classes".into(),
        reason,
    };
    let mut seen = std::collections::BTreeSet::new();
    for c in listed {
        if !seen.insert(c) {
            return Err(bad(format!("{list_name} lists class \"{c}\" twice")));
        }
        if !data.contains(c) {
            return Err(bad(format!(
                "class \"{c}\" listed in {list_name} is not a class of {data_name} (its classes: {})",
                data.join(", ")
            )));
        }
    }
    if let Some(missing) = data.iter().find(|c| !seen.contains(c)) {
        return Err(bad(format!(
            "{list_name} does not list class \"{missing}\" of {data_name} ({} listed, {} in the data)",
            listed.len(),
            data.len()
        )));
    }
    Ok(data.to_vec())
}

/// Maps the labels of a training set into a test set's label space by class name. Both must
/// have exactly the same classes (in any order): a probe trained without a class, or on classes
/// the test set does not have, would report an accuracy that means nothing.
pub fn align_label_spaces(
    train: &[String],
    test: &[String],
    train_name: &str,
    test_name: &str,
) -> Result<Vec<usize>> {
    let bad = |reason: String| TaskError::Invalid {
        task: "classes".into(),
        reason,
    };
    let only_train: Vec<&String> = train.iter().filter(|c| !test.contains(c)).collect();
    let only_test: Vec<&String> = test.iter().filter(|c| !train.contains(c)).collect();
    if !only_train.is_empty() || !only_test.is_empty() || train.len() != test.len() {
        return Err(bad(format!(
            "{train_name} and {test_name} have different classes: only in training {only_train:?}, only in test {only_test:?}"
        )));
    }
    Ok(train
        .iter()
        .map(|c| test.iter().position(|t| t == c).expect("checked"))
        .collect())
}

/// Labels of every image, or an error naming the first unlabelled one.
pub fn require_labels(labels: &[Option<usize>], keys: &[String], name: &str) -> Result<Vec<usize>> {
    labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            l.ok_or_else(|| TaskError::Invalid {
                task: "labels".into(),
                reason: format!("{name}: image \"{}\" has no label", keys[i]),
            })
        })
        .collect()
}

/// A zero-shot evaluation, with what a reader needs to trust it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZeroShotReport {
    /// Top-1 accuracy.
    pub top1: f64,
    /// Top-5 accuracy (top-k with k = min(5, classes)).
    pub top5: f64,
    /// Accuracy per class name (`None`: no image of that class).
    pub per_class: BTreeMap<String, Option<f64>>,
    /// `confusion[true][predicted]` counts, classes in `classes` order.
    pub confusion: Vec<Vec<usize>>,
    /// Class names in label order.
    pub classes: Vec<String>,
    /// Images evaluated.
    pub count: usize,
}

/// Zero-shot under `scorer`, whose texts are `per_class` prompts of each class in `classes`
/// order.
pub fn zero_shot_report(
    scorer: &dyn Scorer,
    labels: &[usize],
    classes: &[String],
    per_class: usize,
) -> Result<ZeroShotReport> {
    if scorer.num_texts() != classes.len() * per_class {
        return Err(TaskError::Invalid {
            task: "zero-shot".into(),
            reason: format!(
                "{} prompts for {} classes × {per_class} templates",
                scorer.num_texts(),
                classes.len()
            ),
        });
    }
    let r = evaluate_scored(scorer, labels, per_class)?;
    Ok(ZeroShotReport {
        top1: r.top1,
        top5: r.top5,
        per_class: classes.iter().cloned().zip(r.per_class).collect(),
        confusion: r.confusion,
        classes: classes.to_vec(),
        count: r.count,
    })
}

/// Zero-shot of a dual encoder with CLIP's prompt ensembling (mean of normalised prompt
/// embeddings per class), on pooled image embeddings `images`.
pub fn clip_zero_shot<B: Backend>(
    model: &ClipModel<B>,
    tokenizer: &dyn Tokenizer,
    images: &Features,
    labels: &[usize],
    classes: &[String],
    templates: &[String],
    device: &B::Device,
) -> Result<ZeroShotReport> {
    let cls = classifier(model, tokenizer, classes, templates, device)?;
    zero_shot_report(&DotScorer::new(images, &cls)?, labels, classes, 1)
}

/// Image↔text retrieval of a dual encoder on pooled image embeddings `images`.
pub fn clip_retrieval<B: Backend>(
    model: &ClipModel<B>,
    tokenizer: &dyn Tokenizer,
    images: &Features,
    texts: &[String],
    links: &[usize],
    device: &B::Device,
) -> Result<RetrievalResult> {
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let t = embed_texts(model, tokenizer, &refs, 256, device)?;
    retrieval_scored(&DotScorer::new(images, &t)?, links)
}

/// The metrics training reports for a held-out set: zero-shot when it is labelled, retrieval on
/// its first captions, under `scorer` builders. Keys: `zero_shot_top1`, `zero_shot_top5`,
/// `retrieval_i2t_r1`, `retrieval_i2t_r5`, `retrieval_t2i_r1`, `retrieval_t2i_r5` and the
/// remote-sensing papers' mean recall `retrieval_mr` (see [`RetrievalResult::mean_recall`]).
pub fn metrics_of(
    zero_shot: Option<&ZeroShotReport>,
    retrieval: Option<&RetrievalResult>,
) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    if let Some(z) = zero_shot {
        m.insert("zero_shot_top1".into(), z.top1);
        m.insert("zero_shot_top5".into(), z.top5);
    }
    if let Some(r) = retrieval {
        m.insert("retrieval_i2t_r1".into(), r.i2t_recall[0]);
        m.insert("retrieval_i2t_r5".into(), r.i2t_recall[1]);
        m.insert("retrieval_t2i_r1".into(), r.t2i_recall[0]);
        m.insert("retrieval_t2i_r5".into(), r.t2i_recall[1]);
        m.insert("retrieval_mr".into(), r.mean_recall());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// The pixel rows are the loaded images in source order, across loader batches.
    #[test]
    fn pixel_rows_are_the_images_in_order() {
        use vlp_core::backend::{DefaultBackend as B, default_device};
        let shapes = vlp_data::shapes::ShapesWorldConfig::default();
        let source = vlp_data::source::open_source("shapes:test:300", &shapes).unwrap();
        let set = EvalImages::load(source, &ImagePipeline::clip(16), 1).unwrap();
        let dev = default_device();
        let px = set.pixels();
        assert_eq!((px.rows, px.image_size), (300, 16));
        assert_eq!(px.data.len(), 300 * 3 * 16 * 16);
        let batches: Vec<Tensor<B, 4>> = set.tensors::<B>(&dev).collect();
        assert!(batches.len() > 1, "the check should span loader batches");
        let all = Tensor::cat(batches, 0);
        px.to_tensor::<B>(0..300, &dev)
            .into_data()
            .assert_eq(&all.clone().into_data(), true);
        // Only the kept images, in order, with their keys.
        let source = vlp_data::source::open_source("shapes:test:300", &shapes).unwrap();
        let some =
            EvalImages::load_where(source, &ImagePipeline::clip(16), 1, &|i| i == 3 || i == 299)
                .unwrap();
        assert_eq!(some.keys, vec![set.keys[3].clone(), set.keys[299].clone()]);
        assert_eq!(some.pixels(), px.select(&[3, 299]));
        let picked = px.select(&[299, 3]);
        picked.to_tensor::<B>(0..2, &dev).into_data().assert_eq(
            &Tensor::cat(vec![all.clone().slice([299..300]), all.slice([3..4])], 0).into_data(),
            true,
        );
    }

    #[test]
    fn class_lists_match_by_name_in_any_order() {
        let data = names(&["cat", "dog", "emu"]);
        assert_eq!(
            match_classes(&data, &names(&["emu", "cat", "dog"]), "d", "l").unwrap(),
            data
        );
        let e = match_classes(&data, &names(&["cat", "cat", "dog"]), "d", "l").unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        let e = match_classes(&data, &names(&["cat", "dog"]), "d", "l").unwrap_err();
        assert!(e.to_string().contains("emu"), "{e}");
        let e = match_classes(&data, &names(&["cat", "dog", "eel"]), "d", "l").unwrap_err();
        assert!(e.to_string().contains("eel"), "{e}");
    }

    #[test]
    fn label_spaces_align_or_fail() {
        let test = names(&["cat", "dog", "emu"]);
        assert_eq!(
            align_label_spaces(&names(&["dog", "emu", "cat"]), &test, "a", "b").unwrap(),
            vec![1, 2, 0]
        );
        let e = align_label_spaces(&names(&["cat", "dog"]), &test, "a", "b").unwrap_err();
        assert!(e.to_string().contains("emu"), "{e}");
    }
}
