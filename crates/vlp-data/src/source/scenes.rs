//! SceneWorld as a source.

use super::{IndexedSource, RawImage, RawSample, Skip};
use crate::error::Result;
use crate::sample::Field;
use crate::scenes::SceneWorld;
use crate::shapes::Split;

/// `n` samples of one SceneWorld split, generated on demand.
pub struct ScenesSource {
    world: SceneWorld,
    split: Split,
    n: usize,
}

impl ScenesSource {
    /// A source of samples `0..n` of `split` with `image_size`-pixel images under `seed`.
    pub fn new(image_size: usize, seed: u64, split: Split, n: usize) -> Result<Self> {
        Ok(Self {
            world: SceneWorld::new(image_size, seed)?,
            split,
            n,
        })
    }
}

impl IndexedSource for ScenesSource {
    fn name(&self) -> String {
        format!("scenes:{}:{}", self.split.name(), self.n)
    }

    fn len(&self) -> usize {
        self.n
    }

    fn get(&self, index: usize) -> Result<RawSample, Skip> {
        let s = self.world.sample(self.split, index as u64);
        let annotations = SceneWorld::annotations(&s);
        Ok(RawSample {
            key: s.key,
            image: RawImage::Decoded(s.image),
            frames: Vec::new(),
            captions: s.captions,
            label: Some(s.label),
            annotations,
        })
    }

    fn provides(&self) -> Vec<Field> {
        vec![Field::Captions, Field::Labels, Field::SemanticMasks]
    }

    fn class_names(&self) -> Option<Vec<String>> {
        Some(SceneWorld::class_names())
    }
}

#[cfg(test)]
mod tests {
    use crate::shapes::ShapesWorldConfig;
    use crate::source::{Source, open_source};

    #[test]
    fn scenes_spec_opens_a_labelled_captioned_source() {
        let cfg = ShapesWorldConfig {
            image_size: 24,
            ..Default::default()
        };
        let Source::Indexed(s) = open_source("scenes:val:5", &cfg).unwrap() else {
            panic!("scenes: is an indexed source");
        };
        assert_eq!((s.name(), s.len()), ("scenes:val:5".to_string(), 5));
        let x = s.get(4).unwrap();
        assert_eq!(x.key, "scenes-val-00000004");
        assert_eq!(x.captions.len(), 2);
        let classes = s.class_names().unwrap();
        assert_eq!(classes.len(), 8);
        assert!(x.captions[0].contains(classes[x.label.unwrap()].split(' ').next().unwrap()));
        let e = open_source("scenes:bogus", &cfg).err().unwrap().to_string();
        assert!(e.contains("unknown scenes split"), "{e}");
        assert!(open_source("scenes:train:0", &cfg).is_err());
    }
}
