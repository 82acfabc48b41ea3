//! ShapesWorld as a source.

use super::{IndexedSource, RawImage, RawSample, Skip};
use crate::error::Result;
use crate::shapes::{ShapesWorld, ShapesWorldConfig, Split, class_name};

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
        Ok(RawSample {
            key: s.key,
            image: RawImage::Decoded(s.image),
            captions: vec![s.captions.short],
            label: Some(s.label),
        })
    }

    fn class_names(&self) -> Option<Vec<String>> {
        Some(
            (0..self.world.config().num_classes())
                .map(class_name)
                .collect(),
        )
    }
}
