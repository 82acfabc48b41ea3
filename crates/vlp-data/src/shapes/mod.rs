//! ShapesWorld: a seeded procedural world of coloured shapes with full ground truth.
//!
//! Every image comes with what the later methods need to be tested without a download: boxes,
//! instance and semantic masks, attributes, pairwise relations true by geometry, counts, and
//! text (a short caption that leaves objects out, a long caption, referring expressions, VQA
//! pairs, hard-negative captions). Sample `i` of a split is a pure function of (seed, split, i),
//! so generation is parallel, order-free and gives the same bytes on every platform.

mod attributes;
mod render;
mod statement;
mod text;

pub use attributes::{Colour, NUMBERS, Relation, Shape, Size, Texture};
pub use render::inside;
pub use statement::{STYLES, Statement, Thing};
pub use text::{Captions, Qa, QaKind, vocabulary};
pub use vlp_core::rng::Rng;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};

/// The actions between objects (both directions): footprints that share at least 5 % of the
/// smaller one's pixels overlap; a triangle points at an object whose centre lies at least a
/// tenth of the image above the triangle's centre and within 30° of straight up.
fn actions(
    specs: &[(Shape, Colour, f32, Texture, f32)],
    centres: &[(f32, f32)],
    size: usize,
) -> Vec<RelationFact> {
    let n = specs.len();
    let s = size as f32;
    // Each object's full footprint (occlusion ignored), as pixel indices.
    let footprint: Vec<Vec<usize>> = (0..n)
        .map(|i| {
            let (shape, r) = (specs[i].0, specs[i].2 * s);
            let (cx, cy) = (centres[i].0 * s, centres[i].1 * s);
            let lo = |c: f32| ((c - r).floor().max(0.0)) as usize;
            let hi = |c: f32| ((c + r).ceil().min(s)) as usize;
            let mut px = Vec::new();
            for y in lo(cy)..hi(cy) {
                for x in lo(cx)..hi(cx) {
                    let (u, v) = ((x as f32 + 0.5 - cx) / r, (y as f32 + 0.5 - cy) / r);
                    if render::inside(shape, u, v) {
                        px.push(y * size + x);
                    }
                }
            }
            px
        })
        .collect();
    let mut out = Vec::new();
    let fact = |subject, relation, object| RelationFact {
        subject,
        relation,
        object,
    };
    for i in 0..n {
        for j in 0..n {
            if i == j {
                continue;
            }
            if i < j {
                let shared = footprint[i]
                    .iter()
                    .filter(|p| footprint[j].binary_search(p).is_ok())
                    .count();
                let smaller = footprint[i].len().min(footprint[j].len());
                if shared > 0 && shared as f32 >= 0.05 * smaller as f32 {
                    out.push(fact(i, Relation::Overlapping, j));
                    out.push(fact(j, Relation::Overlapping, i));
                }
            }
            if specs[i].0 == Shape::Triangle {
                let up = centres[i].1 - centres[j].1;
                let side = (centres[j].0 - centres[i].0).abs();
                // tan 30° ≈ 0.577.
                if up >= 0.1 && side <= 0.577 * up {
                    out.push(fact(i, Relation::PointingAt, j));
                    out.push(fact(j, Relation::PointedAtBy, i));
                }
            }
        }
    }
    out
}

/// A deterministic split of the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Training images: no object has a held-out (shape, colour) combination.
    Train,
    /// Validation images, from the same distribution as training.
    Val,
    /// Test images, from the same distribution as training.
    Test,
    /// Test images whose main object has a held-out combination, never seen in training.
    Unseen,
}

impl Split {
    fn stream(self) -> u64 {
        match self {
            Split::Train => 1,
            Split::Val => 2,
            Split::Test => 3,
            Split::Unseen => 4,
        }
    }

    /// Lower-case name, used in sample keys.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
            Split::Unseen => "unseen",
        }
    }
}

/// Where objects may be placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// Centres on a jittered 3×3 grid, one object per cell.
    Grid,
    /// Centres anywhere the object fits, with occlusion bounded by `max_occlusion`.
    Free,
}

/// Background style (a domain-shift axis).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Background {
    /// Per-pixel noise around a grey-ish tone.
    Noise,
    /// A diagonal gradient between two tones.
    Gradient,
    /// One flat tone.
    Solid,
    /// One of the three, drawn per image.
    Mixed,
}

/// Colour palette (a domain-shift axis).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Palette {
    /// Saturated base colours.
    Default,
    /// Colours mixed with white.
    Pastel,
    /// Colours darkened.
    Dark,
}

