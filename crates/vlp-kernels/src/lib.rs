//! CPU kernels for vlp: fused, vectorised, multi-threaded operations on Burn's Flex backend,
//! each with its own backward for `Autodiff<Flex>`.
//!
//! Every entry point is generic over `B: Backend` and takes the kernel only when `B` is Flex
//! or `Autodiff<Flex>` and the tensor is f32; on every other backend and dtype it composes
//! Burn's operations (so wgpu and CUDA keep CubeCL's fusion). The towers in `vlp-core` call
//! these entry points; nothing else needs to know.
//!
//! - [`gelu`]: the GELU family, forward and backward each one vectorised pass.
//! - [`attention`]: multi-head attention on packed `[batch, tokens, heads·d]` projections.
//! - [`layer_norm`]: Burn's forward with a closed-form backward on `Autodiff<Flex>`.
//! - [`linear`]: with the `openblas` feature, linear layers on OpenBLAS forward and backward;
//!   Burn's own linear otherwise.
//!
//! This crate sits below `vlp-core` and is compiled optimised even in test builds
//! (the kernels are the hot loops of every test that trains).

pub mod activation;
pub mod attention;
#[cfg(feature = "openblas")]
pub mod blas;
pub mod dispatch;
pub mod linear;
pub mod matmul;
pub mod norm;
pub mod simd;

pub use activation::{Gelu, gelu};
pub use attention::attention;
pub use linear::linear;
pub use norm::layer_norm;

#[cfg(test)]
mod testing {
    /// Fails a test that compares a kernel with Burn's composition when the kernels are
    /// switched off: it would compare Burn with itself and pass whatever the kernel does.
    pub fn require_kernels() {
        assert!(
            crate::dispatch::enabled(),
            "VLP_CPU_KERNELS=0 is set: the kernel tests would compare Burn with itself"
        );
    }

    /// A tensor of [`values`] in [-scale, scale).
    pub fn tensor<B: burn::tensor::backend::Backend, const D: usize>(
        shape: [usize; D],
        scale: f32,
        seed: u64,
    ) -> burn::tensor::Tensor<B, D> {
        let n = shape.iter().product();
        burn::tensor::Tensor::from_data(
            burn::tensor::TensorData::new(values(n, scale, seed), shape),
            &Default::default(),
        )
    }

    /// The values of `t` as f32, in row-major order.
    pub fn flat<B: burn::tensor::backend::Backend, const D: usize>(
        t: burn::tensor::Tensor<B, D>,
    ) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec().unwrap()
    }

    /// Asserts `|got − want| ≤ tol · (1 + |want|)` element by element, and equal lengths.
    pub fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= tol * (1.0 + w.abs()),
                "{what}: element {i}: {g} vs {w}"
            );
        }
    }

    /// Deterministic values in [-scale, scale) from a seed (xorshift), so that the tests do
    /// not depend on Burn's shared random generator or on test order.
    pub fn values(n: usize, scale: f32, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }
}
