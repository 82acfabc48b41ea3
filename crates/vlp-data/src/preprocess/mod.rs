//! Image decoding and preprocessing that match the reference implementations.
//!
//! The pipeline itself is described by `vlp_core::preprocess::ImagePipeline` (one spec for the
//! whole project); [`Preprocess`] runs it.
//!
//! CLIP style (`CLIPImageProcessor`, open_clip): resize the shorter side with Pillow's
//! antialiased filter, centre-crop to a square, scale to [0, 1], normalise. SigLIP style: resize
//! straight to the square. Resampling goes through `fast_image_resize`, whose convolution
//! follows Pillow's, so pixels agree with the Python pipelines to within a grey level.

mod decode;

pub use decode::{
    MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, decode_image, decode_image_with_limit, load_image,
};

use fast_image_resize::images::{TypedImage, TypedImageRef};
use fast_image_resize::pixels::U8x3;
use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;
use rayon::prelude::*;

use crate::error::{DataError, Result};

pub use vlp_core::preprocess::{
    CLIP_MEAN, CLIP_STD, IMAGENET_MEAN, IMAGENET_STD, ImagePipeline, Interpolation, MAX_SIDE,
    ResizeMode,
};

/// Running an [`ImagePipeline`] (the spec lives in `vlp-core`; this is its execution).
pub trait Preprocess {
    /// Resizes and crops to `size × size` RGB pixels (the uint8 image the model sees).
    fn resize_crop(&self, img: &RgbImage) -> RgbImage;
    /// Where the pixels of [`resize_crop`](Self::resize_crop) come from in a `w × h` image.
    fn geometry(&self, w: u32, h: u32) -> crate::sample::Geometry;
    /// The normalised `[3, size, size]` tensor data (channel-major) of an RGB image.
    fn process(&self, img: &RgbImage) -> Vec<f32>;
    /// Scales an already `size × size` image to [0, 1] and normalises it, channel-major.
    fn normalize(&self, img: &RgbImage) -> Vec<f32>;
    /// Decodes and processes an encoded image; `name` is used in errors.
    fn process_bytes(&self, bytes: &[u8], name: &str) -> Result<Vec<f32>>;
    /// Reads, decodes and processes an image file.
    fn load(&self, path: impl AsRef<std::path::Path>) -> Result<Vec<f32>>;
    /// Processes many files on all cores; each result stands alone, so one bad file does not
    /// sink the batch.
    fn load_batch<P: AsRef<std::path::Path> + Sync>(&self, paths: &[P]) -> Vec<Result<Vec<f32>>>;
}

/// The size a `w × h` image is resized to before the centre crop.
fn resized(p: &ImagePipeline, w: usize, h: usize) -> (usize, usize) {
    let s = p.resize;
    let (rw, rh) = match p.resize_mode {
        ResizeMode::Squash => (s, s),
        // transformers' get_resize_output_image_size: the long side is int(s * long / short).
        ResizeMode::Shortest if w <= h => (s, ((s * h) as f64 / w as f64) as usize),
        ResizeMode::Shortest => (((s * w) as f64 / h as f64) as usize, s),
    };
    (rw.clamp(1, MAX_SIDE), rh.clamp(1, MAX_SIDE))
}

impl Preprocess for ImagePipeline {
    fn resize_crop(&self, img: &RgbImage) -> RgbImage {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let (rw, rh) = resized(self, w, h);
        let resized = if (rw, rh) == (w, h) {
            img.clone()
        } else {
            resize(img, rw, rh, self.interpolation)
        };
        center_crop(&resized, self.size)
    }

    fn geometry(&self, w: u32, h: u32) -> crate::sample::Geometry {
        let (w, h) = (w as usize, h as usize);
        let (rw, rh) = resized(self, w, h);
        let s = self.size;
        let (sx, sy) = (rw as f32 / w as f32, rh as f32 / h as f32);
        let top = (rh as i64 - s as i64).div_euclid(2);
        let left = (rw as i64 - s as i64).div_euclid(2);
        crate::sample::Geometry {
            x0: left as f32 / sx,
            y0: top as f32 / sy,
            sx,
            sy,
            flip: false,
            size: s,
        }
    }

    fn process(&self, img: &RgbImage) -> Vec<f32> {
        self.normalize(&self.resize_crop(img))
    }

    fn normalize(&self, img: &RgbImage) -> Vec<f32> {
        let n = (img.width() * img.height()) as usize;
        let mut out = vec![0.0f32; 3 * n];
        for (i, p) in img.pixels().enumerate() {
            for c in 0..3 {
                out[c * n + i] = (p[c] as f32 / 255.0 - self.mean[c]) / self.std[c];
            }
        }
        out
    }

    fn process_bytes(&self, bytes: &[u8], name: &str) -> Result<Vec<f32>> {
        Ok(self.process(&decode_image(bytes, name)?))
    }

    fn load(&self, path: impl AsRef<std::path::Path>) -> Result<Vec<f32>> {
        Ok(self.process(&load_image(path)?))
    }

    fn load_batch<P: AsRef<std::path::Path> + Sync>(&self, paths: &[P]) -> Vec<Result<Vec<f32>>> {
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
    // `resize_typed` for the one pixel type we resize: `Resizer::resize` is generic in the image
    // types and instantiates the convolutions of every pixel type in the calling crate (4.8 MB
    // of machine code, most of this crate's build time).
    let mut pass = |src: Vec<u8>, (sw, sh): (u32, u32), (w, h): (u32, u32)| -> Vec<u8> {
        if (sw, sh) == (w, h) {
            return src;
        }
        let view = TypedImageRef::<U8x3>::from_buffer(sw, sh, &src)
            .expect("an RGB buffer of the stated size");
        let mut out = vec![0u8; w as usize * h as usize * 3];
        let mut dst =
            TypedImage::<U8x3>::from_buffer(w, h, &mut out).expect("a buffer of the right size");
        resizer
            .resize_typed(&view, &mut dst, &opts)
            .expect("same pixel type on both sides");
        drop(dst);
        out
    };
    let (iw, ih) = (img.width(), img.height());
    let wide = pass(img.as_raw().clone(), (iw, ih), (w as u32, ih));
    let out = pass(wide, (w as u32, ih), (w as u32, h as u32));
    RgbImage::from_raw(w as u32, h as u32, out).expect("buffer of the right size")
}

/// Clear error for a pipeline that cannot work (see [`ImagePipeline::validate`]).
pub fn validate(p: &ImagePipeline) -> Result<()> {
    p.validate().map_err(|e| DataError::Config {
        field: "image pipeline".into(),
        reason: e.to_string(),
    })
}
