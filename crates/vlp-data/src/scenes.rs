//! SceneWorld: top-down land-cover scenes with scene labels and captions, a small stand-in for
//! remote-sensing scene and retrieval datasets (AID, RSICD, RSITMD), where images of one scene
//! class look alike and their captions differ in where things are.
//!
//! Every image is a scene class (forest, lake, river, farmland, residential area, desert, beach,
//! industrial area) laid out from land covers (forest, water, buildings, fields, sand, grass,
//! concrete, storage tanks), each drawn with its own texture, and a feature placed on a 3 × 3
//! grid of compass positions ("a lake in the north-west surrounded by forest"). Like
//! ShapesWorld, every sample draws from its own generator seeded from (seed, split, index) with
//! integer arithmetic and IEEE-exact float operations only, so the bytes are the same on every
//! platform and for any number of workers.

use image::{Rgb, RgbImage};

use crate::error::{DataError, Result};
use crate::sample::{Annotations, Mask};
use crate::shapes::{Rng, Split};

/// The scene classes, in class-index order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SceneClass {
    /// Forest, with or without a clearing.
    Forest,
    /// A lake in grass or forest.
    Lake,
    /// A river through meadows or farmland.
    River,
    /// Fields in rows.
    Farmland,
    /// Houses, with or without a park.
    Residential,
    /// Sand dunes, with or without an oasis.
    Desert,
    /// Sand with the sea on one side.
    Beach,
    /// Concrete, large roofs and a cluster of storage tanks.
    Industrial,
}

impl SceneClass {
    /// Every class, in index order.
    pub const ALL: [SceneClass; 8] = [
        SceneClass::Forest,
        SceneClass::Lake,
        SceneClass::River,
        SceneClass::Farmland,
        SceneClass::Residential,
        SceneClass::Desert,
        SceneClass::Beach,
        SceneClass::Industrial,
    ];

    /// Class name (zero-shot prompts use it).
    pub fn name(self) -> &'static str {
        match self {
            SceneClass::Forest => "forest",
            SceneClass::Lake => "lake",
            SceneClass::River => "river",
            SceneClass::Farmland => "farmland",
            SceneClass::Residential => "residential area",
            SceneClass::Desert => "desert",
            SceneClass::Beach => "beach",
            SceneClass::Industrial => "industrial area",
        }
    }
}

/// Land covers; the semantic mask holds the index + 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cover {
    /// Dark green canopy.
    Forest,
    /// Blue water with ripples.
    Water,
    /// Houses in blocks, with streets.
    Buildings,
    /// Fields in stripes.
    Fields,
    /// Sand with dunes.
    Sand,
    /// Light green grass.
    Grass,
    /// Dark concrete with large roofs.
    Concrete,
    /// White storage tanks.
    Tank,
}

/// Compass positions on a 3 × 3 grid, row-major from the north-west.
const PLACES: [&str; 9] = [
    "north-west",
    "north",
    "north-east",
    "west",
    "centre",
    "east",
    "south-west",
    "south",
    "south-east",
];

/// Sides of an image, for the sea of a beach.
const SIDES: [&str; 4] = ["north", "east", "south", "west"];

/// Most pixels a SceneWorld image may have (side 4096).
pub const MAX_SCENE_SIDE: usize = 4096;

/// One generated scene.
#[derive(Debug, Clone)]
pub struct SceneSample {
    /// `scenes-<split>-<index>`.
    pub key: String,
    /// The image.
    pub image: RgbImage,
    /// Scene class index (into [`SceneClass::ALL`]).
    pub label: usize,
    /// Two captions of the same content, worded differently (remote-sensing datasets have five).
    pub captions: Vec<String>,
    /// Land cover per pixel ([`Cover`] index + 1).
    pub covers: Mask,
}

/// What was drawn: the class and its parameters.
#[derive(Debug, Clone, Copy)]
struct Layout {
    class: SceneClass,
    /// Grid position of the feature (lake, clearing, park, oasis, tanks), `0..9`.
    place: usize,
    /// Whether the optional feature is present (clearing, park, oasis).
    feature: bool,
    /// Alternative background (lake: forest instead of grass; river: fields instead of grass).
    alt: bool,
    /// River: 0 west→east, 1 north→south, 2 diagonal. Fields: 0 east–west rows, 1 north–south.
    /// Beach: the sea's side (`SIDES`).
    direction: usize,
    /// Size of the feature, as a fraction of the image.
    radius: f32,
    /// Offset of a river or shore line from the middle.
    offset: f32,
}

fn place_centre(place: usize) -> (f32, f32) {
    (
        0.25 + 0.25 * (place % 3) as f32,
        0.25 + 0.25 * (place / 3) as f32,
    )
}

