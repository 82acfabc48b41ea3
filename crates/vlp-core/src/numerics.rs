//! Small numeric routines that must match PyTorch exactly and run once, on the host.

/// PyTorch's cubic convolution kernel weights for offset `t ∈ [0, 1)` (A = -0.75).
fn cubic_weights(t: f64) -> [f64; 4] {
    const A: f64 = -0.75;
    let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// Source coordinates and weights along one axis for `align_corners = false`.
fn axis_taps(n_in: usize, n_out: usize) -> Vec<([usize; 4], [f64; 4])> {
    let scale = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|o| {
            // torch's area_pixel_compute_source_index with cubic = true: no clamping at zero.
            let src = (o as f64 + 0.5) * scale - 0.5;
            let i0 = src.floor();
            let w = cubic_weights(src - i0);
            let idx = [-1i64, 0, 1, 2].map(|d| (i0 as i64 + d).clamp(0, n_in as i64 - 1) as usize);
            (idx, w)
        })
        .collect()
}

/// Bicubic resize of `channels` planes of `h × w` (row-major, plane after plane) to
/// `oh × ow`, as `torch.nn.functional.interpolate(mode="bicubic", align_corners=False)` does.
pub fn bicubic_resize(
    data: &[f32],
    channels: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
) -> Vec<f32> {
    assert_eq!(
        data.len(),
        channels * h * w,
        "bicubic_resize: data does not match {channels}x{h}x{w}"
    );
    let ty = axis_taps(h, oh);
    let tx = axis_taps(w, ow);
    let mut out = vec![0.0f32; channels * oh * ow];
    for c in 0..channels {
        let plane = &data[c * h * w..(c + 1) * h * w];
        for (y, (iy, wy)) in ty.iter().enumerate() {
            for (x, (ix, wx)) in tx.iter().enumerate() {
                let mut acc = 0.0f64;
                for a in 0..4 {
                    let row = &plane[iy[a] * w..(iy[a] + 1) * w];
                    let mut r = 0.0f64;
                    for b in 0..4 {
                        r += row[ix[b]] as f64 * wx[b];
                    }
                    acc += r * wy[a];
                }
                out[c * oh * ow + y * ow + x] = acc as f32;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_identity() {
        let d: Vec<f32> = (0..2 * 3 * 4).map(|v| v as f32 * 0.5 - 3.0).collect();
        assert_eq!(bicubic_resize(&d, 2, (3, 4), (3, 4)), d);
    }

    #[test]
    fn weights_sum_to_one_and_constants_survive() {
        for t in [0.0, 0.25, 0.5, 0.9] {
            assert!((cubic_weights(t).iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        let d = vec![2.5f32; 5 * 5];
        assert!(
            bicubic_resize(&d, 1, (5, 5), (9, 3))
                .iter()
                .all(|v| (v - 2.5).abs() < 1e-6)
        );
    }

    #[test]
    #[allow(clippy::excessive_precision)] // PyTorch's outputs, verbatim
    fn matches_torch() {
        // torch.nn.functional.interpolate(..., mode="bicubic", align_corners=False), PyTorch 2.15.
        let up = [
            -0.31640625,
            0.015625,
            0.5625,
            0.89453125,
            0.34765625,
            0.6796875,
            1.2265625,
            1.55859375,
            1.44140625,
            1.7734375,
            2.3203125,
            2.65234375,
            2.10546875,
            2.4375,
            2.984375,
            3.31640625,
        ];
        let got = bicubic_resize(&[0.0, 1.0, 2.0, 3.0], 1, (2, 2), (4, 4));
        assert!(
            got.iter().zip(up).all(|(g, w)| (g - w).abs() < 1e-6),
            "{got:?}"
        );
        // arange(12).reshape(3, 4) ** 1.5 resized to 5x2 (up one axis, down the other).
        let mixed = [
            -0.528877317905426,
            2.9592669010162354,
            2.705540895462036,
            7.869035720825195,
            9.260488510131836,
            16.93828010559082,
            19.156925201416016,
            28.595945358276367,
            25.831832885742188,
            36.17081832885742,
        ];
        let src: Vec<f32> = (0..12).map(|v| (v as f32).powf(1.5)).collect();
        let got = bicubic_resize(&src, 1, (3, 4), (5, 2));
        assert!(
            got.iter()
                .zip(mixed)
                .all(|(g, w)| (g - w as f32).abs() < 1e-4),
            "{got:?}"
        );
    }
}
