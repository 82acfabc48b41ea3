//! k-means clustering of embeddings (CoCu's cluster-guided concept sampling, and anything else
//! that groups feature vectors).

use crate::rng::Rng;
use crate::{CoreError, Result};

/// Settings of [`kmeans`]. The defaults are CoCu's (`KMeans(random_state=0, n_init=5,
/// max_iter=100)` in `rewrite/curation.py`).
#[derive(Debug, Clone, PartialEq)]
pub struct KMeansConfig {
    /// Number of clusters.
    pub k: usize,
    /// Most Lloyd iterations per restart.
    pub max_iterations: usize,
    /// Restarts from different k-means++ seedings; the one with the least inertia is kept.
    pub restarts: usize,
    /// Seed of the k-means++ seedings.
    pub seed: u64,
}

impl KMeansConfig {
    /// `k` clusters with the default iterations, restarts and seed.
    pub fn new(k: usize) -> Self {
        Self {
            k,
            max_iterations: 100,
            restarts: 5,
            seed: 0,
        }
    }
}

/// A clustering.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeans {
    /// Cluster centres, `k × dim`, row-major.
    pub centroids: Vec<f32>,
    /// The cluster of each point.
    pub labels: Vec<usize>,
    /// Sum of squared distances of the points to their centres.
    pub inertia: f64,
    /// Lloyd iterations of the kept restart.
    pub iterations: usize,
}

fn squared_distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (*x - *y) as f64;
            d * d
        })
        .sum()
}

/// Clusters the rows of `points` (`n × dim`, row-major) into `config.k` groups: k-means++
/// seeding (Arthur & Vassilvitskii, 2007), then Lloyd's iterations until no point changes
/// cluster; an emptied cluster takes the point farthest from its centre. Deterministic for a
/// seed.
pub fn kmeans(points: &[f32], dim: usize, config: &KMeansConfig) -> Result<KMeans> {
    let invalid = |reason: String| CoreError::Config {
        field: "kmeans".into(),
        reason,
    };
    if dim == 0 || !points.len().is_multiple_of(dim) {
        return Err(invalid(format!(
            "{} values are not rows of width {dim}",
            points.len()
        )));
    }
    let n = points.len() / dim;
    if config.k == 0 || config.k > n {
        return Err(invalid(format!("k = {} for {n} points", config.k)));
    }
    if let Some(i) = points.iter().position(|v| !v.is_finite()) {
        return Err(invalid(format!("point {} has a non-finite value", i / dim)));
    }
    let mut rng = Rng::new(config.seed);
    let mut best: Option<KMeans> = None;
    for _ in 0..config.restarts.max(1) {
        let run = lloyd(points, dim, n, config, &mut rng);
        if best.as_ref().is_none_or(|b| run.inertia < b.inertia) {
            best = Some(run);
        }
    }
    Ok(best.expect("at least one restart"))
}

fn row(points: &[f32], dim: usize, i: usize) -> &[f32] {
    &points[i * dim..(i + 1) * dim]
}

/// k-means++: the first centre uniformly, each next one with probability ∝ squared distance
/// to the nearest centre so far.
fn seed_centres(points: &[f32], dim: usize, n: usize, k: usize, rng: &mut Rng) -> Vec<f32> {
    let mut centres = row(points, dim, rng.below(n)).to_vec();
    let mut nearest: Vec<f64> = (0..n)
        .map(|i| squared_distance(row(points, dim, i), &centres[..dim]))
        .collect();
    while centres.len() < k * dim {
        let total: f64 = nearest.iter().sum();
        let pick = if total > 0.0 {
            let mut target = rng.unit() as f64 * total;
            let mut chosen = n - 1;
            for (i, d) in nearest.iter().enumerate() {
                if target < *d {
                    chosen = i;
                    break;
                }
                target -= d;
            }
            chosen
        } else {
            // Every point sits on a centre: any point will do.
            rng.below(n)
        };
        let c = row(points, dim, pick).to_vec();
        for (i, d) in nearest.iter_mut().enumerate() {
            *d = d.min(squared_distance(row(points, dim, i), &c));
        }
        centres.extend(c);
    }
    centres
}