impl Layout {
    fn draw(rng: &mut Rng) -> Self {
        let class = *rng.pick(&SceneClass::ALL);
        Self {
            class,
            place: rng.below(9),
            feature: rng.chance(0.6),
            alt: rng.chance(0.5),
            direction: rng.below(if class == SceneClass::Beach { 4 } else { 3 }),
            radius: rng.range(0.16, 0.22),
            offset: rng.range(-0.12, 0.12),
        }
    }

    /// The land cover at `(u, v)` in `[0, 1)²` (u east, v south).
    fn cover(&self, u: f32, v: f32) -> Cover {
        let (cu, cv) = place_centre(self.place);
        let (du, dv) = (u - cu, v - cv);
        let d2 = du * du + dv * dv;
        let r2 = self.radius * self.radius;
        match self.class {
            SceneClass::Forest if self.feature && d2 < r2 => Cover::Grass,
            SceneClass::Forest => Cover::Forest,
            SceneClass::Lake if du * du / 1.3 + dv * dv * 1.3 < r2 * 1.4 => Cover::Water,
            SceneClass::Lake if self.alt => Cover::Forest,
            SceneClass::Lake => Cover::Grass,
            SceneClass::River => {
                let across = match self.direction {
                    0 => v - 0.5,
                    1 => u - 0.5,
                    // Signed distance from the diagonal, (u − v) / √2.
                    _ => (u - v) * std::f32::consts::FRAC_1_SQRT_2,
                };
                if (across - self.offset).abs() < 0.07 {
                    Cover::Water
                } else if self.alt {
                    Cover::Fields
                } else {
                    Cover::Grass
                }
            }
            SceneClass::Farmland => Cover::Fields,
            SceneClass::Residential if self.feature && du.abs().max(dv.abs()) < self.radius => {
                Cover::Grass
            }
            SceneClass::Residential => Cover::Buildings,
            SceneClass::Desert if self.feature && d2 < r2 * 0.3 => Cover::Water,
            SceneClass::Desert if self.feature && d2 < r2 * 0.8 => Cover::Grass,
            SceneClass::Desert => Cover::Sand,
            SceneClass::Beach => {
                // Distance into the sea from the shore, with a zig-zag shoreline.
                let (along, into) = match self.direction {
                    0 => (u, 0.5 - v),
                    1 => (v, u - 0.5),
                    2 => (u, v - 0.5),
                    _ => (v, 0.5 - u),
                };
                let wave = ((along * 16.0).fract() - 0.5).abs() * 0.06;
                if into - self.offset + wave > 0.0 {
                    Cover::Water
                } else {
                    Cover::Sand
                }
            }
            SceneClass::Industrial => {
                // Four tanks around the place, a small square of them.
                let s = self.radius * 0.45;
                let tank = [(-s, -s), (s, -s), (-s, s), (s, s)].iter().any(|(ou, ov)| {
                    let (a, b) = (du - ou, dv - ov);
                    a * a + b * b < s * s * 0.6
                });
                if tank { Cover::Tank } else { Cover::Concrete }
            }
        }
    }

    fn captions(&self) -> Vec<String> {
        let place = PLACES[self.place];
        let (a, b) = match self.class {
            SceneClass::Forest if self.feature => (
                format!("a forest with a clearing in the {place}"),
                format!("dense trees around a grassy clearing in the {place}"),
            ),
            SceneClass::Forest => (
                "a dense forest".into(),
                "trees covering the whole area".into(),
            ),
            SceneClass::Lake => {
                let around = if self.alt { "forest" } else { "grass" };
                (
                    format!("a lake in the {place} surrounded by {around}"),
                    format!("blue water in the {place} with {around} around it"),
                )
            }
            SceneClass::River => {
                let through = if self.alt { "farmland" } else { "meadows" };
                let way =
                    ["from west to east", "from north to south", "diagonally"][self.direction];
                (
                    format!("a river flowing {way} through {through}"),
                    format!("{through} crossed by a river running {way}"),
                )
            }
            SceneClass::Farmland => {
                let rows = ["east-west", "north-south", "north-south"][self.direction];
                (
                    format!("farmland with fields in {rows} rows"),
                    format!("striped fields planted in {rows} rows"),
                )
            }
            SceneClass::Residential if self.feature => (
                format!("a residential area with a park in the {place}"),
                format!("houses around a green park in the {place}"),
            ),
            SceneClass::Residential => (
                "a dense residential area".into(),
                "rows of houses along streets".into(),
            ),
            SceneClass::Desert if self.feature => (
                format!("a desert with an oasis in the {place}"),
                format!("sand dunes around an oasis in the {place}"),
            ),
            SceneClass::Desert => (
                "a desert of sand dunes".into(),
                "dunes of sand everywhere".into(),
            ),
            SceneClass::Beach => {
                let side = SIDES[self.direction];
                (
                    format!("a beach with the sea to the {side}"),
                    format!("sand along the coast with water in the {side}"),
                )
            }
            SceneClass::Industrial => (
                format!("an industrial area with storage tanks in the {place}"),
                format!("white tanks in the {place} of an industrial zone"),
            ),
        };
        vec![a, b]
    }
}

