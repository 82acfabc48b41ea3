//! GIST (Lewis et al., 2023, "Generating Image Specific Text for Fine-grained Object
//! Classification"; code `emu1729/GIST`): per-class descriptions from a language model are
//! matched to each training image among *its own class's* descriptions by CLIP score
//! (`caption_matching.py`: softmax(100·cos), top 5), CLIP is fine-tuned contrastively on
//! (image, "{class}: {description}") pairs with `num_captions` matched descriptions per image
//! (`contrastive_training_clip.py`: every parameter, Adam lr 1e-6, β (0.9, 0.98), ε 1e-6, weight
//! decay 0.001, batch 20, 200 epochs, RandomResizedCrop and flip), and a linear probe on the
//! fine-tuned image features classifies (`linear_probe.py`).
//!
//! The descriptions come from the caller (a `vlp_curate::describe::DescriptionSource`, which
//! lives in a crate beside this one): one list per class, in class order.

use burn::config::Config;
use burn::module::{AutodiffModule, Module};
use burn::nn::Linear;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};
use vlp_align::loss::clip_loss;
use vlp_align::{ClipModel, normalize};
use vlp_core::rng::Rng;
use vlp_data::augment::AugmentConfig;
use vlp_text::Tokenizer;
use vlp_vision::Vit;

use super::base_to_novel::{ImageRows, Pixels};
use crate::embed::{Features, embed_texts};
use crate::error::{Result, TaskError};
use crate::probe::fit as fit_probe;

/// GIST's matching, fine-tuning and probe.
#[derive(Config, Debug)]
pub struct GistConfig {
    /// Descriptions kept per image, best first (`caption_matching.py` keeps 5).
    #[config(default = 5)]
    pub top_k: usize,
    /// Matched descriptions each image is paired with in fine-tuning (the run script's
    /// `--num_captions 4`); at most `top_k`.
    #[config(default = 4)]
    pub captions_per_image: usize,
    /// Passes over the pairs (the code: 200).
    #[config(default = 200)]
    pub epochs: usize,
    /// Pairs per step (the code: 20).
    #[config(default = 20)]
    pub batch_size: usize,
    /// Adam's learning rate (the code: 1e-6, for ViT-L/14 at 336 px).
    #[config(default = 1e-6)]
    pub lr: f64,
    /// Adam's β₁.
    #[config(default = 0.9)]
    pub beta_1: f32,
    /// Adam's β₂ (CLIP's 0.98).
    #[config(default = 0.98)]
    pub beta_2: f32,
    /// Adam's ε.
    #[config(default = 1e-6)]
    pub epsilon: f32,
    /// L2 weight decay added to the gradient, as `torch.optim.Adam(weight_decay=…)` does.
    #[config(default = 0.001)]
    pub weight_decay: f64,
    /// A fresh crop and flip of every image at every step (the code: torchvision's
    /// RandomResizedCrop, scale 0.08–1, and RandomHorizontalFlip on full-size photographs);
    /// `None` trains on the images as they are. Only the crop and the flip apply (see
    /// [`Pixels::augmented`]).
    #[config(default = "None")]
    pub augment: Option<AugmentConfig>,
    /// L2 strength of the final linear probe.
    #[config(default = 1e-3)]
    pub probe_lambda: f64,
    /// Seed of the pair order and the crops.
    #[config(default = 0)]
    pub seed: u64,
}

