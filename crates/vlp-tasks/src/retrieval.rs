//! Image↔text retrieval recall over any scorer, a block of queries at a time so that 10k × 10k
//! fits in memory.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::embed::Features;
use crate::error::{Result, TaskError};
use crate::scoring::{Direction, DotScorer, Scorer, block_rows};

/// Recall@K and rank statistics in both directions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalResult {
    /// Image → text recall at 1, 5, 10 (an image is a hit if any of its captions is in the top K).
    pub i2t_recall: [f64; 3],
    /// Text → image recall at 1, 5, 10.
    pub t2i_recall: [f64; 3],
    /// Mean rank (1 = best) of the first correct caption per image.
    pub i2t_mean_rank: f64,
    /// Median rank of the first correct caption per image.
    pub i2t_median_rank: f64,
    /// Mean rank of the correct image per caption.
    pub t2i_mean_rank: f64,
    /// Median rank of the correct image per caption.
    pub t2i_median_rank: f64,
    /// Images.
    pub images: usize,
    /// Texts.
    pub texts: usize,
}

impl RetrievalResult {
    /// Mean recall (mR): the mean of R@1, R@5 and R@10 in both directions, the summary
    /// remote-sensing retrieval papers report (RSICD, RSITMD; PIR-CLIP Table 1).
    pub fn mean_recall(&self) -> f64 {
        self.i2t_recall.iter().chain(&self.t2i_recall).sum::<f64>() / 6.0
    }
}

/// Rank (1-based) of the best-scoring target among `hits`, ties counted pessimistically for the
/// target (an equal score of a wrong candidate ranks above it), so results are deterministic.
fn rank_of(scores: &[f32], hits: &[usize]) -> usize {
    let best = hits
        .iter()
        .map(|&h| scores[h])
        .fold(f32::NEG_INFINITY, f32::max);
    1 + scores
        .iter()
        .enumerate()
        .filter(|(j, s)| **s >= best && !hits.contains(j))
        .count()
}

fn stats(ranks: &[usize]) -> ([f64; 3], f64, f64) {
    let n = ranks.len() as f64;
    let r = |k| ranks.iter().filter(|&&x| x <= k).count() as f64 / n;
    let mut sorted = ranks.to_vec();
    sorted.sort_unstable();
    let median = if sorted.len() % 2 == 1 {
        sorted[sorted.len() / 2] as f64
    } else {
        (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) as f64 / 2.0
    };
    (
        [r(1), r(5), r(10)],
        ranks.iter().sum::<usize>() as f64 / n,
        median,
    )
}

/// Retrieval between `images` and `texts`, where `text_image[t]` is the image text `t`
/// describes, scored by dot products of the (normalised) embeddings.
pub fn retrieval(
    images: &Features,
    texts: &Features,
    text_image: &[usize],
) -> Result<RetrievalResult> {
    retrieval_scored(&DotScorer::new(images, texts)?, text_image)
}

