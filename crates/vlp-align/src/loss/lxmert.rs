//! Per-position losses of LXMERT's pretraining tasks (`lxrt/modeling.py`,
//! `LXRTPretraining.forward`): cross-entropy with ignored positions (masked words, object
//! labels, matching, answers) and PyTorch's `SmoothL1Loss` (masked-object feature regression).
//! They return a loss per position so that the caller weighs and normalises them per sample
//! (the runner gathers per-sample sums across ranks before dividing).

use burn::tensor::activation::log_softmax;
use burn::tensor::{FloatDType, Int, Tensor, TensorData, backend::Backend};

/// Cross-entropy of `logits` at every position against `labels` (row-major over
/// `[batch, positions]`; a negative label means "no target" and gives 0 there). Computed in
/// f32 whatever the logits' type (half-precision logits under mixed precision).
///
/// # Shapes
/// - `logits`: `[batch, positions, classes]`
/// - returns: `[batch, positions]`
///
/// # Panics
/// If `labels` does not have one entry per position or a label is ≥ `classes` (the caller
/// builds them; a bad one is a programming error).
pub fn cross_entropy_per_position<B: Backend>(
    logits: Tensor<B, 3>,
    labels: &[i64],
) -> Tensor<B, 2> {
    let [n, t, c] = logits.dims();
    assert_eq!(labels.len(), n * t, "one label per position");
    assert!(
        labels.iter().all(|&l| l < c as i64),
        "a label is outside the {c} classes"
    );
    let device = logits.device();
    let index: Vec<i64> = labels.iter().map(|&l| l.max(0)).collect();
    let keep: Vec<f32> = labels
        .iter()
        .map(|&l| f32::from(u8::from(l >= 0)))
        .collect();
    let index = Tensor::<B, 3, Int>::from_data(TensorData::new(index, [n, t, 1]), &device);
    let keep = Tensor::<B, 2>::from_data(TensorData::new(keep, [n, t]), &device);
    let nll = -log_softmax(logits.cast(FloatDType::F32), 2)
        .gather(2, index)
        .reshape([n, t]);
    nll * keep
}

/// PyTorch's `SmoothL1Loss` (β = 1: `0.5 x²` below 1, `|x| − 0.5` above) averaged over the last
/// axis, as LXMERT's feature regression takes `.mean(1)`; computed in f32.
///
/// # Shapes
/// - `pred`, `target`: `[batch, positions, dims]`
/// - returns: `[batch, positions]`
pub fn smooth_l1_per_position<B: Backend>(
    pred: Tensor<B, 3>,
    target: Tensor<B, 3>,
) -> Tensor<B, 2> {
    let [n, t, _] = pred.dims();
    let diff = (pred.cast(FloatDType::F32) - target.cast(FloatDType::F32)).abs();
    let small = diff.clone().lower_elem(1.0);
    let quadratic = diff.clone().powf_scalar(2.0) * 0.5;
    let linear = diff - 0.5;
    linear
        .mask_where(small, quadratic)
        .mean_dim(2)
        .reshape([n, t])
}

#[cfg(test)]
mod tests {
    use super::*;
    use vlp_core::backend::{DefaultBackend as B, default_device};

    fn values(t: Tensor<B, 2>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    #[test]
    fn cross_entropy_matches_a_loop_and_ignores_negative_labels() {
        let dev = default_device();
        // Odd sizes: 2 × 3 positions, 5 classes.
        let raw: Vec<f32> = (0..30).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.4).collect();
        let logits = Tensor::<B, 3>::from_data(TensorData::new(raw.clone(), [2, 3, 5]), &dev);
        let labels = [4i64, -1, 0, 2, 3, -1];
        let got = values(cross_entropy_per_position(logits, &labels));
        assert_eq!(got.len(), 6);
        for (p, &l) in labels.iter().enumerate() {
            let row = &raw[p * 5..p * 5 + 5];
            let want = if l < 0 {
                0.0
            } else {
                let z: f64 = row.iter().map(|&x| (x as f64).exp()).sum();
                z.ln() - row[l as usize] as f64
            };
            assert!(
                (got[p] as f64 - want).abs() < 1e-5,
                "position {p}: {} vs {want}",
                got[p]
            );
        }
    }

    #[test]
    fn smooth_l1_matches_pytorch_on_both_branches() {
        let dev = default_device();
        let pred = Tensor::<B, 3>::from_data(
            TensorData::new(vec![0.0f32, 0.5, 3.0, -2.0, 1.0, 0.0], [1, 2, 3]),
            &dev,
        );
        let target = Tensor::<B, 3>::zeros([1, 2, 3], &dev);
        let got = values(smooth_l1_per_position(pred, target));
        // (0 + 0.125 + 2.5) / 3 and (1.5 + 0.5 + 0) / 3.
        let want = [2.625f32 / 3.0, 2.0 / 3.0];
        assert_eq!(got.len(), 2);
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
    }
}
