//! A batch: pixels, texts and annotations of several samples, in a fixed order.

use std::ops::Range;

use vlp_text::TokenBatch;

use crate::sample::{Annotations, Geometry};

/// One batch.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Position of this batch in its epoch.
    pub index: usize,
    /// Pixels of the first view, `[n, frames, 3, size, size]` row-major (`[n, 3, size, size]`
    /// when `frames` is 1).
    pub images: Vec<f32>,
    /// Frames per sample (1 for images).
    pub frames: usize,
    /// Further augmented views (when the loader was asked for several), each laid out as
    /// `images`.
    pub views: Vec<Vec<f32>>,
    /// Image side.
    pub image_size: usize,
    /// The caption each sample trains on (the first of a text transform's texts).
    pub captions: Vec<String>,
    /// A method's per-sample texts (from its text transform); empty without one.
    pub texts: Vec<Vec<String>>,
    /// Every caption of every sample (COCO has several).
    pub all_captions: Vec<Vec<String>>,
    /// Sample keys.
    pub keys: Vec<String>,
    /// Class labels, where the source has them.
    pub labels: Vec<Option<usize>>,
    /// Annotations in the first view's pixels (boxes and masks followed its crop and flip).
    pub annotations: Vec<Annotations>,
    /// Annotations in each further view's pixels, `[view - 1][sample]`.
    pub view_annotations: Vec<Vec<Annotations>>,
    /// Crop, scale and flip of each view, `[view][sample]`.
    pub geometry: Vec<Vec<Geometry>>,
    /// Tokenised `captions`, when the loader has a tokenizer.
    pub tokens: Option<TokenBatch>,
    /// Tokenised `texts`, flattened in sample order, when there is a text transform.
    pub text_tokens: Option<TokenBatch>,
}

impl Batch {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Floats per sample in `images`.
    pub fn sample_len(&self) -> usize {
        self.frames.max(1) * 3 * self.image_size * self.image_size
    }

    /// The first view as a `[n, 3, size, size]` tensor (frames folded into the batch axis:
    /// `[n · frames, 3, size, size]`).
    pub fn images_tensor<B: burn::tensor::backend::Backend>(
        &self,
        device: &B::Device,
    ) -> burn::tensor::Tensor<B, 4> {
        self.view_tensor::<B>(0, device)
    }

    /// View `view` (0 = `images`) as a `[n · frames, 3, size, size]` tensor.
    ///
    /// # Panics
    /// If the batch has no such view.
    pub fn view_tensor<B: burn::tensor::backend::Backend>(
        &self,
        view: usize,
        device: &B::Device,
    ) -> burn::tensor::Tensor<B, 4> {
        let s = self.image_size;
        let data = if view == 0 {
            &self.images
        } else {
            &self.views[view - 1]
        };
        burn::tensor::Tensor::from_data(
            burn::tensor::TensorData::new(data.clone(), [self.len() * self.frames.max(1), 3, s, s]),
            device,
        )
    }

    /// Number of texts per sample in `texts` (all equal when a method draws a fixed number).
    pub fn text_counts(&self) -> Vec<usize> {
        self.texts.iter().map(Vec::len).collect()
    }

    /// Samples `rows` as a batch of their own (micro-batches, data-parallel shares).
    ///
    /// # Panics
    /// If `rows` reaches past the batch.
    pub fn slice(&self, rows: Range<usize>) -> Batch {
        assert!(
            rows.end <= self.len(),
            "batch slice {rows:?} of {} samples",
            self.len()
        );
        let per = self.sample_len();
        let px = |v: &Vec<f32>| v[rows.start * per..rows.end * per].to_vec();
        let pick = |v: &[String]| v[rows.clone()].to_vec();
        // Without a text transform there are no per-sample texts to cut.
        let text_rows = if self.texts.is_empty() {
            0..0
        } else {
            let counts = self.text_counts();
            let start: usize = counts[..rows.start].iter().sum();
            let len: usize = counts[rows.clone()].iter().sum();
            start..start + len
        };
        Batch {
            index: self.index,
            images: px(&self.images),
            frames: self.frames,
            views: self.views.iter().map(px).collect(),
            image_size: self.image_size,
            captions: pick(&self.captions),
            texts: if self.texts.is_empty() {
                Vec::new()
            } else {
                self.texts[rows.clone()].to_vec()
            },
            all_captions: self.all_captions[rows.clone()].to_vec(),
            keys: pick(&self.keys),
            labels: self.labels[rows.clone()].to_vec(),
            annotations: self.annotations[rows.clone()].to_vec(),
            view_annotations: self
                .view_annotations
                .iter()
                .map(|v| v[rows.clone()].to_vec())
                .collect(),
            geometry: self
                .geometry
                .iter()
                .map(|v| v[rows.clone()].to_vec())
                .collect(),
            tokens: self.tokens.as_ref().map(|t| t.rows(rows.clone())),
            text_tokens: self
                .text_tokens
                .as_ref()
                .filter(|_| !text_rows.is_empty())
                .map(|t| t.rows(text_rows)),
        }
    }

