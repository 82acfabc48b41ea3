//! Rasterising a scene: background, shapes with 2×2 supersampled edges, textures, masks.

use super::attributes::{Shape, Texture};
use super::{Background, Palette};
use vlp_core::rng::Rng;

/// The ten vertices of the star (outer radius 1, inner 0.45, first point up), as literals so no
/// platform's `sin`/`cos` can change a pixel.
const STAR: [(f32, f32); 10] = [
    (0.0, -1.0),
    (0.264_503_4, -0.364_057_7),
    (0.951_056_5, -0.309_017),
    (0.427_975_4, 0.139_057_6),
    (0.587_785_3, 0.809_017),
    (0.0, 0.45),
    (-0.587_785_3, 0.809_017),
    (-0.427_975_4, 0.139_057_6),
    (-0.951_056_5, -0.309_017),
    (-0.264_503_4, -0.364_057_7),
];

/// Whether the point `(u, v)`, in units of the object's radius around its centre (`v` down),
/// lies inside the shape.
pub fn inside(shape: Shape, u: f32, v: f32) -> bool {
    match shape {
        Shape::Circle => u * u + v * v <= 1.0,
        Shape::Square => u.abs() <= 0.85 && v.abs() <= 0.85,
        Shape::Triangle => (-1.0..=0.75).contains(&v) && u.abs() <= 0.95 * (v + 1.0) / 1.75,
        Shape::Star => {
            // Even-odd crossing test.
            let mut inside = false;
            let mut prev = STAR[STAR.len() - 1];
            for &(xi, yi) in &STAR {
                let (xj, yj) = prev;
                if (yi > v) != (yj > v) && u < (xj - xi) * (v - yi) / (yj - yi) + xi {
                    inside = !inside;
                }
                prev = (xi, yi);
            }
            inside
        }
        Shape::Cross => {
            (u.abs() <= 0.32 && v.abs() <= 0.95) || (v.abs() <= 0.32 && u.abs() <= 0.95)
        }
    }
}

/// What the renderer needs of one object, back-to-front order given by the caller.
pub struct Draw {
    /// Shape.
    pub shape: Shape,
    /// Object colour after palette and per-object brightness.
    pub rgb: [f32; 3],
    /// Surface pattern.
    pub texture: Texture,
    /// Centre, in pixels.
    pub cx: f32,
    /// Centre, in pixels.
    pub cy: f32,
    /// Radius, in pixels.
    pub r: f32,
    /// Instance id written to the mask (1-based).
    pub id: u8,
}

/// Rendered pixels and per-pixel ownership.
pub struct Raster {
    /// RGB, row-major, `size × size × 3`.
    pub rgb: Vec<u8>,
    /// Instance id per pixel (0 = background): the front-most object covering most of the pixel.
    pub instance: Vec<u8>,
    /// Pixels each object would cover if nothing were in front of it (index = id - 1).
    pub full_area: Vec<u32>,
}