/// Configuration of the generator. Every field has a default, so `{}` is a valid config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShapesWorldConfig {
    /// Side of the square images in pixels.
    pub image_size: usize,
    /// Seed of the world; splits and samples derive from it.
    pub seed: u64,
    /// Fewest objects per image (≥ 1).
    pub min_objects: usize,
    /// Most objects per image (≤ 9).
    pub max_objects: usize,
    /// Grid or free placement.
    pub placement: Placement,
    /// Largest fraction of an object that objects in front of it may hide (free placement).
    pub max_occlusion: f32,
    /// Probability that an object is striped or dotted instead of solid.
    pub texture_prob: f32,
    /// Background style.
    pub background: Background,
    /// Colour palette.
    pub palette: Palette,
    /// (shape, colour) combinations kept out of training, for compositional zero-shot tests.
    pub held_out: Vec<(Shape, Colour)>,
    /// The compositional mode's actions: objects overlapping and triangles pointing at objects
    /// become relations, and long captions state every action besides up to three spatial
    /// relations (SyViC's dense captions). Off, the world is exactly the plain one.
    pub actions: bool,
}

impl Default for ShapesWorldConfig {
    fn default() -> Self {
        Self {
            image_size: 64,
            seed: 0,
            min_objects: 1,
            max_objects: 4,
            placement: Placement::Free,
            max_occlusion: 0.3,
            texture_prob: 0.0,
            background: Background::Mixed,
            palette: Palette::Default,
            held_out: vec![
                (Shape::Circle, Colour::Purple),
                (Shape::Square, Colour::Orange),
                (Shape::Triangle, Colour::Blue),
                (Shape::Star, Colour::Green),
                (Shape::Cross, Colour::Red),
            ],
            actions: false,
        }
    }
}

impl ShapesWorldConfig {
    /// Checks the configuration; the message names the field at fault.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: String| {
            Err(DataError::Config {
                field: field.into(),
                reason,
            })
        };
        if self.image_size < 16 {
            return bad(
                "image_size",
                format!(
                    "{} is too small to draw shapes (minimum 16)",
                    self.image_size
                ),
            );
        }
        if self.min_objects == 0 || self.min_objects > self.max_objects || self.max_objects > 9 {
            return bad(
                "max_objects",
                format!(
                    "need 1 ≤ min_objects ({}) ≤ max_objects ({}) ≤ 9",
                    self.min_objects, self.max_objects
                ),
            );
        }
        if !(0.0..1.0).contains(&self.max_occlusion) {
            return bad(
                "max_occlusion",
                format!("{} is not in [0, 1)", self.max_occlusion),
            );
        }
        if !(0.0..=1.0).contains(&self.texture_prob) {
            return bad(
                "texture_prob",
                format!("{} is not in [0, 1]", self.texture_prob),
            );
        }
        if self.held_out.len() >= Shape::ALL.len() * Colour::ALL.len() {
            return bad("held_out", "holds out every combination".into());
        }
        Ok(())
    }

    /// Number of zero-shot classes: the (shape, colour) of the main object.
    pub fn num_classes(&self) -> usize {
        Shape::ALL.len() * Colour::ALL.len()
    }
}

/// The class index of a (shape, colour) pair: `shape * 6 + colour`.
pub fn class_index(shape: Shape, colour: Colour) -> usize {
    shape.index() * Colour::ALL.len() + colour.index()
}

/// The (shape, colour) of a class index.
pub fn class_of(index: usize) -> (Shape, Colour) {
    (
        Shape::ALL[index / Colour::ALL.len()],
        Colour::ALL[index % Colour::ALL.len()],
    )
}

/// The name of a class, e.g. "red circle".
pub fn class_name(index: usize) -> String {
    let (s, c) = class_of(index);
    format!("{} {}", c.name(), s.name())
}

/// One object of a scene.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Object {
    /// Shape.
    pub shape: Shape,
    /// Colour.
    pub colour: Colour,
    /// Size class.
    pub size: Size,
    /// Surface pattern.
    pub texture: Texture,
    /// Centre `[x, y]` as fractions of the image side.
    pub center: [f32; 2],
    /// Radius as a fraction of the image side.
    pub radius: f32,
    /// Visible bounding box `[x0, y0, x1, y1]` in pixels, `x1`/`y1` exclusive.
    pub bbox: [u32; 4],
    /// Visible pixels (its instance-mask area).
    pub area: u32,
    /// Pixels it would cover unoccluded.
    pub full_area: u32,
}

/// A relation that holds between objects `subject` and `object`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelationFact {
    /// Index of the subject.
    pub subject: usize,
    /// The relation.
    pub relation: Relation,
    /// Index of the object.
    pub object: usize,
}

