//! The multi-label contrastive loss GroupViT and CoCu train with besides CLIP's
//! (`MultiLabelContrastive.multi_label_loss` in `models/multi_label_contrastive.py` of both
//! codebases): each image has several texts (CoCu: prompts of its curated concepts), all of
//! them its positives.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Tensor, backend::Backend};

use super::info_nce::capped_scale;

/// Mean of the image→texts and text→image soft cross-entropies.
///
/// Image `b` scores every text of the batch; its target spreads `1/l` over its own `l` texts
/// (the code's `pos_labels_batch_img`). Each text scores every image; its target is its own
/// image. The image half averages over `n` images, the text half over `n·l` texts (timm's
/// `SoftTargetCrossEntropy` means over rows).
///
/// # Shapes
/// - `image`: `[n, d]`, L2-normalised
/// - `texts`: `[n, l, d]`, L2-normalised, `texts[b]` the positives of image `b`
/// - `logit_scale`: `[1]`, the log of the scale (clamped at ln 100)
/// - returns: `[1]`
pub fn multi_label_loss<B: Backend>(
    image: Tensor<B, 2>,
    texts: Tensor<B, 3>,
    logit_scale: Tensor<B, 1>,
) -> Tensor<B, 1> {
    let [n, l, d] = texts.dims();
    let device = image.device();
    let flat = texts.reshape([n * l, d]);
    let scale = capped_scale(logit_scale);
    // [n, n·l]: column b'·l + j is text j of image b'.
    let per_image = image.clone().matmul(flat.clone().transpose()) * scale.clone();
    // Row b has 1/l on its own columns b·l .. b·l + l: the identity repeated l times per row.
    let own = Tensor::<B, 2>::eye(n, &device)
        .unsqueeze_dim::<3>(2)
        .repeat_dim(2, l)
        .reshape([n, n * l]);
    let image_half = -(log_softmax(per_image, 1) * own.clone()).sum_dim(1).mean() / l as f64;
    // [n·l, n]: text b·l + j's positive is image b, the transpose of `own`.
    let per_text = flat.matmul(image.transpose()) * scale;
    let text_half = -(log_softmax(per_text, 1) * own.transpose())
        .sum_dim(1)
        .mean();
    (image_half + text_half) / 2.0
}