/// For each image, the indices of its own class's descriptions ranked by the image's cosine
/// similarity to them (the order of `caption_matching.py`'s softmax(100·cos)), best first, at
/// most `top_k`. `images` are normalised image features; `descriptions[c]` are class `c`'s.
pub fn match_descriptions<B: Backend>(
    model: &ClipModel<B>,
    tokenizer: &dyn Tokenizer,
    images: &Features,
    labels: &[usize],
    descriptions: &[Vec<String>],
    top_k: usize,
    device: &B::Device,
) -> Result<Vec<Vec<usize>>> {
    let bad = |reason: String| {
        Err(TaskError::Invalid {
            task: "gist matching".into(),
            reason,
        })
    };
    if images.rows != labels.len() {
        return bad(format!(
            "{} images for {} labels",
            images.rows,
            labels.len()
        ));
    }
    if let Some((i, &l)) = labels
        .iter()
        .enumerate()
        .find(|&(_, &l)| l >= descriptions.len())
    {
        return bad(format!(
            "image {i} has label {l} but descriptions of {} classes were given",
            descriptions.len()
        ));
    }
    if top_k == 0 {
        return bad("top_k is 0: no description would be kept".into());
    }
    let mut texts = Vec::with_capacity(descriptions.len());
    for (c, list) in descriptions.iter().enumerate() {
        if list.is_empty() && labels.contains(&c) {
            return bad(format!("class {c} has images but no description"));
        }
        let refs: Vec<&str> = list.iter().map(String::as_str).collect();
        texts.push(embed_texts(model, tokenizer, &refs, 64, device)?);
    }
    Ok(labels
        .iter()
        .enumerate()
        .map(|(i, &l)| {
            let img = images.row(i);
            let t = &texts[l];
            let sim: Vec<f32> = (0..t.rows)
                .map(|j| img.iter().zip(t.row(j)).map(|(a, b)| a * b).sum())
                .collect();
            let mut order: Vec<usize> = (0..t.rows).collect();
            // Stable: equal scores keep the source's order.
            order.sort_by(|&a, &b| sim[b].total_cmp(&sim[a]));
            order.truncate(top_k);
            order
        })
        .collect())
}

/// GIST on a model: match, fine-tune, probe.
pub struct Gist<'a, B: AutodiffBackend> {
    /// The pretrained model (copied, not changed).
    pub model: &'a ClipModel<B>,
    /// Its tokenizer.
    pub tokenizer: &'a dyn Tokenizer,
    /// Class names, in label order (the prefix of every fine-tuning text).
    pub classes: &'a [String],
    /// Each class's descriptions, in label order.
    pub descriptions: &'a [Vec<String>],
    /// The recipe.
    pub config: GistConfig,
    /// Device to train on.
    pub device: B::Device,
}

/// What GIST learned from the shots.
pub struct GistFit<B: Backend> {
    /// Each shot's matched descriptions (indices into its class's list), best first.
    pub matched: Vec<Vec<usize>>,
    /// The fine-tuned model.
    pub model: ClipModel<B>,
    /// Mean contrastive loss of each epoch.
    pub losses: Vec<f64>,
}

impl<B: AutodiffBackend> Gist<'_, B> {
    /// Matches the shots' descriptions with the frozen model, then fine-tunes a copy of it on
    /// (shot, "{class}: {description}") pairs. `shots` need pixels.
    pub fn fit(&self, shots: &ImageRows, labels: &[usize]) -> Result<GistFit<B::InnerBackend>> {
        let cfg = &self.config;
        if cfg.captions_per_image == 0 || cfg.captions_per_image > cfg.top_k {
            return Err(TaskError::Invalid {
                task: "gist".into(),
                reason: format!(
                    "captions_per_image {} must be in 1..={} (top_k)",
                    cfg.captions_per_image, cfg.top_k
                ),
            });
        }
        if self.classes.len() != self.descriptions.len() {
            return Err(TaskError::Invalid {
                task: "gist".into(),
                reason: format!(
                    "{} class names but descriptions of {} classes",
                    self.classes.len(),
                    self.descriptions.len()
                ),
            });
        }
        let pixels = shots.require_pixels("gist")?;
        let inner = self.model.valid();
        let matched = match_descriptions(
            &inner,
            self.tokenizer,
            &shots.features,
            labels,
            self.descriptions,
            cfg.top_k,
            &self.device,
        )?;
        let mut pairs = Vec::new();
        for (i, m) in matched.iter().enumerate() {
            let l = labels[i];
            for &d in m.iter().take(cfg.captions_per_image) {
                pairs.push((
                    i,
                    format!("{}: {}", self.classes[l], self.descriptions[l][d]),
                ));
            }
        }
        let (model, losses) = fine_tune(
            self.model.clone(),
            self.tokenizer,
            pixels,
            &pairs,
            cfg,
            &self.device,
        )?;
        Ok(GistFit {
            matched,
            model: model.valid(),
            losses,
        })
    }
}

