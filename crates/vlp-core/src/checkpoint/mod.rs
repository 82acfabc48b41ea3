//! Checkpoint import and export: safetensors and PyTorch files in, safetensors out.
//!
//! The machinery here knows nothing about any model family. A model crate describes its layout
//! with a `resolve` function (our parameter path → where the value lives in the file, see
//! [`Source`]); [`load_params`] then checks the whole file against the whole module before
//! touching a parameter, so a bad checkpoint gives one error listing every missing key, every
//! unused key and every shape mismatch, and never a partial load.
//!
//! Values travel through [`HostTensor`]s in PyTorch orientation (`nn.Linear` weights are
//! `[out, in]`); the transposition to Burn's `[in, out]` happens at the module boundary.

mod host;
mod load;
mod save;
mod store;

pub use host::HostTensor;
pub use load::{LoadReport, ParamInfo, Source, load_params, param_infos};
pub use save::{collect_params, write_safetensors};
pub use store::{StoredDType, TensorFile};
