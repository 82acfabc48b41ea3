//! FILIP's token-wise late interaction (Yao et al., 2021, "FILIP: Fine-grained Interactive
//! Language-Image Pre-Training").
//!
//! There is no official code; this follows the paper (§3.1.1 similarities and loss, §3.1.2 the
//! image-token selection before the all-gather). Where the paper is silent: padded text tokens
//! are left out of both the max and the mean; the two directions share one learnable
//! temperature, kept apart from CLIP's when both losses train a model.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Bool, Int, Tensor, backend::Backend};

use super::MAX_LOGIT_SCALE;

/// Added to padded similarities before a max so they never win (similarities of unit vectors
/// lie in [-1, 1]; a finite value keeps gradients free of infinities).
const PAD_SIM: f32 = -1.0e4;

/// Every image-token × text-token inner product, `[images, texts, image_tokens, text_tokens]`.
fn token_sims<B: Backend>(image: Tensor<B, 3>, text: Tensor<B, 3>) -> Tensor<B, 4> {
    let [n, ti, d] = image.dims();
    let [m, tt, d2] = text.dims();
    assert_eq!(
        d, d2,
        "FILIP: image tokens have width {d}, text tokens {d2}"
    );
    // One [n·ti, d] × [d, m·tt] product, then [n, ti, m, tt] → [n, m, ti, tt].
    let s = image
        .reshape([n * ti, d])
        .matmul(text.reshape([m * tt, d]).transpose());
    s.reshape([n, ti, m, tt]).swap_dims(1, 2)
}

/// Mean over the unmasked entries of `x` along `dim` (`valid` broadcast to `x`, 1 = keep).
fn masked_mean<B: Backend>(x: Tensor<B, 3>, valid: Tensor<B, 3>, dim: usize) -> Tensor<B, 2> {
    let count = valid.clone().sum_dim(dim).clamp_min(1.0);
    let [a, b, c] = x.dims();
    let out = (x * valid).sum_dim(dim) / count;
    match dim {
        0 => out.reshape([b, c]),
        1 => out.reshape([a, c]),
        _ => out.reshape([a, b]),
    }
}

/// FILIP's two similarity matrices between every image and every text.
///
/// - `s_i2t[i, j] = mean_k max_r <x_ik, y_jr>`: each image token finds its best text token, the
///   image's tokens are averaged (paper eq. 4, image-to-text);
/// - `s_t2i[i, j] = mean_r max_k <x_ik, y_jr>`: each text token finds its best image token, the
///   text's tokens are averaged (text-to-image).
///
/// Padded tokens (`true` in a padding mask) take part in neither the max nor the mean.
///
/// # Shapes
/// - `image`: `[images, image_tokens, d]`, `image_padding`: `[images, image_tokens]`
/// - `text`: `[texts, text_tokens, d]`, `text_padding`: `[texts, text_tokens]`
/// - returns: `s_i2t` and `s_t2i`, each `[images, texts]`
pub fn late_interaction<B: Backend>(
    image: Tensor<B, 3>,
    image_padding: Option<Tensor<B, 2, Bool>>,
    text: Tensor<B, 3>,
    text_padding: Option<Tensor<B, 2, Bool>>,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let [n, ti, _] = image.dims();
    let [m, tt, _] = text.dims();
    let device = image.device();
    let sims = token_sims(image, text); // [n, m, ti, tt]
    let text_pad = text_padding
        .clone()
        .map(|p| p.reshape([1, m, 1, tt]).expand([n, m, ti, tt]));
    let image_pad = image_padding
        .clone()
        .map(|p| p.reshape([n, 1, ti, 1]).expand([n, m, ti, tt]));

    // Image → text: max over text tokens, mean over the image's tokens.
    let best_text = match &text_pad {
        Some(p) => sims.clone().mask_fill(p.clone(), PAD_SIM),
        None => sims.clone(),
    }
    .max_dim(3)
    .reshape([n, m, ti]);
    let image_valid = match &image_padding {
        Some(p) => p
            .clone()
            .bool_not()
            .float()
            .reshape([n, 1, ti])
            .expand([n, m, ti]),
        None => Tensor::ones([n, m, ti], &device),
    };
    let s_i2t = masked_mean(best_text, image_valid, 2);

    // Text → image: max over image tokens, mean over the text's tokens.
    let best_image = match &image_pad {
        Some(p) => sims.mask_fill(p.clone(), PAD_SIM),
        None => sims,
    }
    .max_dim(2)
    .reshape([n, m, tt]);
    let text_valid = match text_padding {
        Some(p) => p.bool_not().float().reshape([1, m, tt]).expand([n, m, tt]),
        None => Tensor::ones([n, m, tt], &device),
    };
    let s_t2i = masked_mean(best_image, text_valid, 2);
    (s_i2t, s_t2i)
}

