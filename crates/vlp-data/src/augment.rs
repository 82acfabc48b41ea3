//! Training augmentations: RandomResizedCrop, horizontal flip, colour jitter, two views.

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::preprocess::{Interpolation, resize_rgb};
use crate::sample::Geometry;
use crate::shapes::Rng;

/// Augmentation settings (open_clip's training transform by default: RandomResizedCrop with
/// scale 0.9–1.0, no flip, no jitter).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Range of the crop's area as a fraction of the image.
    pub scale: [f32; 2],
    /// Range of the crop's aspect ratio (width / height).
    pub ratio: [f32; 2],
    /// Probability of a horizontal flip (keep 0 when captions say "left of").
    pub hflip: f32,
    /// Probability of applying colour jitter.
    pub jitter_prob: f32,
    /// Brightness, contrast and saturation factors are drawn from `[1 - x, 1 + x]`.
    pub jitter_strength: f32,
    /// Produce a second, independently augmented view (SLIP-style self-supervision); the same as
    /// asking the loader for two views.
    pub two_views: bool,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            scale: [0.9, 1.0],
            ratio: [3.0 / 4.0, 4.0 / 3.0],
            hflip: 0.0,
            jitter_prob: 0.0,
            jitter_strength: 0.4,
            two_views: false,
        }
    }
}

/// torchvision's RandomResizedCrop box: (left, top, width, height).
fn crop_box(w: u32, h: u32, cfg: &AugmentConfig, rng: &mut Rng) -> (u32, u32, u32, u32) {
    let area = (w * h) as f32;
    let (lr0, lr1) = (cfg.ratio[0].ln(), cfg.ratio[1].ln());
    for _ in 0..10 {
        let target = area * rng.range(cfg.scale[0], cfg.scale[1]);
        let aspect = rng.range(lr0, lr1).exp();
        let cw = (target * aspect).sqrt().round() as u32;
        let ch = (target / aspect).sqrt().round() as u32;
        if cw > 0 && ch > 0 && cw <= w && ch <= h {
            let x = rng.below((w - cw + 1) as usize) as u32;
            let y = rng.below((h - ch + 1) as usize) as u32;
            return (x, y, cw, ch);
        }
    }
    // Fallback: the centred crop with the ratio clamped into range.
    let r = w as f32 / h as f32;
    let (cw, ch) = if r < cfg.ratio[0] {
        (w, (w as f32 / cfg.ratio[0]).round() as u32)
    } else if r > cfg.ratio[1] {
        ((h as f32 * cfg.ratio[1]).round() as u32, h)
    } else {
        (w, h)
    };
    ((w - cw) / 2, (h - ch) / 2, cw.max(1), ch.max(1))
}

/// Brightness, contrast and saturation jitter with the given factors.
fn jitter(img: &mut RgbImage, [b, c, s]: [f32; 3]) {
    let mean = img
        .pixels()
        .map(|p| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32)
        .sum::<f32>()
        / (img.width() * img.height()) as f32;
    for p in img.pixels_mut() {
        let mut v = [p[0] as f32 * b, p[1] as f32 * b, p[2] as f32 * b];
        v = v.map(|x| (x - mean * b) * c + mean * b);
        let grey = 0.299 * v[0] + 0.587 * v[1] + 0.114 * v[2];
        v = v.map(|x| (x - grey) * s + grey);
        for k in 0..3 {
            p[k] = v[k].round().clamp(0.0, 255.0) as u8;
        }
    }
}

/// The random choices of one augmented view, drawn once and applied to every frame of a clip.
#[derive(Debug, Clone, PartialEq)]
pub struct AugmentParams {
    /// Crop `(left, top, width, height)` in source pixels.
    pub crop: (u32, u32, u32, u32),
    /// Mirror left–right.
    pub flip: bool,
    /// Brightness, contrast and saturation factors, when jitter applies.
    pub jitter: Option<[f32; 3]>,
}

/// Draws the crop, flip and jitter of one view of a `w × h` image.
pub fn draw(w: u32, h: u32, cfg: &AugmentConfig, rng: &mut Rng) -> AugmentParams {
    let crop = crop_box(w, h, cfg, rng);
    let flip = rng.chance(cfg.hflip);
    let jitter = rng.chance(cfg.jitter_prob).then(|| {
        let x = cfg.jitter_strength;
        [
            rng.range(1.0 - x, 1.0 + x),
            rng.range(1.0 - x, 1.0 + x),
            rng.range(1.0 - x, 1.0 + x),
        ]
    });
    AugmentParams { crop, flip, jitter }
}

/// Applies drawn parameters: crop, resize to `size × size`, flip, jitter; returns the view and
/// where its pixels came from.
///
/// # Panics
/// If the crop lies outside `img` (parameters drawn for another size).
pub fn apply(img: &RgbImage, size: usize, p: &AugmentParams) -> (RgbImage, Geometry) {
    let (x, y, w, h) = p.crop;
    assert!(
        x + w <= img.width() && y + h <= img.height(),
        "augmentation crop {:?} outside a {}x{} image",
        p.crop,
        img.width(),
        img.height()
    );
    let crop = image::imageops::crop_imm(img, x, y, w, h).to_image();
    let mut out = resize_rgb(&crop, size, size, Interpolation::Bicubic);
    if p.flip {
        image::imageops::flip_horizontal_in_place(&mut out);
    }
    if let Some(f) = p.jitter {
        jitter(&mut out, f);
    }
    let geometry = Geometry {
        x0: x as f32,
        y0: y as f32,
        sx: size as f32 / w as f32,
        sy: size as f32 / h as f32,
        flip: p.flip,
        size,
    };
    (out, geometry)
}

/// One augmented `size × size` view of `img`, and where its pixels came from (so boxes and
/// masks can follow the crop and the flip).
pub fn augment(
    img: &RgbImage,
    size: usize,
    cfg: &AugmentConfig,
    rng: &mut Rng,
) -> (RgbImage, Geometry) {
    let p = draw(img.width(), img.height(), cfg, rng);
    apply(img, size, &p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_stay_inside_and_respect_scale() {
        let cfg = AugmentConfig {
            scale: [0.3, 0.6],
            ..Default::default()
        };
        let mut rng = Rng::new(3);
        for _ in 0..500 {
            let (x, y, w, h) = crop_box(100, 80, &cfg, &mut rng);
            assert!(x + w <= 100 && y + h <= 80);
            let f = (w * h) as f32 / 8000.0;
            assert!((0.25..0.7).contains(&f), "{f}");
        }
    }

    #[test]
    fn flip_and_identity() {
        let img = RgbImage::from_fn(16, 16, |x, _| image::Rgb([(x * 16) as u8, 0, 0]));
        let keep = AugmentConfig {
            scale: [1.0, 1.0],
            ratio: [1.0, 1.0],
            ..Default::default()
        };
        let (same, g) = augment(&img, 16, &keep, &mut Rng::new(1));
        assert_eq!(same, img);
        assert_eq!(g, Geometry::identity(16));
        let flip = AugmentConfig { hflip: 1.0, ..keep };
        let (f, g) = augment(&img, 16, &flip, &mut Rng::new(1));
        assert_eq!(f.get_pixel(0, 0)[0], img.get_pixel(15, 0)[0]);
        assert!(g.flip);
        assert_eq!(g.map_box([0.0, 0.0, 4.0, 16.0]), [12.0, 0.0, 16.0, 16.0]);
    }
}
