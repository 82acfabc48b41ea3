//! PIR-CLIP's affiliation loss (Pan et al., 2024, §3.4; the official `ClipLoss.get_aff_logits`
//! in `src/open_clip/loss.py`): each sample is pulled towards the in-batch centre of its class
//! in the other modality, which shrinks the "semantic confusion zones" between scene classes
//! that plain InfoNCE leaves (it treats two images of one class as negatives of each other).

use burn::tensor::{Tensor, backend::Backend};

use super::info_nce::{capped_scale, diagonal_cross_entropy};

/// The same-class matrix of a batch from one-hot (or multi-hot) labels: `m[i][j]` = 1 when
/// samples `i` and `j` share a class.
///
/// # Shapes
/// - `one_hot`: `[n, classes]`
/// - returns: `[n, n]`
pub fn same_class<B: Backend>(one_hot: Tensor<B, 2>) -> Tensor<B, 2> {
    one_hot.clone().matmul(one_hot.transpose()).clamp_max(1.0)
}

/// Per sample, the mean of the features of every sample of its class (itself included): the
/// code's `I_centers_cls` / `T_centers_cls`. Centres are plain means, not re-normalised, as in
/// the code.
///
/// # Shapes
/// - `features`: `[n, d]`; `same`: `[n, n]` from [`same_class`] (the diagonal must be 1)
/// - returns: `[n, d]`
pub fn class_centres<B: Backend>(features: Tensor<B, 2>, same: Tensor<B, 2>) -> Tensor<B, 2> {
    let counts = same.clone().sum_dim(1);
    same.matmul(features) / counts
}

