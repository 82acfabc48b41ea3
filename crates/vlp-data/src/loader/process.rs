//! One sample from raw to ready: decode, augment (views and frames), transform annotations,
//! choose and tokenise texts. Runs on the loader's worker threads.

use std::sync::Arc;

use image::RgbImage;
use vlp_text::{Encoding, Tokenizer};

use crate::augment::{AugmentConfig, apply, draw};
use crate::preprocess::{ImagePipeline, Preprocess, decode_image};
use crate::sample::{Annotations, Geometry};
use crate::shapes::Rng;
use crate::source::{RawImage, RawSample, Skip};

/// What a method draws from a sample's text for training (DreamLIP's sub-captions, the
/// improved recipe's augmented captions, ...). Deterministic given `rng`, which is seeded per
/// sample and epoch.
pub trait TextTransform: Send + Sync {
    /// The texts this sample trains with; at least one, the first becomes its caption. An empty
    /// result skips the sample (counted, with `reason`).
    fn texts(&self, sample: &TextInput<'_>, rng: &mut Rng) -> Vec<String>;

    /// Skip reason reported when [`texts`](Self::texts) returns nothing.
    fn skip_reason(&self) -> &'static str {
        "no text for the method"
    }
}

/// What a [`TextTransform`] sees of a sample.
#[derive(Debug)]
pub struct TextInput<'a> {
    /// Sample key.
    pub key: &'a str,
    /// Its non-empty captions.
    pub captions: &'a [String],
    /// Its annotations (long caption, per-object sentences, referring expressions, ...), in the
    /// source image's pixels.
    pub annotations: &'a Annotations,
    /// Its label.
    pub label: Option<usize>,
    /// How the first view was made from the source image (crop, resize, flip): maps the
    /// annotations' source pixels to the view's.
    pub geometry: &'a Geometry,
}

/// A processed sample.
pub(super) struct Ready {
    pub key: String,
    /// Every view's pixels, frames concatenated.
    pub views: Vec<Vec<f32>>,
    pub caption: String,
    pub captions: Vec<String>,
    pub texts: Vec<String>,
    pub label: Option<usize>,
    /// Annotations per view.
    pub annotations: Vec<Annotations>,
    pub geometry: Vec<Geometry>,
    pub tokens: Option<Encoding>,
    pub text_tokens: Vec<Encoding>,
}

pub(super) type Item = std::result::Result<Ready, Skip>;

/// What the workers share.
pub(super) struct Shared {
    pub pipeline: ImagePipeline,
    pub augment: Option<AugmentConfig>,
    pub view_augments: Vec<AugmentConfig>,
    pub views: usize,
    pub require_caption: bool,
    pub tokenizer: Option<Arc<dyn Tokenizer>>,
    pub text_transform: Option<Arc<dyn TextTransform>>,
    pub seed: u64,
}

fn key_hash(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

impl Shared {
    fn decode(&self, image: &RawImage, key: &str) -> Result<RgbImage, Skip> {
        let skip = |reason: &str, detail: String| Skip {
            key: key.to_string(),
            reason: reason.into(),
            detail,
        };
        match image {
            RawImage::Decoded(i) => Ok(i.clone()),
            RawImage::Encoded(b) => {
                decode_image(b, key).map_err(|e| skip("corrupt image", e.to_string()))
            }
            RawImage::Path(p) => {
                let bytes = std::fs::read(p)
                    .map_err(|e| skip("missing image", format!("{}: {e}", p.display())))?;
                decode_image(&bytes, &p.display().to_string())
                    .map_err(|e| skip("corrupt image", e.to_string()))
            }
        }
    }

    pub fn process(&self, raw: RawSample, epoch: u64) -> Item {
        let skip = |reason: &str, detail: String| Skip {
            key: raw.key.clone(),
            reason: reason.into(),
            detail,
        };
        let first = self.decode(&raw.image, &raw.key)?;
        let mut frames = vec![first];
        for f in &raw.frames {
            let img = self.decode(f, &raw.key)?;
            if img.dimensions() != frames[0].dimensions() {
                return Err(skip(
                    "frame size mismatch",
                    format!(
                        "frame {} is {:?}, the first {:?}",
                        frames.len(),
                        img.dimensions(),
                        frames[0].dimensions()
                    ),
                ));
            }
            frames.push(img);
        }
        let mut rng = Rng::for_item(self.seed, epoch, key_hash(&raw.key));
        let captions: Vec<String> = raw
            .captions
            .iter()
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect();
        if captions.is_empty() && self.require_caption {
            return Err(skip(
                if raw.captions.is_empty() {
                    "missing caption"
                } else {
                    "empty caption"
                },
                String::new(),
            ));
        }
        let augmenting = self.augment.is_some() || !self.view_augments.is_empty();
        let mut caption = match captions.len() {
            0 => String::new(),
            n if augmenting => captions[rng.below(n)].clone(),
            _ => captions[0].clone(),
        };
        let (w, h) = frames[0].dimensions();
        let mut views = Vec::with_capacity(self.views);
        let mut geometry = Vec::with_capacity(self.views);
        for k in 0..self.views.max(1) {
            let (pixels, g) = match self.view_augments.get(k).or(self.augment.as_ref()) {
                None => {
                    let px: Vec<f32> = frames
                        .iter()
                        .flat_map(|f| self.pipeline.process(f))
                        .collect();
                    (px, self.pipeline.geometry(w, h))
                }
                Some(a) => {
                    let p = draw(w, h, a, &mut rng);
                    let mut px = Vec::new();
                    let mut g = Geometry::identity(self.pipeline.size);
                    for f in &frames {
                        let (img, geo) = apply(f, self.pipeline.size, &p);
                        px.extend(self.pipeline.normalize(&img));
                        g = geo;
                    }
                    (px, g)
                }
            };
            views.push(pixels);
            geometry.push(g);
        }
        let texts = match &self.text_transform {
            None => Vec::new(),
            Some(t) => {
                let texts = t.texts(
                    &TextInput {
                        key: &raw.key,
                        captions: &captions,
                        annotations: &raw.annotations,
                        label: raw.label,
                        geometry: &geometry[0],
                    },
                    &mut rng,
                );
                if texts.is_empty() {
                    return Err(skip(t.skip_reason(), String::new()));
                }
                caption = texts[0].clone();
                texts
            }
        };
        let annotations = geometry
            .iter()
            .map(|g| raw.annotations.transformed(g))
            .collect();
        let untokenizable = |e: vlp_text::TextError| skip("untokenizable text", e.to_string());
        let tokens = match &self.tokenizer {
            Some(t) => Some(t.encode(&caption).map_err(untokenizable)?),
            None => None,
        };
        let text_tokens = match &self.tokenizer {
            Some(t) => texts
                .iter()
                .map(|x| t.encode(x))
                .collect::<vlp_text::Result<_>>()
                .map_err(untokenizable)?,
            None => Vec::new(),
        };
        Ok(Ready {
            key: raw.key,
            views,
            caption,
            captions,
            texts,
            label: raw.label,
            annotations,
            geometry,
            tokens,
            text_tokens,
        })
    }
}