/// A deterministic hash of a pixel for the noise background.
fn hash(seed: u64, x: u32, y: u32, c: u32) -> u32 {
    let mut h = seed ^ ((x as u64) << 40) ^ ((y as u64) << 20) ^ c as u64;
    h = (h ^ (h >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    h = (h ^ (h >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    (h ^ (h >> 33)) as u32
}

/// Fills the background: low-saturation tones, so object colours stay the salient signal.
fn background(size: usize, style: Background, rng: &mut Rng) -> Vec<f32> {
    let grey = rng.range(70.0, 190.0);
    let tint = [
        rng.range(-15.0, 15.0),
        rng.range(-15.0, 15.0),
        rng.range(-15.0, 15.0),
    ];
    let base = tint.map(|t| grey + t);
    let other = [grey + rng.range(-50.0, 50.0); 3];
    let seed = rng.next_u64();
    let style = match style {
        Background::Mixed => {
            [Background::Noise, Background::Gradient, Background::Solid][rng.below(3)]
        }
        s => s,
    };
    let mut px = vec![0.0f32; size * size * 3];
    for y in 0..size {
        for x in 0..size {
            for c in 0..3 {
                let v = match style {
                    Background::Noise => {
                        base[c] + (hash(seed, x as u32, y as u32, c as u32) % 41) as f32 - 20.0
                    }
                    Background::Gradient => {
                        let t = (x + y) as f32 / (2 * size) as f32;
                        base[c] * (1.0 - t) + other[c] * t
                    }
                    _ => base[c],
                };
                px[(y * size + x) * 3 + c] = v;
            }
        }
    }
    px
}

/// Shades an object pixel according to its texture.
fn shade(d: &Draw, x: usize, y: usize, size: usize) -> [f32; 3] {
    match d.texture {
        Texture::Solid => d.rgb,
        Texture::Striped => {
            let w = (size / 16).max(2);
            if ((x + y) / w) % 2 == 1 {
                d.rgb.map(|c| c * 0.55)
            } else {
                d.rgb
            }
        }
        Texture::Dotted => {
            let s = (size / 10).max(4) as i64;
            let (dx, dy) = ((x as i64 % s) - s / 2, (y as i64 % s) - s / 2);
            if dx * dx + dy * dy <= (s / 4).max(1).pow(2) {
                d.rgb.map(|c| c + (255.0 - c) * 0.6)
            } else {
                d.rgb
            }
        }
    }
}

/// Renders the objects (back to front) over a background.
pub fn render(size: usize, draws: &[Draw], style: Background, rng: &mut Rng) -> Raster {
    let mut px = background(size, style, rng);
    let mut instance = vec![0u8; size * size];
    let mut full_area = vec![0u32; draws.len()];
    const SUB: [(f32, f32); 4] = [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)];
    for y in 0..size {
        for x in 0..size {
            for (k, d) in draws.iter().enumerate() {
                // Quick reject outside the bounding square.
                let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
                if (fx - d.cx).abs() > d.r + 1.0 || (fy - d.cy).abs() > d.r + 1.0 {
                    continue;
                }
                let cover = SUB
                    .iter()
                    .filter(|(ox, oy)| {
                        inside(
                            d.shape,
                            (x as f32 + ox - d.cx) / d.r,
                            (y as f32 + oy - d.cy) / d.r,
                        )
                    })
                    .count();
                if cover == 0 {
                    continue;
                }
                let colour = shade(d, x, y, size);
                let a = cover as f32 / 4.0;
                let i = (y * size + x) * 3;
                for c in 0..3 {
                    px[i + c] = px[i + c] * (1.0 - a) + colour[c] * a;
                }
                if cover >= 2 {
                    instance[y * size + x] = d.id;
                    full_area[k] += 1;
                }
            }
        }
    }
    let rgb = px
        .iter()
        .map(|v| v.round().clamp(0.0, 255.0) as u8)
        .collect();
    Raster {
        rgb,
        instance,
        full_area,
    }
}

/// Applies a palette to a base colour.
pub fn palette_rgb(base: [u8; 3], palette: Palette, brightness: f32) -> [f32; 3] {
    let c = base.map(|v| v as f32 * brightness);
    match palette {
        Palette::Default => c,
        Palette::Pastel => c.map(|v| v + (255.0 - v) * 0.45),
        Palette::Dark => c.map(|v| v * 0.55),
    }
    .map(|v| v.clamp(0.0, 255.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_cover_sensible_areas() {
        // Fraction of the [-1, 1]² square each shape covers, on a fine grid.
        let n = 400;
        for (shape, lo, hi) in [
            (Shape::Circle, 0.77, 0.80),
            (Shape::Square, 0.70, 0.74),
            (Shape::Triangle, 0.40, 0.44),
            (Shape::Star, 0.30, 0.36),
            (Shape::Cross, 0.45, 0.52),
        ] {
            let mut hits = 0;
            for i in 0..n {
                for j in 0..n {
                    let (u, v) = (
                        -1.0 + 2.0 * (i as f32 + 0.5) / n as f32,
                        -1.0 + 2.0 * (j as f32 + 0.5) / n as f32,
                    );
                    hits += inside(shape, u, v) as usize;
                }
            }
            let f = hits as f32 / (n * n) as f32;
            assert!((lo..hi).contains(&f), "{shape:?} covers {f}");
        }
        assert!(inside(Shape::Star, 0.0, -0.9) && !inside(Shape::Star, 0.5, -0.6));
    }
}
