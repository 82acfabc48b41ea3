//! What a sample carries besides pixels and captions, and how augmentation moves it.
//!
//! Sources fill the annotations they have (ShapesWorld all of them, COCO boxes, ImageFolder a
//! label) and leave the rest empty; [`Field`] names each kind so that a method can say what it
//! needs and a source what it provides. Boxes and masks are in source-image pixels on the way in
//! and in the model's input pixels once the loader has cropped, resized and flipped the image
//! ([`Geometry`]).

use serde::{Deserialize, Serialize};

/// A kind of data a sample may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// At least one caption.
    Captions,
    /// A long, multi-sentence caption.
    LongCaption,
    /// One sentence per object.
    ObjectCaptions,
    /// A class label.
    Labels,
    /// Object boxes with labels.
    Boxes,
    /// An instance mask (object `i` has id `i + 1`).
    InstanceMasks,
    /// A semantic (per-class) mask.
    SemanticMasks,
    /// Referring expressions tied to objects.
    Referring,
    /// Question–answer pairs.
    QuestionAnswers,
    /// Several frames (clips).
    Frames,
}

impl Field {
    /// Every field.
    pub const ALL: [Field; 10] = [
        Field::Captions,
        Field::LongCaption,
        Field::ObjectCaptions,
        Field::Labels,
        Field::Boxes,
        Field::InstanceMasks,
        Field::SemanticMasks,
        Field::Referring,
        Field::QuestionAnswers,
        Field::Frames,
    ];

    /// The name used in configs and messages.
    pub fn name(self) -> &'static str {
        match self {
            Field::Captions => "captions",
            Field::LongCaption => "long captions",
            Field::ObjectCaptions => "per-object captions",
            Field::Labels => "class labels",
            Field::Boxes => "object boxes",
            Field::InstanceMasks => "instance masks",
            Field::SemanticMasks => "semantic masks",
            Field::Referring => "referring expressions",
            Field::QuestionAnswers => "question-answer pairs",
            Field::Frames => "video frames",
        }
    }
}

/// An object's box.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectBox {
    /// `[x0, y0, x1, y1]` in pixels (`x1`, `y1` exclusive).
    pub bbox: [f32; 4],
    /// Class index, when the source has categories.
    pub label: Option<usize>,
    /// Category or description ("red circle", COCO's "dog").
    pub name: String,
}

impl ObjectBox {
    /// Area in pixels (0 for an empty box).
    pub fn area(&self) -> f32 {
        (self.bbox[2] - self.bbox[0]).max(0.0) * (self.bbox[3] - self.bbox[1]).max(0.0)
    }
}

/// A per-pixel map, row-major.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mask {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `width × height` values (0 = background).
    pub data: Vec<u8>,
}

impl Mask {
    /// The value at `(x, y)`.
    pub fn at(&self, x: usize, y: usize) -> u8 {
        self.data[y * self.width + x]
    }
}

/// A referring expression and the object it singles out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Referring {
    /// "the red circle left of the star".
    pub text: String,
    /// Index into [`Annotations::boxes`].
    pub object: usize,
}

/// A question with its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuestionAnswer {
    /// The question.
    pub question: String,
    /// The answer.
    pub answer: String,
    /// What it asks about (`colour`, `count`, ...), when known.
    pub kind: String,
}

/// Everything beyond pixels, captions and the class label that a source knows about a sample.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Annotations {
    /// A long caption (several sentences).
    pub long_caption: Option<String>,
    /// One sentence per object, in [`boxes`](Self::boxes) order.
    pub object_captions: Vec<String>,
    /// Object boxes; object `i` is instance `i + 1` in the instance mask.
    pub boxes: Vec<ObjectBox>,
    /// Instance ids per pixel.
    pub instance_mask: Option<Mask>,
    /// Class ids per pixel (ShapesWorld: shape index + 1).
    pub semantic_mask: Option<Mask>,
    /// Referring expressions.
    pub referring: Vec<Referring>,
    /// Question–answer pairs.
    pub qa: Vec<QuestionAnswer>,
}

impl Annotations {
    /// Whether `field` is present (captions, labels and frames live outside and answer `false`).
    pub fn has(&self, field: Field) -> bool {
        match field {
            Field::LongCaption => self.long_caption.is_some(),
            Field::ObjectCaptions => !self.object_captions.is_empty(),
            Field::Boxes => !self.boxes.is_empty(),
            Field::InstanceMasks => self.instance_mask.is_some(),
            Field::SemanticMasks => self.semantic_mask.is_some(),
            Field::Referring => !self.referring.is_empty(),
            Field::QuestionAnswers => !self.qa.is_empty(),
            Field::Captions | Field::Labels | Field::Frames => false,
        }
    }

    /// The annotations as seen through `g`: boxes mapped and clipped to the output square (a box
    /// cropped away keeps its place with zero area, so instance ids stay valid), masks resampled
    /// by nearest neighbour.
    pub fn transformed(&self, g: &Geometry) -> Annotations {
        Annotations {
            boxes: self
                .boxes
                .iter()
                .map(|b| ObjectBox {
                    bbox: g.map_box(b.bbox),
                    ..b.clone()
                })
                .collect(),
            instance_mask: self.instance_mask.as_ref().map(|m| g.map_mask(m)),
            semantic_mask: self.semantic_mask.as_ref().map(|m| g.map_mask(m)),
            ..self.clone()
        }
    }
}

