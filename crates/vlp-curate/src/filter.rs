//! Filters over embedded image–text pairs.

use rayon::prelude::*;

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Cosine similarity of each pair (rows are L2-normalised embeddings, `dim` wide).
pub fn pair_scores(images: &[f32], texts: &[f32], dim: usize) -> Vec<f32> {
    assert_eq!(images.len(), texts.len(), "one text per image");
    images
        .par_chunks(dim)
        .zip(texts.par_chunks(dim))
        .map(|(i, t)| dot(i, t))
        .collect()
}

/// Indices of pairs whose CLIP score is at least `threshold` (LAION kept ViT-B/32 scores ≥ 0.28).
pub fn clip_score_filter(images: &[f32], texts: &[f32], dim: usize, threshold: f32) -> Vec<usize> {
    pair_scores(images, texts, dim)
        .into_iter()
        .enumerate()
        .filter(|(_, s)| *s >= threshold)
        .map(|(i, _)| i)
        .collect()
}

/// Greedy near-duplicate removal: walks items in order and keeps one unless its cosine
/// similarity to an already kept item reaches `threshold`. Returns the kept indices and, for each
/// dropped item, the kept item it duplicates.
pub fn dedup(embeddings: &[f32], dim: usize, threshold: f32) -> (Vec<usize>, Vec<(usize, usize)>) {
    let n = embeddings.len() / dim;
    let row = |i: usize| &embeddings[i * dim..(i + 1) * dim];
    let mut kept: Vec<usize> = Vec::new();
    let mut dropped = Vec::new();
    for i in 0..n {
        let dup = kept
            .par_iter()
            .find_first(|&&k| dot(row(i), row(k)) >= threshold)
            .copied();
        match dup {
            Some(k) => dropped.push((i, k)),
            None => kept.push(i),
        }
    }
    (kept, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn threshold_and_duplicates() {
        let imgs: Vec<f32> = [unit(&[1.0, 0.0]), unit(&[0.0, 1.0]), unit(&[1.0, 1.0])].concat();
        let txts: Vec<f32> = [unit(&[1.0, 0.1]), unit(&[1.0, 0.0]), unit(&[1.0, 1.2])].concat();
        let s = pair_scores(&imgs, &txts, 2);
        assert!(s[0] > 0.99 && s[1].abs() < 1e-6 && s[2] > 0.99);
        assert_eq!(clip_score_filter(&imgs, &txts, 2, 0.5), vec![0, 2]);
        let e: Vec<f32> = [
            unit(&[1.0, 0.0]),
            unit(&[0.0, 1.0]),
            unit(&[1.0, 0.01]),
            unit(&[0.02, 1.0]),
        ]
        .concat();
        let (kept, dropped) = dedup(&e, 2, 0.999);
        assert_eq!(kept, vec![0, 1]);
        assert_eq!(dropped, vec![(2, 0), (3, 1)]);
    }
}
