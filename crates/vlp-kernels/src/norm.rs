//! Layer normalisation for training on the CPU: Flex's own single-pass forward, and a
//! closed-form backward.
//!
//! Burn 0.21's `Autodiff` has no layer-norm op: its `layer_norm` is the default composition
//! (mean, subtract, square, mean, add ε, square root, divide, scale, shift), each a full pass
//! over the activations that is recorded and replayed backward, with its intermediates kept.
//! Here the forward is Flex's kernel (the one inference runs) and the only thing kept is the
//! input; the backward recomputes each row's mean and `r = 1/√(var + ε)` (the row is in L1)
//! and applies, with `x̂ = (x − μ)·r` and `ĝ = g ⊙ γ`,
//! `dx = r · (ĝ − mean(ĝ) − x̂ · mean(ĝ ⊙ x̂))`, `dγ = Σ_rows g ⊙ x̂`, `dβ = Σ_rows g`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::Backend;
use burn::tensor::ops::ModuleOps;
use burn::tensor::{DType, Tensor, TensorData, TensorMetadata, TensorPrimitive};
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

use crate::dispatch::{AdFlexTensor, Float, from_ad_flex};
use crate::simd::multiversion;

/// `Σ_{i<n} f(i)` in eight lanes, so that it vectorises (the order differs from a left fold
/// by rounding only).
#[inline(always)]
fn lane_sum(n: usize, f: impl Fn(usize) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    let full = n / 8 * 8;
    for base in (0..full).step_by(8) {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f(base + l);
        }
    }
    for i in full..n {
        acc[i - full] += f(i);
    }
    acc.iter().sum()
}

multiversion! {
    /// The backward of layer normalisation over rows of width `w.len()`: writes `dx` and adds
    /// this block's `Σ g ⊙ x̂` and `Σ g` to `dw` and `db`.
    pub fn backward_rows(
        x: &[f32],
        g: &[f32],
        w: &[f32],
        eps: f32,
        dx: &mut [f32],
        dw: &mut [f32],
        db: &mut [f32]
    ) {
        let d = w.len();
        let inv_d = 1.0 / d as f32;
        for ((xr, gr), dxr) in x.chunks_exact(d).zip(g.chunks_exact(d)).zip(dx.chunks_exact_mut(d)) {
            let (xr, gr) = (&xr[..d], &gr[..d]);
            let mean = lane_sum(d, |i| xr[i]) * inv_d;
            let var = lane_sum(d, |i| (xr[i] - mean) * (xr[i] - mean)) * inv_d;
            let r = 1.0 / (var + eps).sqrt();
            // mean(ĝ) and mean(ĝ ⊙ x̂), with x̂ = (x − μ)·r.
            let a = lane_sum(d, |i| gr[i] * w[i]) * inv_d;
            let c = lane_sum(d, |i| gr[i] * w[i] * (xr[i] - mean)) * r * inv_d;
            for ((((o, &x), &g), &w), (dw, db)) in dxr
                .iter_mut()
                .zip(xr)
                .zip(gr)
                .zip(w)
                .zip(dw.iter_mut().zip(db.iter_mut()))
            {
                let xhat = (x - mean) * r;
                *o = r * (g * w - a - xhat * c);
                *dw += g * xhat;
                *db += g;
            }
        }
    }
}

/// `t` with its values in one contiguous run (copied only when strided).
fn contiguous(t: &FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() {
        t.clone()
    } else {
        t.to_contiguous()
    }
}

/// Rows per parallel task of the backward.
const ROWS: usize = 64;

/// `(dx, dγ, dβ)` for input `x` (`[..., d]`), output gradient `g` and scale `w` (`[d]`).
pub fn backward(
    x: &FlexTensor,
    g: &FlexTensor,
    w: &FlexTensor,
    eps: f32,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    assert_eq!(x.shape(), g.shape(), "layer_norm backward: gradient shape");
    let (x, g, w) = (contiguous(x), contiguous(g), contiguous(w));
    let (xs, gs, ws) = (
        x.as_slice::<f32>().expect("contiguous"),
        g.as_slice::<f32>().expect("contiguous"),
        w.as_slice::<f32>().expect("contiguous"),
    );
    let d = ws.len();
    let mut dx = vec![0f32; xs.len()];
    let zeros = || (vec![0f32; d], vec![0f32; d]);
    let (dw, db) = if d == 0 {
        zeros()
    } else {
        // Each task's partial γ and β gradients, collected in task order and summed in that
        // order: a rayon fold/reduce would add them in a tree shaped by work stealing, so the
        // sums (and training) would differ in the last bit from run to run.
        let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(ROWS * d)
            .enumerate()
            .map(|(i, dxc)| {
                let (mut dw, mut db) = zeros();
                let lo = i * ROWS * d;
                let hi = lo + dxc.len();
                backward_rows(&xs[lo..hi], &gs[lo..hi], ws, eps, dxc, &mut dw, &mut db);
                (dw, db)
            })
            .collect();
        let (mut dw, mut db) = zeros();
        for (w2, b2) in &partials {
            dw.iter_mut().zip(w2).for_each(|(a, b)| *a += b);
            db.iter_mut().zip(b2).for_each(|(a, b)| *a += b);
        }
        (dw, db)
    };
    (
        FlexTensor::from_data(TensorData::new(dx, x.shape())),
        FlexTensor::from_data(TensorData::new(dw, [d])),
        FlexTensor::from_data(TensorData::new(db, [d])),
    )
}