/// Where the output pixels of a crop-resize-flip come from: output `(u, v)` samples the source at
/// `x = x0 + (u' + 0.5) / sx - 0.5`, `y = y0 + (v + 0.5) / sy - 0.5`, with `u' = size - 1 - u`
/// when flipped and `u' = u` otherwise. Padding (a crop larger than the image) is a negative
/// `x0`/`y0`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Geometry {
    /// Source x of the crop's left edge.
    pub x0: f32,
    /// Source y of the crop's top edge.
    pub y0: f32,
    /// Output pixels per source pixel, horizontally.
    pub sx: f32,
    /// Output pixels per source pixel, vertically.
    pub sy: f32,
    /// Mirrored left–right after resizing.
    pub flip: bool,
    /// Output side.
    pub size: usize,
}

impl Geometry {
    /// The identity on a `size × size` image.
    pub fn identity(size: usize) -> Self {
        Self {
            x0: 0.0,
            y0: 0.0,
            sx: 1.0,
            sy: 1.0,
            flip: false,
            size,
        }
    }

    /// Source point → output point (continuous coordinates, pixel edges at integers).
    pub fn map_point(&self, x: f32, y: f32) -> (f32, f32) {
        let u = (x - self.x0) * self.sx;
        let v = (y - self.y0) * self.sy;
        let u = if self.flip { self.size as f32 - u } else { u };
        (u, v)
    }

    /// A source box in output pixels, clipped to the output square.
    pub fn map_box(&self, b: [f32; 4]) -> [f32; 4] {
        let (u0, v0) = self.map_point(b[0], b[1]);
        let (u1, v1) = self.map_point(b[2], b[3]);
        let s = self.size as f32;
        let c = |v: f32| v.clamp(0.0, s);
        let (l, r) = (u0.min(u1), u0.max(u1));
        [c(l), c(v0), c(r), c(v1)]
    }

    /// A source mask resampled to the output square (nearest neighbour; outside the source is 0).
    pub fn map_mask(&self, m: &Mask) -> Mask {
        let s = self.size;
        let mut data = vec![0u8; s * s];
        for v in 0..s {
            let y = self.y0 + (v as f32 + 0.5) / self.sy;
            if y < 0.0 || y >= m.height as f32 {
                continue;
            }
            for u in 0..s {
                let uu = if self.flip { s - 1 - u } else { u };
                let x = self.x0 + (uu as f32 + 0.5) / self.sx;
                if x < 0.0 || x >= m.width as f32 {
                    continue;
                }
                data[v * s + u] = m.at(x as usize, y as usize);
            }
        }
        Mask {
            width: s,
            height: s,
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_resize_flip_moves_boxes_and_masks_together() {
        // A 10×8 image, object 1 covering x 2..5, y 1..4; crop x 1..9 (w 8), y 0..8, resize ×2
        // to 16, flip.
        let mut data = vec![0u8; 80];
        for y in 1..4 {
            for x in 2..5 {
                data[y * 10 + x] = 1;
            }
        }
        let m = Mask {
            width: 10,
            height: 8,
            data,
        };
        let g = Geometry {
            x0: 1.0,
            y0: 0.0,
            sx: 2.0,
            sy: 2.0,
            flip: true,
            size: 16,
        };
        let b = g.map_box([2.0, 1.0, 5.0, 4.0]);
        assert_eq!(b, [8.0, 2.0, 14.0, 8.0]);
        let out = g.map_mask(&m);
        // The mask's object pixels are exactly the box.
        for v in 0..16 {
            for u in 0..16 {
                let inside = (u as f32) >= b[0]
                    && (u as f32) < b[2]
                    && (v as f32) >= b[1]
                    && (v as f32) < b[3];
                assert_eq!(out.at(u, v) == 1, inside, "({u}, {v})");
            }
        }
    }

    #[test]
    fn boxes_outside_the_crop_keep_their_index_with_zero_area() {
        let g = Geometry {
            x0: 10.0,
            y0: 10.0,
            sx: 1.0,
            sy: 1.0,
            flip: false,
            size: 8,
        };
        let a = Annotations {
            boxes: vec![
                ObjectBox {
                    bbox: [0.0, 0.0, 4.0, 4.0],
                    label: Some(1),
                    name: "gone".into(),
                },
                ObjectBox {
                    bbox: [12.0, 12.0, 30.0, 14.0],
                    label: Some(2),
                    name: "clipped".into(),
                },
            ],
            ..Default::default()
        };
        let t = a.transformed(&g);
        assert_eq!(t.boxes.len(), 2);
        assert_eq!(t.boxes[0].area(), 0.0);
        assert_eq!(t.boxes[1].bbox, [2.0, 2.0, 8.0, 4.0]);
    }
}
