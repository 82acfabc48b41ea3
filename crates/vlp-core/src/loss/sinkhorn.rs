//! Sinkhorn–Knopp scaling (Cuturi, 2013): the entropic optimal-transport plan between two
//! discrete distributions, as DreamLIP's OT local loss computes it (`Sinkhorn` in its
//! `open_clip/loss.py`: alternate row and column scalings until the row scaling moves less than
//! a tolerance, then `T = diag(r) K diag(c)`).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// Scales positive kernels `K` to transport plans `T = diag(r)·K·diag(c)` whose rows sum to `u`
/// and columns to `v`, alternating `r = u / (K c)` and `c = v / (Kᵀ r)` for at most `max_iter`
/// rounds, stopping once the mean change of `r` is below `tol`. After each round the column sums
/// equal `v` exactly; the row sums converge to `u`.
///
/// No gradient flows through the iterations (the plan is a constant weighting, as in DreamLIP,
/// which computes it under `torch.no_grad`).
///
/// # Shapes
/// - `k`: `[batch, n, m]`, positive entries
/// - `u`: `[batch, n]`, `v`: `[batch, m]`, each row a distribution with the same total
/// - returns: `[batch, n, m]`
pub fn sinkhorn<B: Backend>(
    k: Tensor<B, 3>,
    u: Tensor<B, 2>,
    v: Tensor<B, 2>,
    max_iter: usize,
    tol: f32,
) -> Tensor<B, 3> {
    let device = k.device();
    let [b, n, m] = k.dims();
    // On the host: the plan carries no gradient, and DreamLIP's kernels are many tiny matrices
    // (one per image–text pair) whose alternating row and column sums, as tensor operations,
    // spend most of their time in strided iteration (measured: a third of a training step).
    let host = |t: TensorData| -> Vec<f32> {
        t.convert::<f32>()
            .to_vec::<f32>()
            .expect("f32 data converts to a Vec<f32>")
    };
    let kh = host(k.detach().into_data());
    let uh = host(u.detach().into_data());
    let vh = host(v.detach().into_data());
    let mut r = vec![1.0f32; b * n];
    let mut c = vec![1.0f32; b * m];
    let mut sums = vec![0.0f32; m];
    for _ in 0..max_iter {
        let mut change = 0.0f64;
        for bi in 0..b {
            let kb = &kh[bi * n * m..(bi + 1) * n * m];
            let cb = &c[bi * m..(bi + 1) * m];
            for i in 0..n {
                let s: f32 = kb[i * m..(i + 1) * m]
                    .iter()
                    .zip(cb)
                    .map(|(x, y)| x * y)
                    .sum();
                let new = uh[bi * n + i] / s;
                change += (new - r[bi * n + i]).abs() as f64;
                r[bi * n + i] = new;
            }
            sums.fill(0.0);
            for i in 0..n {
                let ri = r[bi * n + i];
                for (acc, x) in sums.iter_mut().zip(&kb[i * m..(i + 1) * m]) {
                    *acc += x * ri;
                }
            }
            for j in 0..m {
                c[bi * m + j] = vh[bi * m + j] / sums[j];
            }
        }
        if change / ((b * n).max(1) as f64) < tol as f64 {
            break;
        }
    }
    let mut plan = kh;
    for bi in 0..b {
        for i in 0..n {
            let ri = r[bi * n + i];
            let row = &mut plan[(bi * n + i) * m..(bi * n + i + 1) * m];
            for (x, cj) in row.iter_mut().zip(&c[bi * m..(bi + 1) * m]) {
                *x *= ri * cj;
            }
        }
    }
    Tensor::from_data(TensorData::new(plan, [b, n, m]), &device)
}

