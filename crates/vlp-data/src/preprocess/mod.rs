//! Image decoding and preprocessing that match the reference implementations.
//!
//! CLIP style (`CLIPImageProcessor`, open_clip): resize the shorter side with Pillow's
//! antialiased filter, centre-crop to a square, scale to [0, 1], normalise. SigLIP style: resize
//! straight to the square. Resampling goes through `fast_image_resize`, whose convolution
//! follows Pillow's, so pixels agree with the Python pipelines to within a grey level.

mod decode;

pub use decode::{decode_image, load_image};

use fast_image_resize::images::Image;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// How the image is brought to a square.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// Shorter side to `size` keeping the aspect ratio, then a centre crop (CLIP).
    Shortest,
    /// Straight to `size × size`, aspect ratio not kept (SigLIP).
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

/// An image → tensor pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImagePipeline {
    /// Output side in pixels.
    pub size: usize,
    /// Shortest-side-and-crop or squash.
    pub resize_mode: ResizeMode,
    /// Resampling filter.
    pub interpolation: Interpolation,
    /// Per-channel mean subtracted after scaling to [0, 1].
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by.
    pub std: [f32; 3],
}

impl ImagePipeline {
    /// CLIP's pipeline (`CLIPImageProcessor`, open_clip's `image_transform`).
    pub fn clip(size: usize) -> Self {
        Self {
            size,
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
            resize_mode: ResizeMode::Shortest,
            interpolation: Interpolation::Bilinear,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        }
    }

    /// Resizes and crops to `size × size` RGB pixels (the uint8 image the model sees).
    pub fn resize_crop(&self, img: &RgbImage) -> RgbImage {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let s = self.size;
        let (rw, rh) = match self.resize_mode {
            ResizeMode::Squash => (s, s),
            // transformers' get_resize_output_image_size: the long side is int(s * long / short).
            ResizeMode::Shortest if w <= h => (s, ((s * h) as f64 / w as f64) as usize),
            ResizeMode::Shortest => (((s * w) as f64 / h as f64) as usize, s),
        };
        let (rw, rh) = (rw.max(1), rh.max(1));
        let resized = if (rw, rh) == (w, h) {
            img.clone()
        } else {
            resize(img, rw, rh, self.interpolation)
        };
        center_crop(&resized, s)
    }

    /// The normalised `[3, size, size]` tensor data (channel-major) of an RGB image.
    pub fn process(&self, img: &RgbImage) -> Vec<f32> {
        self.normalize(&self.resize_crop(img))
    }

    /// Scales an already `size × size` image to [0, 1] and normalises it, channel-major.
    pub fn normalize(&self, img: &RgbImage) -> Vec<f32> {
        let n = (img.width() * img.height()) as usize;
        let mut out = vec![0.0f32; 3 * n];
        for (i, p) in img.pixels().enumerate() {
            for c in 0..3 {
                out[c * n + i] = (p[c] as f32 / 255.0 - self.mean[c]) / self.std[c];
            }
        }
        out
    }

    /// Decodes and processes an encoded image; `name` is used in errors.
    pub fn process_bytes(&self, bytes: &[u8], name: &str) -> Result<Vec<f32>> {
        Ok(self.process(&decode_image(bytes, name)?))
    }

    /// Reads, decodes and processes an image file.
    pub fn load(&self, path: impl AsRef<std::path::Path>) -> Result<Vec<f32>> {
        Ok(self.process(&load_image(path)?))
    }

    /// Processes many files on all cores; each result stands alone, so one bad file does not
    /// sink the batch.
    pub fn load_batch<P: AsRef<std::path::Path> + Sync>(
        &self,
        paths: &[P],
    ) -> Vec<Result<Vec<f32>>> {
        paths.par_iter().map(|p| self.load(p)).collect()
    }
}

/// Centre crop to `s × s` (transformers' rounding: the top-left offset is floored); pads with
/// black when the image is smaller, as transformers does.
fn center_crop(img: &RgbImage, s: usize) -> RgbImage {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let (top, left) = ((h - s as i64).div_euclid(2), (w - s as i64).div_euclid(2));
    RgbImage::from_fn(s as u32, s as u32, |x, y| {
        let (sx, sy) = (left + x as i64, top + y as i64);
        if sx >= 0 && sy >= 0 && sx < w && sy < h {
            *img.get_pixel(sx as u32, sy as u32)
        } else {
            image::Rgb([0, 0, 0])
        }
    })
}

/// Pillow-compatible antialiased resize of an RGB image (public for augmentation).
pub fn resize_rgb(img: &RgbImage, w: usize, h: usize, interp: Interpolation) -> RgbImage {
    resize(img, w, h, interp)
}

/// Pillow-compatible antialiased resize of an RGB image.
///
/// Pillow resamples horizontally first and rounds to uint8 between the passes;
/// `fast_image_resize` does the vertical pass first for 8-bit images, which moves the
/// intermediate rounding and costs up to ~5 grey levels on sharp edges. Two single-axis resizes
/// restore Pillow's order (each uses the same Pillow-derived coefficients).
fn resize(img: &RgbImage, w: usize, h: usize, interp: Interpolation) -> RgbImage {
    let filter = match interp {
        Interpolation::Bicubic => FilterType::CatmullRom,
        Interpolation::Bilinear => FilterType::Bilinear,
    };
    let opts = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(filter));
    let mut resizer = Resizer::new();
    let mut pass = |src: Image<'static>, w: u32, h: u32| -> Image<'static> {
        if (src.width(), src.height()) == (w, h) {
            return src;
        }
        let mut dst = Image::new(w, h, PixelType::U8x3);
        resizer
            .resize(&src, &mut dst, &opts)
            .expect("same pixel type on both sides");
        dst
    };
    let src = Image::from_vec_u8(
        img.width(),
        img.height(),
        img.as_raw().clone(),
        PixelType::U8x3,
    )
    .expect("an RgbImage buffer is a valid U8x3 image");
    let wide = pass(src, w as u32, img.height());
    let out = pass(wide, w as u32, h as u32);
    RgbImage::from_raw(w as u32, h as u32, out.into_vec()).expect("buffer of the right size")
}

/// Clear error for a pipeline that cannot work.
pub fn validate(p: &ImagePipeline) -> Result<()> {
    if p.size == 0 {
        return Err(DataError::Config {
            field: "size".into(),
            reason: "must be positive".into(),
        });
    }
    if p.std.iter().any(|s| *s <= 0.0) {
        return Err(DataError::Config {
            field: "std".into(),
            reason: format!("{:?} has a non-positive entry", p.std),
        });
    }
    Ok(())
}
