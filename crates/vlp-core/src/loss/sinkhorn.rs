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
