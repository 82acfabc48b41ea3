//! Foundations shared by every other vlp crate.
//!
//! What belongs here: the mapping from the compiled Cargo feature (`cpu`, `wgpu`, `cuda`) to a
//! concrete Burn backend ([`backend`]), the layers every transformer in the project is built from
//! (attention with causal and padding masks, MLPs, LayerNorm: [`nn`]), checkpoint import and
//! export, small numeric helpers and the error type. What does not: anything that knows about
//! images, text, datasets or a particular model family. Those live in the crates above
//! (`vlp-vision`, `vlp-text`, `vlp-data`, `vlp-align`, ...), which depend on this one and never the
//! other way round.

pub mod backend;
pub mod checkpoint;
pub mod cluster;
pub mod distance;
pub mod error;
pub mod io;
pub mod loss;
pub mod nn;
pub mod numerics;
pub mod preprocess;
pub mod rng;

pub use error::{CoreError, Result};
