//! The training configuration: a TOML file whose every section and field has a default, so an
//! empty file (or none) is the built-in ShapesWorld run. Unknown keys are errors.

use std::path::Path;

use serde::{Deserialize, Serialize};
use vlp_align::loss::LossKind;
use vlp_data::augment::AugmentConfig;
use vlp_data::shapes::ShapesWorldConfig;

use crate::error::{Result, TrainError};

/// Everything a run needs. See `configs/README.md` for every field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Run naming and seeding.
    pub run: RunConfig,
    /// The model.
    pub model: ModelConfig,
    /// The tokenizer.
    pub tokenizer: TokenizerConfig,
    /// Training and evaluation data.
    pub data: DataConfig,
    /// Optimiser and schedule.
    pub optim: OptimConfig,
    /// Numeric precision.
    pub precision: PrecisionConfig,
    /// Evaluation during training.
    pub eval: EvalConfig,
    /// Logging.
    pub log: LogConfig,
    /// Checkpoints.
    pub checkpoint: CheckpointConfig,
    /// Data-parallel training.
    pub distributed: DistributedConfig,
}

/// `[run]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunConfig {
    /// Run name; the run directory is `<dir>/<name>`.
    pub name: String,
    /// Parent directory of run directories.
    pub dir: String,
    /// Seed of initialisation, data order and augmentation.
    pub seed: u64,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            name: "shapes-clip".into(),
            dir: "runs".into(),
            seed: 0,
        }
    }
}

/// `[model]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Architecture preset: `shapes-tiny` (the default small CLIP), `vit-b-32`, `vit-b-16`,
    /// `vit-l-14`, `vit-l-14-336`, `siglip-b-16-224`. Ignored when `config` or `init` is set.
    pub preset: String,
    /// A transformers `config.json` or an `open_clip_config.json` defining the architecture.
    pub config: Option<String>,
    /// A model directory (transformers or open_clip layout) to start from.
    pub init: Option<String>,
    /// `clip` (InfoNCE) or `siglip` (sigmoid); also picks the model family for presets.
    pub loss: LossKind,
    /// `shapes-tiny` only: residual width of both towers.
    pub width: usize,
    /// `shapes-tiny` only: blocks per tower.
    pub layers: usize,
    /// `shapes-tiny` only: attention heads.
    pub heads: usize,
    /// `shapes-tiny` only: joint embedding width.
    pub embed_dim: usize,
    /// `shapes-tiny` only: ViT patch size.
    pub patch_size: usize,
    /// Input image side the model sees (images are resized to it); 0 = the preset's own.
    pub image_size: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            preset: "shapes-tiny".into(),
            config: None,
            init: None,
            loss: LossKind::Clip,
            width: 128,
            layers: 3,
            heads: 4,
            embed_dim: 128,
            patch_size: 8,
            image_size: 0,
        }
    }
}

/// `[tokenizer]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenizerConfig {
    /// `words` (ShapesWorld's closed vocabulary), `clip` (the built-in CLIP BPE) or the path of
    /// a `tokenizer.json`.
    pub kind: String,
    /// Tokens per caption.
    pub context_length: usize,
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        Self {
            kind: "words".into(),
            context_length: 16,
        }
    }
}

/// `[data]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Training source spec (`shapes:train:N`, `wds:...`, `csv:...`, ...).
    pub train: String,
    /// Held-out labelled images for zero-shot accuracy and retrieval (`shapes:test:N`, an
    /// ImageFolder, ...); empty to skip.
    pub eval: String,
    /// Held-out images whose class combinations were never trained on; empty to skip.
    pub eval_unseen: String,
    /// Samples per optimiser step (across all ranks and accumulation steps).
    pub batch_size: usize,
    /// Loader worker threads.
    pub workers: usize,
    /// Training augmentation.
    pub augment: AugmentConfig,
    /// Largest fraction of bad samples tolerated per epoch.
    pub max_skip_fraction: f64,
    /// The ShapesWorld generator used by `shapes:` sources.
    pub shapes: ShapesWorldConfig,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            train: "shapes:train:200000".into(),
            eval: "shapes:test:1000".into(),
            eval_unseen: "shapes:unseen:500".into(),
            batch_size: 128,
            workers: 1,
            augment: AugmentConfig::default(),
            max_skip_fraction: 0.01,
            // 32 px keeps the default run within minutes on two CPU cores (CONTRIBUTING.md).
            shapes: ShapesWorldConfig {
                image_size: 32,
                ..Default::default()
            },
        }
    }
}