/// SwAV's balanced soft assignments of samples to prototypes (Caron et al., 2020), as the
/// improved CLIP recipe's SwALIP computes them (`SwALIPLoss.sinkhorn_knopp` in
/// `facebookresearch/clip-rocket`, `losses.py`): `Q = exp(scores / ε)`, scaled for
/// `iterations` rounds so that every prototype receives `1/K` of the mass and every sample
/// `1/B`, then multiplied by `B` so each sample's row is a distribution. Constant in the
/// gradient (the code runs it under `no_grad`).
///
/// # Shapes
/// - `scores`: `[samples, prototypes]` (similarities)
/// - returns: `[samples, prototypes]`, rows summing to 1, columns to `samples / prototypes`
///   (approximately, after few rounds)
pub fn swav_assignments<B: Backend>(
    scores: Tensor<B, 2>,
    epsilon: f32,
    iterations: usize,
) -> Tensor<B, 2> {
    let [b, k] = scores.dims();
    let device = scores.device();
    let scores = scores.detach();
    // exp((s − max s)/ε): a common factor, which the scaling removes, that keeps exp finite.
    let max = scores.clone().max();
    let kernel = ((scores - max.unsqueeze::<2>()) / epsilon as f64)
        .exp()
        .transpose()
        .reshape([1, k, b]);
    let u = Tensor::<B, 2>::full([1, k], 1.0 / k as f32, &device);
    let v = Tensor::<B, 2>::full([1, b], 1.0 / b as f32, &device);
    (sinkhorn(kernel, u, v, iterations.max(1), 0.0).reshape([k, b]) * b as f64).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{DefaultBackend as B, default_device};
    use burn::tensor::Distribution;

    fn host(t: Tensor<B, 3>) -> (Vec<f32>, [usize; 3]) {
        let d = t.dims();
        (t.into_data().convert::<f32>().to_vec().unwrap(), d)
    }

    #[test]
    fn plans_have_the_requested_marginals_and_keep_the_kernel_shape() {
        let dev = default_device();
        // DreamLIP's use: uniform marginals over 5 patches and 3 texts, K = exp(−(1 − s)/ε).
        // Fixed similarities spread over [0, 1) (a random draw from the shared generator made
        // the test depend on which tests ran before it).
        let s: Vec<f32> = (0..30).map(|x| (x * 37 % 30) as f32 / 30.0).collect();
        let sim = Tensor::<B, 3>::from_data(TensorData::new(s, [2, 5, 3]), &dev);
        let k = ((sim.neg() + 1.0) / -0.1).exp();
        let u = Tensor::<B, 2>::full([2, 5], 1.0 / 5.0, &dev);
        // Non-uniform column marginal of the same total.
        let v = Tensor::<B, 2>::from_data(
            TensorData::new(vec![0.5f32, 0.25, 0.25, 0.2, 0.3, 0.5], [2, 3]),
            &dev,
        );
        let (t, [b, n, m]) = host(sinkhorn(k.clone(), u, v, 1000, 1e-7));
        let vv = [[0.5f32, 0.25, 0.25], [0.2, 0.3, 0.5]];
        for bi in 0..b {
            for i in 0..n {
                let row: f32 = (0..m).map(|j| t[(bi * n + i) * m + j]).sum();
                assert!((row - 0.2).abs() < 1e-4, "row {bi},{i} sums to {row}");
            }
            for j in 0..m {
                let col: f32 = (0..n).map(|i| t[(bi * n + i) * m + j]).sum();
                assert!(
                    (col - vv[bi][j]).abs() < 1e-5,
                    "column {bi},{j} sums to {col}"
                );
            }
        }
        // T = diag(r) K diag(c): every 2×2 cross-ratio of T equals K's.
        let (kk, _) = host(k);
        let at = |x: &[f32], bi: usize, i: usize, j: usize| x[(bi * n + i) * m + j] as f64;
        for bi in 0..b {
            let ratio =
                |x: &[f32]| at(x, bi, 0, 0) * at(x, bi, 3, 2) / (at(x, bi, 0, 2) * at(x, bi, 3, 0));
            let (rt, rk) = (ratio(&t), ratio(&kk));
            assert!(
                (rt / rk - 1.0).abs() < 1e-3,
                "cross-ratio {rt} vs kernel {rk}"
            );
        }
    }

    /// SwAV's loop, in f64.
    fn swav_loop(s: &[Vec<f64>], eps: f64, iters: usize) -> Vec<Vec<f64>> {
        let (b, k) = (s.len(), s[0].len());
        // q[p][i] = exp(s[i][p] / eps), normalised to sum 1.
        let mut q: Vec<Vec<f64>> = (0..k)
            .map(|p| (0..b).map(|i| (s[i][p] / eps).exp()).collect())
            .collect();
        let total: f64 = q.iter().flatten().sum();
        q.iter_mut().flatten().for_each(|x| *x /= total);
        for _ in 0..iters {
            for row in q.iter_mut() {
                let r: f64 = row.iter().sum();
                row.iter_mut().for_each(|x| *x /= r * k as f64);
            }
            let cols: Vec<f64> = (0..b).map(|i| q.iter().map(|row| row[i]).sum()).collect();
            for row in q.iter_mut() {
                for (x, c) in row.iter_mut().zip(&cols) {
                    *x /= c * b as f64;
                }
            }
        }
        (0..b)
            .map(|i| (0..k).map(|p| q[p][i] * b as f64).collect())
            .collect()
    }

    #[test]
    fn swav_assignments_match_the_reference_loop() {
        let dev = default_device();
        let (b, k) = (5, 3);
        let s: Vec<Vec<f64>> = (0..b)
            .map(|i| {
                (0..k)
                    .map(|p| ((i * 7 + p * 3) % 9) as f64 / 4.5 - 1.0)
                    .collect()
            })
            .collect();
        let flat: Vec<f32> = s.iter().flatten().map(|x| *x as f32).collect();
        let scores = Tensor::<B, 2>::from_data(TensorData::new(flat, [b, k]), &dev);
        for iters in [1, 3, 50] {
            let got: Vec<f32> = swav_assignments(scores.clone(), 0.5, iters)
                .into_data()
                .to_vec()
                .unwrap();
            let want = swav_loop(&s, 0.5, iters);
            for i in 0..b {
                for p in 0..k {
                    let (g, w) = (got[i * k + p] as f64, want[i][p]);
                    assert!(
                        (g - w).abs() < 1e-5,
                        "{iters} rounds, [{i}, {p}]: {g} vs {w}"
                    );
                }
                let row: f32 = got[i * k..(i + 1) * k].iter().sum();
                assert!((row - 1.0).abs() < 1e-5, "row {i} sums to {row}");
            }
            if iters == 50 {
                // Converged: every prototype gets B/K of the mass.
                for p in 0..k {
                    let col: f32 = (0..b).map(|i| got[i * k + p]).sum();
                    assert!(
                        (col - b as f32 / k as f32).abs() < 1e-3,
                        "column {p}: {col}"
                    );
                }
            }
        }
        // Large scores with a small ε stay finite (the common factor is removed first).
        let big =
            Tensor::<B, 2>::from_data(TensorData::new(vec![50.0f32, 0.0, 0.0, 50.0], [2, 2]), &dev);
        let q: Vec<f32> = swav_assignments(big, 0.05, 3).into_data().to_vec().unwrap();
        assert!(q.iter().all(|x| x.is_finite()), "{q:?}");
        assert!(
            (q[0] - 1.0).abs() < 1e-4 && (q[3] - 1.0).abs() < 1e-4,
            "{q:?}"
        );
    }

    #[test]
    fn a_loose_tolerance_stops_early() {
        let dev = default_device();
        let k = Tensor::<B, 3>::random([1, 4, 4], Distribution::Uniform(0.1, 1.0), &dev);
        let u = Tensor::<B, 2>::full([1, 4], 0.25, &dev);
        let v = Tensor::<B, 2>::full([1, 4], 0.25, &dev);
        let one = host(sinkhorn(k.clone(), u.clone(), v.clone(), 1, 0.0)).0;
        let loose = host(sinkhorn(k, u, v, 100, 1e9)).0;
        assert_eq!(
            one, loose,
            "a tolerance met after the first round stops there"
        );
    }
}