/// FILIP's contrastive loss: cross-entropy of image *i* against every text by `s_i2t`, and of
/// text *j* against every image by `s_t2i`, averaged; pairs are on the diagonal.
///
/// `logit_scale` is the log of the inverse temperature, clamped at ln 100 as CLIP's.
///
/// # Shapes
/// - `s_i2t`, `s_t2i`: `[n, n]` from [`late_interaction`]; `logit_scale`: `[1]`
/// - returns: `[1]`
pub fn filip_loss<B: Backend>(
    s_i2t: Tensor<B, 2>,
    s_t2i: Tensor<B, 2>,
    logit_scale: Tensor<B, 1>,
) -> Tensor<B, 1> {
    let [n, m] = s_i2t.dims();
    assert_eq!(n, m, "FILIP loss: {n} images but {m} texts");
    let device = s_i2t.device();
    let scale = logit_scale
        .clamp_max(MAX_LOGIT_SCALE.ln())
        .exp()
        .unsqueeze::<2>();
    let labels = Tensor::<B, 1, Int>::arange(0..n as i64, &device);
    let ce = CrossEntropyLossConfig::new().init(&device);
    let image_side = ce.forward(s_i2t * scale.clone(), labels.clone());
    let text_side = ce.forward((s_t2i * scale).transpose(), labels);
    (image_side + text_side) / 2.0
}