/// What classification keeps of a GIST-tuned model: its image tower and projection, under the
/// checkpoint's names (`vision_model.*`, `visual_projection.*`).
#[derive(Module, Debug)]
pub struct GistTower<B: Backend> {
    /// The fine-tuned image tower.
    pub vision_model: Vit<B>,
    /// The fine-tuned projection into the joint space (none when the tower has none).
    pub visual_projection: Option<Linear<B>>,
}

impl<B: Backend> GistTower<B> {
    /// The image side of `model`.
    pub fn of(model: &ClipModel<B>) -> Self {
        Self {
            vision_model: model.vision_model.clone(),
            visual_projection: model.visual_projection.clone(),
        }
    }

    /// Normalised image embeddings, as [`ClipModel::encode_image`] computes them.
    pub fn embed(&self, pixels: &Pixels, device: &B::Device) -> Features {
        pixels.embed_with(device, &|x| {
            let pooled = self.vision_model.forward(x).pooler_output;
            match &self.visual_projection {
                Some(p) => p.forward(pooled),
                None => pooled,
            }
        })
    }
}

impl<B: Backend> GistFit<B> {
    /// The linear probe on the fine-tuned image features of the shots, applied to `test`:
    /// predicted labels of every test image.
    pub fn classify(
        &self,
        shots: &Pixels,
        labels: &[usize],
        classes: usize,
        test: &Pixels,
        lambda: f64,
        device: &B::Device,
    ) -> Result<Vec<usize>> {
        let tower = GistTower::of(&self.model);
        let probe = fit_probe::<B>(
            &tower.embed(shots, device),
            labels,
            classes,
            lambda,
            100,
            device,
        )?;
        Ok(probe.predict(&tower.embed(test, device), device))
    }
}

