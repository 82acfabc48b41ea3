//! Scoring images against texts, whatever features a method produces: the pooled dot product of
//! CLIP ([`DotScorer`]) or token-wise late interaction of FILIP ([`LateInteractionScorer`]).
//! Zero-shot and retrieval ask a [`Scorer`] for blocks of the score matrix, so a 10 k × 10 k
//! retrieval never holds more than a few million scores at a time.

use std::ops::Range;

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor, TensorData};
use rayon::prelude::*;

use crate::embed::Features;
use crate::error::{Result, TaskError};

/// Which way a score is read: late-interaction methods score image→text and text→image
/// differently (FILIP's `s^I` and `s^T`); pooled embeddings score both the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Ranking texts for an image (zero-shot, image→text retrieval).
    ImageToText,
    /// Ranking images for a text (text→image retrieval).
    TextToImage,
}

/// The score of every image against every text, served in blocks.
pub trait Scorer: Sync {
    /// Number of images.
    fn num_images(&self) -> usize;
    /// Number of texts.
    fn num_texts(&self) -> usize;
    /// Scores of `images` (rows) against `texts` (columns), row-major
    /// (`images.len() × texts.len()`).
    fn scores(
        &self,
        images: Range<usize>,
        texts: Range<usize>,
        direction: Direction,
    ) -> Result<Vec<f32>>;
}

/// Scores in a block stay under this many values.
pub const BLOCK_VALUES: usize = 1 << 22;

/// Rows per block when every row spans `columns` scores.
pub fn block_rows(columns: usize) -> usize {
    (BLOCK_VALUES / columns.max(1)).max(1)
}

/// Dot products of pooled (normalised) embeddings.
pub struct DotScorer<'a> {
    /// One row per image.
    pub images: &'a Features,
    /// One row per text.
    pub texts: &'a Features,
}

impl<'a> DotScorer<'a> {
    /// Checks that both sides have the same width.
    pub fn new(images: &'a Features, texts: &'a Features) -> Result<Self> {
        if images.rows > 0 && texts.rows > 0 && images.dim != texts.dim {
            return Err(TaskError::Invalid {
                task: "scoring".into(),
                reason: format!(
                    "image features have width {} but text features {}",
                    images.dim, texts.dim
                ),
            });
        }
        Ok(Self { images, texts })
    }
}

impl Scorer for DotScorer<'_> {
    fn num_images(&self) -> usize {
        self.images.rows
    }

    fn num_texts(&self) -> usize {
        self.texts.rows
    }

    fn scores(&self, images: Range<usize>, texts: Range<usize>, _: Direction) -> Result<Vec<f32>> {
        let cols = texts.len();
        let mut out = vec![0.0f32; images.len() * cols];
        out.par_chunks_mut(cols.max(1))
            .zip(images.into_par_iter())
            .for_each(|(row, i)| {
                let x = self.images.row(i);
                for (o, t) in row.iter_mut().zip(texts.clone()) {
                    *o = x.iter().zip(self.texts.row(t)).map(|(a, b)| a * b).sum();
                }
            });
        Ok(out)
    }
}

/// Scores computed beforehand, `[images, texts]` (an adapter's class scores).
pub struct MatrixScorer<'a> {
    /// One row per image, one column per text.
    pub scores: &'a Features,
}

impl<'a> MatrixScorer<'a> {
    /// Serves `scores`.
    pub fn new(scores: &'a Features) -> Self {
        Self { scores }
    }
}

impl Scorer for MatrixScorer<'_> {
    fn num_images(&self) -> usize {
        self.scores.rows
    }

    fn num_texts(&self) -> usize {
        self.scores.dim
    }

    fn scores(&self, images: Range<usize>, texts: Range<usize>, _: Direction) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(images.len() * texts.len());
        for i in images {
            out.extend_from_slice(&self.scores.row(i)[texts.clone()]);
        }
        Ok(out)
    }
}

/// A set of token features on the host: `rows` items of up to `tokens` vectors each, with the
/// padded ones marked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenSet {
    /// `rows × tokens × dim` values (normalised tokens).
    pub data: Vec<f32>,
    /// `rows × tokens`, `true` at padding.
    pub padding: Vec<bool>,
    /// Items.
    pub rows: usize,
    /// Tokens per item (padded).
    pub tokens: usize,
    /// Token width.
    pub dim: usize,
}

