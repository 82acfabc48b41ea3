//! CPU kernels for vlp: fused, vectorised, multi-threaded operations on Burn's Flex backend,
//! each with its own backward for `Autodiff<Flex>`.
//!
//! Every entry point is generic over `B: Backend` and takes the kernel only when `B` is Flex
//! or `Autodiff<Flex>` and the tensor is f32; on every other backend and dtype it composes
//! Burn's operations (so wgpu and CUDA keep CubeCL's fusion). The towers in `vlp-core` call
//! these entry points; nothing else needs to know.
//!
//! This crate sits below `vlp-core` and is compiled optimised even in test builds
//! (the kernels are the hot loops of every test that trains).

pub mod activation;
pub mod attention;
pub mod dispatch;
pub mod matmul;
pub mod simd;

pub use activation::{Gelu, gelu};
pub use attention::attention;
