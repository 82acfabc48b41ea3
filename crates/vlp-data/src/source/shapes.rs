//! ShapesWorld as a source.

use super::{IndexedSource, RawImage, RawSample, Skip};
use crate::error::Result;
use crate::sample::{Annotations, Field, Mask, ObjectBox, QuestionAnswer, Referring};
use crate::shapes::{Scene, ShapesWorld, ShapesWorldConfig, Split, class_index, class_name};

/// `n` samples of one ShapesWorld split, generated on demand (nothing is stored).
pub struct ShapesSource {
    world: ShapesWorld,
    split: Split,
    n: usize,
}

impl ShapesSource {
    /// A source of samples `0..n` of `split`.
    pub fn new(config: ShapesWorldConfig, split: Split, n: usize) -> Result<Self> {
        Ok(Self {
            world: ShapesWorld::new(config)?,
            split,
            n,
        })
    }

    /// The generator.
    pub fn world(&self) -> &ShapesWorld {
        &self.world
    }
}

impl IndexedSource for ShapesSource {
    fn name(&self) -> String {
        format!("shapes:{}:{}", self.split.name(), self.n)
    }

    fn len(&self) -> usize {
        self.n
    }

    fn get(&self, index: usize) -> Result<RawSample, Skip> {
        let s = self.world.sample(self.split, index as u64);
        let annotations = annotations(&s);
        Ok(RawSample {
            key: s.key,
            image: RawImage::Decoded(s.image),
            frames: Vec::new(),
            captions: vec![s.captions.short],
            label: Some(s.label),
            annotations,
        })
    }

    fn provides(&self) -> Vec<Field> {
        Field::ALL
            .into_iter()
            .filter(|f| *f != Field::Frames)
            .collect()
    }

    fn class_names(&self) -> Option<Vec<String>> {
        Some(
            (0..self.world.config().num_classes())
                .map(class_name)
                .collect(),
        )
    }
}

/// Every piece of a scene's ground truth as sample annotations. Box labels are zero-shot class
/// indices (shape × colour); the semantic mask holds shape index + 1.
pub fn annotations(s: &Scene) -> Annotations {
    let size = s.image.width() as usize;
    let mask = |data: &Vec<u8>| Mask {
        width: size,
        height: size,
        data: data.clone(),
    };
    Annotations {
        long_caption: Some(s.captions.long.clone()),
        object_captions: s.captions.objects.clone(),
        boxes: s
            .objects
            .iter()
            .map(|o| ObjectBox {
                bbox: o.bbox.map(|v| v as f32),
                label: Some(class_index(o.shape, o.colour)),
                name: format!("{} {}", o.colour.name(), o.shape.name()),
            })
            .collect(),
        instance_mask: Some(mask(&s.instance_mask)),
        semantic_mask: Some(mask(&s.semantic_mask)),
        referring: s
            .captions
            .referring
            .iter()
            .enumerate()
            .map(|(i, t)| Referring {
                text: t.clone(),
                object: i,
            })
            .collect(),
        qa: s
            .captions
            .vqa
            .iter()
            .map(|q| QuestionAnswer {
                question: q.question.clone(),
                answer: q.answer.clone(),
                kind: serde_json::to_value(q.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
            })
            .collect(),
    }
}