/// The `keep` image tokens of each image with the highest token-wise maximum similarity to any
/// (unpadded) token of any of `text` (FILIP §3.1.2: "the top-25% tokens with the highest
/// token-wise maximum similarity score among all texts in the same local worker", selected
/// before the all-gather). Padded image tokens are chosen last. Selection is by index; gradients
/// flow through the kept tokens.
///
/// # Shapes
/// - `image`: `[n, ti, d]`, `image_padding`: `[n, ti]`; `text`: `[m, tt, d]`, `text_padding`: `[m, tt]`
/// - returns: tokens `[n, keep, d]` and their padding `[n, keep]` (when the input had one)
pub fn select_image_tokens<B: Backend>(
    image: Tensor<B, 3>,
    image_padding: Option<Tensor<B, 2, Bool>>,
    text: Tensor<B, 3>,
    text_padding: Option<Tensor<B, 2, Bool>>,
    keep: usize,
) -> (Tensor<B, 3>, Option<Tensor<B, 2, Bool>>) {
    let [n, ti, d] = image.dims();
    let [m, tt, _] = text.dims();
    let keep = keep.clamp(1, ti);
    if keep == ti {
        return (image, image_padding);
    }
    let sims = token_sims(image.clone().detach(), text.detach()); // [n, m, ti, tt]
    let sims = match text_padding {
        Some(p) => sims.mask_fill(p.reshape([1, m, 1, tt]).expand([n, m, ti, tt]), PAD_SIM),
        None => sims,
    };
    // Max over texts and their tokens: [n, ti].
    let score = sims
        .swap_dims(1, 2)
        .reshape([n, ti, m * tt])
        .max_dim(2)
        .reshape([n, ti]);
    let score = match &image_padding {
        Some(p) => score.mask_fill(p.clone(), 2.0 * PAD_SIM),
        None => score,
    };
    let (_, idx) = score.topk_with_indices(keep, 1); // [n, keep]
    let tokens = image.gather(1, idx.clone().reshape([n, keep, 1]).expand([n, keep, d]));
    let padding = image_padding.map(|p| p.int().gather(1, idx).equal_elem(1));
    (tokens, padding)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};
    use vlp_core::backend::{DefaultBackend as B, TrainBackend as A, default_device};

    fn host<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    fn unit(shape: [usize; 3], seed: u64) -> Tensor<B, 3> {
        let dev = default_device();
        crate::normalize_last(vlp_core::backend::seeded::<B, _>(&dev, seed, || {
            Tensor::random(shape, Distribution::Normal(0.0, 1.0), &dev)
        }))
    }

    fn pad(rows: &[&[bool]]) -> Tensor<B, 2, Bool> {
        let (n, t) = (rows.len(), rows[0].len());
        let v: Vec<bool> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_data(TensorData::new(v, [n, t]), &default_device())
    }

    /// The paper's formulas as loops.
    #[allow(clippy::type_complexity)]
    fn brute(
        x: &[f32],
        (n, ti): (usize, usize),
        xpad: &dyn Fn(usize, usize) -> bool,
        y: &[f32],
        (m, tt): (usize, usize),
        ypad: &dyn Fn(usize, usize) -> bool,
        d: usize,
    ) -> (Vec<f64>, Vec<f64>) {
        let dot = |i: usize, k: usize, j: usize, r: usize| -> f64 {
            (0..d)
                .map(|c| x[(i * ti + k) * d + c] as f64 * y[(j * tt + r) * d + c] as f64)
                .sum()
        };
        let (mut i2t, mut t2i) = (vec![0.0; n * m], vec![0.0; n * m]);
        for i in 0..n {
            for j in 0..m {
                let ks: Vec<usize> = (0..ti).filter(|&k| !xpad(i, k)).collect();
                let rs: Vec<usize> = (0..tt).filter(|&r| !ypad(j, r)).collect();
                let mut s = 0.0;
                for &k in &ks {
                    s += rs.iter().map(|&r| dot(i, k, j, r)).fold(f64::MIN, f64::max);
                }
                i2t[i * m + j] = s / ks.len() as f64;
                let mut s = 0.0;
                for &r in &rs {
                    s += ks.iter().map(|&k| dot(i, k, j, r)).fold(f64::MIN, f64::max);
                }
                t2i[i * m + j] = s / rs.len() as f64;
            }
        }
        (i2t, t2i)
    }

    fn close(got: &[f32], want: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (k, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((*g as f64 - w).abs() < tol, "{what}[{k}]: {g} vs {w}");
        }
    }

    #[test]
    fn similarities_equal_the_brute_force_loops_with_padding() {
        // Odd sizes, more texts than images, padding on both sides.
        let (n, ti, m, tt, d) = (3, 5, 4, 6, 7);
        let x = unit([n, ti, d], 1);
        let y = unit([m, tt, d], 2);
        let xp: &[&[bool]] = &[
            &[false, false, false, true, true],
            &[false; 5],
            &[false, true, false, false, false],
        ];
        let yp: &[&[bool]] = &[
            &[false, false, true, true, true, true],
            &[false; 6],
            &[false, false, false, false, false, true],
            &[false, true, true, true, true, true],
        ];
        let (hx, hy) = (host(x.clone()), host(y.clone()));
        let (s_i2t, s_t2i) = late_interaction(x.clone(), Some(pad(xp)), y.clone(), Some(pad(yp)));
        assert_eq!(s_i2t.dims(), [n, m]);
        let (w_i2t, w_t2i) = brute(
            &hx,
            (n, ti),
            &|i, k| xp[i][k],
            &hy,
            (m, tt),
            &|j, r| yp[j][r],
            d,
        );
        close(&host(s_i2t), &w_i2t, 1e-5, "s_i2t");
        close(&host(s_t2i), &w_t2i, 1e-5, "s_t2i");
        // Without masks every token counts.
        let (s_i2t, s_t2i) = late_interaction(x, None, y, None);
        let (w_i2t, w_t2i) = brute(&hx, (n, ti), &|_, _| false, &hy, (m, tt), &|_, _| false, d);
        close(&host(s_i2t), &w_i2t, 1e-5, "s_i2t unmasked");
        close(&host(s_t2i), &w_t2i, 1e-5, "s_t2i unmasked");
    }

    #[test]
    fn loss_equals_the_cross_entropy_of_the_brute_force_similarities() {
        let (n, ti, tt, d) = (3, 4, 5, 6);
        let x = unit([n, ti, d], 3);
        let y = unit([n, tt, d], 4);
        let yp: &[&[bool]] = &[
            &[false, false, false, true, true],
            &[false; 5],
            &[false, false, true, true, true],
        ];
        let (i2t, t2i) = brute(
            &host(x.clone()),
            (n, ti),
            &|_, _| false,
            &host(y.clone()),
            (n, tt),
            &|j, r| yp[j][r],
            d,
        );
        let scale = 7.5f64;
        let ce = |row: &[f64], target: usize| -> f64 {
            let mx = row.iter().cloned().fold(f64::MIN, f64::max);
            let lse = mx + row.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
            lse - row[target]
        };
        let mut want = 0.0;
        for i in 0..n {
            let row: Vec<f64> = (0..n).map(|j| i2t[i * n + j] * scale).collect();
            want += ce(&row, i) / (2 * n) as f64;
            let col: Vec<f64> = (0..n).map(|k| t2i[k * n + i] * scale).collect();
            want += ce(&col, i) / (2 * n) as f64;
        }
        let (s_i2t, s_t2i) = late_interaction(x, None, y, Some(pad(yp)));
        let got: f32 = filip_loss(
            s_i2t,
            s_t2i,
            Tensor::from_floats([scale.ln() as f32], &default_device()),
        )
        .into_scalar();
        assert!((got as f64 - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn token_selection_keeps_the_best_matching_tokens_in_any_order() {
        let (n, ti, m, tt, d) = (2, 7, 3, 4, 5);
        let x = unit([n, ti, d], 5);
        let y = unit([m, tt, d], 6);
        let xp: &[&[bool]] = &[
            &[false, false, false, false, false, true, true],
            &[false; 7],
        ];
        let yp: &[&[bool]] = &[
            &[false, false, true, true],
            &[false; 4],
            &[false, true, true, true],
        ];
        let (hx, hy) = (host(x.clone()), host(y.clone()));
        let keep = 3;
        let (kept, kept_pad) = select_image_tokens(x, Some(pad(xp)), y, Some(pad(yp)), keep);
        assert_eq!(kept.dims(), [n, keep, d]);
        assert!(host_bools(kept_pad.unwrap()).iter().all(|p| !p));
        let kept = host(kept);
        for i in 0..n {
            // Brute force: token score = max over every unpadded text token.
            let mut scores: Vec<(f64, usize)> = (0..ti)
                .filter(|&k| !xp[i][k])
                .map(|k| {
                    let s = (0..m)
                        .flat_map(|j| (0..tt).filter(move |&r| !yp[j][r]).map(move |r| (j, r)))
                        .map(|(j, r)| {
                            (0..d)
                                .map(|c| {
                                    hx[(i * ti + k) * d + c] as f64
                                        * hy[(j * tt + r) * d + c] as f64
                                })
                                .sum::<f64>()
                        })
                        .fold(f64::MIN, f64::max);
                    (s, k)
                })
                .collect();
            scores.sort_by(|a, b| b.0.total_cmp(&a.0));
            let mut want: Vec<usize> = scores[..keep].iter().map(|s| s.1).collect();
            want.sort();
            // Which source token is each kept row?
            let mut got: Vec<usize> = (0..keep)
                .map(|q| {
                    let row = &kept[(i * keep + q) * d..(i * keep + q + 1) * d];
                    (0..ti)
                        .find(|&k| &hx[(i * ti + k) * d..(i * ti + k + 1) * d] == row)
                        .expect("a kept token is one of the image's tokens")
                })
                .collect();
            got.sort();
            assert_eq!(got, want, "image {i}");
        }
    }

    fn host_bools(t: Tensor<B, 2, Bool>) -> Vec<bool> {
        t.int()
            .into_data()
            .convert::<i64>()
            .to_vec::<i64>()
            .unwrap()
            .into_iter()
            .map(|v| v != 0)
            .collect()
    }

    #[test]
    fn gradients_reach_tokens_and_temperature() {
        let dev = default_device();
        let (n, ti, tt, d) = (3, 4, 3, 5);
        let x =
            Tensor::<A, 3>::from_data(TensorData::new(host(unit([n, ti, d], 7)), [n, ti, d]), &dev)
                .require_grad();
        let y =
            Tensor::<A, 3>::from_data(TensorData::new(host(unit([n, tt, d], 8)), [n, tt, d]), &dev)
                .require_grad();
        let scale = Tensor::<A, 1>::from_floats([2.0], &dev).require_grad();
        let (a, b) = late_interaction(x.clone(), None, y.clone(), None);
        let g = filip_loss(a, b, scale.clone()).backward();
        for (name, v) in [
            (
                "image",
                x.grad(&g).unwrap().into_data().to_vec::<f32>().unwrap(),
            ),
            (
                "text",
                y.grad(&g).unwrap().into_data().to_vec::<f32>().unwrap(),
            ),
            (
                "scale",
                scale.grad(&g).unwrap().into_data().to_vec::<f32>().unwrap(),
            ),
        ] {
            assert!(v.iter().any(|g| g.abs() > 1e-7), "{name} has no gradient");
        }
    }
}
