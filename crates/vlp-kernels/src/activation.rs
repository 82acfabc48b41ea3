//! The GELU family (exact, tanh approximation, QuickGELU), forward and backward in one
//! vectorised, multi-threaded pass each.
//!
//! Flex computes exact GELU with a scalar `libm::erff` per element on one thread, and its
//! backward with `erff` and `exp` again; QuickGELU composed from Burn ops takes four passes
//! forward and more backward. Here each direction is one pass over the data.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData, TensorMetadata, TensorPrimitive, activation};
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

use crate::dispatch::{AdFlexTensor, Float, from_ad_flex, from_flex};
use crate::simd::{self, multiversion};

/// Which member of the GELU family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gelu {
    /// `x Φ(x)` with the error function (PyTorch's `gelu`).
    Erf,
    /// `½ x (1 + tanh(√(2/π) (x + 0.044715 x³)))` (PyTorch's `approximate="tanh"`).
    Tanh,
    /// `x σ(1.702 x)` (OpenAI CLIP's `quick_gelu`).
    Quick,
}

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1 / √(2π).
const INV_SQRT_2PI: f32 = 0.398_942_3;
const TANH_C: f32 = 0.044_715;
const QUICK: f32 = 1.702;

multiversion! {
    /// `dst = gelu(src)` (erf form).
    pub fn erf_forward(src: &[f32], dst: &mut [f32]) {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = 0.5 * x * (1.0 + simd::erf(x * FRAC_1_SQRT_2));
        }
    }
}

multiversion! {
    /// `dst = g · gelu'(x)` (erf form).
    pub fn erf_backward(x: &[f32], g: &[f32], dst: &mut [f32]) {
        for ((d, &x), &g) in dst.iter_mut().zip(x).zip(g) {
            let cdf = 0.5 * (1.0 + simd::erf(x * FRAC_1_SQRT_2));
            let pdf = INV_SQRT_2PI * simd::exp(-0.5 * x * x);
            *d = g * (cdf + x * pdf);
        }
    }
}

multiversion! {
    /// `dst = gelu_tanh(src)`.
    pub fn tanh_forward(src: &[f32], dst: &mut [f32]) {
        for (d, &x) in dst.iter_mut().zip(src) {
            let t = simd::tanh(SQRT_2_OVER_PI * (x + TANH_C * x * x * x));
            *d = 0.5 * x * (1.0 + t);
        }
    }
}

multiversion! {
    /// `dst = g · gelu_tanh'(x)`.
    pub fn tanh_backward(x: &[f32], g: &[f32], dst: &mut [f32]) {
        for ((d, &x), &g) in dst.iter_mut().zip(x).zip(g) {
            // tanh u = 1 − 2s and 1 − tanh² u = 4 e s² with e = exp(2u), s = 1 / (e + 1):
            // computing 1 − t² from t would cancel where t is close to ±1.
            let e = simd::exp(2.0 * SQRT_2_OVER_PI * (x + TANH_C * x * x * x));
            let s = 1.0 / (e + 1.0);
            let t = 1.0 - 2.0 * s;
            let sech2 = 4.0 * (e * s) * s;
            let du = SQRT_2_OVER_PI * (1.0 + 3.0 * TANH_C * x * x);
            *d = g * (0.5 * (1.0 + t) + 0.5 * x * sech2 * du);
        }
    }
}

multiversion! {
    /// `dst = quick_gelu(src)`.
    pub fn quick_forward(src: &[f32], dst: &mut [f32]) {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = x * simd::sigmoid(QUICK * x);
        }
    }
}

multiversion! {
    /// `dst = g · quick_gelu'(x)`.
    pub fn quick_backward(x: &[f32], g: &[f32], dst: &mut [f32]) {
        for ((d, &x), &g) in dst.iter_mut().zip(x).zip(g) {
            let s = simd::sigmoid(QUICK * x);
            *d = g * (s + QUICK * x * s * (1.0 - s));
        }
    }
}

/// Elements per parallel task: big enough that rayon's overhead is noise, small enough that an
/// MLP activation of a small batch still splits across cores.
const CHUNK: usize = 1 << 14;

/// `x` with its values in one contiguous run (copied only when strided).
fn contiguous(x: &FlexTensor) -> FlexTensor {
    if x.as_slice::<f32>().is_some() {
        x.clone()
    } else {
        x.to_contiguous()
    }
}