/// Retrieval under any [`Scorer`]: image→text ranks by [`Direction::ImageToText`] scores,
/// text→image by [`Direction::TextToImage`]. The score matrix is asked for a block of queries at
/// a time (at most [`crate::scoring::BLOCK_VALUES`] scores), ranks computed on all cores.
pub fn retrieval_scored(scorer: &dyn Scorer, text_image: &[usize]) -> Result<RetrievalResult> {
    let bad = |reason: String| TaskError::Invalid {
        task: "retrieval".into(),
        reason,
    };
    let (n_images, n_texts) = (scorer.num_images(), scorer.num_texts());
    if n_texts != text_image.len() {
        return Err(bad(format!(
            "{} texts but {} text→image links",
            n_texts,
            text_image.len()
        )));
    }
    if n_images == 0 || n_texts == 0 {
        return Err(bad("nothing to retrieve".into()));
    }
    if let Some(t) = text_image.iter().position(|&i| i >= n_images) {
        return Err(bad(format!(
            "text {t} points at image {} of {}",
            text_image[t], n_images
        )));
    }
    let mut captions_of = vec![Vec::new(); n_images];
    for (t, &i) in text_image.iter().enumerate() {
        captions_of[i].push(t);
    }
    if let Some(i) = captions_of.iter().position(Vec::is_empty) {
        return Err(bad(format!("image {i} has no caption")));
    }
    let mut i2t = Vec::with_capacity(n_images);
    let step = block_rows(n_texts);
    for i0 in (0..n_images).step_by(step) {
        let rows = i0..(i0 + step).min(n_images);
        let block = scorer.scores(rows.clone(), 0..n_texts, Direction::ImageToText)?;
        let ranks: Vec<usize> = block
            .par_chunks(n_texts)
            .zip(rows.into_par_iter())
            .map(|(scores, i)| rank_of(scores, &captions_of[i]))
            .collect();
        i2t.extend(ranks);
    }
    let mut t2i = Vec::with_capacity(n_texts);
    let step = block_rows(n_images);
    for t0 in (0..n_texts).step_by(step) {
        let cols = t0..(t0 + step).min(n_texts);
        let c = cols.len();
        let block = scorer.scores(0..n_images, cols.clone(), Direction::TextToImage)?;
        let ranks: Vec<usize> = cols
            .into_par_iter()
            .map(|t| {
                let column: Vec<f32> = (0..n_images).map(|i| block[i * c + t - t0]).collect();
                rank_of(&column, &[text_image[t]])
            })
            .collect();
        t2i.extend(ranks);
    }
    let (i2t_recall, i2t_mean_rank, i2t_median_rank) = stats(&i2t);
    let (t2i_recall, t2i_mean_rank, t2i_median_rank) = stats(&t2i);
    Ok(RetrievalResult {
        i2t_recall,
        t2i_recall,
        i2t_mean_rank,
        i2t_median_rank,
        t2i_mean_rank,
        t2i_median_rank,
        images: n_images,
        texts: n_texts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feats(rows: &[&[f32]]) -> Features {
        Features {
            data: rows.iter().flat_map(|r| r.iter().copied()).collect(),
            rows: rows.len(),
            dim: rows[0].len(),
        }
    }

    #[test]
    fn recall_and_ranks_on_a_hand_made_matrix() {
        // Two images; three captions: t0, t1 describe image 0, t2 describes image 1.
        let images = feats(&[&[1.0, 0.0], &[0.0, 1.0]]);
        let texts = feats(&[&[0.2, 0.9], &[0.9, 0.1], &[0.7, 0.7]]);
        let r = retrieval(&images, &texts, &[0, 0, 1]).unwrap();
        // image 0 scores [0.2, 0.9, 0.7]: its best caption t1 ranks 1. image 1: [0.9, 0.1, 0.7]:
        // t2 ranks 2 behind t0.
        assert_eq!(r.i2t_recall, [0.5, 1.0, 1.0]);
        assert_eq!((r.i2t_mean_rank, r.i2t_median_rank), (1.5, 1.5));
        // t0 → [0.2, 0.9]: image 0 ranks 2; t1 → [0.9, 0.1]: rank 1; t2 → [0.7, 0.7]: tie,
        // counted against the target: rank 2.
        assert_eq!(r.t2i_recall, [1.0 / 3.0, 1.0, 1.0]);
        assert_eq!(r.t2i_median_rank, 2.0);
        assert!((r.t2i_mean_rank - 5.0 / 3.0).abs() < 1e-12);
        // mR = (0.5 + 1 + 1 + 1/3 + 1 + 1) / 6.
        assert!((r.mean_recall() - (29.0 / 6.0) / 6.0).abs() < 1e-12);
    }

    #[test]
    fn inconsistent_inputs_are_rejected() {
        let images = feats(&[&[1.0, 0.0], &[0.0, 1.0]]);
        let texts = feats(&[&[1.0, 0.0]]);
        assert!(
            retrieval(&images, &texts, &[0])
                .unwrap_err()
                .to_string()
                .contains("image 1 has no caption")
        );
        assert!(retrieval(&images, &texts, &[3]).is_err());
    }
}
