//! Checkpoints: model, every group's optimiser, schedule, data position and counters, written
//! atomically (a temporary directory renamed into place) and pruned to the last N.

use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burn::record::{BinFileRecorder, FullPrecisionSettings};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::optim::GroupOptimizer;

/// Position of a run, saved next to the weights.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimiser steps taken.
    pub step: usize,
    /// Current epoch of the training stream.
    pub epoch: u64,
    /// Batches of `epoch` already consumed.
    pub batch_in_epoch: usize,
    /// Samples trained on.
    pub samples: u64,
    /// Steps skipped because the loss was not finite.
    pub skipped_steps: usize,
    /// Non-finite losses in a row, at the time of saving.
    pub nonfinite_run: usize,
    /// Data-parallel ranks of the run (resuming needs the same: the data is sharded by rank).
    #[serde(default)]
    pub world: usize,
}

fn recorder() -> BinFileRecorder<FullPrecisionSettings> {
    BinFileRecorder::<FullPrecisionSettings>::new()
}

fn err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Directory of the checkpoint at `step`.
pub fn step_dir(root: &Path, step: usize) -> PathBuf {
    root.join(format!("step-{step:08}"))
}

/// Saves a checkpoint of `step` under `root` and keeps the last `keep` ones.
pub fn save<B, M>(
    root: &Path,
    model: &M,
    optimizers: &[GroupOptimizer<B, M>],
    state: &TrainState,
    keep: usize,
) -> Result<PathBuf>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    std::fs::create_dir_all(root).map_err(|e| err(root, e))?;
    let tmp = root.join(format!(".tmp-step-{:08}", state.step));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| err(&tmp, e))?;
    let rec = recorder();
    model
        .clone()
        .save_file(tmp.join("model"), &rec)
        .map_err(|e| err(&tmp, e))?;
    for (k, o) in optimizers.iter().enumerate() {
        o.save(&rec, tmp.join(format!("optim-{k}")))
            .map_err(|e| err(&tmp, e))?;
    }
    let json = serde_json::to_string_pretty(state).expect("state serialises");
    std::fs::write(tmp.join("state.json"), json).map_err(|e| err(&tmp, e))?;
    let dir = step_dir(root, state.step);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).map_err(|e| err(&dir, e))?;
    for old in list(root)?.into_iter().rev().skip(keep.max(1)) {
        let _ = std::fs::remove_dir_all(old);
    }
    Ok(dir)
}

/// Checkpoint directories under `root`, oldest first.
pub fn list(root: &Path) -> Result<Vec<PathBuf>> {
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| err(root, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("step-"))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// A restored model, its optimisers and the run's position.
pub type Restored<B, M> = (M, Vec<GroupOptimizer<B, M>>, TrainState);

/// Restores model, optimisers and state from `dir` (optimisers in the order they were saved:
/// the same configuration builds the same groups).
pub fn load<B, M>(
    dir: &Path,
    model: M,
    optimizers: Vec<GroupOptimizer<B, M>>,
    device: &B::Device,
) -> Result<Restored<B, M>>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    let rec = recorder();
    let model = model
        .load_file(dir.join("model"), &rec, device)
        .map_err(|e| err(dir, e))?;
    let saved = std::fs::read_dir(dir)
        .map_err(|e| err(dir, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("optim-"))
        .count();
    if saved != optimizers.len() {
        return Err(err(
            dir,
            format!(
                "it holds {saved} optimiser states but this configuration has {} parameter groups",
                optimizers.len()
            ),
        ));
    }
    let optimizers = optimizers
        .into_iter()
        .enumerate()
        .map(|(k, o)| o.load(&rec, dir.join(format!("optim-{k}")), device))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| err(dir, e))?;
    let text = std::fs::read_to_string(dir.join("state.json")).map_err(|e| err(dir, e))?;
    let state: TrainState = serde_json::from_str(&text).map_err(|e| err(dir, e))?;
    Ok((model, optimizers, state))
}
