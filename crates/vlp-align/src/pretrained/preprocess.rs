//! The image pipeline a checkpoint expects, read from (and written to) its config files into the
//! project's one pipeline spec, `vlp_core::preprocess::ImagePipeline`.

use serde_json::Value;
use vlp_core::preprocess::{CLIP_MEAN, CLIP_STD, ImagePipeline, Interpolation, ResizeMode};

use super::json::{FieldResult, Fields};

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
            let ok: Option<[f32; 3]> = a
                .try_into()
                .ok()
                .filter(|t: &[f32; 3]| t.iter().all(|x| x.is_finite()));
            ok.ok_or_else(|| {
                format!(
                    "field `{}` must be three finite numbers, got {v}",
                    if f.prefix.is_empty() {
                        key.to_string()
                    } else {
                        format!("{}.{key}", f.prefix)
                    }
                )
            })
        }
    }
}

/// A transformers size field: an integer (shortest edge for `CLIPImageProcessor`, the square's
/// side otherwise), `{"shortest_edge": n}` or `{"height": n, "width": n}`. Returns the side and
/// whether it is a shortest edge.
fn size_field(
    f: &Fields,
    key: &str,
    default: usize,
    int_is_shortest: bool,
) -> FieldResult<Option<(usize, bool)>> {
    let name = || {
        if f.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", f.prefix)
        }
    };
    match f.get(key) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(|n| Some((n as usize, int_is_shortest)))
            .ok_or_else(|| format!("field `{}` must be a positive integer, got {n}", name())),
        Some(Value::Object(_)) => {
            let o = f.object(key)?;
            if o.get("shortest_edge").is_some() {
                return Ok(Some((o.usize_or("shortest_edge", default)?, true)));
            }
            let h = o.usize_or("height", default)?;
            let w = o.usize_or("width", h)?;
            if h != w {
                return Err(format!(
                    "field `{}` is {h}x{w}; only square images are supported",
                    name()
                ));
            }
            Ok(Some((h, false)))
        }
        Some(v) => Err(format!(
            "field `{}` must be an integer or an object, got {v}",
            name()
        )),
    }
}

/// transformers' `preprocessor_config.json` for `p` (`CLIPImageProcessor` for the shortest-side
/// style, `SiglipImageProcessor` for squash).
pub fn to_hf_json(p: &ImagePipeline) -> Value {
    let resample = match p.interpolation {
        Interpolation::Bilinear => 2,
        Interpolation::Bicubic => 3,
    };
    match p.resize_mode {
        ResizeMode::Squash => serde_json::json!({
            "image_processor_type": "SiglipImageProcessor",
            "do_resize": true, "size": {"height": p.resize, "width": p.resize},
            "do_center_crop": p.resize != p.size,
            "crop_size": {"height": p.size, "width": p.size},
            "resample": resample, "do_rescale": true, "rescale_factor": 1.0 / 255.0,
            "do_normalize": true, "image_mean": p.mean, "image_std": p.std,
        }),
        ResizeMode::Shortest => serde_json::json!({
            "image_processor_type": "CLIPImageProcessor",
            "do_resize": true, "size": {"shortest_edge": p.resize},
            "do_center_crop": true, "crop_size": {"height": p.size, "width": p.size},
            "resample": resample, "do_rescale": true, "rescale_factor": 1.0 / 255.0,
            "do_normalize": true, "image_mean": p.mean, "image_std": p.std,
            "do_convert_rgb": true,
        }),
    }
}

/// From open_clip's `preprocess_cfg`.
pub(crate) fn from_open_clip(f: &Fields, image_size: usize) -> FieldResult<ImagePipeline> {
    let interpolation = match f.str_or("interpolation", "bicubic")? {
        "bicubic" => Interpolation::Bicubic,
        "bilinear" => Interpolation::Bilinear,
        other => {
            return Err(format!(
                "field `{}.interpolation` = \"{other}\" is not supported (bicubic, bilinear)",
                f.prefix
            ));
        }
    };
    let resize_mode = match f.str_or("resize_mode", "shortest")? {
        "shortest" => ResizeMode::Shortest,
        "squash" => ResizeMode::Squash,
        other => {
            return Err(format!(
                "field `{}.resize_mode` = \"{other}\" is not supported (shortest, squash)",
                f.prefix
            ));
        }
    };
    let size = f.square_or("size", image_size)?;
    let p = ImagePipeline {
        size,
        resize: size,
        resize_mode,
        interpolation,
        mean: triple(f, "mean", CLIP_MEAN)?,
        std: triple(f, "std", CLIP_STD)?,
    };
    p.validate().map_err(|e| format!("`{}`: {e}", f.prefix))?;
    Ok(p)
}

