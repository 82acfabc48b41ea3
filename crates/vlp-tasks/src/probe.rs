//! Linear probes: multinomial logistic regression on frozen features, fitted by L-BFGS on the
//! backend, with the L2 strength chosen on a validation split (CLIP's protocol).

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use vlp_data::shapes::Rng;

use crate::embed::Features;
use crate::error::{Result, TaskError};

/// A fitted multinomial logistic regression.
#[derive(Debug, Clone)]
pub struct LogisticRegression<B: Backend> {
    /// `[dim, classes]`.
    pub weight: Tensor<B, 2>,
    /// `[classes]`.
    pub bias: Tensor<B, 1>,
}

impl<B: Backend> LogisticRegression<B> {
    /// Class scores, `[n, classes]`.
    pub fn logits(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        x.matmul(self.weight.clone()) + self.bias.clone().unsqueeze()
    }

    /// Predicted classes (ties to the lower index).
    pub fn predict(&self, x: &Features, device: &B::Device) -> Vec<usize> {
        argmax_rows(&Features::from_tensor(
            self.logits(x.to_tensor::<B>(device)),
        ))
    }
}

/// Row-wise argmax with ties to the lower index.
pub fn argmax_rows(f: &Features) -> Vec<usize> {
    (0..f.rows)
        .map(|i| {
            let r = f.row(i);
            let mut best = 0;
            for k in 1..r.len() {
                if r[k] > r[best] {
                    best = k;
                }
            }
            best
        })
        .collect()
}

type P<B> = (Tensor<B, 2>, Tensor<B, 1>);

fn dot<B: Backend>(a: &P<B>, b: &P<B>) -> f64 {
    let s: f32 = (a.0.clone() * b.0.clone()).sum().into_scalar().elem_f32()
        + (a.1.clone() * b.1.clone()).sum().into_scalar().elem_f32();
    s as f64
}

fn axpy<B: Backend>(a: f64, x: &P<B>, y: &P<B>) -> P<B> {
    (y.0.clone() + x.0.clone() * a, y.1.clone() + x.1.clone() * a)
}

trait ElemF32 {
    fn elem_f32(self) -> f32;
}

impl<E: burn::tensor::ElementConversion> ElemF32 for E {
    fn elem_f32(self) -> f32 {
        self.elem::<f32>()
    }
}

/// Mean cross-entropy plus `λ/2‖W‖²`, and its gradient.
fn objective<B: Backend>(
    x: &Tensor<B, 2>,
    y1h: &Tensor<B, 2>,
    p: &P<B>,
    lambda: f64,
) -> (f64, P<B>) {
    let n = x.dims()[0] as f64;
    let logits = x.clone().matmul(p.0.clone()) + p.1.clone().unsqueeze();
    let logp = log_softmax(logits, 1);
    let ce = -((logp.clone() * y1h.clone()).sum().into_scalar().elem_f32() as f64) / n;
    let reg = 0.5 * lambda * (p.0.clone().square().sum().into_scalar().elem_f32() as f64);
    let diff = (logp.exp() - y1h.clone()) / n;
    let gw = x.clone().transpose().matmul(diff.clone()) + p.0.clone() * lambda;
    let gb = diff.sum_dim(0).squeeze_dim(0);
    (ce + reg, (gw, gb))
}

/// Fits logistic regression by L-BFGS (memory 10, Armijo backtracking) for at most `iters`
/// iterations or until the gradient norm falls below 1e-6.
pub fn fit<B: Backend>(
    x: &Features,
    labels: &[usize],
    classes: usize,
    lambda: f64,
    iters: usize,
    device: &B::Device,
) -> Result<LogisticRegression<B>> {
    if x.rows == 0 || x.rows != labels.len() {
        return Err(TaskError::Invalid {
            task: "linear probe".into(),
            reason: format!("{} features for {} labels", x.rows, labels.len()),
        });
    }
    if let Some(l) = labels.iter().find(|&&l| l >= classes) {
        return Err(TaskError::Invalid {
            task: "linear probe".into(),
            reason: format!("label {l} but {classes} classes"),
        });
    }
    let xt = x.to_tensor::<B>(device);
    let lab = Tensor::<B, 1, Int>::from_data(
        TensorData::new(
            labels.iter().map(|&l| l as i64).collect::<Vec<_>>(),
            [labels.len()],
        ),
        device,
    );
    let y1h = lab.one_hot(classes).float();
    let mut p: P<B> = (
        Tensor::zeros([x.dim, classes], device),
        Tensor::zeros([classes], device),
    );
    let (mut f, mut g) = objective(&xt, &y1h, &p, lambda);
    let mut hist: Vec<(P<B>, P<B>, f64)> = Vec::new();
    for _ in 0..iters {
        if dot(&g, &g).sqrt() < 1e-6 {
            break;
        }
        // Two-loop recursion: d = -H g.
        let mut q = (g.0.clone(), g.1.clone());
        let mut alphas = Vec::with_capacity(hist.len());
        for (s, y, rho) in hist.iter().rev() {
            let a = rho * dot(s, &q);
            q = axpy(-a, y, &q);
            alphas.push(a);
        }
        if let Some((s, y, _)) = hist.last() {
            let gamma = dot(s, y) / dot(y, y);
            q = (q.0 * gamma, q.1 * gamma);
        }
        for ((s, y, rho), a) in hist.iter().zip(alphas.into_iter().rev()) {
            let b = rho * dot(y, &q);
            q = axpy(a - b, s, &q);
        }
        let d = (q.0.neg(), q.1.neg());
        let slope = dot(&g, &d);
        let mut t = 1.0;
        let (np, nf, ng) = loop {
            let cand = axpy(t, &d, &p);
            let (cf, cg) = objective(&xt, &y1h, &cand, lambda);
            if cf <= f + 1e-4 * t * slope || t < 1e-10 {
                break (cand, cf, cg);
            }
            t *= 0.5;
        };
        let s = axpy(-1.0, &p, &np);
        let yv = axpy(-1.0, &g, &ng);
        let sy = dot(&s, &yv);
        if sy > 1e-12 {
            hist.push((s, yv, 1.0 / sy));
            if hist.len() > 10 {
                hist.remove(0);
            }
        }
        let done = (f - nf).abs() < 1e-10 * f.abs().max(1.0);
        p = np;
        f = nf;
        g = ng;
        if done {
            break;
        }
    }
    Ok(LogisticRegression {
        weight: p.0,
        bias: p.1,
    })
}