impl TokenSet {
    /// Copies `[rows, tokens, dim]` tokens (and a `[rows, tokens]` padding mask) to the host.
    pub fn from_tensors<B: Backend>(
        tokens: Tensor<B, 3>,
        padding: Option<Tensor<B, 2, Bool>>,
    ) -> Self {
        let [rows, t, dim] = tokens.dims();
        let padding = match padding {
            Some(p) => p
                .int()
                .into_data()
                .convert::<i64>()
                .into_vec::<i64>()
                .expect("int data")
                .into_iter()
                .map(|v| v != 0)
                .collect(),
            None => vec![false; rows * t],
        };
        Self {
            data: tokens
                .into_data()
                .convert::<f32>()
                .into_vec()
                .expect("f32 data"),
            padding,
            rows,
            tokens: t,
            dim,
        }
    }

    /// Appends `other`'s items, padding both to the longer token count.
    pub fn extend(&mut self, other: TokenSet) {
        if self.rows == 0 {
            *self = other;
            return;
        }
        assert_eq!(self.dim, other.dim, "token sets of different widths");
        let t = self.tokens.max(other.tokens);
        let repad = |s: TokenSet| -> (Vec<f32>, Vec<bool>) {
            if s.tokens == t {
                return (s.data, s.padding);
            }
            let mut d = vec![0.0; s.rows * t * s.dim];
            let mut p = vec![true; s.rows * t];
            for r in 0..s.rows {
                for k in 0..s.tokens {
                    p[r * t + k] = s.padding[r * s.tokens + k];
                    let src = (r * s.tokens + k) * s.dim;
                    d[(r * t + k) * s.dim..(r * t + k + 1) * s.dim]
                        .copy_from_slice(&s.data[src..src + s.dim]);
                }
            }
            (d, p)
        };
        let rows = self.rows + other.rows;
        let dim = self.dim;
        let (mut d, mut p) = repad(std::mem::take(self));
        let (d2, p2) = repad(other);
        d.extend(d2);
        p.extend(p2);
        *self = TokenSet {
            data: d,
            padding: p,
            rows,
            tokens: t,
            dim,
        };
    }

    /// Items `rows` as tensors on `device`.
    fn to_tensors<B: Backend>(
        &self,
        rows: Range<usize>,
        device: &B::Device,
    ) -> (Tensor<B, 3>, Tensor<B, 2, Bool>) {
        let (t, d) = (self.tokens, self.dim);
        let n = rows.len();
        let data = self.data[rows.start * t * d..rows.end * t * d].to_vec();
        let pad = self.padding[rows.start * t..rows.end * t].to_vec();
        (
            Tensor::from_data(TensorData::new(data, [n, t, d]), device),
            Tensor::from_data(TensorData::new(pad, [n, t]), device),
        )
    }
}

/// FILIP's token-wise late interaction (see `vlp_align::loss::late_interaction`), computed on
/// the backend a block at a time.
pub struct LateInteractionScorer<'a, B: Backend> {
    /// Image tokens.
    pub images: &'a TokenSet,
    /// Text tokens.
    pub texts: &'a TokenSet,
    /// Where the blocks are computed.
    pub device: B::Device,
}

