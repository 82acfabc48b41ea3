//! Distances between two samples of feature vectors, on the host: the domain-gap proxy of the
//! few-shot harness (the survey's first factor).

/// Squared maximum mean discrepancy between the rows of `x` and `y` (row-major, `dim` wide) under
/// the Gaussian kernel `k(a, b) = exp(−‖a − b‖² / (2σ²))`, the unbiased estimator (Gretton et
/// al., 2012, eq. 3): within-sample sums leave out the diagonal, so two samples of one
/// distribution give values around 0, sometimes below. `sigma = None` takes the median heuristic:
/// the median distance between all pooled rows.
///
/// # Panics
/// When `dim` is 0, a slice is not a whole number of rows, or a sample has fewer than 2 rows
/// (programmer errors: the harness builds both from features it owns).
pub fn mmd2_rbf(x: &[f32], y: &[f32], dim: usize, sigma: Option<f64>) -> f64 {
    assert!(
        dim > 0 && x.len().is_multiple_of(dim) && y.len().is_multiple_of(dim),
        "rows of {dim} values"
    );
    let (n, m) = (x.len() / dim, y.len() / dim);
    assert!(
        n >= 2 && m >= 2,
        "need two rows per sample, got {n} and {m}"
    );
    let sq = |a: &[f32], b: &[f32]| -> f64 {
        a.iter().zip(b).map(|(p, q)| f64::from(p - q).powi(2)).sum()
    };
    let sigma = sigma.unwrap_or_else(|| {
        let rows: Vec<&[f32]> = x.chunks(dim).chain(y.chunks(dim)).collect();
        let mut d: Vec<f64> = Vec::new();
        for i in 0..rows.len() {
            for j in i + 1..rows.len() {
                d.push(sq(rows[i], rows[j]).sqrt());
            }
        }
        d.sort_by(f64::total_cmp);
        d[d.len() / 2].max(1e-12)
    });
    let k = |a: &[f32], b: &[f32]| (-sq(a, b) / (2.0 * sigma * sigma)).exp();
    let within = |s: &[f32], len: usize| -> f64 {
        let mut t = 0.0;
        for (i, a) in s.chunks(dim).enumerate() {
            for (j, b) in s.chunks(dim).enumerate() {
                if i != j {
                    t += k(a, b);
                }
            }
        }
        t / (len * (len - 1)) as f64
    };
    let mut cross = 0.0;
    for a in x.chunks(dim) {
        for b in y.chunks(dim) {
            cross += k(a, b);
        }
    }
    within(x, n) + within(y, m) - 2.0 * cross / (n * m) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn matches_the_formula_on_two_points_each() {
        // x = {0, 1}, y = {3, 5} on a line, σ = 1.
        let k = |d: f64| (-d * d / 2.0).exp();
        let want = k(1.0) + k(2.0) - 2.0 * (k(3.0) + k(5.0) + k(2.0) + k(4.0)) / 4.0;
        let got = mmd2_rbf(&[0.0, 1.0], &[3.0, 5.0], 1, Some(1.0));
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        // Median of the pooled distances {1, 3, 5, 2, 4, 2} is 3 (the upper middle).
        let k3 = |d: f64| (-d * d / 18.0).exp();
        let want = k3(1.0) + k3(2.0) - (k3(3.0) + k3(5.0) + k3(2.0) + k3(4.0)) / 2.0;
        assert!((mmd2_rbf(&[0.0, 1.0], &[3.0, 5.0], 1, None) - want).abs() < 1e-12);
    }

    #[test]
    fn grows_with_the_shift_between_samples() {
        let mut rng = Rng::new(3);
        let sample = |shift: f32, rng: &mut Rng| -> Vec<f32> {
            (0..200 * 4).map(|_| rng.range(-1.0, 1.0) + shift).collect()
        };
        let a = sample(0.0, &mut rng);
        let same = mmd2_rbf(&a, &sample(0.0, &mut rng), 4, Some(2.0));
        let near = mmd2_rbf(&a, &sample(0.5, &mut rng), 4, Some(2.0));
        let far = mmd2_rbf(&a, &sample(2.0, &mut rng), 4, Some(2.0));
        assert!(same.abs() < 0.01, "{same}");
        assert!(near > 0.02 && far > 2.0 * near, "{same} {near} {far}");
    }
}
