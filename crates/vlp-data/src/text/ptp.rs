//! PTP's position-guided text prompt (Wang et al., 2023, "Position-guided Text Prompt for
//! Vision-Language Pre-training", §3.2; official code `sail-sg/ptp`,
//! `src/blip_src/data/pretrain_dataset_concated_pred_tsv.py`, `generate_bbox_annotation`): one
//! object of the image is picked at random and the caption gets
//! ". The block {b} has a {object}." appended, `b` the cell of an `n × n` grid (row-major, 0 at
//! the top left) that holds the centre of the object's box.
//!
//! Where this departs from the code: the code places the box on the *original* image, before
//! the random crop that makes the training view, so the block can name a cell the object is not
//! in any more; here the centre is mapped through the view's crop, resize and flip first, and a
//! centre the crop cut away gives the block `x` (as the issue specifies). The code's formula is
//! kept otherwise: `min(⌊centre / side · n⌋, n − 1)` per axis, `block = n · row + column`.

use crate::loader::{TextInput, TextTransform};
use crate::sample::Geometry;
use crate::shapes::Rng;

/// The block name of a centre the view does not contain.
pub const OUTSIDE: &str = "x";

/// Appends PTP's position prompt to each sample's caption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionPrompt {
    /// Cells per side of the grid (the paper's 3).
    pub grid: usize,
}

impl Default for PositionPrompt {
    fn default() -> Self {
        Self { grid: 3 }
    }
}

impl PositionPrompt {
    /// The block holding source point `(x, y)` once `view` has cropped, resized and flipped the
    /// image, or [`OUTSIDE`].
    pub fn block(&self, view: &Geometry, x: f32, y: f32) -> String {
        let (u, v) = view.map_point(x, y);
        let side = view.size as f32;
        if !(0.0..side).contains(&u) || !(0.0..side).contains(&v) {
            return OUTSIDE.to_string();
        }
        let n = self.grid.max(1);
        let cell = |t: f32| ((t / side * n as f32) as usize).min(n - 1);
        (n * cell(v) + cell(u)).to_string()
    }

    /// `caption` (a final full stop dropped) and the prompt for `object` in `block`.
    pub fn prompt(caption: &str, block: &str, object: &str) -> String {
        let c = caption.trim().trim_end_matches('.').trim_end();
        format!("{c}. The block {block} has a {object}.")
    }
}

impl TextTransform for PositionPrompt {
    /// A caption drawn at random with the prompt of one object drawn at random; the caption
    /// alone when the sample has no named object box (the code appends only "." then); nothing
    /// without a caption.
    fn texts(&self, sample: &TextInput<'_>, rng: &mut Rng) -> Vec<String> {
        if sample.captions.is_empty() {
            return Vec::new();
        }
        let caption = &sample.captions[rng.below(sample.captions.len())];
        let named: Vec<_> = sample
            .annotations
            .boxes
            .iter()
            .filter(|b| !b.name.trim().is_empty())
            .collect();
        if named.is_empty() {
            return vec![caption.clone()];
        }
        let b = named[rng.below(named.len())];
        let [x0, y0, x1, y1] = b.bbox;
        let block = self.block(sample.geometry, (x0 + x1) / 2.0, (y0 + y1) / 2.0);
        vec![Self::prompt(caption, &block, b.name.trim())]
    }

    fn skip_reason(&self) -> &'static str {
        "no caption for the position prompt"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{Annotations, ObjectBox};

    fn boxed(bbox: [f32; 4], name: &str) -> ObjectBox {
        ObjectBox {
            bbox,
            label: None,
            name: name.into(),
        }
    }

    #[test]
    fn blocks_follow_the_code_formula_on_an_identity_view() {
        let p = PositionPrompt::default();
        let g = Geometry::identity(90);
        // Cells are 30 pixels: (x, y) → 3 · row + column; the far edges clamp to the last cell.
        for (x, y, want) in [
            (0.0, 0.0, "0"),
            (29.9, 0.0, "0"),
            (30.0, 0.0, "1"),
            (89.9, 0.0, "2"),
            (45.0, 45.0, "4"),
            (10.0, 70.0, "6"),
            (89.0, 89.0, "8"),
        ] {
            assert_eq!(p.block(&g, x, y), want, "({x}, {y})");
        }
        assert_eq!(PositionPrompt { grid: 2 }.block(&g, 50.0, 10.0), "1");
    }

    #[test]
    fn blocks_follow_the_crop_and_flip_and_a_lost_centre_is_x() {
        let p = PositionPrompt::default();
        // A 60-pixel crop from (40, 20) of the source, shown at 30 pixels, mirrored.
        let g = Geometry {
            x0: 40.0,
            y0: 20.0,
            sx: 0.5,
            sy: 0.5,
            flip: true,
            size: 30,
        };
        // Source (45, 25): view (2.5, 2.5) before the flip, (27.5, 2.5) after: top right.
        assert_eq!(p.block(&g, 45.0, 25.0), "2");
        // Source (95, 75): view (27.5, 27.5) → flipped (2.5, 27.5): bottom left.
        assert_eq!(p.block(&g, 95.0, 75.0), "6");
        // Left of the crop, and below it.
        assert_eq!(p.block(&g, 30.0, 50.0), OUTSIDE);
        assert_eq!(p.block(&g, 60.0, 81.0), OUTSIDE);
    }

    #[test]
    fn texts_append_one_object_drawn_at_random() {
        let p = PositionPrompt::default();
        let captions = vec!["a red circle.".to_string()];
        let ann = Annotations {
            boxes: vec![
                boxed([0.0, 0.0, 10.0, 10.0], "red circle"),
                boxed([70.0, 70.0, 90.0, 90.0], "blue square"),
                boxed([40.0, 0.0, 50.0, 5.0], ""),
            ],
            ..Default::default()
        };
        let g = Geometry::identity(90);
        let input = TextInput {
            key: "k",
            captions: &captions,
            annotations: &ann,
            label: None,
            geometry: &g,
        };
        let mut seen = std::collections::BTreeMap::new();
        for seed in 0..200 {
            let t = p.texts(&input, &mut Rng::new(seed));
            assert_eq!(t.len(), 1);
            *seen.entry(t[0].clone()).or_insert(0) += 1;
        }
        // Only the two named objects, each about half the time.
        let want = [
            "a red circle. The block 0 has a red circle.",
            "a red circle. The block 8 has a blue square.",
        ];
        assert_eq!(seen.keys().map(String::as_str).collect::<Vec<_>>(), want);
        assert!(seen.values().all(|&n| (70..=130).contains(&n)), "{seen:?}");
        let bare = Annotations::default();
        let t = p.texts(
            &TextInput {
                annotations: &bare,
                ..input
            },
            &mut Rng::new(0),
        );
        assert_eq!(t, vec!["a red circle.".to_string()]);
        let none = TextInput {
            captions: &[],
            ..input
        };
        assert!(p.texts(&none, &mut Rng::new(0)).is_empty());
    }
}