/// Backward of layer normalisation: `N` parents, 2 without a shift and 3 with one.
#[derive(Debug)]
struct LayerNormBackward<const N: usize>;

#[derive(Debug, Clone)]
struct Saved {
    x: FlexTensor,
    w: FlexTensor,
    eps: f32,
}

impl<const N: usize> Backward<Flex, N> for LayerNormBackward<N> {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let s = ops.state;
        let g = grads.consume::<Flex>(&ops.node);
        let (dx, dw, db) = backward(&s.x, &g, &s.w, s.eps);
        for (i, t) in [dx, dw, db].into_iter().enumerate().take(N) {
            if let Some(node) = &ops.parents[i] {
                grads.register::<Flex>(node.id, t);
            }
        }
    }
}

fn tracked<const N: usize>(
    parents: [&AdFlexTensor; N],
    x: &AdFlexTensor,
    w: &AdFlexTensor,
    b: Option<&AdFlexTensor>,
    eps: f64,
) -> AdFlexTensor {
    // One contiguous input for Flex's forward (which would copy a strided one itself) and
    // for the backward, rather than a copy in each.
    let xc = contiguous(&x.primitive);
    let forward = || {
        Flex::layer_norm(
            xc.clone(),
            w.primitive.clone(),
            b.map(|b| b.primitive.clone()),
            eps,
        )
    };
    let prep = LayerNormBackward::<N>
        .prepare::<NoCheckpointing>(parents.map(|p| p.node.clone()))
        .compute_bound()
        .stateful();
    match prep {
        OpsKind::Tracked(prep) => {
            let saved = Saved {
                x: xc.clone(),
                w: w.primitive.clone(),
                eps: eps as f32,
            };
            prep.finish(saved, forward())
        }
        OpsKind::UnTracked(prep) => prep.finish(forward()),
    }
}

