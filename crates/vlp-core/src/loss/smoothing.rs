//! Cross-entropy with label smoothing (Szegedy et al., 2016): the target puts `1 − α` on the
//! true class and spreads `α` uniformly over all classes, as PyTorch's
//! `F.cross_entropy(label_smoothing=α)` does.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// Mean over rows of `−Σ_c y_c log softmax(logits)_c` with `y = (1 − α)·onehot + α / classes`.
///
/// # Shapes
/// - `logits`: `[n, classes]`; `labels`: `[n]`, each `< classes`
/// - returns: `[1]`
///
/// # Panics
/// If `smoothing` is outside `[0, 1]`.
pub fn label_smoothed_cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    labels: Tensor<B, 1, Int>,
    smoothing: f32,
) -> Tensor<B, 1> {
    let device = logits.device();
    let ce = CrossEntropyLossConfig::new()
        .with_smoothing((smoothing > 0.0).then_some(smoothing))
        .init(&device);
    ce.forward(logits, labels)
}

/// The mean of the two label-smoothed cross-entropies of a similarity matrix whose targets are
/// the diagonal (row `i` → column `i`, and column `i` → row `i`): InfoNCE with smoothing.
///
/// # Shapes
/// - `logits`: `[n, n]`; returns `[1]`
pub fn diagonal_smoothed_cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    smoothing: f32,
) -> Tensor<B, 1> {
    let n = logits.dims()[0];
    let labels = Tensor::<B, 1, Int>::arange(0..n as i64, &logits.device());
    (label_smoothed_cross_entropy(logits.clone(), labels.clone(), smoothing)
        + label_smoothed_cross_entropy(logits.transpose(), labels, smoothing))
        / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{DefaultBackend as B, default_device};
    use burn::tensor::TensorData;

    /// The closed form, in f64: `(1 − α)·(lse − x_y) + α·(lse − mean_c x_c)` per row.
    fn closed_form(x: &[Vec<f64>], y: &[usize], a: f64) -> f64 {
        let mut total = 0.0;
        for (row, &t) in x.iter().zip(y) {
            let m = row.iter().cloned().fold(f64::MIN, f64::max);
            let lse = m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln();
            let mean = row.iter().sum::<f64>() / row.len() as f64;
            total += (1.0 - a) * (lse - row[t]) + a * (lse - mean);
        }
        total / x.len() as f64
    }

    #[test]
    fn matches_the_closed_form_at_odd_sizes() {
        let dev = default_device();
        let (n, c) = (5, 7);
        let x: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                (0..c)
                    .map(|j| ((i * 13 + j * 7) % 11) as f64 * 0.7 - 3.0)
                    .collect()
            })
            .collect();
        let y = [0usize, 6, 3, 3, 1];
        let flat: Vec<f32> = x.iter().flatten().map(|v| *v as f32).collect();
        let logits = Tensor::<B, 2>::from_data(TensorData::new(flat, [n, c]), &dev);
        let labels = Tensor::<B, 1, Int>::from_data(
            TensorData::new(y.iter().map(|v| *v as i64).collect::<Vec<_>>(), [n]),
            &dev,
        );
        for a in [0.0f32, 0.1, 0.5, 1.0] {
            let got: f32 =
                label_smoothed_cross_entropy(logits.clone(), labels.clone(), a).into_scalar();
            let want = closed_form(&x, &y, a as f64);
            assert!((got as f64 - want).abs() < 1e-5, "α {a}: {got} vs {want}");
        }
    }

    #[test]
    fn diagonal_form_averages_both_directions() {
        let dev = default_device();
        let x: Vec<Vec<f64>> = vec![
            vec![2.0, 0.5, -1.0],
            vec![0.0, 1.5, 0.3],
            vec![1.0, -0.5, 0.8],
        ];
        let xt: Vec<Vec<f64>> = (0..3).map(|j| (0..3).map(|i| x[i][j]).collect()).collect();
        let flat: Vec<f32> = x.iter().flatten().map(|v| *v as f32).collect();
        let logits = Tensor::<B, 2>::from_data(TensorData::new(flat, [3, 3]), &dev);
        let got: f32 = diagonal_smoothed_cross_entropy(logits, 0.1).into_scalar();
        let y = [0, 1, 2];
        let want = (closed_form(&x, &y, 0.1) + closed_form(&xt, &y, 0.1)) / 2.0;
        assert!((got as f64 - want).abs() < 1e-5, "{got} vs {want}");
    }
}
