//! DreamLIP's objectives on long captions split into sub-captions (Zheng et al., 2024,
//! "DreamLIP: Language-Image Pre-training with Long Captions"; official code
//! `zyf0619sjtu/DreamLIP`, `open_clip/loss.py` `ClipLoss` with `use_multipos_loss`,
//! `use_finegrained_loss`, `use_ot_loss`).
//!
//! Each sample has `k` texts (its caption and sub-captions), all unit vectors:
//! - [`multi_positive_loss`]: every image against every text of the batch, its own `k` texts
//!   positive (circle loss);
//! - [`grouping_weights`] / [`grouped_patches`] / [`grouping_loss`]: the sub-caption-specific
//!   grouping — each text pools its own image's patches by their (min–max normalised,
//!   thresholded) similarity to it, and texts are contrasted with their pooled patches;
//! - [`ot_loss`]: the optional optimal-transport local loss.
//!
//! Where the code and the paper part: the code's grouping reshapes its `[texts, batch]`-ordered
//! features to `[batch, texts]` (`all_text_features_list.view(bs, number_text, c)`), which pairs
//! most texts with another sample's image once there is more than one text; the paper (§3.3)
//! groups each sub-caption with its own image, which is what this module does.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use vlp_core::loss::{circle_loss, sinkhorn};

use super::{MAX_LOGIT_SCALE, clip_loss};
use crate::model::normalize_last;

/// The multi-positive image-to-many-texts loss: circle loss over `image · textᵀ` (cosines, no
/// temperature) for every image and every text of the batch, an image's own texts being its
/// positives (the code's `I2mT_loss`, before its division by 10).
///
/// # Shapes
/// - `image`: `[n, d]`; `texts`: `[n, k, d]` (sample `i`'s texts in row `i`); all unit vectors
/// - returns: `[1]`
pub fn multi_positive_loss<B: Backend>(
    image: Tensor<B, 2>,
    texts: Tensor<B, 3>,
    margin: f32,
    gamma: f32,
) -> Tensor<B, 1> {
    let [n, k, d] = texts.dims();
    let device = image.device();
    let sim = image.matmul(texts.reshape([n * k, d]).transpose()); // [n, n·k]
    let row = Tensor::<B, 1, Int>::arange(0..n as i64, &device).reshape([n, 1]);
    let owner = Tensor::<B, 1, Int>::arange(0..(n * k) as i64, &device)
        .div_scalar(k as i64)
        .reshape([1, n * k]);
    let positive = row.expand([n, n * k]).equal(owner.expand([n, n * k]));
    circle_loss(sim, positive, margin, gamma)
}

/// Grouping weights of each text over its own image's patches: similarities min–max
/// normalised over the patches, values below `delta` set to zero (`delta < 0`: below
/// 1/patches), then normalised to sum to one (DreamLIP §3.3; the code's `sgl_norm = "minmax"`).
///
/// # Shapes
/// - `texts`: `[n, k, d]`, `patches`: `[n, p, d]`, unit vectors
/// - returns: `[n, k, p]`, each row non-negative and summing to one
pub fn grouping_weights<B: Backend>(
    texts: Tensor<B, 3>,
    patches: Tensor<B, 3>,
    delta: f32,
) -> Tensor<B, 3> {
    let p = patches.dims()[1];
    let sim = texts.matmul(patches.swap_dims(1, 2)); // [n, k, p]
    let min = sim.clone().min_dim(2);
    let max = sim.clone().max_dim(2);
    let norm = (sim - min.clone()) / (max - min + 1e-10);
    let threshold = if delta < 0.0 { 1.0 / p as f32 } else { delta };
    let norm = norm.clone().mask_fill(norm.lower_elem(threshold), 0.0);
    // The most similar patch always keeps weight 1 (for `delta` ≤ 1), so the sum is positive;
    // the guard only matters for a text equally similar to every patch.
    let sum = norm.clone().sum_dim(2).clamp_min(1e-12);
    norm / sum
}

/// Each text's pooled patches: the grouping-weighted sum of its image's patches, normalised.
///
/// # Shapes
/// - `weights`: `[n, k, p]` from [`grouping_weights`]; `patches`: `[n, p, d]`
/// - returns: `[n, k, d]`
pub fn grouped_patches<B: Backend>(weights: Tensor<B, 3>, patches: Tensor<B, 3>) -> Tensor<B, 3> {
    normalize_last(weights.matmul(patches))
}

/// The sub-caption-specific grouping loss: symmetric InfoNCE between every text and its pooled
/// patches over all `n·k` pairs of the batch, with its own (log) logit scale.
///
/// # Shapes
/// - `texts`, `grouped`: `[n, k, d]`, unit vectors; `logit_scale`: `[1]`
/// - returns: `[1]`
pub fn grouping_loss<B: Backend>(
    texts: Tensor<B, 3>,
    grouped: Tensor<B, 3>,
    logit_scale: Tensor<B, 1>,
) -> Tensor<B, 1> {
    let [n, k, d] = texts.dims();
    clip_loss(
        grouped.reshape([n * k, d]),
        texts.reshape([n * k, d]),
        logit_scale,
    )
}

