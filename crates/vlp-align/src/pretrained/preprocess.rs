//! The image pipeline a checkpoint expects, as its config files describe it.

use serde::{Deserialize, Serialize};

use super::json::{FieldResult, Fields};

/// How images must be prepared for a model: what open_clip's `preprocess_cfg` and transformers'
/// `preprocessor_config.json` say. `vlp-data` turns this into an actual pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreprocessConfig {
    /// Output side in pixels.
    pub image_size: usize,
    /// Per-channel mean subtracted after scaling to [0, 1].
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by.
    pub std: [f32; 3],
    /// Resampling filter: `bicubic` or `bilinear`.
    pub interpolation: String,
    /// `shortest` (resize the shorter side, centre-crop: CLIP) or `squash` (resize to a square: SigLIP).
    pub resize_mode: String,
}

/// OpenAI CLIP's normalisation statistics.
#[allow(clippy::excessive_precision)] // OpenAI's published digits
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI CLIP's normalisation statistics.
#[allow(clippy::excessive_precision)] // OpenAI's published digits
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

impl PreprocessConfig {
    /// CLIP's pipeline at `size`: shortest side, bicubic, centre crop, CLIP statistics.
    pub fn clip(size: usize) -> Self {
        Self {
            image_size: size,
            mean: CLIP_MEAN,
            std: CLIP_STD,
            interpolation: "bicubic".into(),
            resize_mode: "shortest".into(),
        }
    }

    /// SigLIP's pipeline at `size`: squash to a square, bicubic, mean = std = 0.5.
    pub fn siglip(size: usize) -> Self {
        Self {
            image_size: size,
            mean: [0.5; 3],
            std: [0.5; 3],
            interpolation: "bicubic".into(),
            resize_mode: "squash".into(),
        }
    }

    fn triple(f: &Fields, key: &str, default: [f32; 3]) -> FieldResult<[f32; 3]> {
        match f.get(key) {
            None => Ok(default),
            Some(v) => {
                let a: Vec<f32> = v
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_f64().map(|x| x as f32))
                            .collect()
                    })
                    .unwrap_or_default();
                let ok: Option<[f32; 3]> = a.try_into().ok();
                ok.ok_or_else(|| {
                    format!("field `{}.{key}` must be three numbers, got {v}", f.prefix)
                })
            }
        }
    }

    /// transformers' `preprocessor_config.json` for this pipeline (`CLIPImageProcessor` for the
    /// shortest-side style, `SiglipImageProcessor` for squash).
    pub fn to_hf_json(&self) -> serde_json::Value {
        let resample = if self.interpolation == "bilinear" {
            2
        } else {
            3
        };
        if self.resize_mode == "squash" {
            serde_json::json!({
                "image_processor_type": "SiglipImageProcessor",
                "do_resize": true, "size": {"height": self.image_size, "width": self.image_size},
                "resample": resample, "do_rescale": true, "rescale_factor": 1.0 / 255.0,
                "do_normalize": true, "image_mean": self.mean, "image_std": self.std,
            })
        } else {
            serde_json::json!({
                "image_processor_type": "CLIPImageProcessor",
                "do_resize": true, "size": {"shortest_edge": self.image_size},
                "do_center_crop": true, "crop_size": {"height": self.image_size, "width": self.image_size},
                "resample": resample, "do_rescale": true, "rescale_factor": 1.0 / 255.0,
                "do_normalize": true, "image_mean": self.mean, "image_std": self.std,
                "do_convert_rgb": true,
            })
        }
    }

    pub(crate) fn from_open_clip(f: &Fields, image_size: usize) -> FieldResult<Self> {
        let interpolation = f.str_or("interpolation", "bicubic")?.to_string();
        if !matches!(interpolation.as_str(), "bicubic" | "bilinear") {
            return Err(format!(
                "field `{}.interpolation` = \"{interpolation}\" is not supported (bicubic, bilinear)",
                f.prefix
            ));
        }
        let resize_mode = f.str_or("resize_mode", "shortest")?.to_string();
        if !matches!(resize_mode.as_str(), "shortest" | "squash") {
            return Err(format!(
                "field `{}.resize_mode` = \"{resize_mode}\" is not supported (shortest, squash)",
                f.prefix
            ));
        }
        Ok(Self {
            image_size: f.square_or("size", image_size)?,
            mean: Self::triple(f, "mean", CLIP_MEAN)?,
            std: Self::triple(f, "std", CLIP_STD)?,
            interpolation,
            resize_mode,
        })
    }

    /// From transformers' `preprocessor_config.json` (`CLIPImageProcessor`, `SiglipImageProcessor`).
    pub(crate) fn from_hf(f: &Fields, image_size: usize) -> FieldResult<Self> {
        let size = f.object("size")?;
        let shortest = size.get("shortest_edge").is_some();
        let side = if shortest {
            size.usize_or("shortest_edge", image_size)?
        } else {
            size.usize_or("height", image_size)?
        };
        // PIL's resample codes: 2 = bilinear, 3 = bicubic.
        let interpolation = match f.usize_or("resample", 3)? {
            2 => "bilinear",
            3 => "bicubic",
            other => {
                return Err(format!(
                    "field `resample` = {other} is not supported (2 = bilinear, 3 = bicubic)"
                ));
            }
        };
        Ok(Self {
            image_size: side,
            mean: Self::triple(f, "image_mean", CLIP_MEAN)?,
            std: Self::triple(f, "image_std", CLIP_STD)?,
            interpolation: interpolation.into(),
            resize_mode: if shortest { "shortest" } else { "squash" }.into(),
        })
    }
}