    /// The batch cut into `parts` consecutive slices of (nearly) equal size.
    pub fn split(&self, parts: usize) -> Vec<Batch> {
        let n = self.len();
        let per = n.div_ceil(parts.max(1)).max(1);
        (0..n)
            .step_by(per)
            .map(|s| self.slice(s..(s + per).min(n)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vlp_text::Encoding;

    fn batch(n: usize) -> Batch {
        let enc = |i: usize| Encoding {
            ids: vec![i as u32, 7],
            attention_mask: vec![1, 0],
        };
        Batch {
            index: 3,
            images: (0..n * 12).map(|v| v as f32).collect(),
            frames: 1,
            views: vec![(0..n * 12).map(|v| -(v as f32)).collect()],
            image_size: 2,
            captions: (0..n).map(|i| format!("c{i}")).collect(),
            texts: (0..n).map(|i| vec![format!("t{i}"); i + 1]).collect(),
            all_captions: (0..n).map(|i| vec![format!("c{i}")]).collect(),
            keys: (0..n).map(|i| format!("k{i}")).collect(),
            labels: (0..n).map(Some).collect(),
            annotations: vec![Annotations::default(); n],
            view_annotations: vec![vec![Annotations::default(); n]],
            geometry: vec![vec![Geometry::identity(2); n]; 2],
            tokens: TokenBatch::from_encodings(&(0..n).map(enc).collect::<Vec<_>>()),
            text_tokens: TokenBatch::from_encodings(
                &(0..n).flat_map(|i| vec![enc(i); i + 1]).collect::<Vec<_>>(),
            ),
        }
    }

    #[test]
    fn slices_keep_every_field_aligned() {
        let b = batch(4);
        let s = b.slice(1..3);
        assert_eq!(s.len(), 2);
        assert_eq!(s.images[0], 12.0);
        assert_eq!(s.images.len(), 24);
        assert_eq!(s.views[0][0], -12.0);
        assert_eq!(s.keys, vec!["k1", "k2"]);
        assert_eq!(s.labels, vec![Some(1), Some(2)]);
        assert_eq!(s.tokens.as_ref().unwrap().ids, vec![1, 7, 2, 7]);
        // Sample 1 has 2 texts, sample 2 has 3: rows 1..6 of the flattened texts.
        let tt = s.text_tokens.unwrap();
        assert_eq!(tt.batch, 5);
        assert_eq!(
            tt.ids.iter().step_by(2).copied().collect::<Vec<_>>(),
            vec![1, 1, 2, 2, 2]
        );
        assert_eq!(s.geometry.len(), 2);
        assert_eq!(s.geometry[1].len(), 2);
    }

    #[test]
    fn slices_without_texts() {
        let mut b = batch(3);
        b.texts.clear();
        b.text_tokens = None;
        let s = b.slice(1..3);
        assert!(s.texts.is_empty() && s.text_tokens.is_none());
        assert_eq!(s.keys, vec!["k1", "k2"]);
    }

    #[test]
    fn split_covers_the_batch_once() {
        let b = batch(5);
        let parts = b.split(2);
        let keys: Vec<String> = parts.iter().flat_map(|p| p.keys.clone()).collect();
        assert_eq!(keys, b.keys);
        assert_eq!(parts.iter().map(Batch::len).collect::<Vec<_>>(), vec![3, 2]);
    }
}
