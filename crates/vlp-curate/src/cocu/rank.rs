//! Vision-driven expansion and text-to-vision-guided ranking (CoCu, Xing et al., 2023, §3.2;
//! `rewrite/curation.py`, `cocu()`).

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Queries per parallel chunk of [`nearest`]: enough to keep a core busy, few enough that a
/// chunk's `l`-best lists stay in cache.
const QUERY_CHUNK: usize = 64;

/// The `l` rows of `index` with the largest dot product with each row of `queries` (cosine
/// nearest neighbours for L2-normalised embeddings), best first, ties to the lower row: exact
/// brute force (CoCu searched a faiss flat index, which is exact too), in parallel chunks of
/// queries. Both are `rows × dim`, row-major.
pub fn nearest(queries: &[f32], index: &[f32], dim: usize, l: usize) -> Vec<Vec<usize>> {
    let n_index = index.len() / dim;
    let l = l.min(n_index);
    queries
        .par_chunks(dim * QUERY_CHUNK)
        .flat_map_iter(|chunk| {
            chunk.chunks(dim).map(|q| {
                // (score, row) kept sorted best first; l is small (8 in CoCu).
                let mut best: Vec<(f32, usize)> = Vec::with_capacity(l + 1);
                for (r, row) in index.chunks(dim).enumerate() {
                    let s = dot(q, row);
                    if best.len() < l || s > best[best.len() - 1].0 {
                        let at = best.partition_point(|&(b, _)| b >= s);
                        best.insert(at, (s, r));
                        best.truncate(l);
                    }
                }
                best.into_iter().map(|(_, r)| r).collect::<Vec<usize>>()
            })
        })
        .collect()
}

/// One concept of an image's archive with its scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoredConcept {
    /// Index in the gallery.
    pub concept: usize,
    /// `global / max + local`, what the archive is ranked by.
    pub score: f32,
    /// `g_c`: the concept's similarity to the anchor image.
    pub global: f32,
    /// `l_c`: that similarity over its mean over the concept's reference images and the anchor.
    pub local: f32,
}

/// The anchor image's concept archive, ranked: the union of the concepts of its neighbours'
/// captions, each scored by how much more it matches the anchor than the neighbours that
/// mention it.
///
/// For concept c with text embedding t_c ("a photo of a {c}"): the reference images R_c are the
/// neighbours whose captions contain c, plus the anchor; s = t_c·[R_c; anchor];
/// g_c = s_anchor; l_c = s_anchor / mean(s); score_c = g_c / max_c′ max(s) + l_c. Ties rank the
/// earlier-seen concept first.
///
/// - `anchor`: `[dim]`, the image's embedding
/// - `neighbours`: rows of `index_images` nearest the anchor (see [`nearest`])
/// - `index_images`: `[rows, dim]`; `index_concepts[r]`: gallery indices of row r's caption
/// - `concept_embeds`: `[gallery, dim]`, normalised text embeddings of the concept prompts
pub fn rank_concepts(
    anchor: &[f32],
    neighbours: &[usize],
    index_images: &[f32],
    index_concepts: &[Vec<usize>],
    concept_embeds: &[f32],
    dim: usize,
) -> Vec<ScoredConcept> {
    let mut archive: Vec<usize> = Vec::new();
    for &r in neighbours {
        for &c in &index_concepts[r] {
            if !archive.contains(&c) {
                archive.push(c);
            }
        }
    }
    let image = |r: usize| &index_images[r * dim..(r + 1) * dim];
    let mut max_sim = f32::NEG_INFINITY;
    let mut raw: Vec<(usize, f32, f32)> = archive
        .iter()
        .map(|&c| {
            let t = &concept_embeds[c * dim..(c + 1) * dim];
            // Membership in the neighbour's concept list; the code tests `concept in semantics`
            // on the comma-joined string, a substring match ("cat" in "cats, grass").
            let mut sims: Vec<f32> = neighbours
                .iter()
                .filter(|&&r| index_concepts[r].contains(&c))
                .map(|&r| dot(t, image(r)))
                .collect();
            let g = dot(t, anchor);
            sims.push(g);
            let mean = sims.iter().sum::<f32>() / sims.len() as f32;
            max_sim = sims.iter().copied().fold(max_sim, f32::max);
            // A zero mean similarity (orthogonal everywhere) gives no local evidence; the code
            // would divide by zero.
            let local = if mean.abs() > f32::EPSILON {
                g / mean
            } else {
                0.0
            };
            (c, g, local)
        })
        .collect();
    let scale = if max_sim.abs() > f32::EPSILON {
        max_sim
    } else {
        1.0
    };
    let mut scored: Vec<ScoredConcept> = raw
        .drain(..)
        .map(|(concept, global, local)| ScoredConcept {
            concept,
            score: global / scale + local,
            global,
            local,
        })
        .collect();
    // Stable: equal scores keep first-seen order.
    scored.sort_by(|a, b| b.score.total_cmp(&a.score));
    scored
}