/// The optimal-transport local loss: image `i` and sample `j`'s texts are scored by
/// `Σ T ⊙ S`, where `S` holds the patch × text cosines and `T` is the entropic transport plan
/// (uniform marginals, cost `1 − S`, regularisation `epsilon`, Sinkhorn, no gradient); the
/// scores times `exp(logit_scale)` are classified image → texts by cross-entropy (the code's
/// `ot_local_loss`, one direction).
///
/// # Shapes
/// - `patches`: `[n, p, d]`, `texts`: `[n, k, d]`, unit vectors; `logit_scale`: `[1]`
/// - returns: `[1]`
pub fn ot_loss<B: Backend>(
    patches: Tensor<B, 3>,
    texts: Tensor<B, 3>,
    logit_scale: Tensor<B, 1>,
    epsilon: f32,
    max_iter: usize,
) -> Tensor<B, 1> {
    let [n, p, d] = patches.dims();
    let k = texts.dims()[1];
    let device = patches.device();
    let sim = patches
        .reshape([n * p, d])
        .matmul(texts.reshape([n * k, d]).transpose())
        .reshape([n, p, n, k])
        .swap_dims(1, 2)
        .reshape([n * n, p, k]);
    let kernel = ((sim.clone().detach().neg() + 1.0) / -epsilon).exp();
    let u = Tensor::<B, 2>::full([n * n, p], 1.0 / p as f32, &device);
    let v = Tensor::<B, 2>::full([n * n, k], 1.0 / k as f32, &device);
    let plan = sinkhorn(kernel, u, v, max_iter, 1e-3);
    let score = (plan * sim).sum_dim(2).sum_dim(1).reshape([n, n]);
    let scale = logit_scale
        .clamp_max(MAX_LOGIT_SCALE.ln())
        .exp()
        .unsqueeze::<2>();
    let labels = Tensor::<B, 1, Int>::arange(0..n as i64, &device);
    CrossEntropyLossConfig::new()
        .init(&device)
        .forward(score * scale, labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};
    use vlp_core::backend::{DefaultBackend as B, default_device};

    fn unit(shape: [usize; 3]) -> Tensor<B, 3> {
        normalize_last(Tensor::random(
            shape,
            Distribution::Normal(0.0, 1.0),
            &default_device(),
        ))
    }

    fn host<const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
        t.into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect()
    }

    fn dot(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    fn lse(xs: &[f64]) -> f64 {
        let m = xs.iter().cloned().fold(f64::MIN, f64::max);
        m + xs.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
    }

    #[test]
    fn grouping_weights_follow_the_loop_with_and_without_a_threshold() {
        // 3 samples, 2 texts, 5 patches (odd sizes), d = 4.
        let (n, k, p, d) = (3, 2, 5, 4);
        let t = unit([n, k, d]);
        let x = unit([n, p, d]);
        let (th, xh) = (host(t.clone()), host(x.clone()));
        for delta in [0.0f32, 0.5, -1.0] {
            let w = host(grouping_weights(t.clone(), x.clone(), delta));
            for i in 0..n {
                for j in 0..k {
                    let s: Vec<f64> = (0..p)
                        .map(|q| {
                            dot(
                                &th[(i * k + j) * d..(i * k + j + 1) * d],
                                &xh[(i * p + q) * d..(i * p + q + 1) * d],
                            )
                        })
                        .collect();
                    let (lo, hi) = s
                        .iter()
                        .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
                    let thr = if delta < 0.0 {
                        1.0 / p as f64
                    } else {
                        delta as f64
                    };
                    let z: Vec<f64> = s
                        .iter()
                        .map(|v| (v - lo) / (hi - lo + 1e-10))
                        .map(|v| if v < thr { 0.0 } else { v })
                        .collect();
                    let sum: f64 = z.iter().sum();
                    for q in 0..p {
                        let got = w[(i * k + j) * p + q];
                        assert!(
                            (got - z[q] / sum).abs() < 1e-5,
                            "delta {delta}, sample {i}, text {j}, patch {q}: {got} vs {}",
                            z[q] / sum
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn grouping_loss_contrasts_every_text_with_its_own_pooled_patches() {
        let (n, k, p, d) = (3, 2, 5, 4);
        let dev = default_device();
        let t = unit([n, k, d]);
        let x = unit([n, p, d]);
        let g = grouped_patches(grouping_weights(t.clone(), x.clone(), 0.0), x);
        let scale = 3.0f64;
        let got: f32 = grouping_loss(
            t.clone(),
            g.clone(),
            Tensor::from_floats([scale.ln() as f32], &dev),
        )
        .into_scalar();
        let (th, gh) = (host(t), host(g));
        let m = n * k;
        let row = |v: &[f64], r: usize| v[r * d..(r + 1) * d].to_vec();
        let mut total = 0.0;
        for a in 0..m {
            // grouped → texts and texts → grouped, pair (a, a) positive.
            let gi: Vec<f64> = (0..m)
                .map(|b| scale * dot(&row(&gh, a), &row(&th, b)))
                .collect();
            let ti: Vec<f64> = (0..m)
                .map(|b| scale * dot(&row(&th, a), &row(&gh, b)))
                .collect();
            total += (lse(&gi) - gi[a]) + (lse(&ti) - ti[a]);
        }
        let want = total / (2.0 * m as f64);
        assert!((got as f64 - want).abs() < 1e-4, "{got} vs loop {want}");
    }

    #[test]
    fn multi_positive_loss_takes_each_samples_own_texts_as_positives() {
        let (n, k, d) = (3, 3, 4);
        let dev = default_device();
        let img = host(unit([n, 1, d]));
        let txt = host(unit([n, k, d]));
        let image = Tensor::<B, 2>::from_data(
            TensorData::new(img.iter().map(|&v| v as f32).collect::<Vec<_>>(), [n, d]),
            &dev,
        );
        let texts = Tensor::<B, 3>::from_data(
            TensorData::new(txt.iter().map(|&v| v as f32).collect::<Vec<_>>(), [n, k, d]),
            &dev,
        );
        let (m, g) = (0.25, 32.0);
        let got: f32 = multi_positive_loss(image, texts, m as f32, g as f32).into_scalar();
        let mut total = 0.0;
        for i in 0..n {
            let (mut lp, mut ln) = (Vec::new(), Vec::new());
            for c in 0..n * k {
                let s = dot(&img[i * d..(i + 1) * d], &txt[c * d..(c + 1) * d]);
                if c / k == i {
                    lp.push(-g * (1.0 + m - s).max(0.0) * (s - (1.0 - m)));
                } else {
                    ln.push(g * (s + m).max(0.0) * (s - m));
                }
            }
            let z = lse(&lp) + lse(&ln);
            total += z.max(0.0) + (-z.abs()).exp().ln_1p();
        }
        let want = total / n as f64;
        assert!(
            (got as f64 - want).abs() < 1e-4 * want.max(1.0),
            "{got} vs loop {want}"
        );
    }

    #[test]
    fn ot_loss_equals_the_plan_weighted_scores_classified_by_image() {
        let (n, k, p, d) = (3, 2, 4, 5);
        let dev = default_device();
        let x = unit([n, p, d]);
        let t = unit([n, k, d]);
        let scale = 5.0f64;
        let (eps, iters) = (0.1f32, 200);
        let got: f32 = ot_loss(
            x.clone(),
            t.clone(),
            Tensor::from_floats([scale.ln() as f32], &dev),
            eps,
            iters,
        )
        .into_scalar();
        // The same by loops: a plan per (image, sample) pair by plain Sinkhorn iterations, all
        // pairs stopping together when the mean change of their row scalings is below 1e-3.
        let (xh, th) = (host(x), host(t));
        let pairs: Vec<(usize, usize)> = (0..n).flat_map(|i| (0..n).map(move |j| (i, j))).collect();
        let sims: Vec<Vec<Vec<f64>>> = pairs
            .iter()
            .map(|&(i, j)| {
                (0..p)
                    .map(|q| {
                        (0..k)
                            .map(|r| {
                                dot(
                                    &xh[(i * p + q) * d..(i * p + q + 1) * d],
                                    &th[(j * k + r) * d..(j * k + r + 1) * d],
                                )
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let kern: Vec<Vec<Vec<f64>>> = sims
            .iter()
            .map(|s| {
                s.iter()
                    .map(|row| {
                        row.iter()
                            .map(|v| (-(1.0 - v) / eps as f64).exp())
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let mut r = vec![vec![1.0; p]; pairs.len()];
        let mut c = vec![vec![1.0; k]; pairs.len()];
        for _ in 0..iters {
            let mut change = 0.0;
            for (a, kk) in kern.iter().enumerate() {
                for q in 0..p {
                    let kc: f64 = (0..k).map(|b| kk[q][b] * c[a][b]).sum();
                    let new = (1.0 / p as f64) / kc;
                    change += (new - r[a][q]).abs();
                    r[a][q] = new;
                }
                for b in 0..k {
                    let kr: f64 = (0..p).map(|q| kk[q][b] * r[a][q]).sum();
                    c[a][b] = (1.0 / k as f64) / kr;
                }
            }
            if change / ((pairs.len() * p) as f64) < 1e-3 {
                break;
            }
        }
        let mut total = 0.0;
        for i in 0..n {
            let scores: Vec<f64> = (0..n)
                .map(|j| {
                    let a = i * n + j;
                    let score: f64 = (0..p)
                        .flat_map(|q| (0..k).map(move |b| (q, b)))
                        .map(|(q, b)| r[a][q] * kern[a][q][b] * c[a][b] * sims[a][q][b])
                        .sum();
                    scale * score
                })
                .collect();
            total += lse(&scores) - scores[i];
        }
        let want = total / n as f64;
        assert!((got as f64 - want).abs() < 1e-4, "{got} vs loop {want}");
    }
}
