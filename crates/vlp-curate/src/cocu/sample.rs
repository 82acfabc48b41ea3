//! Choosing the concepts an image trains with (CoCu §3.2, "cluster-guided sampling").

use vlp_core::cluster::{KMeansConfig, kmeans};
use vlp_core::rng::Rng;

use super::rank::ScoredConcept;

/// How the training concepts are chosen from a ranked archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// The best `n` by score: the official code's default (k-means off).
    Top,
    /// The paper's cluster-guided sampling: k-means over the archive's concept embeddings with
    /// k = ⌈|A|/2⌉; `n` clusters drawn with replacement by softmax of their mean score, then one
    /// concept per drawn cluster by softmax of its score.
    Clusters,
}

fn softmax_pick(scores: &[f32], rng: &mut Rng) -> usize {
    let m = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let w: Vec<f64> = scores.iter().map(|s| ((s - m) as f64).exp()).collect();
    let mut target = rng.unit() as f64 * w.iter().sum::<f64>();
    for (i, x) in w.iter().enumerate() {
        if target < *x {
            return i;
        }
        target -= x;
    }
    w.len() - 1
}

/// `n` concepts (gallery indices) from a ranked archive; fewer when the archive is smaller (top)
/// or empty. `concept_embeds` (`[gallery, dim]`) is used by [`Selection::Clusters`] only.
pub fn select_concepts(
    ranked: &[ScoredConcept],
    n: usize,
    selection: Selection,
    concept_embeds: &[f32],
    dim: usize,
    rng: &mut Rng,
) -> Vec<usize> {
    if ranked.is_empty() || n == 0 {
        return Vec::new();
    }
    match selection {
        Selection::Top => ranked.iter().take(n).map(|c| c.concept).collect(),
        // The code clusters only archives of more than 2 concepts.
        Selection::Clusters if ranked.len() <= 2 => {
            let scores: Vec<f32> = ranked.iter().map(|c| c.score).collect();
            (0..n)
                .map(|_| ranked[softmax_pick(&scores, rng)].concept)
                .collect()
        }
        Selection::Clusters => {
            let points: Vec<f32> = ranked
                .iter()
                .flat_map(|c| {
                    concept_embeds[c.concept * dim..(c.concept + 1) * dim]
                        .iter()
                        .copied()
                })
                .collect();
            let k = ranked.len().div_ceil(2);
            let clusters = kmeans(&points, dim, &KMeansConfig::new(k))
                .expect("k <= points, finite embeddings");
            let members: Vec<Vec<usize>> = (0..k)
                .map(|c| {
                    (0..ranked.len())
                        .filter(|&i| clusters.labels[i] == c)
                        .collect()
                })
                .filter(|m: &Vec<usize>| !m.is_empty())
                .collect();
            let mean_scores: Vec<f32> = members
                .iter()
                .map(|m| m.iter().map(|&i| ranked[i].score).sum::<f32>() / m.len() as f32)
                .collect();
            (0..n)
                .map(|_| {
                    let m = &members[softmax_pick(&mean_scores, rng)];
                    let scores: Vec<f32> = m.iter().map(|&i| ranked[i].score).collect();
                    ranked[m[softmax_pick(&scores, rng)]].concept
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scored(pairs: &[(usize, f32)]) -> Vec<ScoredConcept> {
        pairs
            .iter()
            .map(|&(concept, score)| ScoredConcept {
                concept,
                score,
                global: 0.0,
                local: 0.0,
            })
            .collect()
    }

    #[test]
    fn top_takes_the_best_and_clusters_favour_high_scores() {
        let ranked = scored(&[(4, 3.0), (1, 2.5), (0, 0.2), (2, 0.1), (3, -1.0)]);
        let mut rng = Rng::new(5);
        assert_eq!(
            select_concepts(&ranked, 3, Selection::Top, &[], 2, &mut rng),
            vec![4, 1, 0]
        );
        assert_eq!(
            select_concepts(&ranked, 9, Selection::Top, &[], 2, &mut rng).len(),
            5
        );
        assert!(select_concepts(&[], 3, Selection::Clusters, &[], 2, &mut rng).is_empty());
        // Concepts 4 and 1 near each other, 0/2/3 far away: clusters {4, 1} and the rest.
        let embeds = [
            [0.0f32, 1.0], // 0
            [1.0, 0.05],   // 1
            [0.05, 1.0],   // 2
            [0.0, 0.95],   // 3
            [1.0, 0.0],    // 4
        ]
        .concat();
        let mut counts = [0usize; 5];
        for _ in 0..2000 {
            for c in select_concepts(&ranked, 3, Selection::Clusters, &embeds, 2, &mut rng) {
                counts[c] += 1;
            }
        }
        assert_eq!(counts.iter().sum::<usize>(), 6000);
        // Every concept can be drawn, the high-scoring cluster most often; within it, 4 over 1.
        assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
        assert!(
            counts[4] + counts[1] > counts[0] + counts[2] + counts[3],
            "{counts:?}"
        );
        assert!(counts[4] > counts[1], "{counts:?}");
        // Deterministic for a seed.
        let a = select_concepts(
            &ranked,
            3,
            Selection::Clusters,
            &embeds,
            2,
            &mut Rng::new(1),
        );
        let b = select_concepts(
            &ranked,
            3,
            Selection::Clusters,
            &embeds,
            2,
            &mut Rng::new(1),
        );
        assert_eq!(a, b);
    }
}
