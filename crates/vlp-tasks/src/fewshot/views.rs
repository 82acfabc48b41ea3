//! Augmented views of the shots: CoOp's and MaPLe's code train on a fresh RandomResizedCrop and
//! horizontal flip of every shot at every step (dassl's `random_resized_crop`, `random_flip`).
//! The harness's methods learn from fixed rows (frozen features, or pixels for MaPLe), so the
//! views are drawn up front instead: `views` augmented copies of each shot, their frozen features
//! recomputed, and the method trains on all of them (an epoch over `v` views is `v` of the code's
//! epochs, each seeing one random view per shot).
//!
//! The views are cut from the preprocessed pixels (the crop box is drawn on the
//! `image_size × image_size` input, not on the original photograph as torchvision does before
//! resizing), so only geometric augmentation applies: colour jitter, grayscale and blur need the
//! raw colours and are refused.

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use vlp_align::ClipModel;
use vlp_core::numerics::bicubic_resize;
use vlp_core::rng::Rng;
use vlp_data::augment::{AugmentConfig, draw};

use super::base_to_novel::{ImageRows, OpenClassifier, OpenVocabularyMethod, Pixels};
use crate::error::{Result, TaskError};

impl Pixels {
    /// `views` augmented copies of every image (crop and flip of `augment`, drawn from `seed`),
    /// view-major: rows `v·n .. (v+1)·n` are view `v` of images `0..n`.
    pub fn augmented(&self, augment: &AugmentConfig, views: usize, seed: u64) -> Result<Pixels> {
        let bad = |reason: String| {
            Err(TaskError::Invalid {
                task: "augmented views".into(),
                reason,
            })
        };
        augment.validate().map_err(|e| TaskError::Invalid {
            task: "augmented views".into(),
            reason: e.to_string(),
        })?;
        if augment.jitter_prob > 0.0 || augment.grayscale > 0.0 || augment.blur_prob > 0.0 {
            return bad(
                "colour jitter, grayscale and blur need the raw colours; views of preprocessed \
                 pixels take only the crop and the flip"
                    .into(),
            );
        }
        if views == 0 {
            return bad("0 views of each shot".into());
        }
        let s = self.image_size;
        let plane = s * s;
        let mut rng = Rng::new(seed);
        let mut data = Vec::with_capacity(views * self.data.len());
        for _ in 0..views {
            for i in 0..self.rows {
                let img = &self.data[i * 3 * plane..(i + 1) * 3 * plane];
                let p = draw(s as u32, s as u32, augment, &mut rng);
                let (x, y, w, h) = p.crop;
                let (x, y, w, h) = (x as usize, y as usize, w as usize, h as usize);
                let mut crop = Vec::with_capacity(3 * w * h);
                for c in 0..3 {
                    for r in y..y + h {
                        let row = c * plane + r * s;
                        crop.extend_from_slice(&img[row + x..row + x + w]);
                    }
                }
                let mut view = bicubic_resize(&crop, 3, (h, w), (s, s));
                if p.flip {
                    for row in view.chunks_mut(s) {
                        row.reverse();
                    }
                }
                data.extend(view);
            }
        }
        Ok(Pixels {
            data,
            rows: views * self.rows,
            image_size: s,
        })
    }
}

/// How many augmented views of each shot to train on, and their crop and flip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShotViews {
    /// The crop and flip (colour augmentations are refused).
    pub augment: AugmentConfig,
    /// Views per shot.
    pub views: usize,
}

impl ShotViews {
    /// The views of `shots` (which need pixels; `who` is named when they have none), their
    /// features under the frozen `model`, and each view's label.
    pub fn of<B: Backend>(
        &self,
        model: &ClipModel<B>,
        shots: &ImageRows,
        labels: &[usize],
        seed: u64,
        who: &str,
        device: &B::Device,
    ) -> Result<(ImageRows, Vec<usize>)> {
        let pixels = shots
            .require_pixels(who)?
            .augmented(&self.augment, self.views, seed)?;
        let features = pixels.embed(model, device);
        let labels = (0..self.views)
            .flat_map(|_| labels.iter().copied())
            .collect();
        Ok((
            ImageRows {
                features,
                pixels: Some(pixels),
            },
            labels,
        ))
    }
}

/// An [`OpenVocabularyMethod`] trained on augmented views of its shots instead of the shots:
/// the views' pixels, and their features under the frozen `model`, go to `method`, each with
/// its shot's label.
pub struct AugmentedShots<'a, B: Backend> {
    /// The method to train.
    pub method: &'a dyn OpenVocabularyMethod,
    /// The frozen model that encodes the views (the one `method` adapts).
    pub model: &'a ClipModel<B>,
    /// The views.
    pub views: ShotViews,
    /// Seed of the crops and flips.
    pub seed: u64,
    /// Device to encode on.
    pub device: B::Device,
}