/// Contrastive fine-tuning of every parameter on (image index into `pixels`, text) pairs:
/// CLIP's symmetric loss over shuffled batches with the model's own logit scale, Adam as
/// configured; returns the model and each epoch's mean loss. Two pairs of one image in a batch
/// are each other's negatives, as in the code.
pub fn fine_tune<B: AutodiffBackend>(
    model: ClipModel<B>,
    tokenizer: &dyn Tokenizer,
    pixels: &Pixels,
    pairs: &[(usize, String)],
    cfg: &GistConfig,
    device: &B::Device,
) -> Result<(ClipModel<B>, Vec<f64>)> {
    let bad = |reason: String| {
        Err(TaskError::Invalid {
            task: "gist fine-tuning".into(),
            reason,
        })
    };
    if pairs.len() < 2 || cfg.batch_size < 2 || cfg.epochs == 0 {
        return bad(format!(
            "{} pairs, batch size {}, {} epochs: need 2 pairs, batches of at least 2 and an epoch",
            pairs.len(),
            cfg.batch_size,
            cfg.epochs
        ));
    }
    let lr_ok = cfg.lr.is_finite() && cfg.lr > 0.0;
    let decay_ok = cfg.weight_decay.is_finite() && cfg.weight_decay >= 0.0;
    if !lr_ok || !decay_ok {
        return bad(format!(
            "lr {} must be > 0 and weight_decay {} ≥ 0",
            cfg.lr, cfg.weight_decay
        ));
    }
    if let Some((i, _)) = pairs.iter().find(|(i, _)| *i >= pixels.rows) {
        return bad(format!("a pair names image {i} of {}", pixels.rows));
    }
    let mut optim = AdamConfig::new()
        .with_beta_1(cfg.beta_1)
        .with_beta_2(cfg.beta_2)
        .with_epsilon(cfg.epsilon)
        .with_weight_decay(Some(WeightDecayConfig::new(cfg.weight_decay as f32)))
        .init::<B, ClipModel<B>>();
    let mut rng = Rng::new(cfg.seed);
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    let (mut model, mut losses, mut step) = (model, Vec::new(), 0u64);
    for _ in 0..cfg.epochs {
        rng.shuffle(&mut order);
        let (mut sum, mut seen) = (0.0, 0);
        for batch in order.chunks(cfg.batch_size) {
            // A lone last pair has no negative: the loss would be 0.
            if batch.len() < 2 {
                continue;
            }
            let idx: Vec<usize> = batch.iter().map(|&p| pairs[p].0).collect();
            let mut images = pixels.select(&idx);
            if let Some(aug) = &cfg.augment {
                images = images.augmented(aug, 1, cfg.seed ^ (step << 20))?;
            }
            let texts: Vec<&str> = batch.iter().map(|&p| pairs[p].1.as_str()).collect();
            let (ids, mask) = tokenizer
                .encode_batch(&texts)
                .map_err(|e| TaskError::Invalid {
                    task: "gist fine-tuning".into(),
                    reason: e.to_string(),
                })?
                .to_tensors::<B>(device);
            let image = normalize(model.encode_image(images.to_tensor::<B>(0..idx.len(), device)));
            let text = normalize(model.encode_text(ids, model.text_model.causal.then_some(mask)));
            let loss: Tensor<B, 1> = clip_loss(image, text, model.logit_scale.val());
            let value = loss.clone().into_scalar().elem::<f64>();
            if !value.is_finite() {
                return bad(format!("the loss became {value} at step {step}"));
            }
            sum += value * batch.len() as f64;
            seen += batch.len();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(cfg.lr, model, grads);
            step += 1;
        }
        losses.push(sum / seen.max(1) as f64);
    }
    Ok((model, losses))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fewshot::testing::tiny_clip;
    use vlp_core::backend::default_device;

    const WORDS: [&str; 8] = ["a", "red", "blue", "green", "circle", "star", ":", "."];

    fn descriptions() -> Vec<Vec<String>> {
        vec![
            vec![
                "a red circle.".into(),
                "a blue circle.".into(),
                "a star.".into(),
            ],
            vec!["a green star.".into(), "a red star.".into()],
        ]
    }

    #[test]
    fn matching_ranks_only_the_images_own_class_descriptions_by_cosine() {
        let dev = default_device();
        let (model, tok) = tiny_clip(&WORDS, 1, 5);
        let model = model.valid();
        let d = descriptions();
        let own: Vec<Features> = d
            .iter()
            .map(|l| {
                let r: Vec<&str> = l.iter().map(String::as_str).collect();
                embed_texts(&model, &tok, &r, 8, &dev).unwrap()
            })
            .collect();
        // "Images" that are exactly a description's embedding: each must find that one first.
        // Image 2 is class 1's "a red star." but labelled class 0: only class 0's list counts.
        let mut images = Features::default();
        for (c, j) in [(0, 1), (1, 0), (1, 1), (0, 2)] {
            images.extend(Features {
                data: own[c].row(j).to_vec(),
                rows: 1,
                dim: own[c].dim,
            });
        }
        let labels = [0, 1, 0, 0];
        let m = match_descriptions(&model, &tok, &images, &labels, &d, 2, &dev).unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m[0][0], 1);
        assert_eq!(m[1][0], 0);
        assert_eq!(m[3][0], 2);
        // The brute-force ranking among class 0 for image 2, and top_k rows everywhere.
        let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let mut want: Vec<usize> = (0..3).collect();
        want.sort_by(|&a, &b| {
            cos(images.row(2), own[0].row(b)).total_cmp(&cos(images.row(2), own[0].row(a)))
        });
        assert_eq!(m[2], want[..2]);
        assert!(m.iter().all(|r| r.len() == 2));
        // Class 1 has two descriptions: top_k 5 keeps both, not more.
        let m = match_descriptions(&model, &tok, &images, &labels, &d, 5, &dev).unwrap();
        assert_eq!(m[1].len(), 2);
        assert_eq!(m[0].len(), 3);
    }

    #[test]
    fn matching_names_bad_labels_empty_classes_and_zero_top_k() {
        let dev = default_device();
        let (model, tok) = tiny_clip(&WORDS, 1, 5);
        let model = model.valid();
        let images = Features {
            data: vec![0.5; 12],
            rows: 2,
            dim: 6,
        };
        let e = match_descriptions(&model, &tok, &images, &[0, 2], &descriptions(), 1, &dev)
            .unwrap_err()
            .to_string();
        assert!(e.contains("image 1 has label 2"), "{e}");
        let empty = vec![descriptions()[0].clone(), Vec::new()];
        let e = match_descriptions(&model, &tok, &images, &[0, 1], &empty, 1, &dev)
            .unwrap_err()
            .to_string();
        assert!(e.contains("class 1 has images but no description"), "{e}");
        let e = match_descriptions(&model, &tok, &images, &[0, 0], &descriptions(), 0, &dev)
            .unwrap_err()
            .to_string();
        assert!(e.contains("top_k is 0"), "{e}");
    }

    fn pixels(rows: usize) -> Pixels {
        crate::fewshot::testing::pattern_pixels(rows, 53)
    }

    #[test]
    fn fine_tuning_moves_both_towers_and_lowers_the_contrastive_loss() {
        let dev = default_device();
        let (model, tok) = tiny_clip(&WORDS, 1, 6);
        let px = pixels(4);
        let pairs: Vec<(usize, String)> = [
            "a red circle.",
            "a blue star.",
            "a green circle.",
            "a star.",
        ]
        .iter()
        .enumerate()
        .map(|(i, t)| (i, t.to_string()))
        .collect();
        let cfg = GistConfig::new()
            .with_lr(1e-2)
            .with_epochs(30)
            .with_batch_size(4)
            .with_weight_decay(0.0);
        let (tuned, losses) = fine_tune(model.clone(), &tok, &px, &pairs, &cfg, &dev).unwrap();
        assert_eq!(losses.len(), 30);
        assert!(losses[29] < 0.5 * losses[0], "{losses:?}");
        let (before, after) = (model.valid(), tuned.valid());
        let gap = |a: &Features, b: &Features| {
            a.data
                .iter()
                .zip(&b.data)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max)
        };
        let image_gap = gap(&px.embed(&before, &dev), &px.embed(&after, &dev));
        let t = ["a red circle."];
        let text_gap = gap(
            &embed_texts(&before, &tok, &t, 1, &dev).unwrap(),
            &embed_texts(&after, &tok, &t, 1, &dev).unwrap(),
        );
        assert!(
            image_gap > 1e-3 && text_gap > 1e-3,
            "{image_gap} {text_gap}"
        );
        let e = fine_tune(model.clone(), &tok, &px, &pairs[..1], &cfg, &dev)
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 pairs"), "{e}");
        let bad = vec![(0, "a star.".to_string()), (4, "a star.".to_string())];
        let e = fine_tune(model.clone(), &tok, &px, &bad, &cfg, &dev)
            .unwrap_err()
            .to_string();
        assert!(e.contains("image 4 of 4"), "{e}");
        let e = fine_tune(model, &tok, &px, &pairs, &cfg.clone().with_lr(-1e-3), &dev)
            .unwrap_err()
            .to_string();
        assert!(e.contains("lr -0.001 must be > 0"), "{e}");
    }

    #[test]
    fn fit_refuses_more_captions_than_matches_mismatched_classes_and_missing_pixels() {
        let dev = default_device();
        let (model, tok) = tiny_clip(&WORDS, 1, 6);
        let d = descriptions();
        let classes: Vec<String> = vec!["circle".into(), "star".into()];
        let px = pixels(2);
        let shots = ImageRows {
            features: px.embed(&model.valid(), &dev),
            pixels: Some(px),
        };
        let gist = |config: GistConfig, classes: &'static [&'static str]| {
            let names: Vec<String> = classes.iter().map(|c| c.to_string()).collect();
            let g = Gist {
                model: &model,
                tokenizer: &tok,
                classes: &names,
                descriptions: &d,
                config,
                device: dev,
            };
            g.fit(&shots, &[0, 1]).map(|_| ()).unwrap_err().to_string()
        };
        let e = gist(GistConfig::new().with_top_k(2), &["circle", "star"]);
        assert!(e.contains("captions_per_image 4 must be in 1..=2"), "{e}");
        let e = gist(GistConfig::new(), &["circle"]);
        assert!(
            e.contains("1 class names but descriptions of 2 classes"),
            "{e}"
        );
        let no_pixels = ImageRows {
            features: shots.features.clone(),
            pixels: None,
        };
        let g = Gist {
            model: &model,
            tokenizer: &tok,
            classes: &classes,
            descriptions: &d,
            config: GistConfig::new().with_epochs(1),
            device: dev,
        };
        assert!(g.fit(&no_pixels, &[0, 1]).is_err());
    }
}