/// `[optim]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// Learning rate at the end of the cosine.
    pub min_lr: f64,
    /// Decoupled weight decay (not applied to biases, norms, embeddings, class token, logit
    /// scale/bias).
    pub weight_decay: f64,
    /// Adam β₁.
    pub beta1: f32,
    /// Adam β₂.
    pub beta2: f32,
    /// Adam ε.
    pub eps: f32,
    /// Linear warm-up steps.
    pub warmup_steps: usize,
    /// Total optimiser steps.
    pub steps: usize,
    /// Clip the global gradient norm to this (0 = off).
    pub grad_clip: f32,
    /// Micro-batches per step (open_clip's `accum_freq`: the loss still sees the whole batch).
    pub accumulate: usize,
    /// Freeze the image tower (LiT).
    pub lock_image: bool,
    /// Freeze the text tower.
    pub lock_text: bool,
    /// Stop after this many consecutive non-finite losses.
    pub max_nonfinite: usize,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 2e-3,
            min_lr: 1e-5,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-6,
            warmup_steps: 50,
            steps: 1500,
            grad_clip: 1.0,
            accumulate: 1,
            lock_image: false,
            lock_text: false,
            max_nonfinite: 5,
        }
    }
}

/// `[precision]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrecisionConfig {
    /// `f32`, or `bf16` / `f16`: forward and backward in half precision on a copy of the
    /// weights, f32 master weights and optimiser state.
    pub mode: String,
}

impl Default for PrecisionConfig {
    fn default() -> Self {
        Self { mode: "f32".into() }
    }
}

/// `[eval]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Evaluate every this many steps (0 = only at the end).
    pub every: usize,
    /// Zero-shot prompt templates (`{}` = class name).
    pub templates: Vec<String>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            every: 500,
            templates: vec!["a photo of a {}.".into()],
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Write a metrics line every this many steps.
    pub every: usize,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            every: 10,
            progress: true,
        }
    }
}

/// `[checkpoint]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Save every this many steps (0 = only at the end).
    pub every: usize,
    /// Keep this many most recent checkpoints.
    pub keep_last: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            every: 500,
            keep_last: 2,
        }
    }
}

/// `[distributed]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistributedConfig {
    /// Devices on this machine to train on (data parallel, one thread each).
    pub devices: usize,
    /// Number of machines (processes) in a multi-node run.
    pub world_size: usize,
    /// This machine's rank (0 starts the coordinator).
    pub rank: usize,
    /// `HOST:PORT` of the coordinator (rank 0) in a multi-node run.
    pub coordinator: String,
    /// `HOST:PORT` where this node serves tensors to its peers in a multi-node run.
    pub node_address: String,
}

impl Default for DistributedConfig {
    fn default() -> Self {
        Self {
            devices: 1,
            world_size: 1,
            rank: 0,
            coordinator: String::new(),
            node_address: String::new(),
        }
    }
}

