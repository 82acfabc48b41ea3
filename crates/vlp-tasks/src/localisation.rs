//! Does a model point at the right object? Given a score per image patch for a phrase, the
//! best-scoring patch is a hit when the phrase's object covers enough of it (the "pointing game"
//! of weakly supervised grounding, on ShapesWorld's instance masks).

use serde::{Deserialize, Serialize};
use vlp_data::sample::Mask;

use crate::error::{Result, TaskError};

/// Pointing-game result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointingResult {
    /// Fraction of images whose best patch lies on the object.
    pub accuracy: f64,
    /// What picking a patch uniformly at random would score on the same images.
    pub chance: f64,
    /// Images scored.
    pub count: usize,
}

/// Fraction of a `grid × grid` patch grid's cell `(row, col)` covered by instance `id`.
pub fn coverage(mask: &Mask, grid: usize, row: usize, col: usize, id: u8) -> f32 {
    let (ph, pw) = (mask.height / grid, mask.width / grid);
    let mut hit = 0usize;
    for y in row * ph..(row + 1) * ph {
        for x in col * pw..(col + 1) * pw {
            hit += usize::from(mask.at(x, y) == id);
        }
    }
    hit as f32 / (ph * pw).max(1) as f32
}

/// The pointing game: `scores[i]` holds one score per patch of image `i` (row-major over a
/// `grid × grid` grid); the image counts as a hit when instance `ids[i]` of `masks[i]` covers at
/// least `min_cover` of its best patch (ties go to the first patch).
pub fn pointing_game(
    scores: &[Vec<f32>],
    masks: &[&Mask],
    ids: &[u8],
    grid: usize,
    min_cover: f32,
) -> Result<PointingResult> {
    let bad = |reason: String| TaskError::Invalid {
        task: "pointing game".into(),
        reason,
    };
    if scores.len() != masks.len() || scores.len() != ids.len() {
        return Err(bad(format!(
            "{} score rows, {} masks, {} object ids",
            scores.len(),
            masks.len(),
            ids.len()
        )));
    }
    if scores.is_empty() {
        return Err(bad("no images".into()));
    }
    let (mut hits, mut chance) = (0usize, 0.0f64);
    for ((s, m), &id) in scores.iter().zip(masks).zip(ids) {
        if s.len() != grid * grid {
            return Err(bad(format!(
                "{} patch scores for a {grid}x{grid} grid",
                s.len()
            )));
        }
        if m.width % grid != 0 || m.height % grid != 0 {
            return Err(bad(format!(
                "a {}x{} mask does not split into a {grid}x{grid} grid",
                m.width, m.height
            )));
        }
        let best = (0..s.len()).fold(0, |b, k| if s[k] > s[b] { k } else { b });
        let on = |k: usize| coverage(m, grid, k / grid, k % grid, id) >= min_cover;
        hits += usize::from(on(best));
        chance += (0..s.len()).filter(|&k| on(k)).count() as f64 / s.len() as f64;
    }
    let n = scores.len() as f64;
    Ok(PointingResult {
        accuracy: hits as f64 / n,
        chance: chance / n,
        count: scores.len(),
    })
}