fn lloyd(points: &[f32], dim: usize, n: usize, config: &KMeansConfig, rng: &mut Rng) -> KMeans {
    let k = config.k;
    let mut centroids = seed_centres(points, dim, n, k, rng);
    let mut labels = vec![usize::MAX; n];
    let mut iterations = 0;
    loop {
        // Assignment; ties go to the lower cluster index.
        let mut changed = false;
        for (i, label) in labels.iter_mut().enumerate() {
            let p = row(points, dim, i);
            let mut best = (f64::INFINITY, 0);
            for c in 0..k {
                let d = squared_distance(p, row(&centroids, dim, c));
                if d < best.0 {
                    best = (d, c);
                }
            }
            if *label != best.1 {
                *label = best.1;
                changed = true;
            }
        }
        if !changed || iterations == config.max_iterations {
            break;
        }
        iterations += 1;
        // Update, in f64 so that the mean does not depend on the point order's rounding.
        let mut sums = vec![0f64; k * dim];
        let mut counts = vec![0usize; k];
        for (i, &l) in labels.iter().enumerate() {
            counts[l] += 1;
            for (s, v) in sums[l * dim..(l + 1) * dim]
                .iter_mut()
                .zip(row(points, dim, i))
            {
                *s += *v as f64;
            }
        }
        for c in 0..k {
            if counts[c] > 0 {
                for j in 0..dim {
                    centroids[c * dim + j] = (sums[c * dim + j] / counts[c] as f64) as f32;
                }
            }
        }
        for c in 0..k {
            if counts[c] == 0 {
                // An empty cluster restarts at the point worst served by its centre.
                let far = (0..n)
                    .max_by(|&a, &b| {
                        let da =
                            squared_distance(row(points, dim, a), row(&centroids, dim, labels[a]));
                        let db =
                            squared_distance(row(points, dim, b), row(&centroids, dim, labels[b]));
                        da.total_cmp(&db).then(b.cmp(&a))
                    })
                    .expect("n > 0");
                let p = row(points, dim, far).to_vec();
                centroids[c * dim..(c + 1) * dim].copy_from_slice(&p);
                labels[far] = c;
            }
        }
    }
    let inertia = labels
        .iter()
        .enumerate()
        .map(|(i, &l)| squared_distance(row(points, dim, i), row(&centroids, dim, l)))
        .sum();
    KMeans {
        centroids,
        labels,
        inertia,
        iterations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Same partition up to renaming the clusters.
    fn same_partition(a: &[usize], b: &[usize]) -> bool {
        let mut map = std::collections::HashMap::new();
        let mut back = std::collections::HashMap::new();
        a.iter()
            .zip(b)
            .all(|(x, y)| *map.entry(*x).or_insert(*y) == *y && *back.entry(*y).or_insert(*x) == *x)
    }

    #[test]
    fn recovers_planted_clusters() {
        let mut rng = Rng::new(11);
        let (k, dim, per) = (5, 7, 23);
        let centres: Vec<Vec<f32>> = (0..k)
            .map(|_| (0..dim).map(|_| rng.range(-10.0, 10.0)).collect())
            .collect();
        let mut points = Vec::new();
        let mut planted = Vec::new();
        // Interleaved, so that order does not give the clusters away.
        for i in 0..k * per {
            let c = (i * 3) % k;
            planted.push(c);
            points.extend(centres[c].iter().map(|v| v + rng.range(-0.5, 0.5)));
        }
        let got = kmeans(&points, dim, &KMeansConfig::new(k)).unwrap();
        assert!(same_partition(&got.labels, &planted), "{:?}", got.labels);
        for c in 0..k {
            let members: Vec<usize> = (0..k * per).filter(|&i| got.labels[i] == c).collect();
            assert_eq!(members.len(), per);
            for j in 0..dim {
                let mean = members
                    .iter()
                    .map(|&i| points[i * dim + j] as f64)
                    .sum::<f64>()
                    / per as f64;
                assert!((got.centroids[c * dim + j] as f64 - mean).abs() < 1e-5);
            }
        }
        assert_eq!(got, kmeans(&points, dim, &KMeansConfig::new(k)).unwrap());
    }

    #[test]
    fn finds_the_exhaustive_optimum_on_a_small_set() {
        // 1-D, k = 2: the best split of sorted points is contiguous; try every one.
        let points = [0.0f32, 0.4, 1.1, 3.0, 3.2, 7.5, 8.0];
        let best = (1..points.len())
            .map(|cut| {
                let cost = |s: &[f32]| {
                    let m = s.iter().map(|v| *v as f64).sum::<f64>() / s.len() as f64;
                    s.iter().map(|v| (*v as f64 - m).powi(2)).sum::<f64>()
                };
                cost(&points[..cut]) + cost(&points[cut..])
            })
            .fold(f64::INFINITY, f64::min);
        let got = kmeans(&points, 1, &KMeansConfig::new(2)).unwrap();
        assert!(
            (got.inertia - best).abs() < 1e-6,
            "{} vs {best}",
            got.inertia
        );
        // k = n: every point its own cluster, zero inertia.
        let all = kmeans(&points, 1, &KMeansConfig::new(points.len())).unwrap();
        assert_eq!(all.inertia, 0.0);
        let mut l = all.labels.clone();
        l.sort();
        l.dedup();
        assert_eq!(l.len(), points.len());
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(kmeans(&[1.0, 2.0, 3.0], 2, &KMeansConfig::new(1)).is_err());
        assert!(kmeans(&[1.0, 2.0], 1, &KMeansConfig::new(3)).is_err());
        assert!(kmeans(&[1.0, 2.0], 1, &KMeansConfig::new(0)).is_err());
        let err = kmeans(&[1.0, f32::NAN], 1, &KMeansConfig::new(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("point 1"), "{err}");
        // Identical points: still k clusters, zero inertia.
        let same = kmeans(&[2.0; 8], 2, &KMeansConfig::new(3)).unwrap();
        assert_eq!(same.inertia, 0.0);
    }
}