/// Layer normalisation over the last dimension, `(x − μ)/√(var + ε) · weight + bias` (biased
/// variance, as PyTorch): Burn's `layer_norm` everywhere (Flex's own kernel on the CPU, CubeCL's
/// fusion on GPUs), with the closed-form backward above on `Autodiff<Flex>` (f32).
///
/// # Shapes
/// - `x`: `[..., d]`; `weight`, `bias`: `[d]`
/// - returns: the shape of `x`
pub fn layer_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    bias: Option<Tensor<B, 1>>,
    eps: f64,
) -> Tensor<B, D> {
    let f32s = x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && bias.as_ref().is_none_or(|b| b.dtype() == DType::F32);
    let d = x.dims()[D - 1];
    assert_eq!(weight.dims(), [d], "layer_norm: weight length");
    if let Some(b) = &bias {
        assert_eq!(b.dims(), [d], "layer_norm: bias length");
    }
    let prims = (
        Float::<B>::of(x.into_primitive().tensor()),
        Float::<B>::of(weight.into_primitive().tensor()),
        bias.map(|b| Float::<B>::of(b.into_primitive().tensor())),
    );
    let out = match prims {
        (Float::AdFlex(x), Float::AdFlex(w), b) if f32s && crate::dispatch::enabled() => {
            from_ad_flex::<B>(match b {
                None => tracked([&x, &w], &x, &w, None, eps),
                Some(Float::AdFlex(b)) => tracked([&x, &w, &b], &x, &w, Some(&b), eps),
                Some(_) => unreachable!("same backend"),
            })
        }
        (x, w, b) => B::layer_norm(
            x.into_primitive(),
            w.into_primitive(),
            b.map(Float::into_primitive),
            eps,
        ),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;

    use crate::testing::{assert_close as close, flat as vec, require_kernels, tensor, values};

    type Ad = Autodiff<Flex>;

    /// Output and gradients of `sum(layer_norm(x) ⊙ r)`: ours, or Burn's composition.
    fn run(
        ours: bool,
        shape: [usize; 3],
        with_bias: bool,
        strided: bool,
        seed: u64,
    ) -> [Vec<f32>; 4] {
        let [a, b, d] = shape;
        // A non-contiguous input: the transpose of a `[b, a, d]` tensor.
        let x = if strided {
            tensor::<Ad, 3>([b, a, d], 2.0, seed).swap_dims(0, 1)
        } else {
            tensor::<Ad, 3>(shape, 2.0, seed)
        }
        .require_grad();
        let w = (tensor::<Ad, 1>([d], 0.5, seed + 1) + 1.0).require_grad();
        let bias = tensor::<Ad, 1>([d], 0.5, seed + 2).require_grad();
        let r = tensor::<Ad, 3>(shape, 1.0, seed + 3);
        let bias_in = with_bias.then(|| bias.clone());
        let y = if ours {
            layer_norm(x.clone(), w.clone(), bias_in, 1e-5)
        } else {
            let p = Ad::layer_norm(
                x.clone().into_primitive().tensor(),
                w.clone().into_primitive().tensor(),
                bias_in.map(|b| b.into_primitive().tensor()),
                1e-5,
            );
            Tensor::from_primitive(TensorPrimitive::Float(p))
        };
        let grads = (y.clone() * r).sum().backward();
        let db = if with_bias {
            vec(bias.grad(&grads).expect("bias gradient"))
        } else {
            assert!(bias.grad(&grads).is_none());
            Vec::new()
        };
        [
            vec(y),
            vec(x.grad(&grads).expect("input gradient")),
            vec(w.grad(&grads).expect("weight gradient")),
            db,
        ]
    }

    #[test]
    fn backward_equals_burn_composition_at_odd_widths_strided_and_without_bias() {
        require_kernels();
        // Widths below, at and above the 8 lanes; row counts below and above one task (64).
        for (i, shape) in [[1, 1, 1], [3, 5, 7], [2, 70, 33], [4, 33, 128]]
            .into_iter()
            .enumerate()
        {
            for with_bias in [true, false] {
                for strided in [false, true] {
                    let seed = 10 * i as u64;
                    let ours = run(true, shape, with_bias, strided, seed);
                    let burn = run(false, shape, with_bias, strided, seed);
                    let what = format!("{shape:?}, bias {with_bias}, strided {strided}");
                    for (j, name) in ["output", "dx", "dweight", "dbias"].iter().enumerate() {
                        close(&ours[j], &burn[j], 2e-5, &format!("{what}: {name}"));
                    }
                }
            }
        }
    }

    #[test]
    fn weight_and_bias_gradients_do_not_depend_on_the_threads() {
        require_kernels();
        // 33 tasks of 64 rows: the partial sums must be added in one order whatever the
        // threads do (a rayon fold/reduce tree differs with work stealing and thread count).
        let shape = [8, 263, 24];
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let four = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        let want = one.install(|| run(true, shape, true, false, 5));
        for _ in 0..10 {
            let got = four.install(|| run(true, shape, true, false, 5));
            assert_eq!(got[2], want[2], "weight gradient");
            assert_eq!(got[3], want[3], "bias gradient");
        }
    }

    #[test]
    fn backward_matches_finite_differences() {
        // Central differences of an f64 layer norm, for one row of 9 features.
        let d = 9;
        let x = values(d, 2.0, 5);
        let w: Vec<f32> = values(d, 0.5, 6).iter().map(|v| v + 1.0).collect();
        // A gradient correlated with x, so that the mean(ĝ ⊙ x̂) term is far from zero.
        let g: Vec<f32> = values(d, 0.5, 7)
            .iter()
            .zip(&x)
            .map(|(v, x)| v + x)
            .collect();
        let eps = 1e-5f64;
        let loss = |x: &[f64], w: &[f64], b: &[f64]| -> f64 {
            let n = x.len() as f64;
            let mean = x.iter().sum::<f64>() / n;
            let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            let r = 1.0 / (var + eps).sqrt();
            (0..x.len())
                .map(|i| ((x[i] - mean) * r * w[i] + b[i]) * g[i] as f64)
                .sum()
        };
        let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        let (x64, w64, b64) = (f64s(&x), f64s(&w), vec![0.1f64; d]);
        let fd = |which: usize, i: usize| {
            let h = 1e-5;
            let mut args = [x64.clone(), w64.clone(), b64.clone()];
            args[which][i] += h;
            let up = loss(&args[0], &args[1], &args[2]);
            args[which][i] -= 2.0 * h;
            let down = loss(&args[0], &args[1], &args[2]);
            (up - down) / (2.0 * h)
        };
        let t = |v: &[f32], shape: &[usize]| {
            FlexTensor::from_data(TensorData::new(v.to_vec(), shape.to_vec()))
        };
        let (dx, dw, db) = backward(&t(&x, &[1, d]), &t(&g, &[1, d]), &t(&w, &[d]), eps as f32);
        for (which, got) in [dx, dw, db].iter().enumerate() {
            let got = got.as_slice::<f32>().unwrap();
            for (i, &v) in got.iter().enumerate() {
                let want = fd(which, i);
                assert!(
                    (v as f64 - want).abs() < 1e-5 * (1.0 + want.abs()),
                    "argument {which}, element {i}: {v} vs {want}"
                );
            }
        }
    }
}