/// Applies `a.b.c=value` overrides to a TOML document; the value is parsed as TOML (`3e-4`,
/// `true`, `"text"`, `[1, 2]`) and taken as a string when it does not parse.
pub fn apply_override(doc: &mut toml::Table, assignment: &str) -> Result<()> {
    let (path, value) = assignment
        .split_once('=')
        .ok_or_else(|| TrainError::Config(format!("override \"{assignment}\" is not KEY=VALUE")))?;
    let value: toml::Value = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let keys: Vec<&str> = path.trim().split('.').collect();
    let mut table = doc;
    for k in &keys[..keys.len() - 1] {
        let entry = table
            .entry(k.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        table = entry.as_table_mut().ok_or_else(|| {
            TrainError::Config(format!("override \"{assignment}\": `{k}` is not a table"))
        })?;
    }
    table.insert(keys[keys.len() - 1].to_string(), value);
    Ok(())
}

impl TrainConfig {
    /// Reads a TOML file (or the defaults when `path` is `None`) and applies overrides.
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Self> {
        let mut doc: toml::Table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| TrainError::Io {
                    path: p.into(),
                    source: e,
                })?;
                text.parse()
                    .map_err(|e| TrainError::Config(format!("{}: {e}", p.display())))?
            }
            None => toml::Table::new(),
        };
        for o in overrides {
            apply_override(&mut doc, o)?;
        }
        let name = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "built-in defaults".into());
        let cfg: TrainConfig =
            toml::Value::Table(doc)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    TrainError::Config(format!("{name}: {}", e.to_string().trim()))
                })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values serde cannot; the message names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |f: &str, why: &str| Err(TrainError::Config(format!("`{f}`: {why}")));
        if self.optim.steps == 0 {
            return bad("optim.steps", "must be positive");
        }
        if self.optim.warmup_steps > self.optim.steps {
            return bad("optim.warmup_steps", "exceeds optim.steps");
        }
        if self.optim.lr.is_nan() || self.optim.lr <= 0.0 {
            return bad("optim.lr", "must be positive");
        }
        let ranks = self.distributed.devices * self.distributed.world_size;
        if ranks == 0 {
            return bad("distributed.devices", "must be positive");
        }
        let per = self.data.batch_size / ranks.max(1);
        if self.data.batch_size == 0
            || !self.data.batch_size.is_multiple_of(ranks)
            || !per.is_multiple_of(self.optim.accumulate.max(1))
        {
            return bad(
                "data.batch_size",
                "must be positive and divisible by devices × world_size × accumulate",
            );
        }
        if self.optim.accumulate == 0 {
            return bad("optim.accumulate", "must be at least 1");
        }
        if !matches!(self.precision.mode.as_str(), "f32" | "bf16" | "f16") {
            return bad("precision.mode", "expected f32, bf16 or f16");
        }
        if self.distributed.world_size > 1 && self.distributed.coordinator.is_empty() {
            return bad(
                "distributed.coordinator",
                "a multi-node run needs the coordinator's HOST:PORT",
            );
        }
        if self.distributed.rank >= self.distributed.world_size {
            return bad("distributed.rank", "must be below world_size");
        }
        if self.optim.lock_image && self.optim.lock_text {
            return bad(
                "optim.lock_text",
                "locking both towers leaves nothing to train",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default_and_unknown_keys_fail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "").unwrap();
        assert_eq!(
            TrainConfig::load(Some(&p), &[]).unwrap(),
            TrainConfig::default()
        );
        std::fs::write(&p, "[optim]\nlearning_rate = 1e-3\n").unwrap();
        let e = TrainConfig::load(Some(&p), &[]).unwrap_err().to_string();
        assert!(e.contains("learning_rate"), "{e}");
        std::fs::write(&p, "[optimizer]\n").unwrap();
        assert!(
            TrainConfig::load(Some(&p), &[])
                .unwrap_err()
                .to_string()
                .contains("optimizer")
        );
    }

    /// The shipped configs stay loadable as fields change, and `shapes-clip.toml` stays the
    /// written-out default.
    #[test]
    fn shipped_configs_load_and_shapes_clip_is_the_default() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "toml") {
                let c = TrainConfig::load(Some(&p), &[]);
                assert!(c.is_ok(), "{}: {}", p.display(), c.unwrap_err());
                n += 1;
            }
        }
        assert!(n >= 4, "only {n} configs found in {}", dir.display());
        assert_eq!(
            TrainConfig::load(Some(&dir.join("shapes-clip.toml")), &[]).unwrap(),
            TrainConfig::default()
        );
    }

    #[test]
    fn overrides_parse_toml_values() {
        let c = TrainConfig::load(
            None,
            &[
                "optim.lr=3e-4".into(),
                "model.loss=siglip".into(),
                "data.shapes.image_size=32".into(),
                "eval.templates=[\"a {}\"]".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.optim.lr, 3e-4);
        assert_eq!(c.model.loss, LossKind::Siglip);
        assert_eq!(c.data.shapes.image_size, 32);
        assert_eq!(c.eval.templates, vec!["a {}".to_string()]);
        let e = TrainConfig::load(None, &["optim.steps=0".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("optim.steps"), "{e}");
        let e = TrainConfig::load(None, &["optim.lr".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("KEY=VALUE"), "{e}");
    }
}