/// [`rank_concepts`] for every row of `anchors` (`[n, dim]`) with its `neighbours` nearest rows
/// of the index, in parallel.
pub fn concept_archive(
    anchors: &[f32],
    index_images: &[f32],
    index_concepts: &[Vec<usize>],
    concept_embeds: &[f32],
    dim: usize,
    neighbours: usize,
) -> Vec<Vec<ScoredConcept>> {
    assert_eq!(
        index_images.len() / dim,
        index_concepts.len(),
        "one concept list per index image"
    );
    let near = nearest(anchors, index_images, dim, neighbours);
    anchors
        .par_chunks(dim)
        .zip(near.par_iter())
        .map(|(a, nb)| rank_concepts(a, nb, index_images, index_concepts, concept_embeds, dim))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn nearest_matches_a_full_sort() {
        let mut rng = vlp_core::rng::Rng::new(3);
        let dim = 5;
        let index: Vec<f32> = (0..97 * dim).map(|_| rng.range(-1.0, 1.0)).collect();
        let queries: Vec<f32> = (0..130 * dim).map(|_| rng.range(-1.0, 1.0)).collect();
        let got = nearest(&queries, &index, dim, 8);
        assert_eq!(got.len(), 130);
        for (q, row) in queries.chunks(dim).zip(&got) {
            let mut all: Vec<(f32, usize)> = index
                .chunks(dim)
                .enumerate()
                .map(|(r, x)| (dot(q, x), r))
                .collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            let want: Vec<usize> = all.iter().take(8).map(|x| x.1).collect();
            assert_eq!(row, &want);
        }
        // Fewer rows than asked for: all of them.
        assert_eq!(
            nearest(&queries[..dim], &index[..3 * dim], dim, 8)[0].len(),
            3
        );
    }

    #[test]
    fn scores_follow_the_formula() {
        // 2-D: concept 0 along x, concept 1 along y, concept 2 diagonal.
        let concepts = [unit(&[1.0, 0.0]), unit(&[0.0, 1.0]), unit(&[1.0, 1.0])].concat();
        let images = [
            unit(&[1.0, 0.2]), // row 0 mentions 0
            unit(&[0.3, 1.0]), // row 1 mentions 1 and 2
            unit(&[1.0, 1.0]), // row 2 mentions 0 and 2
            unit(&[0.0, 1.0]), // row 3: not a neighbour
        ]
        .concat();
        let index_concepts = vec![vec![0], vec![1, 2], vec![0, 2], vec![1]];
        let anchor = unit(&[1.0, 0.5]);
        let got = rank_concepts(&anchor, &[0, 1, 2], &images, &index_concepts, &concepts, 2);
        assert_eq!(got.len(), 3);
        // By hand.
        let d = |a: &[f32], b: &[f32]| a[0] * b[0] + a[1] * b[1];
        let t = |c: usize| &concepts[c * 2..c * 2 + 2];
        let im = |r: usize| &images[r * 2..r * 2 + 2];
        let refs: [Vec<usize>; 3] = [vec![0, 2], vec![1], vec![1, 2]];
        let mut max = f32::NEG_INFINITY;
        let mut expect = Vec::new();
        for (c, rows) in refs.iter().enumerate() {
            let mut s: Vec<f32> = rows.iter().map(|&r| d(t(c), im(r))).collect();
            s.push(d(t(c), &anchor));
            max = s.iter().copied().fold(max, f32::max);
            let g = d(t(c), &anchor);
            expect.push((c, g, g / (s.iter().sum::<f32>() / s.len() as f32)));
        }
        for e in &expect {
            let x = got.iter().find(|x| x.concept == e.0).unwrap();
            assert!((x.global - e.1).abs() < 1e-6 && (x.local - e.2).abs() < 1e-6);
            assert!((x.score - (e.1 / max + e.2)).abs() < 1e-6);
        }
        assert!(got.windows(2).all(|w| w[0].score >= w[1].score));
        // Concept 1 (y) is the anchor's weakest and its only reference leans on y: last.
        assert_eq!(got[2].concept, 1);
        // An anchor with no neighbours has an empty archive.
        assert!(rank_concepts(&anchor, &[], &images, &index_concepts, &concepts, 2).is_empty());
        let all = concept_archive(&anchor, &images, &index_concepts, &concepts, 2, 3);
        assert_eq!(all, vec![got]);
    }
}