/// A value in `[0, 1)` per (x, y, salt): texture noise without a generator's state.
fn noise(x: u32, y: u32, salt: u64) -> f32 {
    let mut r = Rng::for_item(salt, x as u64, y as u64);
    r.unit()
}

/// Scales a colour by `k`, clamped to bytes.
fn shade([r, g, b]: [u8; 3], k: f32) -> Rgb<u8> {
    let f = |c: u8| (c as f32 * k).round().clamp(0.0, 255.0) as u8;
    Rgb([f(r), f(g), f(b)])
}

/// The texture of `cover` at pixel `(x, y)`; `salt` varies it per image, `rows` orients fields.
fn texture(cover: Cover, x: u32, y: u32, salt: u64, rows_vertical: bool) -> Rgb<u8> {
    match cover {
        // Crowns in 3-pixel cells of varying brightness.
        Cover::Forest => shade([34, 90, 38], 0.65 + 0.6 * noise(x / 3, y / 3, salt)),
        // Ripples: brighter every sixth row.
        Cover::Water => shade([32, 74, 150], if y.is_multiple_of(6) { 1.25 } else { 1.0 }),
        Cover::Buildings => {
            // 8-pixel blocks: a street on the block edge, a roof inside with its own colour.
            if x.is_multiple_of(8) || y.is_multiple_of(8) {
                Rgb([88, 88, 92])
            } else {
                let roofs = [[180, 84, 62], [200, 200, 196], [150, 120, 96]];
                let k = (noise(x / 8, y / 8, salt) * 3.0) as usize;
                shade(roofs[k.min(2)], 0.95 + 0.1 * noise(x, y, salt ^ 1))
            }
        }
        Cover::Fields => {
            let stripe = if rows_vertical { x / 4 } else { y / 4 };
            let crops = [[118, 164, 62], [176, 152, 84], [92, 132, 52]];
            let k = (noise(stripe, 0, salt) * 3.0) as usize;
            shade(crops[k.min(2)], 0.95 + 0.1 * noise(x, y, salt ^ 2))
        }
        Cover::Sand => {
            // Diagonal dunes: darker every tenth diagonal.
            let dune = if (x + y) % 10 < 2 { 0.85 } else { 1.0 };
            shade(
                [214, 188, 132],
                dune * (0.94 + 0.12 * noise(x, y, salt ^ 3)),
            )
        }
        Cover::Grass => shade([112, 172, 84], 0.92 + 0.16 * noise(x / 2, y / 2, salt ^ 4)),
        Cover::Concrete => {
            // Large flat roofs in 16-pixel lots.
            if x % 16 < 2 || y % 16 < 2 {
                Rgb([64, 64, 68])
            } else {
                shade([132, 134, 140], 0.9 + 0.2 * noise(x / 16, y / 16, salt ^ 5))
            }
        }
        Cover::Tank => shade([236, 236, 232], 0.97 + 0.06 * noise(x, y, salt ^ 6)),
    }
}

/// The generator.
#[derive(Debug, Clone)]
pub struct SceneWorld {
    image_size: usize,
    seed: u64,
}

impl SceneWorld {
    /// A world of `image_size`-pixel images (16 to [`MAX_SCENE_SIDE`]) under `seed`.
    pub fn new(image_size: usize, seed: u64) -> Result<Self> {
        if !(16..=MAX_SCENE_SIDE).contains(&image_size) {
            return Err(DataError::Config {
                field: "image_size".into(),
                reason: format!(
                    "{image_size} is not in 16..={MAX_SCENE_SIDE} for SceneWorld images"
                ),
            });
        }
        Ok(Self { image_size, seed })
    }

    /// Class names, in label order.
    pub fn class_names() -> Vec<String> {
        SceneClass::ALL
            .iter()
            .map(|c| c.name().to_string())
            .collect()
    }