impl<B: Backend> Scorer for LateInteractionScorer<'_, B> {
    fn num_images(&self) -> usize {
        self.images.rows
    }

    fn num_texts(&self) -> usize {
        self.texts.rows
    }

    fn scores(
        &self,
        images: Range<usize>,
        texts: Range<usize>,
        direction: Direction,
    ) -> Result<Vec<f32>> {
        if self.images.dim != self.texts.dim {
            return Err(TaskError::Invalid {
                task: "scoring".into(),
                reason: format!(
                    "image tokens have width {} but text tokens {}",
                    self.images.dim, self.texts.dim
                ),
            });
        }
        // The token-level product is images × texts × tokens²: keep each piece small.
        let per_pair = self.images.tokens * self.texts.tokens;
        let text_step = block_rows(per_pair * images.len().min(64)).min(texts.len().max(1));
        let image_step = 64.min(images.len().max(1));
        let cols = texts.len();
        let mut out = vec![0.0f32; images.len() * cols];
        for i0 in (images.start..images.end).step_by(image_step) {
            let ir = i0..(i0 + image_step).min(images.end);
            let (x, xp) = self.images.to_tensors::<B>(ir.clone(), &self.device);
            for t0 in (texts.start..texts.end).step_by(text_step) {
                let tr = t0..(t0 + text_step).min(texts.end);
                let (y, yp) = self.texts.to_tensors::<B>(tr.clone(), &self.device);
                let (s_i2t, s_t2i) =
                    vlp_align::loss::late_interaction(x.clone(), Some(xp.clone()), y, Some(yp));
                let s = match direction {
                    Direction::ImageToText => s_i2t,
                    Direction::TextToImage => s_t2i,
                };
                let v: Vec<f32> = s.into_data().convert::<f32>().into_vec().expect("f32");
                for (a, i) in ir.clone().enumerate() {
                    let row = (i - images.start) * cols;
                    for (b, t) in tr.clone().enumerate() {
                        out[row + t - texts.start] = v[a * tr.len() + b];
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vlp_core::backend::{DefaultBackend as B, default_device};

    #[test]
    fn blocks_of_the_dot_scorer_tile_the_full_matrix() {
        let images = Features {
            data: (0..15).map(|v| v as f32 / 10.0).collect(),
            rows: 5,
            dim: 3,
        };
        let texts = Features {
            data: (0..12).map(|v| 1.0 - v as f32 / 7.0).collect(),
            rows: 4,
            dim: 3,
        };
        let s = DotScorer::new(&images, &texts).unwrap();
        let full = s.scores(0..5, 0..4, Direction::ImageToText).unwrap();
        let block = s.scores(2..4, 1..3, Direction::TextToImage).unwrap();
        for (a, i) in (2..4).enumerate() {
            for (b, t) in (1..3).enumerate() {
                assert_eq!(block[a * 2 + b], full[i * 4 + t]);
                let want: f32 = images
                    .row(i)
                    .iter()
                    .zip(texts.row(t))
                    .map(|(x, y)| x * y)
                    .sum();
                assert!((full[i * 4 + t] - want).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn late_interaction_blocks_match_the_whole_computation() {
        let dev = default_device();
        let x = vlp_align::normalize_last(Tensor::<B, 3>::random(
            [7, 3, 4],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &dev,
        ));
        let y = vlp_align::normalize_last(Tensor::<B, 3>::random(
            [5, 4, 4],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &dev,
        ));
        let pad: Vec<bool> = (0..20).map(|k| k % 4 == 3 && k > 4).collect();
        let yp = Tensor::<B, 2, Bool>::from_data(TensorData::new(pad, [5, 4]), &dev);
        let (want_i2t, want_t2i) =
            vlp_align::loss::late_interaction(x.clone(), None, y.clone(), Some(yp.clone()));
        let images = TokenSet::from_tensors(x, None);
        let mut texts =
            TokenSet::from_tensors(y.clone().slice([0..2]), Some(yp.clone().slice([0..2])));
        // Built in two pieces: extend keeps rows in order.
        texts.extend(TokenSet::from_tensors(
            y.slice([2..5]),
            Some(yp.slice([2..5])),
        ));
        let s = LateInteractionScorer::<B> {
            images: &images,
            texts: &texts,
            device: dev,
        };
        for (dir, want) in [
            (Direction::ImageToText, want_i2t),
            (Direction::TextToImage, want_t2i),
        ] {
            let want: Vec<f32> = want.into_data().to_vec().unwrap();
            let got = s.scores(1..6, 2..5, dir).unwrap();
            for (a, i) in (1..6).enumerate() {
                for (b, t) in (2..5).enumerate() {
                    assert!(
                        (got[a * 3 + b] - want[i * 5 + t]).abs() < 1e-5,
                        "{dir:?} ({i}, {t})"
                    );
                }
            }
        }
    }
}