impl<B: Backend> OpenVocabularyMethod for AugmentedShots<'_, B> {
    fn name(&self) -> String {
        self.method.name()
    }
    fn fit(
        &self,
        shots: &ImageRows,
        shot_labels: &[usize],
        classes: &[String],
    ) -> Result<Box<dyn OpenClassifier + '_>> {
        let (views, labels) = self.views.of(
            self.model,
            shots,
            shot_labels,
            self.seed,
            &self.method.name(),
            &self.device,
        )?;
        self.method.fit(&views, &labels, classes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::Features;
    use crate::fewshot::testing::tiny_clip;
    use burn::module::AutodiffModule;
    use std::cell::RefCell;
    use vlp_core::backend::{DefaultBackend, default_device};

    /// `rows` images of side `s` whose every value encodes (image, channel, row, column).
    fn ramp(rows: usize, s: usize) -> Pixels {
        let data = (0..rows * 3 * s * s).map(|v| v as f32).collect();
        Pixels {
            data,
            rows,
            image_size: s,
        }
    }

    fn whole(hflip: f32) -> AugmentConfig {
        AugmentConfig {
            scale: [1.0, 1.0],
            ratio: [1.0, 1.0],
            hflip,
            ..Default::default()
        }
    }

    #[test]
    fn whole_image_views_are_the_images_view_major_and_flips_mirror_rows() {
        let p = ramp(2, 6);
        let v = p.augmented(&whole(0.0), 3, 1).unwrap();
        assert_eq!((v.rows, v.image_size), (6, 6));
        for view in 0..3 {
            for i in 0..2 {
                let got = &v.data[(view * 2 + i) * 108..(view * 2 + i + 1) * 108];
                let want = &p.data[i * 108..(i + 1) * 108];
                let err = got
                    .iter()
                    .zip(want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(err < 1e-3, "view {view} of image {i}: {err}");
            }
        }
        let f = p.augmented(&whole(1.0), 1, 1).unwrap();
        for (got, want) in f.data.chunks(6).zip(p.data.chunks(6)) {
            let mirrored: Vec<f32> = want.iter().rev().copied().collect();
            let err = got
                .iter()
                .zip(&mirrored)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(err < 1e-3, "{got:?} vs {mirrored:?}");
        }
    }

    #[test]
    fn crops_are_seeded_and_upsample_a_part_of_the_image() {
        let p = ramp(3, 8);
        let cfg = AugmentConfig {
            scale: [0.25, 0.3],
            ..Default::default()
        };
        let a = p.augmented(&cfg, 2, 7).unwrap();
        assert_eq!(a, p.augmented(&cfg, 2, 7).unwrap());
        assert_ne!(a, p.augmented(&cfg, 2, 8).unwrap());
        // A quarter of the image spans about half the values of each row and column: the
        // view's range within a channel is far smaller than the image's.
        let span = |x: &[f32]| {
            x.iter().copied().fold(f32::MIN, f32::max) - x.iter().copied().fold(f32::MAX, f32::min)
        };
        for c in a.data.chunks(64) {
            assert!(span(c) < 0.8 * span(&p.data[..64]), "{}", span(c));
        }
    }

    #[test]
    fn colour_augmentations_and_zero_views_are_refused() {
        let p = ramp(1, 4);
        let jitter = AugmentConfig {
            jitter_prob: 0.5,
            ..Default::default()
        };
        let e = p.augmented(&jitter, 1, 0).unwrap_err().to_string();
        assert!(e.contains("colour jitter"), "{e}");
        let e = p.augmented(&whole(0.0), 0, 0).unwrap_err().to_string();
        assert!(e.contains("0 views"), "{e}");
    }

    /// Records what it was trained on.
    struct Recorder(RefCell<Option<(ImageRows, Vec<usize>)>>);

    struct Nothing;
    impl OpenClassifier for Nothing {
        fn scores(&self, images: &ImageRows, classes: &[String]) -> Result<Features> {
            Ok(Features {
                data: vec![0.0; images.len() * classes.len()],
                rows: images.len(),
                dim: classes.len(),
            })
        }
    }

    impl OpenVocabularyMethod for Recorder {
        fn name(&self) -> String {
            "recorder".into()
        }
        fn fit(
            &self,
            shots: &ImageRows,
            labels: &[usize],
            _: &[String],
        ) -> Result<Box<dyn OpenClassifier + '_>> {
            *self.0.borrow_mut() = Some((shots.clone(), labels.to_vec()));
            Ok(Box::new(Nothing))
        }
    }

    #[test]
    fn the_method_trains_on_every_view_with_its_frozen_features_and_label() {
        let dev = default_device();
        let (model, _) = tiny_clip(&["a"], 1, 3);
        let model = model.valid();
        let p = crate::fewshot::testing::pattern_pixels(2, 37);
        let shots = ImageRows {
            features: p.embed(&model, &dev),
            pixels: Some(p.clone()),
        };
        let rec = Recorder(RefCell::new(None));
        let cfg = AugmentConfig {
            scale: [0.5, 1.0],
            hflip: 0.5,
            ..Default::default()
        };
        let aug = AugmentedShots::<DefaultBackend> {
            method: &rec,
            model: &model,
            views: ShotViews {
                augment: cfg.clone(),
                views: 3,
            },
            seed: 4,
            device: dev,
        };
        aug.fit(&shots, &[1, 0], &["x".into(), "y".into()]).unwrap();
        let (got, labels) = rec.0.borrow_mut().take().unwrap();
        assert_eq!(labels, [1, 0, 1, 0, 1, 0]);
        let views = p.augmented(&cfg, 3, 4).unwrap();
        assert_eq!(got.pixels.as_ref(), Some(&views));
        assert_eq!(got.features, views.embed(&model, &dev));
        assert_ne!(
            got.features.row(0),
            shots.features.row(0),
            "views are not the images"
        );
        let none = ImageRows {
            features: shots.features.clone(),
            pixels: None,
        };
        assert!(aug.fit(&none, &[1, 0], &["x".into(), "y".into()]).is_err());
    }
}
