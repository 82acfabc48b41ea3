//! RoIAlign (He et al., "Mask R-CNN", 2017), as `torchvision.ops.roi_align` computes it: each
//! output bin of a box averages bilinear samples of the feature map on a regular grid, with no
//! rounding of the box. LXMERT-style models pool object features from a feature map with it.

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};

use crate::{CoreError, Result};

/// Settings of [`roi_align`] (torchvision's arguments of the same names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoiAlignConfig {
    /// Output bins per box, `[height, width]`.
    pub output_size: [usize; 2],
    /// Feature-map pixels per input pixel (1/16 for a stride-16 map).
    pub spatial_scale: f32,
    /// Samples per bin side; 0 = adaptive, ⌈box side / output side⌉ (torchvision's `-1`).
    pub sampling_ratio: usize,
    /// Shift box corners by half a pixel so that a box's pixels are sampled at their centres
    /// (torchvision's `aligned=True`, Detectron2's `ROIAlignV2`).
    pub aligned: bool,
}

impl RoiAlignConfig {
    /// `output_size` bins, scale 1, adaptive sampling, aligned.
    pub fn new(output_size: [usize; 2]) -> Self {
        Self {
            output_size,
            spatial_scale: 1.0,
            sampling_ratio: 0,
            aligned: true,
        }
    }
}

/// One box: the image it belongs to and its corners in input pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Roi {
    /// Index of the image in the batch.
    pub image: usize,
    /// `[x1, y1, x2, y2]`.
    pub corners: [f32; 4],
}

/// Weights of the bilinear sample at `(y, x)` on an `h × w` map, as torchvision's
/// `bilinear_interpolate`: zero outside `[-1, h] × [-1, w]`, clamped to the border inside it.
fn bilinear(y: f32, x: f32, h: usize, w: usize, out: &mut Vec<(usize, f32)>) {
    if y < -1.0 || y > h as f32 || x < -1.0 || x > w as f32 {
        return;
    }
    let (mut y, mut x) = (y.max(0.0), x.max(0.0));
    let mut y0 = y as usize;
    let mut x0 = x as usize;
    let y1 = if y0 >= h - 1 {
        y0 = h - 1;
        y = y0 as f32;
        y0
    } else {
        y0 + 1
    };
    let x1 = if x0 >= w - 1 {
        x0 = w - 1;
        x = x0 as f32;
        x0
    } else {
        x0 + 1
    };
    let (ly, lx) = (y - y0 as f32, x - x0 as f32);
    let (hy, hx) = (1.0 - ly, 1.0 - lx);
    out.extend([
        (y0 * w + x0, hy * hx),
        (y0 * w + x1, hy * lx),
        (y1 * w + x0, ly * hx),
        (y1 * w + x1, ly * lx),
    ]);
}

/// For one box, the `[bins, h·w]` matrix that averages its bins' samples.
fn box_weights(corners: [f32; 4], h: usize, w: usize, cfg: &RoiAlignConfig) -> Vec<f32> {
    let [oh, ow] = cfg.output_size;
    let offset = if cfg.aligned { 0.5 } else { 0.0 };
    let s = cfg.spatial_scale;
    let (x1, y1) = (corners[0] * s - offset, corners[1] * s - offset);
    let (mut rw, mut rh) = (corners[2] * s - offset - x1, corners[3] * s - offset - y1);
    if !cfg.aligned {
        // Legacy behaviour: malformed boxes are forced to 1 × 1.
        rw = rw.max(1.0);
        rh = rh.max(1.0);
    }
    let (bin_h, bin_w) = (rh / oh as f32, rw / ow as f32);
    let grid = |side: f32, bins: usize| match cfg.sampling_ratio {
        // A negative side (a box whose corners are swapped) samples nothing: zeros, as torchvision.
        0 => (side / bins as f32).ceil() as usize,
        r => r,
    };
    let (gh, gw) = (grid(rh, oh), grid(rw, ow));
    let count = (gh * gw).max(1) as f32;
    let mut weights = vec![0f32; oh * ow * h * w];
    let mut taps = Vec::with_capacity(4);
    for ph in 0..oh {
        for pw in 0..ow {
            let row = &mut weights[(ph * ow + pw) * h * w..(ph * ow + pw + 1) * h * w];
            for iy in 0..gh {
                let y = y1 + ph as f32 * bin_h + (iy as f32 + 0.5) * bin_h / gh as f32;
                for ix in 0..gw {
                    let x = x1 + pw as f32 * bin_w + (ix as f32 + 0.5) * bin_w / gw as f32;
                    taps.clear();
                    bilinear(y, x, h, w, &mut taps);
                    for &(at, wt) in &taps {
                        row[at] += wt / count;
                    }
                }
            }
        }
    }
    weights
}