/// Object counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// All objects.
    pub total: usize,
    /// Per shape, in [`Shape::ALL`] order.
    pub per_shape: [usize; 5],
    /// Per colour, in [`Colour::ALL`] order.
    pub per_colour: [usize; 6],
}

/// One generated image with its ground truth.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scene {
    /// Unique key, `shapes-{split}-{index:08}`.
    pub key: String,
    /// Split.
    pub split: Split,
    /// Index within the split.
    pub index: u64,
    /// Objects; index 0 is the main object (the largest, drawn in front).
    pub objects: Vec<Object>,
    /// Every relation that holds, both directions.
    pub relations: Vec<RelationFact>,
    /// Counts.
    pub counts: Counts,
    /// Zero-shot label: [`class_index`] of the main object.
    pub label: usize,
    /// Text about the image.
    pub captions: Captions,
    /// The image.
    #[serde(skip)]
    pub image: RgbImage,
    /// Instance mask, row-major: 0 = background, `i + 1` = object `i`.
    #[serde(skip)]
    pub instance_mask: Vec<u8>,
    /// Semantic mask, row-major: 0 = background, `shape index + 1`.
    #[serde(skip)]
    pub semantic_mask: Vec<u8>,
}

/// The generator.
#[derive(Debug, Clone)]
pub struct ShapesWorld {
    config: ShapesWorldConfig,
}