/// [`multi_label_loss`] with `m` extra negative texts per image (scene-derived hard negatives
/// such as swapped attributes, as NegCLIP and TSVLC add them): every image scores them beside
/// the batch's positive texts, so its softmax has `n·(l + m)` columns; they are nobody's
/// positive and have no text→image term.
///
/// # Shapes
/// - `image`: `[n, d]`, L2-normalised
/// - `texts`: `[n, l, d]`, L2-normalised positives
/// - `negatives`: `[n, m, d]`, L2-normalised
/// - `logit_scale`: `[1]`, the log of the scale (clamped at ln 100)
/// - returns: `[1]`
pub fn multi_label_loss_with_negatives<B: Backend>(
    image: Tensor<B, 2>,
    texts: Tensor<B, 3>,
    negatives: Tensor<B, 3>,
    logit_scale: Tensor<B, 1>,
) -> Tensor<B, 1> {
    let [n, l, d] = texts.dims();
    let m = negatives.dims()[1];
    if m == 0 {
        return multi_label_loss(image, texts, logit_scale);
    }
    let device = image.device();
    let flat = texts.reshape([n * l, d]);
    let scale = capped_scale(logit_scale);
    let columns = Tensor::cat(vec![flat.clone(), negatives.reshape([n * m, d])], 0);
    let per_image = image.clone().matmul(columns.transpose()) * scale.clone();
    let own = Tensor::<B, 2>::eye(n, &device)
        .unsqueeze_dim::<3>(2)
        .repeat_dim(2, l)
        .reshape([n, n * l]);
    let target = Tensor::cat(vec![own.clone(), Tensor::zeros([n, n * m], &device)], 1);
    let image_half = -(log_softmax(per_image, 1) * target).sum_dim(1).mean() / l as f64;
    let per_text = flat.matmul(image.transpose()) * scale;
    let text_half = -(log_softmax(per_text, 1) * own.transpose())
        .sum_dim(1)
        .mean();
    (image_half + text_half) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};
    use vlp_core::backend::{DefaultBackend as B, default_device};

    fn lse(xs: &[f64]) -> f64 {
        let m = xs.iter().cloned().fold(f64::MIN, f64::max);
        m + xs.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
    }

    /// The loss by loops over images, texts and classes.
    fn brute(image: &[f32], texts: &[f32], n: usize, l: usize, d: usize, scale: f64) -> f64 {
        brute_neg(image, texts, &[], n, l, 0, d, scale)
    }

    /// The loss by loops, `m` negatives per image (`negs` image after image).
    #[allow(clippy::too_many_arguments)]
    fn brute_neg(
        image: &[f32],
        texts: &[f32],
        negs: &[f32],
        n: usize,
        l: usize,
        m: usize,
        d: usize,
        scale: f64,
    ) -> f64 {
        let dot =
            |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (*x * *y) as f64).sum::<f64>();
        let img = |b: usize| &image[b * d..(b + 1) * d];
        let txt = |t: usize| &texts[t * d..(t + 1) * d];
        let neg = |t: usize| &negs[t * d..(t + 1) * d];
        let mut image_half = 0.0;
        for b in 0..n {
            let logits: Vec<f64> = (0..n * l)
                .map(|t| scale * dot(img(b), txt(t)))
                .chain((0..n * m).map(|t| scale * dot(img(b), neg(t))))
                .collect();
            let z = lse(&logits);
            for j in 0..l {
                image_half -= (logits[b * l + j] - z) / l as f64;
            }
        }
        image_half /= n as f64;
        let mut text_half = 0.0;
        for t in 0..n * l {
            let logits: Vec<f64> = (0..n).map(|b| scale * dot(txt(t), img(b))).collect();
            text_half -= logits[t / l] - lse(&logits);
        }
        text_half /= (n * l) as f64;
        (image_half + text_half) / 2.0
    }

    #[test]
    fn matches_a_loop_at_odd_sizes() {
        let dev = default_device();
        for (n, l, d) in [(3, 2, 5), (1, 3, 4), (5, 1, 3), (4, 3, 7)] {
            let image = Tensor::<B, 2>::random([n, d], Distribution::Normal(0.0, 1.0), &dev);
            let texts = Tensor::<B, 3>::random([n, l, d], Distribution::Normal(0.0, 1.0), &dev);
            let image = crate::normalize(image);
            let texts = crate::normalize_last(texts);
            let ls = 1.7f32;
            let got: f32 = multi_label_loss(
                image.clone(),
                texts.clone(),
                Tensor::from_data(TensorData::from([ls]), &dev),
            )
            .into_scalar();
            let i: Vec<f32> = image.into_data().to_vec().unwrap();
            let t: Vec<f32> = texts.into_data().to_vec().unwrap();
            let want = brute(&i, &t, n, l, d, (ls as f64).exp());
            assert!(
                (got as f64 - want).abs() < 1e-5,
                "n {n} l {l}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn negatives_match_a_loop_and_only_add_columns() {
        let dev = default_device();
        for (n, l, m, d) in [(3, 2, 1, 5), (1, 3, 2, 4), (4, 1, 3, 6)] {
            let r = |dims: [usize; 3]| {
                crate::normalize_last(Tensor::<B, 3>::random(
                    dims,
                    Distribution::Normal(0.0, 1.0),
                    &dev,
                ))
            };
            let image = crate::normalize(Tensor::<B, 2>::random(
                [n, d],
                Distribution::Normal(0.0, 1.0),
                &dev,
            ));
            let (texts, negs) = (r([n, l, d]), r([n, m, d]));
            let ls = 1.3f32;
            let scale = || Tensor::<B, 1>::from_data(TensorData::from([ls]), &dev);
            let got: f32 = multi_label_loss_with_negatives(
                image.clone(),
                texts.clone(),
                negs.clone(),
                scale(),
            )
            .into_scalar();
            let v = |t: Tensor<B, 3>| t.into_data().to_vec::<f32>().unwrap();
            let i: Vec<f32> = image.clone().into_data().to_vec().unwrap();
            let want = brute_neg(
                &i,
                &v(texts.clone()),
                &v(negs),
                n,
                l,
                m,
                d,
                (ls as f64).exp(),
            );
            assert!(
                (got as f64 - want).abs() < 1e-5,
                "{n} {l} {m}: {got} vs {want}"
            );
            // Negatives can only make the image half harder.
            let plain: f32 = multi_label_loss(image, texts, scale()).into_scalar();
            assert!(got > plain, "{got} vs {plain}");
        }
    }

    #[test]
    fn one_text_per_image_is_clip_loss() {
        let dev = default_device();
        let image = crate::normalize(Tensor::<B, 2>::random(
            [6, 4],
            Distribution::Normal(0.0, 1.0),
            &dev,
        ));
        let text = crate::normalize(Tensor::<B, 2>::random(
            [6, 4],
            Distribution::Normal(0.0, 1.0),
            &dev,
        ));
        let scale = Tensor::<B, 1>::from_data(TensorData::from([2.3f32]), &dev);
        let ml: f32 = multi_label_loss(image.clone(), text.clone().unsqueeze_dim(1), scale.clone())
            .into_scalar();
        let clip: f32 = super::super::clip_loss(image, text, scale).into_scalar();
        assert!((ml - clip).abs() < 1e-5, "{ml} vs {clip}");
    }
}