/// Applies an element-wise kernel over `inputs` (all of one shape), in parallel chunks.
fn map(inputs: &[&FlexTensor], kernel: impl Fn(&[&[f32]], &mut [f32]) + Sync) -> FlexTensor {
    let shape = inputs[0].shape();
    for t in inputs {
        assert_eq!(
            t.shape(),
            shape,
            "element-wise kernel on tensors of different shapes"
        );
    }
    let owned: Vec<FlexTensor> = inputs.iter().map(|t| contiguous(t)).collect();
    let slices: Vec<&[f32]> = owned
        .iter()
        .map(|t| t.as_slice::<f32>().expect("contiguous f32"))
        .collect();
    let n = slices[0].len();
    let mut out = vec![0f32; n];
    if n >= 2 * CHUNK {
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(i, dst)| {
            let lo = i * CHUNK;
            let parts: Vec<&[f32]> = slices.iter().map(|s| &s[lo..lo + dst.len()]).collect();
            kernel(&parts, dst);
        });
    } else {
        kernel(&slices, &mut out);
    }
    FlexTensor::from_data(TensorData::new(out, shape))
}

/// The activation of an f32 Flex tensor.
pub fn forward(kind: Gelu, x: &FlexTensor) -> FlexTensor {
    let f = match kind {
        Gelu::Erf => erf_forward,
        Gelu::Tanh => tanh_forward,
        Gelu::Quick => quick_forward,
    };
    map(&[x], |s, d| f(s[0], d))
}

/// The input gradient `grad · act'(x)` of an f32 Flex tensor.
pub fn backward(kind: Gelu, x: &FlexTensor, grad: &FlexTensor) -> FlexTensor {
    let f = match kind {
        Gelu::Erf => erf_backward,
        Gelu::Tanh => tanh_backward,
        Gelu::Quick => quick_backward,
    };
    map(&[x, grad], |s, d| f(s[0], s[1], d))
}

#[derive(Debug)]
struct GeluBackward(Gelu);

impl Backward<Flex, 1> for GeluBackward {
    /// The input.
    type State = FlexTensor;

    fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let x = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |g| backward(self.0, &x, &g));
    }
}

/// The activation on `Autodiff<Flex>`, recording [`backward`] as its gradient.
fn forward_tracked(kind: Gelu, x: AdFlexTensor) -> AdFlexTensor {
    let prep = GeluBackward(kind)
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful();
    match prep {
        OpsKind::Tracked(prep) => {
            let y = forward(kind, &x.primitive);
            prep.finish(x.primitive, y)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(kind, &x.primitive)),
    }
}

/// Applies a GELU-family activation element-wise on any backend: the kernels above on Flex
/// and `Autodiff<Flex>` (f32), Burn's own operations elsewhere (CubeCL backends fuse them).
///
/// # Shapes
/// - `x`: any; returns the same shape.
pub fn gelu<B: Backend, const D: usize>(kind: Gelu, x: Tensor<B, D>) -> Tensor<B, D> {
    if x.dtype() == DType::F32 && crate::dispatch::enabled() {
        let out = match Float::<B>::of(x.into_primitive().tensor()) {
            Float::Flex(f) => from_flex::<B>(forward(kind, &f)),
            Float::AdFlex(a) => from_ad_flex::<B>(forward_tracked(kind, a)),
            Float::Other(p) => {
                return composed(kind, Tensor::from_primitive(TensorPrimitive::Float(p)));
            }
        };
        return Tensor::from_primitive(TensorPrimitive::Float(out));
    }
    composed(kind, x)
}