impl ShapesWorld {
    /// A world from a validated configuration.
    pub fn new(config: ShapesWorldConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self { config })
    }

    /// The configuration.
    pub fn config(&self) -> &ShapesWorldConfig {
        &self.config
    }

    fn held_out(&self, s: Shape, c: Colour) -> bool {
        self.config.held_out.contains(&(s, c))
    }

    /// Draws a (shape, colour) pair allowed as main object (`main`) or as any other object.
    fn draw_combo(&self, rng: &mut Rng, split: Split, main: bool) -> (Shape, Colour) {
        let want_held_out = split == Split::Unseen && main;
        if want_held_out && !self.config.held_out.is_empty() {
            return *rng.pick(&self.config.held_out);
        }
        loop {
            let (s, c) = (*rng.pick(&Shape::ALL), *rng.pick(&Colour::ALL));
            if !self.held_out(s, c) {
                return (s, c);
            }
        }
    }

    /// Generates sample `index` of `split`.
    pub fn sample(&self, split: Split, index: u64) -> Scene {
        let cfg = &self.config;
        let mut rng = Rng::for_item(cfg.seed, split.stream(), index);
        let size = cfg.image_size;
        let n = cfg.min_objects + rng.below(cfg.max_objects - cfg.min_objects + 1);
        // Attributes first; placement is retried until occlusion limits hold.
        let main_r = rng.range(0.16, 0.22);
        let specs: Vec<(Shape, Colour, f32, Texture, f32)> = (0..n)
            .map(|i| {
                let (s, c) = self.draw_combo(&mut rng, split, i == 0);
                // The main object is the largest by a clear margin, so "the" object of an image
                // is well defined; most others are small.
                let r = if i == 0 {
                    main_r
                } else if rng.chance(0.7) {
                    rng.range(0.07, 0.12)
                } else {
                    rng.range(0.13, 0.8 * main_r)
                };
                let t = if rng.chance(cfg.texture_prob) {
                    *rng.pick(&[Texture::Striped, Texture::Dotted])
                } else {
                    Texture::Solid
                };
                let brightness = rng.range(0.85, 1.1);
                (s, c, r, t, brightness)
            })
            .collect();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let centres = self.place(&mut rng, &specs);
            let draws: Vec<render::Draw> = specs
                .iter()
                .zip(&centres)
                .enumerate()
                .rev() // back to front: the main object is drawn last
                .map(|(i, ((s, c, r, t, b), (x, y)))| render::Draw {
                    shape: *s,
                    rgb: render::palette_rgb(c.rgb(), cfg.palette, *b),
                    texture: *t,
                    cx: x * size as f32,
                    cy: y * size as f32,
                    r: r * size as f32,
                    id: (i + 1) as u8,
                })
                .collect();
            let mut bg_rng = Rng::for_item(cfg.seed ^ 0x5eed, split.stream(), index);
            let raster = render::render(size, &draws, cfg.background, &mut bg_rng);
            let mut visible = vec![0u32; n];
            for &id in &raster.instance {
                if id > 0 {
                    visible[id as usize - 1] += 1;
                }
            }
            let full: Vec<u32> = (0..n).map(|i| raster.full_area[n - 1 - i]).collect();
            let ok = (0..n).all(|i| {
                full[i] > 0 && visible[i] as f32 >= (1.0 - cfg.max_occlusion) * full[i] as f32
            });
            if !ok && attempt < 50 {
                continue;
            }
            return self.assemble(split, index, &specs, &centres, raster, full, &mut rng);
        }
    }

    /// Centres (fractions of the side) for every object.
    fn place(
        &self,
        rng: &mut Rng,
        specs: &[(Shape, Colour, f32, Texture, f32)],
    ) -> Vec<(f32, f32)> {
        match self.config.placement {
            Placement::Free => specs
                .iter()
                .map(|(_, _, r, _, _)| (rng.range(*r, 1.0 - r), rng.range(*r, 1.0 - r)))
                .collect(),
            Placement::Grid => {
                let mut cells: Vec<usize> = (0..9).collect();
                rng.shuffle(&mut cells);
                specs
                    .iter()
                    .zip(cells)
                    .map(|((_, _, r, _, _), cell)| {
                        let (gx, gy) = ((cell % 3) as f32, (cell / 3) as f32);
                        let j = |rng: &mut Rng| rng.range(-0.04, 0.04);
                        let x = ((gx + 0.5) / 3.0 + j(rng)).clamp(*r, 1.0 - r);
                        let y = ((gy + 0.5) / 3.0 + j(rng)).clamp(*r, 1.0 - r);
                        (x, y)
                    })
                    .collect()
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        &self,
        split: Split,
        index: u64,
        specs: &[(Shape, Colour, f32, Texture, f32)],
        centres: &[(f32, f32)],
        raster: render::Raster,
        full: Vec<u32>,
        rng: &mut Rng,
    ) -> Scene {
        let size = self.config.image_size;
        let n = specs.len();
        let mut bbox = vec![[u32::MAX, u32::MAX, 0, 0]; n];
        let mut area = vec![0u32; n];
        let mut semantic = vec![0u8; size * size];
        for (p, &id) in raster.instance.iter().enumerate() {
            if id == 0 {
                continue;
            }
            let i = id as usize - 1;
            let (x, y) = ((p % size) as u32, (p / size) as u32);
            let b = &mut bbox[i];
            *b = [b[0].min(x), b[1].min(y), b[2].max(x + 1), b[3].max(y + 1)];
            area[i] += 1;
            semantic[p] = specs[i].0.index() as u8 + 1;
        }
        let objects: Vec<Object> = (0..n)
            .map(|i| {
                let (s, c, r, t, _) = specs[i];
                Object {
                    shape: s,
                    colour: c,
                    size: if r < 0.13 { Size::Small } else { Size::Large },
                    texture: t,
                    center: [centres[i].0, centres[i].1],
                    radius: r,
                    bbox: if area[i] == 0 { [0; 4] } else { bbox[i] },
                    area: area[i],
                    full_area: full[i],
                }
            })
            .collect();
        let mut relations = Vec::new();
        for i in 0..n {
            for j in 0..n {
                if i == j {
                    continue;
                }
                let (a, b) = (&objects[i], &objects[j]);
                let mut add = |relation| {
                    relations.push(RelationFact {
                        subject: i,
                        relation,
                        object: j,
                    })
                };
                if a.center[0] + 0.05 < b.center[0] {
                    add(Relation::LeftOf);
                }
                if a.center[0] > b.center[0] + 0.05 {
                    add(Relation::RightOf);
                }
                if a.center[1] + 0.05 < b.center[1] {
                    add(Relation::Above);
                }
                if a.center[1] > b.center[1] + 0.05 {
                    add(Relation::Below);
                }
                if a.full_area as f32 >= 1.5 * b.full_area as f32 {
                    add(Relation::BiggerThan);
                }
                if b.full_area as f32 >= 1.5 * a.full_area as f32 {
                    add(Relation::SmallerThan);
                }
            }
        }
        if self.config.actions {
            relations.extend(actions(specs, centres, size));
        }
        let mut counts = Counts {
            total: n,
            per_shape: [0; 5],
            per_colour: [0; 6],
        };
        for o in &objects {
            counts.per_shape[o.shape.index()] += 1;
            counts.per_colour[o.colour.index()] += 1;
        }
        let captions = text::captions(&objects, &relations, &counts, rng);
        let image = RgbImage::from_raw(size as u32, size as u32, raster.rgb)
            .expect("size × size × 3 bytes");
        Scene {
            key: format!("shapes-{}-{index:08}", split.name()),
            split,
            index,
            label: class_index(objects[0].shape, objects[0].colour),
            objects,
            relations,
            counts,
            captions,
            image,
            instance_mask: raster.instance,
            semantic_mask: semantic,
        }
    }
}