/// Accuracy of predictions.
pub fn accuracy(pred: &[usize], labels: &[usize]) -> f64 {
    pred.iter().zip(labels).filter(|(a, b)| a == b).count() as f64 / labels.len().max(1) as f64
}

/// The regularisation strengths searched.
pub const LAMBDAS: [f64; 8] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 1.0];

/// Result of [`linear_probe`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// Test accuracy of the probe refitted on all training data.
    pub accuracy: f64,
    /// The chosen L2 strength.
    pub lambda: f64,
    /// Validation accuracy of each strength tried, in [`LAMBDAS`] order.
    pub validation: Vec<f64>,
}

/// CLIP's linear-probe protocol: hold out `val_fraction` of the training features (seeded), pick
/// the L2 strength with the best validation accuracy (ties to the stronger), refit on all
/// training features, report test accuracy.
#[allow(clippy::too_many_arguments)]
pub fn linear_probe<B: Backend>(
    train: &Features,
    train_labels: &[usize],
    test: &Features,
    test_labels: &[usize],
    classes: usize,
    val_fraction: f64,
    seed: u64,
    device: &B::Device,
) -> Result<ProbeResult> {
    let mut idx: Vec<usize> = (0..train.rows).collect();
    Rng::new(seed).shuffle(&mut idx);
    let n_val =
        ((train.rows as f64 * val_fraction) as usize).clamp(1, train.rows.saturating_sub(1).max(1));
    let (val_idx, fit_idx) = idx.split_at(n_val);
    let take = |ids: &[usize]| -> (Features, Vec<usize>) {
        let mut f = Features {
            data: Vec::with_capacity(ids.len() * train.dim),
            rows: ids.len(),
            dim: train.dim,
        };
        for &i in ids {
            f.data.extend_from_slice(train.row(i));
        }
        (f, ids.iter().map(|&i| train_labels[i]).collect())
    };
    let (fx, fy) = take(fit_idx);
    let (vx, vy) = take(val_idx);
    let mut validation = Vec::new();
    for &l in &LAMBDAS {
        let m = fit::<B>(&fx, &fy, classes, l, 100, device)?;
        validation.push(accuracy(&m.predict(&vx, device), &vy));
    }
    let best = (0..LAMBDAS.len())
        .rev()
        .max_by(|&a, &b| validation[a].total_cmp(&validation[b]))
        .expect("lambdas");
    let model = fit::<B>(train, train_labels, classes, LAMBDAS[best], 200, device)?;
    Ok(ProbeResult {
        accuracy: accuracy(&model.predict(test, device), test_labels),
        lambda: LAMBDAS[best],
        validation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vlp_core::backend::{DefaultBackend as B, default_device};

    /// Three Gaussian blobs in 4-D: separable, so the probe must get them right.
    fn blobs(n: usize, seed: u64) -> (Features, Vec<usize>) {
        let mut r = Rng::new(seed);
        let mut f = Features {
            data: Vec::new(),
            rows: n,
            dim: 4,
        };
        let mut y = Vec::new();
        for i in 0..n {
            let c = i % 3;
            for d in 0..4 {
                let centre = if d == c { 2.0 } else { 0.0 };
                f.data.push(centre + r.range(-0.7, 0.7));
            }
            y.push(c);
        }
        (f, y)
    }

    #[test]
    fn lbfgs_minimises_the_objective_and_separates_blobs() {
        let dev = default_device();
        let (x, y) = blobs(300, 1);
        let m = fit::<B>(&x, &y, 3, 1e-3, 200, &dev).unwrap();
        let (tx, ty) = blobs(150, 2);
        assert!(accuracy(&m.predict(&tx, &dev), &ty) > 0.97);
        // At the optimum the gradient vanishes: compare with a few steps of plain descent.
        let xt = x.to_tensor::<B>(&dev);
        let lab = Tensor::<B, 1, Int>::from_data(
            TensorData::new(y.iter().map(|&l| l as i64).collect::<Vec<_>>(), [300]),
            &dev,
        );
        let (_, g) = objective(
            &xt,
            &lab.one_hot(3).float(),
            &(m.weight.clone(), m.bias.clone()),
            1e-3,
        );
        assert!(
            dot(&g, &g).sqrt() < 1e-3,
            "gradient norm {}",
            dot(&g, &g).sqrt()
        );
    }

    #[test]
    fn protocol_picks_a_lambda_and_reports_test_accuracy() {
        let dev = default_device();
        let (x, y) = blobs(300, 3);
        let (tx, ty) = blobs(90, 4);
        let r = linear_probe::<B>(&x, &y, &tx, &ty, 3, 0.2, 0, &dev).unwrap();
        assert_eq!(r.validation.len(), LAMBDAS.len());
        assert!(r.accuracy > 0.95, "{r:?}");
        assert!(
            fit::<B>(&x, &y, 2, 1e-3, 10, &dev).is_err(),
            "label 2 with 2 classes"
        );
    }
}