/// From transformers' `preprocessor_config.json` (`CLIPImageProcessor`,
/// `SiglipImageProcessor`): `size` as an integer or either dict form, `crop_size` and
/// `do_center_crop`, `resample`, the statistics.
pub(crate) fn from_hf(f: &Fields, image_size: usize) -> FieldResult<ImagePipeline> {
    let siglip = f.str_or("image_processor_type", "")?.starts_with("Siglip");
    // CLIPImageProcessor reads an integer size as the shortest edge; SigLIP's as the square.
    let (resize, shortest) =
        size_field(f, "size", image_size, !siglip)?.unwrap_or((image_size, !siglip));
    let do_crop = f.bool_or("do_center_crop", shortest)?;
    let crop = if do_crop {
        size_field(f, "crop_size", image_size, false)?
            .map(|(s, _)| s)
            .unwrap_or(resize)
    } else {
        if shortest {
            return Err(
                "`do_center_crop` = false with a shortest-edge resize gives non-square images, which vlp does not support"
                    .into(),
            );
        }
        resize
    };
    // PIL's resample codes: 2 = bilinear, 3 = bicubic.
    let interpolation = match f.usize_or("resample", 3)? {
        2 => Interpolation::Bilinear,
        3 => Interpolation::Bicubic,
        other => {
            return Err(format!(
                "field `resample` = {other} is not supported (2 = bilinear, 3 = bicubic)"
            ));
        }
    };
    let p = ImagePipeline {
        size: crop,
        resize,
        resize_mode: if shortest {
            ResizeMode::Shortest
        } else {
            ResizeMode::Squash
        },
        interpolation,
        mean: triple(f, "image_mean", CLIP_MEAN)?,
        std: triple(f, "image_std", CLIP_STD)?,
    };
    p.validate().map_err(|e| e.to_string())?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hf(v: Value) -> FieldResult<ImagePipeline> {
        let o = v.as_object().unwrap().clone();
        from_hf(&Fields::new(&o, ""), 224)
    }

    #[test]
    fn every_form_transformers_accepts() {
        // The older integer form.
        let p = hf(serde_json::json!({"size": 32, "crop_size": 32})).unwrap();
        assert_eq!(
            (p.resize, p.size, p.resize_mode),
            (32, 32, ResizeMode::Shortest)
        );
        // Resize 36, crop 32: both kept.
        let p = hf(serde_json::json!({"size": {"shortest_edge": 36}, "crop_size": {"height": 32, "width": 32}})).unwrap();
        assert_eq!((p.resize, p.size), (36, 32));
        let p = hf(serde_json::json!({"size": 36, "crop_size": 32})).unwrap();
        assert_eq!((p.resize, p.size), (36, 32));
        // SigLIP: a square, no crop.
        let p = hf(serde_json::json!({"image_processor_type": "SiglipImageProcessor", "size": {"height": 64, "width": 64}})).unwrap();
        assert_eq!(
            (p.resize, p.size, p.resize_mode),
            (64, 64, ResizeMode::Squash)
        );
        let p = hf(serde_json::json!({"image_processor_type": "SiglipImageProcessor", "size": 48}))
            .unwrap();
        assert_eq!((p.resize, p.size), (48, 48));
        // Round trip through the written form.
        for p in [
            ImagePipeline::clip(32),
            ImagePipeline::siglip(16),
            ImagePipeline {
                resize: 40,
                ..ImagePipeline::clip(32)
            },
        ] {
            assert_eq!(hf(to_hf_json(&p)).unwrap(), p);
        }
    }

    #[test]
    fn unsupported_forms_are_named() {
        let e = hf(serde_json::json!({"size": {"height": 32, "width": 48}})).unwrap_err();
        assert!(e.contains("32x48"), "{e}");
        let e = hf(serde_json::json!({"size": "big"})).unwrap_err();
        assert!(e.contains("size"), "{e}");
        let e = hf(serde_json::json!({"size": 100000})).unwrap_err();
        assert!(e.contains("8192"), "{e}");
        let e = hf(serde_json::json!({"image_std": [0.5, 0.0, 0.5]})).unwrap_err();
        assert!(e.contains("std"), "{e}");
    }
}
