//! A linear layer, `x · W + b`, on OpenBLAS when the `openblas` feature is on.
//!
//! Burn's Flex backend multiplies with the `gemm` crate and adds the bias in a second pass;
//! with `openblas`, on Flex and `Autodiff<Flex>` (f32), the product is OpenBLAS's `sgemm`
//! (see [`crate::blas`] for why and how fast) accumulating into bias-filled rows, and the
//! backward's three products (`dx = g Wᵀ`, `dW = xᵀ g`, `db = Σ_rows g`) are too. Weights stored
//! transposed (a checkpoint's `[out, in]` read as `[in, out]`) are read in place. Without the
//! feature, or on any other backend, this is Burn's own `linear`.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorPrimitive};

/// `x · weight + bias`, as Burn's `Linear` computes it.
///
/// # Shapes
/// - `x`: `[rows, d_in]`
/// - `weight`: `[d_in, d_out]` (any strides)
/// - `bias`: `[d_out]`
/// - returns: `[rows, d_out]`
pub fn linear<B: Backend>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, 2> {
    #[cfg(feature = "openblas")]
    if let Some(out) = blas::linear(&x, &weight, bias.as_ref()) {
        return out;
    }
    Tensor::from_primitive(TensorPrimitive::Float(B::linear(
        x.into_primitive().tensor(),
        weight.into_primitive().tensor(),
        bias.map(|b| b.into_primitive().tensor()),
    )))
}

#[cfg(feature = "openblas")]
mod blas {
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::tensor::backend::Backend;
    use burn::tensor::{DType, Tensor, TensorData, TensorMetadata, TensorPrimitive};
    use burn_flex::{Flex, FlexTensor};
    use rayon::prelude::*;

    use crate::blas::{Init, readable};
    use crate::dispatch::{AdFlexTensor, Float, from_ad_flex, from_flex};
    use crate::matmul::Mat;

    /// A 2-D f32 Flex tensor BLAS can read in place (copied to a dense one when it cannot).
    #[derive(Debug, Clone)]
    struct View {
        tensor: FlexTensor,
        off: usize,
        rs: usize,
        cs: usize,
        rows: usize,
        cols: usize,
    }

    impl View {
        fn new(t: &FlexTensor) -> Self {
            let view = |t: &FlexTensor| {
                let [rows, cols] = t.shape().dims::<2>();
                let s = t.layout().strides();
                (s[0] >= 0 && s[1] >= 0).then(|| Self {
                    tensor: t.clone(),
                    off: t.layout().start_offset(),
                    rs: s[0] as usize,
                    cs: s[1] as usize,
                    rows,
                    cols,
                })
            };
            match view(t) {
                Some(v) if readable(&v.mat()) => v,
                _ => view(&t.to_contiguous()).expect("a contiguous tensor has positive strides"),
            }
        }