/// The activation composed from Burn's operations (the reference the kernels are tested
/// against, and the path of every other backend and dtype).
pub fn composed<B: Backend, const D: usize>(kind: Gelu, x: Tensor<B, D>) -> Tensor<B, D> {
    match kind {
        Gelu::Erf => activation::gelu(x),
        Gelu::Tanh => activation::gelu_approximate(x),
        Gelu::Quick => x.clone() * activation::sigmoid(x * QUICK),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Autodiff;
    use burn::tensor::Tolerance;

    /// Deterministic, roughly normal values (sum of four uniforms), so that the tests do not
    /// depend on Burn's shared random generator or on test order.
    fn normalish<B: Backend, const D: usize>(
        shape: [usize; D],
        scale: f32,
        seed: u64,
    ) -> Tensor<B, D> {
        let n: usize = shape.iter().product();
        let u = crate::testing::values(4 * n, 1.0, seed);
        let v: Vec<f32> = u
            .chunks(4)
            .map(|c| c.iter().sum::<f32>() * 0.866 * scale)
            .collect();
        Tensor::from_data(TensorData::new(v, shape), &Default::default())
    }

    type Ad = Autodiff<Flex>;
    const KINDS: [Gelu; 3] = [Gelu::Erf, Gelu::Tanh, Gelu::Quick];

    fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    /// Largest `|a − b| / (1 + |b|)`: absolute near zero, relative for large values.
    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
            .fold(0.0, f32::max)
    }

    #[test]
    fn forward_matches_burns_composition_at_odd_sizes() {
        crate::testing::require_kernels();
        // 1 and 7 miss every SIMD width; 70 001 is split into parallel chunks with a remainder.
        for n in [1usize, 7, 33, 70_001] {
            let x = normalish::<Flex, 1>([n], 3.0, n as u64);
            for kind in KINDS {
                let got = values(gelu(kind, x.clone()));
                let want = values(composed(kind, x.clone()));
                let err = max_diff(&got, &want);
                assert!(err < 2e-6, "{kind:?} n={n}: max error {err}");
            }
        }
    }

    #[test]
    fn strided_input_gives_the_values_of_its_logical_order() {
        let x = normalish::<Flex, 2>([37, 29], 2.0, 1);
        let t = x.clone().transpose(); // a strided view
        for kind in KINDS {
            let got = gelu(kind, t.clone());
            let want = composed(kind, x.clone()).transpose();
            got.into_data()
                .assert_approx_eq::<f32>(&want.into_data(), Tolerance::absolute(1e-6));
        }
    }

    #[test]
    fn gradients_match_burns_composition() {
        crate::testing::require_kernels();
        let base = normalish::<Ad, 2>([5, 1031], 2.5, 2);
        let w = normalish::<Ad, 2>([5, 1031], 1.0, 3);
        for kind in KINDS {
            let x = base.clone().detach().require_grad();
            let grads = (gelu(kind, x.clone()) * w.clone()).sum().backward();
            let got = values(x.grad(&grads).unwrap());
            let x2 = base.clone().detach().require_grad();
            let grads = (composed(kind, x2.clone()) * w.clone()).sum().backward();
            let want = values(x2.grad(&grads).unwrap());
            let err = max_diff(&got, &want);
            assert!(err < 2e-6, "{kind:?}: max gradient error {err}");
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        // The backward formulas are new code: check them against the forward in f64.
        let f64_fwd = |kind: Gelu, x: f64| -> f64 {
            match kind {
                Gelu::Erf => 0.5 * x * (1.0 + erf64(x / std::f64::consts::SQRT_2)),
                Gelu::Tanh => {
                    0.5 * x
                        * (1.0
                            + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3)))
                                .tanh())
                }
                Gelu::Quick => x / (1.0 + (-1.702 * x).exp()),
            }
        };
        let xs: Vec<f32> = (0..200).map(|i| (i as f32 - 100.0) / 19.0).collect();
        let g: Vec<f32> = vec![1.0; xs.len()];
        let x = FlexTensor::from_data(TensorData::new(xs.clone(), [xs.len()]));
        let gt = FlexTensor::from_data(TensorData::new(g, [xs.len()]));
        for kind in KINDS {
            let got = backward(kind, &x, &gt).into_data().to_vec::<f32>().unwrap();
            for (x, d) in xs.iter().zip(got) {
                let x = *x as f64;
                let h = 1e-4;
                let fd = (f64_fwd(kind, x + h) - f64_fwd(kind, x - h)) / (2.0 * h);
                assert!((d as f64 - fd).abs() < 2e-6, "{kind:?} at {x}: {d} vs {fd}");
            }
        }
    }

    /// erf in f64 by series (|x| < 6 here), to keep the finite differences independent of the
    /// f32 kernel.
    fn erf64(x: f64) -> f64 {
        if x.abs() > 3.0 {
            // Continued fraction for erfc.
            let z = x.abs();
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = k as f64 / 2.0 / (z + f);
            }
            let erfc = (-z * z).exp() / std::f64::consts::PI.sqrt() / (z + f);
            return x.signum() * (1.0 - erfc);
        }
        let mut sum = 0.0;
        let mut term = x;
        for n in 0..200 {
            sum += term / (2 * n + 1) as f64;
            term *= -x * x / (n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn untracked_autodiff_input_and_other_dtypes_take_the_right_path() {
        // No gradient required: the untracked branch.
        let x = normalish::<Ad, 1>([100], 1.0, 4);
        let got = values(gelu(Gelu::Erf, x.clone()));
        let want = values(composed(Gelu::Erf, x.clone()));
        assert!(max_diff(&got, &want) < 1e-6);
        // f64 falls back to Burn's ops and keeps its dtype.
        let x64 = x.inner().cast(burn::tensor::FloatDType::F64);
        let y = gelu(Gelu::Quick, x64.clone());
        assert_eq!(y.dtype(), DType::F64);
        let want = values(composed(Gelu::Quick, x64).cast(burn::tensor::FloatDType::F32));
        assert!(max_diff(&values(y.cast(burn::tensor::FloatDType::F32)), &want) == 0.0);
    }
}
