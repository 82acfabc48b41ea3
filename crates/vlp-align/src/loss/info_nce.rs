//! CLIP's contrastive loss (Radford et al., 2021; open_clip's `ClipLoss`).

use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::{Int, Tensor, backend::Backend};

/// The logit scale (exp of the learnable log-temperature) is capped at 100, as in CLIP.
pub const MAX_LOGIT_SCALE: f64 = 100.0;

/// Symmetric cross-entropy over the image–text similarity matrix.
///
/// `logit_scale` is the *log* of the scale (the model parameter); it is clamped at ln 100 here,
/// and the trainer also clamps the parameter after each step as open_clip does.
///
/// # Shapes
/// - `image`, `text`: `[n, d]`, L2-normalised, row `i` of each forming the positive pair
/// - `logit_scale`: `[1]`
/// - returns: `[1]`, the mean of the image→text and text→image cross-entropies
pub fn clip_loss<B: Backend>(
    image: Tensor<B, 2>,
    text: Tensor<B, 2>,
    logit_scale: Tensor<B, 1>,
) -> Tensor<B, 1> {
    let logits = image.matmul(text.transpose()) * capped_scale(logit_scale);
    diagonal_cross_entropy(logits.clone(), logits.transpose())
}

/// `exp(logit_scale)` with the log-scale clamped at ln 100, as `[1, 1]` for broadcasting.
pub(crate) fn capped_scale<B: Backend>(logit_scale: Tensor<B, 1>) -> Tensor<B, 2> {
    logit_scale
        .clamp_max(MAX_LOGIT_SCALE.ln())
        .exp()
        .unsqueeze::<2>()
}

/// The mean of two cross-entropies whose targets are the diagonal (row `i` → class `i`):
/// the image→text and text→image halves of an InfoNCE-style loss, `[n, n]` each.
pub(crate) fn diagonal_cross_entropy<B: Backend>(a: Tensor<B, 2>, b: Tensor<B, 2>) -> Tensor<B, 1> {
    let n = a.dims()[0];
    let device = a.device();
    let labels = Tensor::<B, 1, Int>::arange(0..n as i64, &device);
    let ce = CrossEntropyLossConfig::new().init(&device);
    (ce.forward(a, labels.clone()) + ce.forward(b, labels)) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};
    use vlp_core::backend::{DefaultBackend as B, TrainBackend as A, default_device};

    fn lse(xs: &[f64]) -> f64 {
        let m = xs.iter().cloned().fold(f64::MIN, f64::max);
        m + xs.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
    }

    #[test]
    fn matches_a_hand_computation() {
        let dev = default_device();
        // Two unit vectors per side; similarities s = [[1, 0.6], [0.8, 0]] times scale 2.
        let img = Tensor::<B, 2>::from_floats([[1.0, 0.0], [0.0, 1.0]], &dev);
        let txt = Tensor::<B, 2>::from_floats([[1.0, 0.0], [0.8, 0.6]], &dev);
        let scale = 2f64;
        let s = [[1.0 * scale, 0.8 * scale], [0.0, 0.6 * scale]];
        // rows: image → text; columns: text → image
        let i2t = ((lse(&s[0]) - s[0][0]) + (lse(&s[1]) - s[1][1])) / 2.0;
        let t2i =
            ((lse(&[s[0][0], s[1][0]]) - s[0][0]) + (lse(&[s[0][1], s[1][1]]) - s[1][1])) / 2.0;
        let want = (i2t + t2i) / 2.0;
        let got: f32 =
            clip_loss(img, txt, Tensor::from_floats([scale.ln() as f32], &dev)).into_scalar();
        assert!((got as f64 - want).abs() < 1e-5, "{got} vs {want}");
    }

    #[test]
    fn scale_is_capped_at_100() {
        let dev = default_device();
        let img = Tensor::<B, 2>::from_floats([[1.0, 0.0], [0.0, 1.0]], &dev);
        let txt = Tensor::<B, 2>::from_floats([[0.0, 1.0], [1.0, 0.0]], &dev);
        let at_cap: f32 = clip_loss(
            img.clone(),
            txt.clone(),
            Tensor::from_floats([100f32.ln()], &dev),
        )
        .into_scalar();
        let beyond: f32 = clip_loss(img, txt, Tensor::from_floats([10.0], &dev)).into_scalar();
        assert_eq!(at_cap, beyond);
        assert!((at_cap - 100.0).abs() < 1e-3, "{at_cap}");
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let dev = default_device();
        let x = Tensor::<B, 2>::random([3, 4], Distribution::Normal(0.0, 1.0), &dev)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let y = Tensor::<B, 2>::random([3, 4], Distribution::Normal(0.0, 1.0), &dev)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let loss = |x: &[f32], y: &[f32]| -> f64 {
            let img = Tensor::<B, 2>::from_data(TensorData::new(x.to_vec(), [3, 4]), &dev);
            let txt = Tensor::<B, 2>::from_data(TensorData::new(y.to_vec(), [3, 4]), &dev);
            clip_loss(img, txt, Tensor::from_floats([1.5], &dev)).into_scalar() as f64
        };
        let img =
            Tensor::<A, 2>::from_data(TensorData::new(x.clone(), [3, 4]), &dev).require_grad();
        let txt =
            Tensor::<A, 2>::from_data(TensorData::new(y.clone(), [3, 4]), &dev).require_grad();
        let scale = Tensor::<A, 1>::from_floats([1.5], &dev).require_grad();
        let grads = clip_loss(img.clone(), txt.clone(), scale.clone()).backward();
        let gi = img
            .grad(&grads)
            .unwrap()
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let gs: f32 = scale.grad(&grads).unwrap().into_scalar();
        let eps = 1e-2f32;
        for k in 0..12 {
            let (mut p, mut m) = (x.clone(), x.clone());
            p[k] += eps;
            m[k] -= eps;
            let fd = (loss(&p, &y) - loss(&m, &y)) / (2.0 * eps as f64);
            assert!(
                (fd - gi[k] as f64).abs() < 2e-3,
                "d/dimg[{k}]: {fd} vs {}",
                gi[k]
            );
        }
        let fd = {
            let f = |s: f32| {
                let img = Tensor::<B, 2>::from_data(TensorData::new(x.clone(), [3, 4]), &dev);
                let txt = Tensor::<B, 2>::from_data(TensorData::new(y.clone(), [3, 4]), &dev);
                clip_loss(img, txt, Tensor::from_floats([s], &dev)).into_scalar() as f64
            };
            (f(1.5 + eps) - f(1.5 - eps)) / (2.0 * eps as f64)
        };
        assert!((fd - gs as f64).abs() < 2e-3, "d/dscale: {fd} vs {gs}");
    }
}