    /// Generates sample `index` of `split` (SceneWorld has no unseen split: [`Split::Unseen`]
    /// draws from the test distribution under its own stream).
    pub fn sample(&self, split: Split, index: u64) -> SceneSample {
        // Streams distinct from ShapesWorld's, so the two worlds never share draws.
        let stream = 100 + split as u64;
        let mut rng = Rng::for_item(self.seed, stream, index);
        let layout = Layout::draw(&mut rng);
        let salt = rng.next_u64();
        let size = self.image_size;
        let rows_vertical = layout.direction >= 1;
        let mut image = RgbImage::new(size as u32, size as u32);
        let mut covers = vec![0u8; size * size];
        for y in 0..size {
            for x in 0..size {
                let (u, v) = (
                    (x as f32 + 0.5) / size as f32,
                    (y as f32 + 0.5) / size as f32,
                );
                let cover = layout.cover(u, v);
                covers[y * size + x] = cover as u8 + 1;
                // Textures are in pixels of a 64-pixel image, so larger images look the same.
                let (tx, ty) = ((x * 64 / size) as u32, (y * 64 / size) as u32);
                image.put_pixel(
                    x as u32,
                    y as u32,
                    texture(cover, tx, ty, salt, rows_vertical),
                );
            }
        }
        SceneSample {
            key: format!("scenes-{}-{index:08}", split.name()),
            image,
            label: layout.class as usize,
            captions: layout.captions(),
            covers: Mask {
                width: size,
                height: size,
                data: covers,
            },
        }
    }

    /// The sample's ground truth as annotations (the land-cover mask as the semantic mask).
    pub fn annotations(sample: &SceneSample) -> Annotations {
        Annotations {
            semantic_mask: Some(sample.covers.clone()),
            ..Annotations::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_deterministic_and_split_apart() {
        let w = SceneWorld::new(32, 7).unwrap();
        let a = w.sample(Split::Train, 3);
        let b = w.sample(Split::Train, 3);
        assert_eq!(a.image.as_raw(), b.image.as_raw());
        assert_eq!(a.captions, b.captions);
        assert_eq!(a.key, "scenes-train-00000003");
        let differs = (0..8).any(|i| {
            w.sample(Split::Train, i).image.as_raw() != w.sample(Split::Test, i).image.as_raw()
        });
        assert!(differs);
        let other_seed = SceneWorld::new(32, 8).unwrap().sample(Split::Train, 3);
        assert_ne!(a.image.as_raw(), other_seed.image.as_raw());
    }

    #[test]
    fn every_class_appears_and_captions_name_what_is_drawn() {
        let w = SceneWorld::new(32, 0).unwrap();
        let mut seen = [0usize; 8];
        for i in 0..400 {
            let s = w.sample(Split::Train, i);
            seen[s.label] += 1;
            assert_eq!(s.captions.len(), 2);
            let class = SceneClass::ALL[s.label];
            let has = |c: Cover| s.covers.data.contains(&(c as u8 + 1));
            match class {
                SceneClass::Lake | SceneClass::River | SceneClass::Beach => {
                    assert!(has(Cover::Water), "{}: {}", s.key, s.captions[0])
                }
                SceneClass::Industrial => assert!(has(Cover::Tank) && has(Cover::Concrete)),
                SceneClass::Farmland => assert!(s.covers.data.iter().all(|&c| c == 4)),
                SceneClass::Forest if s.captions[0].contains("clearing") => {
                    assert!(has(Cover::Grass) && has(Cover::Forest))
                }
                SceneClass::Forest => assert!(s.covers.data.iter().all(|&c| c == 1)),
                _ => {}
            }
            // The first caption names the class (RS captions do; zero-shot prompts rely on it).
            let word = class.name().split(' ').next().unwrap();
            let c = &s.captions[0];
            assert!(c.contains(word), "{c} vs {}", class.name());
        }
        assert!(seen.iter().all(|&n| n > 25), "{seen:?}");
    }

    #[test]
    fn the_feature_lies_where_the_caption_says() {
        // A lake "in the north-west" has its water in the north-west quarter, not the south-east.
        let w = SceneWorld::new(48, 1).unwrap();
        let mut checked = 0;
        for i in 0..300 {
            let s = w.sample(Split::Val, i);
            if s.label != SceneClass::Lake as usize || !s.captions[0].contains("north-west") {
                continue;
            }
            let water = |x0: usize, y0: usize| {
                (y0..y0 + 24)
                    .flat_map(|y| (x0..x0 + 24).map(move |x| (x, y)))
                    .filter(|&(x, y)| s.covers.data[y * 48 + x] == Cover::Water as u8 + 1)
                    .count()
            };
            assert!(water(0, 0) > 100 && water(24, 24) == 0, "{}", s.key);
            checked += 1;
        }
        assert!(checked > 0);
    }

    #[test]
    fn sizes_are_bounded() {
        assert!(SceneWorld::new(8, 0).is_err());
        let e = SceneWorld::new(MAX_SCENE_SIDE + 1, 0).unwrap_err();
        assert!(e.to_string().contains("image_size"), "{e}");
        let s = SceneWorld::new(20, 0).unwrap().sample(Split::Test, 0);
        assert_eq!((s.image.width(), s.image.height()), (20, 20));
        assert_eq!(s.covers.data.len(), 400);
    }
}