        fn mat(&self) -> Mat<'_> {
            Mat {
                data: self.tensor.storage::<f32>(),
                off: self.off,
                rs: self.rs,
                cs: self.cs,
                rows: self.rows,
                cols: self.cols,
            }
        }
    }

    /// `lhs · rhs (+ bias rows)` as a new `[rows, cols]` tensor.
    fn product(lhs: Mat<'_>, rhs: Mat<'_>, bias: Option<&[f32]>) -> FlexTensor {
        let out = crate::blas::product(lhs, rhs, bias.map_or(Init::Zero, Init::Rows));
        FlexTensor::from_data(TensorData::new(out, [lhs.rows, rhs.cols]))
    }

    fn dense_bias(b: &FlexTensor) -> FlexTensor {
        if b.is_contiguous() && b.layout().start_offset() == 0 {
            b.clone()
        } else {
            b.to_contiguous()
        }
    }

    fn forward(x: &View, w: &View, bias: Option<&FlexTensor>) -> FlexTensor {
        let bias = bias.map(dense_bias);
        product(x.mat(), w.mat(), bias.as_ref().map(|b| b.storage::<f32>()))
    }

    /// Column sums of `g` (`[rows, cols]` → `[cols]`), columns split over threads.
    fn column_sums(g: &View) -> FlexTensor {
        let g = if g.cs == 1 {
            g.clone()
        } else {
            View::new(&g.tensor.to_contiguous())
        };
        let data = g.tensor.storage::<f32>();
        let mut out = vec![0f32; g.cols];
        out.par_chunks_mut(64).enumerate().for_each(|(i, acc)| {
            let j0 = i * 64;
            for r in 0..g.rows {
                let row = &data[g.off + r * g.rs + j0..][..acc.len()];
                for (a, v) in acc.iter_mut().zip(row) {
                    *a += v;
                }
            }
        });
        FlexTensor::from_data(TensorData::new(out, [g.cols]))
    }

    /// Backward of `x · W (+ b)`: `N` parents, 2 without a bias and 3 with one.
    #[derive(Debug)]
    struct LinearBackward<const N: usize>;

    impl<const N: usize> Backward<Flex, N> for LinearBackward<N> {
        type State = (View, View);

        fn backward(self, ops: Ops<(View, View), N>, grads: &mut Gradients, _: &mut Checkpointer) {
            let (x, w) = ops.state;
            let g = View::new(&grads.consume::<Flex>(&ops.node));
            if let Some(node) = &ops.parents[0] {
                grads.register::<Flex>(node.id, product(g.mat(), w.mat().t(), None));
            }
            if let Some(node) = &ops.parents[1] {
                grads.register::<Flex>(node.id, product(x.mat().t(), g.mat(), None));
            }
            if N == 3
                && let Some(node) = &ops.parents[N - 1]
            {
                grads.register::<Flex>(node.id, column_sums(&g));
            }
        }
    }

    fn tracked<const N: usize>(
        parents: [&AdFlexTensor; N],
        x: &AdFlexTensor,
        w: &AdFlexTensor,
        bias: Option<&FlexTensor>,
    ) -> AdFlexTensor {
        let (xv, wv) = (View::new(&x.primitive), View::new(&w.primitive));
        let prep = LinearBackward::<N>
            .prepare::<NoCheckpointing>(parents.map(|p| p.node.clone()))
            .compute_bound()
            .stateful();
        match prep {
            OpsKind::Tracked(prep) => {
                let out = forward(&xv, &wv, bias);
                prep.finish((xv, wv), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(&xv, &wv, bias)),
        }
    }

    /// The OpenBLAS path, or `None` when `B` is not Flex or `Autodiff<Flex>`, a tensor is not
    /// f32, or the kernels are off (`VLP_CPU_KERNELS=0`).
    pub(super) fn linear<B: Backend>(
        x: &Tensor<B, 2>,
        weight: &Tensor<B, 2>,
        bias: Option<&Tensor<B, 1>>,
    ) -> Option<Tensor<B, 2>> {
        let f32s = x.dtype() == DType::F32
            && weight.dtype() == DType::F32
            && bias.is_none_or(|b| b.dtype() == DType::F32);
        if !(f32s && crate::dispatch::enabled()) {
            return None;
        }
        let [_, d_in] = x.dims();
        let [w_in, d_out] = weight.dims();
        assert_eq!(
            d_in, w_in,
            "linear: input width {d_in} vs weight rows {w_in}"
        );
        if let Some(b) = bias {
            assert_eq!(b.dims(), [d_out], "linear: bias length");
        }
        let prim = |t: Tensor<B, 2>| Float::<B>::of(t.into_primitive().tensor());
        let bias = bias.map(|b| Float::<B>::of(b.clone().into_primitive().tensor()));
        let out = match (prim(x.clone()), prim(weight.clone()), bias) {
            (Float::Flex(x), Float::Flex(w), b) => {
                let b = match b {
                    None => None,
                    Some(Float::Flex(b)) => Some(b),
                    Some(_) => unreachable!("same backend"),
                };
                from_flex::<B>(forward(&View::new(&x), &View::new(&w), b.as_ref()))
            }
            (Float::AdFlex(x), Float::AdFlex(w), b) => from_ad_flex::<B>(match b {
                None => tracked([&x, &w], &x, &w, None),
                Some(Float::AdFlex(b)) => tracked([&x, &w, &b], &x, &w, Some(&b.primitive)),
                Some(_) => unreachable!("same backend"),
            }),
            _ => return None,
        };
        Some(Tensor::from_primitive(TensorPrimitive::Float(out)))
    }
}

