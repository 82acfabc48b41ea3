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

use std::ops::RangeInclusive;

/// Checks sizes read from a model's configuration file before anything is allocated from them
/// (the file is untrusted: a width of 2^30 would abort the process in the allocator). The
/// error names the first field outside its range, for the caller to wrap with the file's path.
pub fn check_sizes(sizes: &[(&str, usize, RangeInclusive<usize>)]) -> Result<(), String> {
    match sizes.iter().find(|(_, v, range)| !range.contains(v)) {
        Some((field, v, range)) => Err(format!(
            "`{field}` = {v} is not in {}..={}",
            range.start(),
            range.end()
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::check_sizes;

    #[test]
    fn check_sizes_names_the_first_field_out_of_range() {
        assert_eq!(check_sizes(&[("a", 1, 1..=4), ("b", 0, 0..=0)]), Ok(()));
        assert_eq!(
            check_sizes(&[("a", 4, 1..=4), ("b", 5, 1..=4), ("c", 0, 1..=4)]),
            Err("`b` = 5 is not in 1..=4".to_string())
        );
        assert_eq!(
            check_sizes(&[("a", 0, 1..=4)]),
            Err("`a` = 0 is not in 1..=4".to_string())
        );
    }
}
