//! What an image must go through before a model sees it: the one description of a preprocessing
//! pipeline in vlp. Checkpoint configs are read into it (`vlp-align`), `vlp-data` executes it.
//!
//! The steps, as transformers' `CLIPImageProcessor` and open_clip's transforms run them: resize
//! (the shorter side to `resize` keeping the aspect ratio, or the whole image to a
//! `resize × resize` square), centre-crop to `size × size` (padding with black when the resized
//! image is smaller), scale to [0, 1], subtract `mean` and divide by `std` per channel.

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};

/// How the image is resized before the crop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// Shorter side to `resize`, aspect ratio kept (CLIP).
    Shortest,
    /// Straight to `resize × resize`, aspect ratio not kept (SigLIP).
    Squash,
}

/// Resampling filter, as Pillow implements it (antialiased when shrinking).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interpolation {
    /// Pillow's `BICUBIC` (a = -0.5).
    Bicubic,
    /// Pillow's `BILINEAR`.
    Bilinear,
}

/// OpenAI CLIP's normalisation statistics.
#[allow(clippy::excessive_precision)] // OpenAI's published digits
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI CLIP's normalisation statistics.
#[allow(clippy::excessive_precision)] // OpenAI's published digits
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];
/// ImageNet statistics (torchvision).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet statistics (torchvision).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Largest side a pipeline may resize to or crop at: a bound on the memory one image can claim.
pub const MAX_SIDE: usize = 8192;

/// An image → tensor pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImagePipeline {
    /// Output side in pixels (the centre crop).
    pub size: usize,
    /// Target of the resize: the shorter side (`Shortest`) or the square's side (`Squash`).
    /// Equal to `size` in the CLIP and SigLIP pipelines.
    pub resize: usize,
    /// Shortest-side or squash.
    pub resize_mode: ResizeMode,
    /// Resampling filter.
    pub interpolation: Interpolation,
    /// Per-channel mean subtracted after scaling to [0, 1].
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by.
    pub std: [f32; 3],
}

impl ImagePipeline {
    /// CLIP's pipeline (`CLIPImageProcessor`, open_clip's `image_transform`): shortest side,
    /// bicubic, centre crop, CLIP statistics.
    pub fn clip(size: usize) -> Self {
        Self {
            size,
            resize: size,
            resize_mode: ResizeMode::Shortest,
            interpolation: Interpolation::Bicubic,
            mean: CLIP_MEAN,
            std: CLIP_STD,
        }
    }

    /// SigLIP's pipeline: squash to the square, bicubic, mean = std = 0.5.
    pub fn siglip(size: usize) -> Self {
        Self {
            size,
            resize: size,
            resize_mode: ResizeMode::Squash,
            interpolation: Interpolation::Bicubic,
            mean: [0.5; 3],
            std: [0.5; 3],
        }
    }

    /// The torchvision ImageNet evaluation pipeline (shortest side, centre crop, bilinear).
    pub fn imagenet(size: usize) -> Self {
        Self {
            size,
            resize: size,
            resize_mode: ResizeMode::Shortest,
            interpolation: Interpolation::Bilinear,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        }
    }

    /// Checks that the pipeline can run: sides in `1..=MAX_SIDE`, finite statistics, positive
    /// standard deviations. The message names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: String| {
            Err(CoreError::Config {
                field: field.into(),
                reason,
            })
        };
        for (f, v) in [("size", self.size), ("resize", self.resize)] {
            if v == 0 || v > MAX_SIDE {
                return bad(f, format!("{v} is not in 1..={MAX_SIDE}"));
            }
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            return bad("mean", format!("{:?} is not finite", self.mean));
        }
        if self.std.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return bad(
                "std",
                format!("{:?} has a non-positive or non-finite entry", self.std),
            );
        }
        Ok(())
    }

    /// Checks the pipeline against the side a model expects.
    pub fn check_model_size(&self, image_size: usize) -> Result<()> {
        self.validate()?;
        if self.size != image_size {
            return Err(CoreError::Config {
                field: "crop_size".into(),
                reason: format!(
                    "the pipeline outputs {0}x{0} images but the model expects {1}x{1}",
                    self.size, image_size
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_field() {
        assert!(ImagePipeline::clip(224).validate().is_ok());
        let mut p = ImagePipeline::clip(224);
        p.resize = MAX_SIDE + 1;
        assert!(p.validate().unwrap_err().to_string().contains("resize"));
        let mut p = ImagePipeline::siglip(16);
        p.std[1] = 0.0;
        assert!(p.validate().unwrap_err().to_string().contains("std"));
        p.std[1] = f32::NAN;
        assert!(p.validate().is_err());
        let e = ImagePipeline::clip(36)
            .check_model_size(32)
            .unwrap_err()
            .to_string();
        assert!(e.contains("36x36") && e.contains("32x32"), "{e}");
    }
}