/// The centroid game: `weights[i]` holds a non-negative weight per patch of image `i`
/// (row-major over a `grid × grid` grid, e.g. DreamLIP's grouping weights of a phrase); the
/// image counts as a hit when the weighted centroid of the patch centres lies on a pixel of
/// instance `ids[i]`. Chance is the object's share of the image (where a uniformly random point
/// lands on it).
pub fn centroid_game(
    weights: &[Vec<f32>],
    masks: &[&Mask],
    ids: &[u8],
    grid: usize,
) -> Result<PointingResult> {
    let bad = |reason: String| TaskError::Invalid {
        task: "centroid game".into(),
        reason,
    };
    if weights.len() != masks.len() || weights.len() != ids.len() {
        return Err(bad(format!(
            "{} weight rows, {} masks, {} object ids",
            weights.len(),
            masks.len(),
            ids.len()
        )));
    }
    if weights.is_empty() {
        return Err(bad("no images".into()));
    }
    let (mut hits, mut chance) = (0usize, 0.0f64);
    for (i, ((w, m), &id)) in weights.iter().zip(masks).zip(ids).enumerate() {
        if w.len() != grid * grid {
            return Err(bad(format!(
                "image {i}: {} patch weights for a {grid}x{grid} grid",
                w.len()
            )));
        }
        let total: f64 = w.iter().map(|&v| v as f64).sum();
        if w.iter().any(|v| !v.is_finite() || *v < 0.0) || total <= 0.0 {
            return Err(bad(format!(
                "image {i}: weights must be finite, non-negative and not all zero"
            )));
        }
        let (cw, ch) = (m.width as f64 / grid as f64, m.height as f64 / grid as f64);
        let (mut x, mut y) = (0.0f64, 0.0f64);
        for (k, &v) in w.iter().enumerate() {
            x += v as f64 * ((k % grid) as f64 + 0.5) * cw;
            y += v as f64 * ((k / grid) as f64 + 0.5) * ch;
        }
        let px = ((x / total) as usize).min(m.width - 1);
        let py = ((y / total) as usize).min(m.height - 1);
        hits += usize::from(m.at(px, py) == id);
        chance += m.data.iter().filter(|&&v| v == id).count() as f64 / m.data.len() as f64;
    }
    let n = weights.len() as f64;
    Ok(PointingResult {
        accuracy: hits as f64 / n,
        chance: chance / n,
        count: weights.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_patch_on_the_object_is_a_hit() {
        // 4×4 mask, 2×2 grid; object 1 fills the top-right cell and half the bottom-right one.
        let mut data = vec![0u8; 16];
        for (x, y) in [(2, 0), (3, 0), (2, 1), (3, 1), (2, 2), (3, 2)] {
            data[y * 4 + x] = 1;
        }
        let m = Mask {
            width: 4,
            height: 4,
            data,
        };
        assert_eq!(coverage(&m, 2, 0, 1, 1), 1.0);
        assert_eq!(coverage(&m, 2, 1, 1, 1), 0.5);
        let r = pointing_game(
            &[
                vec![0.0, 0.9, 0.1, 0.2],
                vec![0.5, 0.1, 0.1, 0.2],
                vec![0.0, 0.1, 0.1, 0.7],
            ],
            &[&m, &m, &m],
            &[1, 1, 1],
            2,
            0.5,
        )
        .unwrap();
        assert!((r.accuracy - 2.0 / 3.0).abs() < 1e-12);
        // Two of four cells are covered by at least half.
        assert!((r.chance - 0.5).abs() < 1e-12);
        assert!(pointing_game(&[vec![0.0; 3]], &[&m], &[1], 2, 0.5).is_err());
    }

    #[test]
    fn the_weighted_centroid_must_land_on_the_object() {
        // 4×4 mask, 2×2 grid: object 1 is the 2×2 block of the top-left cell.
        let mut data = vec![0u8; 16];
        for (x, y) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            data[y * 4 + x] = 1;
        }
        let m = Mask {
            width: 4,
            height: 4,
            data,
        };
        let r = centroid_game(
            &[
                // All weight on the top-left cell: centroid (1, 1), on the object.
                vec![1.0, 0.0, 0.0, 0.0],
                // Uniform: centroid (2, 2), off it.
                vec![1.0, 1.0, 1.0, 1.0],
                // Mostly top-left: centroid (1.2, 1.2), pixel (1, 1), a hit.
                vec![8.0, 1.0, 1.0, 0.0],
            ],
            &[&m, &m, &m],
            &[1, 1, 1],
            2,
        )
        .unwrap();
        assert!((r.accuracy - 2.0 / 3.0).abs() < 1e-12, "{r:?}");
        assert!((r.chance - 0.25).abs() < 1e-12, "{r:?}");
        assert!(centroid_game(&[vec![0.0; 4]], &[&m], &[1], 2).is_err());
        assert!(centroid_game(&[vec![1.0; 3]], &[&m], &[1], 2).is_err());
        assert!(centroid_game(&[vec![1.0; 4]], &[&m], &[1, 1], 2).is_err());
    }
}