#[cfg(all(test, feature = "openblas"))]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::tensor::Distribution;

    /// Values in [-1, 1).
    fn tensor<B: Backend, const D: usize>(shape: [usize; D], seed: u64) -> Tensor<B, D> {
        crate::testing::tensor(shape, 1.0, seed)
    }
    use burn_flex::Flex;

    use crate::testing::{assert_close as close, flat as vec, require_kernels};

    type Ad = Autodiff<Flex>;

    /// Burn's own linear, the reference.
    fn burn_linear<B: Backend>(
        x: Tensor<B, 2>,
        w: Tensor<B, 2>,
        b: Option<Tensor<B, 1>>,
    ) -> Tensor<B, 2> {
        burn::tensor::module::linear(x, w, b)
    }

    /// The shapes: one row, odd widths below and above the 16-wide tiles, enough rows for the
    /// row split, few rows and many columns for the column split.
    const SHAPES: [(usize, usize, usize); 5] = [
        (1, 1, 1),
        (1, 70, 300),
        (7, 5, 3),
        (129, 33, 17),
        (300, 64, 130),
    ];

    #[test]
    fn forward_equals_burn_with_and_without_bias_and_transposed_or_sliced_weights() {
        require_kernels();
        for (i, &(m, k, n)) in SHAPES.iter().enumerate() {
            let seed = 10 * i as u64;
            // x: a column slice of a wider tensor (row stride k + 2); w: stored `[n, k]` and read
            // transposed (a checkpoint's layout) or dense; b: present or not.
            let x = tensor::<Flex, 2>([m, k + 2], seed).slice([0..m, 1..k + 1]);
            let wt = tensor::<Flex, 2>([n, k], seed + 1);
            let b = tensor::<Flex, 1>([n], seed + 2);
            for dense in [false, true] {
                let w = if dense {
                    Tensor::<Flex, 2>::from_data(
                        wt.clone().transpose().into_data(),
                        &Default::default(),
                    )
                } else {
                    wt.clone().transpose()
                };
                for bias in [None, Some(b.clone())] {
                    let got = vec(linear(x.clone(), w.clone(), bias.clone()));
                    let want = vec(burn_linear(x.clone(), w.clone(), bias.clone()));
                    let what = format!("{m}x{k}x{n}, dense w {dense}, bias {}", bias.is_some());
                    // Measured: < 3e-6 relative.
                    close(&got, &want, 2e-5, &what);
                }
            }
        }
    }

    #[test]
    fn backward_equals_burn_for_input_weight_and_bias() {
        require_kernels();
        for (i, &(m, k, n)) in SHAPES.iter().enumerate() {
            let seed = 100 + 10 * i as u64;
            for with_bias in [false, true] {
                let r = tensor::<Ad, 2>([m, n], seed + 3);
                let run = |ours: bool| {
                    let x = tensor::<Ad, 2>([m, k], seed).require_grad();
                    // A transposed weight, as loaded from a checkpoint.
                    let wt = tensor::<Ad, 2>([n, k], seed + 1).require_grad();
                    let b = tensor::<Ad, 1>([n], seed + 2).require_grad();
                    let bias = with_bias.then(|| b.clone());
                    let y = if ours {
                        linear(x.clone(), wt.clone().transpose(), bias)
                    } else {
                        burn_linear(x.clone(), wt.clone().transpose(), bias)
                    };
                    let grads = (y.clone() * r.clone()).sum().backward();
                    let g = |t: &Tensor<Ad, 2>| vec(t.grad(&grads).expect("a gradient"));
                    let gb = with_bias.then(|| vec(b.grad(&grads).expect("a bias gradient")));
                    (vec(y), g(&x), g(&wt), gb)
                };
                let (ours, burn) = (run(true), run(false));
                let what = format!("{m}x{k}x{n}, bias {with_bias}");
                // Measured: < 5e-6 relative (sums over up to 300 terms in another order).
                let tol = 2e-5;
                close(&ours.0, &burn.0, tol, &format!("{what}: output"));
                close(&ours.1, &burn.1, tol, &format!("{what}: dx"));
                close(&ours.2, &burn.2, tol, &format!("{what}: dW"));
                match (ours.3, burn.3) {
                    (Some(a), Some(b)) => close(&a, &b, tol, &format!("{what}: db")),
                    (None, None) => {}
                    _ => panic!("{what}: a bias gradient on one side only"),
                }
            }
        }
    }

    #[test]
    fn a_frozen_weight_gets_no_gradient_and_the_input_still_does() {
        require_kernels();
        let x = tensor::<Ad, 2>([9, 6], 1).require_grad();
        let w = Tensor::<Ad, 2>::random([6, 4], Distribution::Default, &Default::default());
        let y = linear(x.clone(), w.clone(), None);
        let grads = y.sum().backward();
        assert!(w.grad(&grads).is_none());
        let dx = vec(x.grad(&grads).expect("input gradient"));
        // d(sum(x W))/dx = row sums of W, the same for every row of x.
        let rows = vec(w.sum_dim(1).reshape([6]).inner());
        close(&dx[..6], &rows, 1e-5, "dx row 0");
        close(&dx[48..], &rows, 1e-5, "dx row 8");
    }
}
