//! Adapters: small modules trained on a frozen model's features.

pub mod clip_adapter;
pub mod sgva;

pub use clip_adapter::{ClipAdapter, ClipAdapterConfig, fit_clip_adapter};
pub use sgva::{Sgva, SgvaConfig, fit_sgva};
