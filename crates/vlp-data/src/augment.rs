//! Training augmentations: RandomResizedCrop, horizontal flip, colour jitter (brightness,
//! contrast, saturation, hue), random grayscale, Gaussian blur, two views.

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
    /// Hue shift (a fraction of the colour circle) is drawn from `[-x, x]` when jitter applies;
    /// at most 0.5 (torchvision's `ColorJitter(hue=x)`).
    pub jitter_hue: f32,
    /// Probability of converting the view to grayscale (torchvision's `RandomGrayscale`).
    pub grayscale: f32,
    /// Probability of a Gaussian blur.
    pub blur_prob: f32,
    /// Range the blur's standard deviation is drawn from, in pixels of the output view.
    pub blur_sigma: [f32; 2],
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
            jitter_hue: 0.0,
            grayscale: 0.0,
            blur_prob: 0.0,
            blur_sigma: [0.1, 2.0],
            two_views: false,
        }
    }
}

impl AugmentConfig {
    /// Checks every field's range, naming the first bad one (`scale`, `blur_sigma[1]`, ...).
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |field: String, reason: String| Err(crate::DataError::Config { field, reason });
        let range = |field: &str, v: f32, lo: f32, hi: f32| {
            if !v.is_finite() || v < lo || v > hi {
                return bad(field.into(), format!("{v} is not in [{lo}, {hi}]"));
            }
            Ok(())
        };
        for (i, v) in self.scale.iter().enumerate() {
            range(&format!("scale[{i}]"), *v, 1e-6, 1.0)?;
        }
        for (i, v) in self.ratio.iter().enumerate() {
            range(&format!("ratio[{i}]"), *v, 1e-3, 1e3)?;
        }
        for (i, v) in self.blur_sigma.iter().enumerate() {
            range(&format!("blur_sigma[{i}]"), *v, 1e-3, 100.0)?;
        }
        for (f, [lo, hi]) in [
            ("scale", self.scale),
            ("ratio", self.ratio),
            ("blur_sigma", self.blur_sigma),
        ] {
            if lo > hi {
                return bad(f.into(), format!("[{lo}, {hi}] is not a [low, high] range"));
            }
        }
        range("hflip", self.hflip, 0.0, 1.0)?;
        range("jitter_prob", self.jitter_prob, 0.0, 1.0)?;
        range("jitter_strength", self.jitter_strength, 0.0, 1.0)?;
        range("jitter_hue", self.jitter_hue, 0.0, 0.5)?;
        range("grayscale", self.grayscale, 0.0, 1.0)?;
        range("blur_prob", self.blur_prob, 0.0, 1.0)
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

/// Brightness, contrast and saturation jitter with the given factors, then a hue shift by `h`
/// of the colour circle (torchvision applies the four in a random order; here always this one).
fn jitter(img: &mut RgbImage, [b, c, s, h]: [f32; 4]) {
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
        if h != 0.0 {
            *p = shift_hue(*p, h);
        }
    }
}

/// Rotates a pixel's hue by `h` (a fraction of the circle) keeping saturation and value, as
/// torchvision's `adjust_hue` does through HSV.
fn shift_hue(p: image::Rgb<u8>, h: f32) -> image::Rgb<u8> {
    let [r, g, b] = p.0.map(|x| x as f32 / 255.0);
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let delta = max - min;
    if delta == 0.0 {
        return p;
    }
    let hue = if max == r {
        ((g - b) / delta).rem_euclid(6.0)
    } else if max == g {
        (b - r) / delta + 2.0
    } else {
        (r - g) / delta + 4.0
    } / 6.0;
    let hue = (hue + h).rem_euclid(1.0) * 6.0;
    let (s, v) = (delta / max, max);
    let i = hue.floor();
    let f = hue - i;
    let (pv, qv, tv) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    let rgb = match i as u32 % 6 {
        0 => [v, tv, pv],
        1 => [qv, v, pv],
        2 => [pv, v, tv],
        3 => [pv, qv, v],
        4 => [tv, pv, v],
        _ => [v, pv, qv],
    };
    image::Rgb(rgb.map(|x| (x * 255.0).round().clamp(0.0, 255.0) as u8))
}

/// Replaces every pixel by its luma (ITU-R 601-2, as PIL's `convert("L")`) in all three
/// channels.
fn grayscale(img: &mut RgbImage) {
    for p in img.pixels_mut() {
        let l = (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32).round() as u8;
        *p = image::Rgb([l, l, l]);
    }
}

/// The random choices of one augmented view, drawn once and applied to every frame of a clip.
#[derive(Debug, Clone, PartialEq)]
pub struct AugmentParams {
    /// Crop `(left, top, width, height)` in source pixels.
    pub crop: (u32, u32, u32, u32),
    /// Mirror left–right.
    pub flip: bool,
    /// Brightness, contrast and saturation factors and the hue shift, when jitter applies.
    pub jitter: Option<[f32; 4]>,
    /// Convert to grayscale (after the jitter).
    pub grayscale: bool,
    /// Standard deviation of the Gaussian blur (last), when it applies.
    pub blur: Option<f32>,
}