/// Pools `[channels, out_h, out_w]` features for every box from `features`.
///
/// Differentiable with respect to `features` (the sampling weights are constants built from
/// the boxes, applied by one matmul per image).
///
/// # Shapes
/// - `features`: `[batch, channels, height, width]`
/// - returns: `[boxes, channels, out_h, out_w]`, in the order of `boxes`
pub fn roi_align<B: Backend>(
    features: Tensor<B, 4>,
    boxes: &[Roi],
    cfg: &RoiAlignConfig,
) -> Result<Tensor<B, 4>> {
    let [n, c, h, w] = features.dims();
    let [oh, ow] = cfg.output_size;
    let invalid = |reason: String| CoreError::Config {
        field: "roi_align".into(),
        reason,
    };
    if oh == 0 || ow == 0 || h == 0 || w == 0 {
        return Err(invalid(format!(
            "output {oh}×{ow} from a {h}×{w} map: every side must be at least 1"
        )));
    }
    if !(cfg.spatial_scale.is_finite() && cfg.spatial_scale > 0.0) {
        return Err(invalid(format!(
            "spatial_scale {} is not > 0",
            cfg.spatial_scale
        )));
    }
    for (i, b) in boxes.iter().enumerate() {
        if b.image >= n {
            return Err(invalid(format!(
                "box {i} is on image {} of a batch of {n}",
                b.image
            )));
        }
        if b.corners.iter().any(|v| !v.is_finite()) {
            return Err(invalid(format!(
                "box {i} has a non-finite corner {:?}",
                b.corners
            )));
        }
    }
    let device = features.device();
    // The sampling weights follow the features' type (half precision under mixed precision).
    let dtype = features.dtype();
    if boxes.is_empty() {
        return Ok(Tensor::<B, 4>::zeros([0, c, oh, ow], &device).cast(dtype));
    }
    // [n, h·w, c]: each image's pixels as rows.
    let pixels = features.reshape([n, c, h * w]).swap_dims(1, 2);
    let mut parts = Vec::new();
    let mut order = Vec::with_capacity(boxes.len());
    for image in 0..n {
        let mine: Vec<usize> = (0..boxes.len())
            .filter(|&i| boxes[i].image == image)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let mut weights = Vec::with_capacity(mine.len() * oh * ow * h * w);
        for &i in &mine {
            weights.extend(box_weights(boxes[i].corners, h, w, cfg));
        }
        let wt = Tensor::<B, 2>::from_data(
            TensorData::new(weights, [mine.len() * oh * ow, h * w]),
            &device,
        )
        .cast(dtype);
        let img = pixels
            .clone()
            .slice([image..image + 1, 0..h * w, 0..c])
            .reshape([h * w, c]);
        parts.push(wt.matmul(img));
        order.extend(mine);
    }
    // Rows grouped by image; put the boxes back in the caller's order.
    let pooled = Tensor::cat(parts, 0).reshape([boxes.len(), oh * ow, c]);
    let mut position = vec![0i64; boxes.len()];
    for (at, &i) in order.iter().enumerate() {
        position[i] = at as i64;
    }
    let index = Tensor::<B, 1, Int>::from_data(TensorData::new(position, [boxes.len()]), &device);
    Ok(pooled
        .select(0, index)
        .swap_dims(1, 2)
        .reshape([boxes.len(), c, oh, ow]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{DefaultBackend as B, default_device};

    /// The feature map's continuous bilinear surface, written out from its definition (the
    /// value at a real point is the area-weighted mix of the four surrounding pixels), with
    /// torchvision's border rules.
    fn surface(map: &[f32], h: usize, w: usize, y: f32, x: f32) -> f64 {
        if y < -1.0 || y > h as f32 || x < -1.0 || x > w as f32 {
            return 0.0;
        }
        let y = (y.max(0.0) as f64).min((h - 1) as f64);
        let x = (x.max(0.0) as f64).min((w - 1) as f64);
        let at = |r: usize, c: usize| map[r * w + c] as f64;
        let (r0, c0) = (y.floor() as usize, x.floor() as usize);
        let (r1, c1) = ((r0 + 1).min(h - 1), (c0 + 1).min(w - 1));
        let (fy, fx) = (y - r0 as f64, x - c0 as f64);
        at(r0, c0) * (1.0 - fy) * (1.0 - fx)
            + at(r0, c1) * (1.0 - fy) * fx
            + at(r1, c0) * fy * (1.0 - fx)
            + at(r1, c1) * fy * fx
    }

    /// RoIAlign by its definition: the mean of the surface at each bin's grid of points.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        map: &[f32],
        h: usize,
        w: usize,
        b: [f32; 4],
        out: [usize; 2],
        scale: f32,
        ratio: usize,
        aligned: bool,
    ) -> Vec<f64> {
        let off = if aligned { 0.5 } else { 0.0 };
        let (x1, y1, x2, y2) = (
            b[0] * scale - off,
            b[1] * scale - off,
            b[2] * scale - off,
            b[3] * scale - off,
        );
        let (mut bw, mut bh) = (x2 - x1, y2 - y1);
        if !aligned {
            bw = bw.max(1.0);
            bh = bh.max(1.0);
        }
        let mut res = Vec::new();
        for ph in 0..out[0] {
            for pw in 0..out[1] {
                let gh = if ratio > 0 {
                    ratio
                } else {
                    (bh / out[0] as f32).ceil() as usize
                };
                let gw = if ratio > 0 {
                    ratio
                } else {
                    (bw / out[1] as f32).ceil() as usize
                };
                let mut sum = 0.0;
                for iy in 0..gh {
                    for ix in 0..gw {
                        let y =
                            y1 + bh * (ph as f32 + (iy as f32 + 0.5) / gh as f32) / out[0] as f32;
                        let x =
                            x1 + bw * (pw as f32 + (ix as f32 + 0.5) / gw as f32) / out[1] as f32;
                        sum += surface(map, h, w, y, x);
                    }
                }
                res.push(sum / (gh * gw).max(1) as f64);
            }
        }
        res
    }

    #[test]
    fn matches_the_definition_at_fractional_boxes() {
        let dev = default_device();
        let (n, c, h, w) = (2, 3, 7, 9);
        let values: Vec<f32> = (0..n * c * h * w)
            .map(|i| ((i * 37) % 101) as f32 / 10.0 - 5.0)
            .collect();
        let features =
            Tensor::<B, 4>::from_data(TensorData::new(values.clone(), [n, c, h, w]), &dev);
        let boxes = [
            Roi {
                image: 1,
                corners: [0.3, 1.7, 5.2, 6.1],
            },
            Roi {
                image: 0,
                corners: [-1.5, -0.5, 3.25, 2.75],
            },
            Roi {
                image: 1,
                corners: [6.5, 4.0, 12.0, 9.5],
            }, // partly outside the map
            Roi {
                image: 0,
                corners: [2.0, 2.0, 2.0, 2.0],
            }, // empty
        ];
        for (out, scale, ratio, aligned) in [
            ([2, 3], 1.0, 0, true),
            ([3, 2], 0.5, 2, false),
            ([1, 1], 2.0, 0, false),
        ] {
            let cfg = RoiAlignConfig {
                output_size: out,
                spatial_scale: scale,
                sampling_ratio: ratio,
                aligned,
            };
            let got = roi_align(features.clone(), &boxes, &cfg).unwrap();
            assert_eq!(got.dims(), [boxes.len(), c, out[0], out[1]]);
            let got: Vec<f32> = got.into_data().to_vec().unwrap();
            for (k, b) in boxes.iter().enumerate() {
                for ch in 0..c {
                    let map = &values[(b.image * c + ch) * h * w..(b.image * c + ch + 1) * h * w];
                    let want = naive(map, h, w, b.corners, out, scale, ratio, aligned);
                    for (j, v) in want.iter().enumerate() {
                        let g = got[(k * c + ch) * out[0] * out[1] + j] as f64;
                        assert!(
                            (g - v).abs() < 1e-4,
                            "box {k} ch {ch} bin {j}: {g} vs {v} ({cfg:?})"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_linear_map_gives_its_value_at_the_bin_centre() {
        // Bilinear interpolation of a linear function is exact, so each bin's mean is the
        // function at the bin's centre (boxes inside the map, aligned).
        let dev = default_device();
        let (h, w) = (10, 12);
        let f = |y: f32, x: f32| 0.7 * y - 0.3 * x + 2.0;
        let values: Vec<f32> = (0..h * w)
            .map(|i| f((i / w) as f32, (i % w) as f32))
            .collect();
        let features = Tensor::<B, 4>::from_data(TensorData::new(values, [1, 1, h, w]), &dev);
        let corners = [2.25f32, 1.5, 9.75, 8.0];
        let cfg = RoiAlignConfig::new([3, 4]);
        let got: Vec<f32> = roi_align(features, &[Roi { image: 0, corners }], &cfg)
            .unwrap()
            .into_data()
            .to_vec()
            .unwrap();
        let (x1, y1) = (corners[0] - 0.5, corners[1] - 0.5);
        let (bw, bh) = (
            (corners[2] - corners[0]) / 4.0,
            (corners[3] - corners[1]) / 3.0,
        );
        for ph in 0..3 {
            for pw in 0..4 {
                let want = f(y1 + (ph as f32 + 0.5) * bh, x1 + (pw as f32 + 0.5) * bw);
                assert!((got[ph * 4 + pw] - want).abs() < 1e-4, "{ph},{pw}");
            }
        }
    }

    #[test]
    fn gradients_reach_the_features() {
        use crate::backend::TrainBackend as A;
        let dev = default_device();
        let features = Tensor::<A, 4>::ones([2, 3, 6, 6], &dev).require_grad();
        let boxes = [Roi {
            image: 1,
            corners: [1.0, 1.0, 4.5, 5.0],
        }];
        let out = roi_align(features.clone(), &boxes, &RoiAlignConfig::new([2, 2])).unwrap();
        let grads = out.sum().backward();
        let g = features.grad(&grads).unwrap();
        // Inside the map every sample's weights sum to 1: each of the 2×2 bins sends 1 back per
        // channel, all of it to image 1.
        let per_image: Vec<f32> = g
            .sum_dim(3)
            .sum_dim(2)
            .sum_dim(1)
            .into_data()
            .to_vec()
            .unwrap();
        assert!(
            (per_image[0]).abs() < 1e-6 && (per_image[1] - 12.0).abs() < 1e-4,
            "{per_image:?}"
        );
    }

    #[test]
    fn bad_boxes_are_errors_and_no_boxes_is_empty() {
        let dev = default_device();
        let features = Tensor::<B, 4>::zeros([1, 2, 4, 4], &dev);
        let cfg = RoiAlignConfig::new([2, 2]);
        let e = roi_align(
            features.clone(),
            &[Roi {
                image: 1,
                corners: [0.0; 4],
            }],
            &cfg,
        )
        .unwrap_err();
        assert!(e.to_string().contains("box 0 is on image 1"), "{e}");
        let e = roi_align(
            features.clone(),
            &[Roi {
                image: 0,
                corners: [0.0, f32::NAN, 1.0, 1.0],
            }],
            &cfg,
        )
        .unwrap_err();
        assert!(e.to_string().contains("non-finite"), "{e}");
        assert!(roi_align(features.clone(), &[], &RoiAlignConfig::new([0, 2])).is_err());
        assert_eq!(roi_align(features, &[], &cfg).unwrap().dims(), [0, 2, 2, 2]);
    }
}