/// The affiliation loss: `½ [CE(s · I · T_cᵀ) + CE(s · T · I_cᵀ)]` with the diagonal as labels,
/// where `T_c[j]` is the text centre of sample `j`'s class (and `I_c` the image centre).
///
/// With every sample its own class it is CLIP's loss. PIR-CLIP adds it to the CLIP loss with
/// weight 1 and the CLIP logit scale (`logit_scale` is its log, clamped at ln 100).
///
/// # Shapes
/// - `image`, `text`: `[n, d]`, L2-normalised; `same`: `[n, n]`; `logit_scale`: `[1]`
/// - returns: `[1]`
pub fn affiliation_loss<B: Backend>(
    image: Tensor<B, 2>,
    text: Tensor<B, 2>,
    same: Tensor<B, 2>,
    logit_scale: Tensor<B, 1>,
) -> Tensor<B, 1> {
    let scale = capped_scale(logit_scale);
    let image_centres = class_centres(image.clone(), same.clone());
    let text_centres = class_centres(text.clone(), same);
    let i2t = image.matmul(text_centres.transpose()) * scale.clone();
    let t2i = text.matmul(image_centres.transpose()) * scale;
    diagonal_cross_entropy(i2t, t2i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::clip_loss;
    use burn::tensor::{Distribution, TensorData};
    use vlp_core::backend::{DefaultBackend as B, default_device};

    fn unit_rows(n: usize, d: usize, seed: u64) -> Vec<Vec<f64>> {
        let dev = default_device();
        let t = vlp_core::backend::seeded::<B, _>(&dev, seed, || {
            Tensor::<B, 2>::random([n, d], Distribution::Normal(0.0, 1.0), &dev)
        });
        let v = t.into_data().to_vec::<f32>().unwrap();
        v.chunks(d)
            .map(|r| {
                let norm = r.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                r.iter().map(|x| *x as f64 / norm).collect()
            })
            .collect()
    }

    fn tensor(rows: &[Vec<f64>]) -> Tensor<B, 2> {
        let (n, d) = (rows.len(), rows[0].len());
        let flat: Vec<f32> = rows.iter().flatten().map(|x| *x as f32).collect();
        Tensor::from_data(TensorData::new(flat, [n, d]), &default_device())
    }

    fn one_hot(labels: &[usize], classes: usize) -> Tensor<B, 2> {
        let mut v = vec![0f32; labels.len() * classes];
        for (i, &c) in labels.iter().enumerate() {
            v[i * classes + c] = 1.0;
        }
        Tensor::from_data(
            TensorData::new(v, [labels.len(), classes]),
            &default_device(),
        )
    }

    /// The official code's loop: one centre per sample from the samples of its class.
    fn centres_loop(x: &[Vec<f64>], labels: &[usize]) -> Vec<Vec<f64>> {
        labels
            .iter()
            .map(|&c| {
                let members: Vec<&Vec<f64>> = x
                    .iter()
                    .zip(labels)
                    .filter(|(_, l)| **l == c)
                    .map(|(r, _)| r)
                    .collect();
                (0..x[0].len())
                    .map(|k| members.iter().map(|r| r[k]).sum::<f64>() / members.len() as f64)
                    .collect()
            })
            .collect()
    }

    fn ce_diag(logits: &[Vec<f64>]) -> f64 {
        logits
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let m = row.iter().cloned().fold(f64::MIN, f64::max);
                m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln() - row[i]
            })
            .sum::<f64>()
            / logits.len() as f64
    }

    #[test]
    fn centres_are_class_means_with_repeated_labels() {
        // Odd size, a class of three, a class of one, classes out of order.
        let labels = [2, 0, 2, 1, 2, 0, 3];
        let x = unit_rows(7, 5, 1);
        let same = same_class(one_hot(&labels, 4));
        let got = class_centres(tensor(&x), same)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let want = centres_loop(&x, &labels);
        for (g, w) in got.iter().zip(want.iter().flatten()) {
            assert!((*g as f64 - w).abs() < 1e-6, "{g} vs {w}");
        }
        assert_eq!(got.len(), 7 * 5);
        // Samples 0, 2 and 4 share one centre; sample 6 (alone) is its own.
        assert!((got[0] - got[2 * 5]).abs() < 1e-7 && (got[0] - got[4 * 5]).abs() < 1e-7);
        assert!((got[6 * 5] as f64 - x[6][0]).abs() < 1e-6);
    }

    #[test]
    fn loss_matches_the_loop() {
        let labels = [1, 1, 0, 2, 1, 0];
        let (img, txt) = (unit_rows(6, 4, 2), unit_rows(6, 4, 3));
        let scale = 7.5f64;
        let (ic, tc) = (centres_loop(&img, &labels), centres_loop(&txt, &labels));
        let dot = |a: &Vec<f64>, b: &Vec<f64>| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let logits = |x: &[Vec<f64>], c: &[Vec<f64>]| -> Vec<Vec<f64>> {
            x.iter()
                .map(|r| c.iter().map(|q| scale * dot(r, q)).collect())
                .collect()
        };
        let want = (ce_diag(&logits(&img, &tc)) + ce_diag(&logits(&txt, &ic))) / 2.0;
        let got: f32 = affiliation_loss(
            tensor(&img),
            tensor(&txt),
            same_class(one_hot(&labels, 3)),
            Tensor::from_floats([scale.ln() as f32], &default_device()),
        )
        .into_scalar();
        assert!((got as f64 - want).abs() < 1e-4, "{got} vs {want}");
    }

    #[test]
    fn distinct_classes_give_the_clip_loss() {
        let (img, txt) = (unit_rows(5, 3, 4), unit_rows(5, 3, 5));
        let scale = Tensor::from_floats([2.0f32], &default_device());
        let eye = same_class(one_hot(&[0, 1, 2, 3, 4], 5));
        let a: f32 = affiliation_loss(tensor(&img), tensor(&txt), eye, scale.clone()).into_scalar();
        let c: f32 = clip_loss(tensor(&img), tensor(&txt), scale).into_scalar();
        assert!((a - c).abs() < 1e-5, "{a} vs {c}");
    }
}