/// Draws the crop, flip, jitter, grayscale and blur of one view of a `w × h` image.
pub fn draw(w: u32, h: u32, cfg: &AugmentConfig, rng: &mut Rng) -> AugmentParams {
    let crop = crop_box(w, h, cfg, rng);
    let flip = rng.chance(cfg.hflip);
    let jitter = rng.chance(cfg.jitter_prob).then(|| {
        let x = cfg.jitter_strength;
        let hue = if cfg.jitter_hue > 0.0 {
            rng.range(-cfg.jitter_hue, cfg.jitter_hue)
        } else {
            0.0
        };
        [
            rng.range(1.0 - x, 1.0 + x),
            rng.range(1.0 - x, 1.0 + x),
            rng.range(1.0 - x, 1.0 + x),
            hue,
        ]
    });
    // Drawn only when enabled, so configurations without them keep their random streams.
    let grayscale = cfg.grayscale > 0.0 && rng.chance(cfg.grayscale);
    let blur = (cfg.blur_prob > 0.0 && rng.chance(cfg.blur_prob))
        .then(|| rng.range(cfg.blur_sigma[0], cfg.blur_sigma[1]));
    AugmentParams {
        crop,
        flip,
        jitter,
        grayscale,
        blur,
    }
}

/// Applies drawn parameters: crop, resize to `size × size`, flip, jitter, grayscale, blur;
/// returns the view and where its pixels came from.
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
    if p.grayscale {
        grayscale(&mut out);
    }
    if let Some(sigma) = p.blur {
        out = image::imageops::blur(&out, sigma);
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

    #[test]
    fn hue_shift_matches_hsv_rotation() {
        // Pure red turned by a third of the circle is pure green, by two thirds pure blue.
        let red = image::Rgb([255u8, 0, 0]);
        assert_eq!(shift_hue(red, 1.0 / 3.0), image::Rgb([0, 255, 0]));
        assert_eq!(shift_hue(red, -1.0 / 3.0), image::Rgb([0, 0, 255]));
        // Orange (hue 30°) back by 30° is red; saturation and value are kept.
        assert_eq!(
            shift_hue(image::Rgb([200, 100, 0]), -30.0 / 360.0),
            image::Rgb([200, 0, 0])
        );
        // Greys have no hue and stay.
        assert_eq!(
            shift_hue(image::Rgb([90, 90, 90]), 0.2),
            image::Rgb([90, 90, 90])
        );
        // A full turn is the identity.
        let p = image::Rgb([12u8, 200, 77]);
        assert_eq!(shift_hue(p, 1.0), p);
    }

    #[test]
    fn grayscale_and_blur_apply_with_their_probabilities() {
        let img = RgbImage::from_fn(16, 16, |x, y| {
            image::Rgb([(x * 16) as u8, (y * 16) as u8, 7])
        });
        let keep = AugmentConfig {
            scale: [1.0, 1.0],
            ratio: [1.0, 1.0],
            grayscale: 1.0,
            ..Default::default()
        };
        let (g, _) = augment(&img, 16, &keep, &mut Rng::new(1));
        let p = img.get_pixel(5, 9);
        let luma = (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32).round() as u8;
        assert_eq!(g.get_pixel(5, 9).0, [luma; 3]);
        assert!(g.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
        // Blur keeps a constant image and smooths an edge.
        let edge = RgbImage::from_fn(16, 16, |x, _| image::Rgb([if x < 8 { 0 } else { 255 }; 3]));
        let blur = AugmentConfig {
            scale: [1.0, 1.0],
            ratio: [1.0, 1.0],
            blur_prob: 1.0,
            blur_sigma: [1.5, 1.5],
            ..Default::default()
        };
        let (b, _) = augment(&edge, 16, &blur, &mut Rng::new(1));
        assert!(b.get_pixel(7, 8)[0] > 0 && b.get_pixel(8, 8)[0] < 255);
        assert_eq!(b.get_pixel(0, 8)[0], 0);
        // Probabilities: about 30 % of draws, and none when disabled.
        let cfg = AugmentConfig {
            grayscale: 0.3,
            blur_prob: 0.5,
            ..Default::default()
        };
        let mut rng = Rng::new(9);
        let draws: Vec<_> = (0..2000).map(|_| draw(32, 32, &cfg, &mut rng)).collect();
        let grey = draws.iter().filter(|d| d.grayscale).count() as f32 / 2000.0;
        let blurred = draws.iter().filter(|d| d.blur.is_some()).count() as f32 / 2000.0;
        assert!((grey - 0.3).abs() < 0.04, "{grey}");
        assert!((blurred - 0.5).abs() < 0.04, "{blurred}");
        assert!(
            draws
                .iter()
                .filter_map(|d| d.blur)
                .all(|s| (0.1..=2.0).contains(&s))
        );
        let none = draw(32, 32, &AugmentConfig::default(), &mut Rng::new(9));
        assert!(!none.grayscale && none.blur.is_none() && none.jitter.is_none());
    }
}
