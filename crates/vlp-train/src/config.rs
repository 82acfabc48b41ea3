//! The training configuration: a TOML file whose every section and field has a default, so an
//! empty file (or none) is the built-in ShapesWorld run. Unknown keys are errors.

use std::path::Path;

use serde::{Deserialize, Serialize};
use vlp_data::augment::AugmentConfig;
use vlp_data::shapes::ShapesWorldConfig;

use crate::error::{Result, TrainError};

/// Everything a run needs. See `configs/README.md` for every field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Run naming and seeding.
    pub run: RunConfig,
    /// The training method (objective, trainable parts, evaluation) and its own settings.
    pub method: MethodConfig,
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

/// `[method]`: `kind` picks a registered method; the table named after it (`[method.filip]`)
/// holds that method's own settings, which the method parses and checks itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MethodConfig {
    /// The method: `clip`, `siglip`, `filip`, ... (see `vlp_train::method::registry`).
    pub kind: String,
    /// Per-method tables, by method name.
    #[serde(flatten)]
    pub tables: toml::Table,
}

impl Default for MethodConfig {
    fn default() -> Self {
        Self {
            kind: "clip".into(),
            tables: toml::Table::new(),
        }
    }
}

impl MethodConfig {
    /// The settings table of method `name` (empty when absent); any other table, or any key
    /// that is not a table, is an error naming it.
    pub fn table(&self, name: &str) -> Result<toml::Table> {
        for (k, v) in &self.tables {
            if k != name {
                return Err(TrainError::Config(format!(
                    "`method.{k}`: unknown key for method `{name}` (its settings go in [method.{name}])"
                )));
            }
            if !v.is_table() {
                return Err(TrainError::Config(format!(
                    "`method.{k}` must be a table of method `{name}`'s settings"
                )));
            }
        }
        Ok(self
            .tables
            .get(name)
            .and_then(|v| v.as_table())
            .cloned()
            .unwrap_or_default())
    }

    /// Parses method `name`'s table into its settings type; unknown keys are errors that name
    /// the method.
    pub fn parse<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T> {
        toml::Value::Table(self.table(name)?)
            .try_into()
            .map_err(|e: toml::de::Error| {
                TrainError::Config(format!("method `{name}`: {}", e.to_string().trim()))
            })
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
    /// A training configuration whose exported model to start from, trained first (or resumed)
    /// when its `<run.dir>/<run.name>/final.json` is missing: a two-stage recipe in one command
    /// (pretrain, then fine-tune). Excludes `init`; the run records the resolved `init`.
    pub init_from: Option<String>,
    /// A pretrained model directory the method learns from (a teacher whose features are its
    /// targets, e.g. SemAIM's `predict_feature = 'clip'`); not trained, not exported. Methods
    /// without a teacher refuse it.
    pub teacher: Option<String>,
    /// A training configuration whose exported model is the teacher, trained first (or
    /// resumed) like `init_from`'s when its run is missing. Excludes `teacher`; the run records
    /// the resolved `teacher`.
    pub teacher_from: Option<String>,
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
            init_from: None,
            teacher: None,
            teacher_from: None,
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
    /// `adamw` (decoupled weight decay) or `sgd` (momentum, L2 weight decay as PyTorch's).
    pub optimizer: String,
    /// Peak learning rate.
    pub lr: f64,
    /// Learning rate at the end of the schedule (cosine, poly).
    pub min_lr: f64,
    /// `cosine`, `constant` or `poly`, each after the linear warm-up.
    pub schedule: String,
    /// Exponent of the `poly` schedule.
    pub power: f64,
    /// Weight decay (not applied to biases, norms, embeddings, class token, logit scale/bias).
    pub weight_decay: f64,
    /// Adam β₁.
    pub beta1: f32,
    /// Adam β₂.
    pub beta2: f32,
    /// Adam ε.
    pub eps: f32,
    /// SGD momentum (0 = none).
    pub momentum: f64,
    /// SGD Nesterov momentum.
    pub nesterov: bool,
    /// Parameter groups with their own learning-rate factor and weight decay, matched by path
    /// prefix (`text_model.`, `logit_scale`); the first matching group wins.
    pub groups: Vec<ParamGroupConfig>,
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

/// One entry of `[[optim.groups]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamGroupConfig {
    /// Parameter-path prefix, e.g. `vision_model.encoder.layers.11.` or `text_projection`.
    pub prefix: String,
    /// Factor on the learning rate.
    #[serde(default = "one")]
    pub lr_scale: f64,
    /// Weight decay of the group (default: the usual rule with `optim.weight_decay`).
    #[serde(default)]
    pub weight_decay: Option<f64>,
}

fn one() -> f64 {
    1.0
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            optimizer: "adamw".into(),
            lr: 2e-3,
            min_lr: 1e-5,
            schedule: "cosine".into(),
            power: 1.0,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-6,
            momentum: 0.9,
            nesterov: false,
            groups: Vec::new(),
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
    /// Write the key of every sample each rank trains on to `samples-rank<R>.txt` (epoch and
    /// key per line): an audit of data sharding.
    pub sample_keys: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            every: 10,
            progress: true,
            sample_keys: false,
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
    /// Devices on this machine to train on (data parallel, one thread each); 0 = automatic:
    /// the binary picks ([`TrainConfig::auto_devices`]).
    pub devices: usize,
    /// Number of machines (processes) in a multi-node run.
    pub world_size: usize,
    /// This machine's rank (0 starts the coordinator).
    pub rank: usize,
    /// `HOST:PORT` of the coordinator (rank 0) in a multi-node run.
    pub coordinator: String,
    /// `HOST:PORT` where this node serves tensors to its peers in a multi-node run.
    pub node_address: String,
    /// Seconds a multi-node run waits for a silent process (start-up, a collective call) before
    /// every process stops with an error naming it.
    pub timeout_s: f64,
}

impl Default for DistributedConfig {
    fn default() -> Self {
        Self {
            devices: 0,
            world_size: 1,
            rank: 0,
            coordinator: String::new(),
            node_address: String::new(),
            timeout_s: 60.0,
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
    /// Rank threads for `distributed.devices`: the configured number, or, when it is 0
    /// (automatic), the most that divide each process's batch (with its accumulation) among
    /// `available`, at most 8. A multi-node process takes one device unless told otherwise.
    ///
    /// Ranks split each step's batch and gather features, so the trajectory does not depend on
    /// the choice; on a CPU they are how training uses more than one core (the Flex backend runs
    /// one step's kernels on about one core).
    pub fn auto_devices(&self, available: usize) -> usize {
        let d = &self.distributed;
        if d.devices > 0 {
            return d.devices;
        }
        if d.world_size > 1 {
            return 1;
        }
        let per = self.data.batch_size / d.world_size.max(1);
        (1..=available.clamp(1, 8))
            .rev()
            .find(|k| per.is_multiple_of(k * self.optim.accumulate.max(1)))
            .unwrap_or(1)
    }

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

    /// Checks values serde cannot: ranges, finiteness, consistency. The message names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |f: &str, why: String| Err(TrainError::Config(format!("`{f}`: {why}")));
        // Finite and within [lo, hi] (either bound open when `open_*`).
        let range = |f: &str, v: f64, lo: f64, hi: f64| -> Result<()> {
            if !v.is_finite() || v < lo || v > hi {
                return bad(f, format!("{v} is not in [{lo}, {hi}]"));
            }
            Ok(())
        };
        let positive = |f: &str, v: f64| -> Result<()> {
            if !v.is_finite() || v <= 0.0 {
                return bad(f, format!("{v} must be a positive finite number"));
            }
            Ok(())
        };
        let o = &self.optim;
        if !matches!(o.optimizer.as_str(), "adamw" | "sgd") {
            return bad(
                "optim.optimizer",
                format!("\"{}\" is not adamw or sgd", o.optimizer),
            );
        }
        if !matches!(o.schedule.as_str(), "cosine" | "constant" | "poly") {
            return bad(
                "optim.schedule",
                format!("\"{}\" is not cosine, constant or poly", o.schedule),
            );
        }
        positive("optim.lr", o.lr)?;
        range("optim.lr", o.lr, 0.0, 10.0)?;
        range("optim.min_lr", o.min_lr, 0.0, o.lr)?;
        positive("optim.power", o.power)?;
        range("optim.weight_decay", o.weight_decay, 0.0, 10.0)?;
        range("optim.beta1", o.beta1 as f64, 0.0, 0.999_999)?;
        range("optim.beta2", o.beta2 as f64, 0.0, 0.999_999_9)?;
        positive("optim.eps", o.eps as f64)?;
        range("optim.eps", o.eps as f64, 0.0, 1.0)?;
        range("optim.momentum", o.momentum, 0.0, 0.999_999)?;
        range("optim.grad_clip", o.grad_clip as f64, 0.0, f64::MAX)?;
        for (k, g) in o.groups.iter().enumerate() {
            let f = |x: &str| format!("optim.groups[{k}].{x}");
            if g.prefix.is_empty() {
                return bad(&f("prefix"), "must name a parameter-path prefix".into());
            }
            range(&f("lr_scale"), g.lr_scale, 0.0, 1e3)?;
            if let Some(wd) = g.weight_decay {
                range(&f("weight_decay"), wd, 0.0, 10.0)?;
            }
        }
        if o.steps == 0 || o.steps > 1_000_000_000 {
            return bad("optim.steps", format!("{} is not in 1..=1e9", o.steps));
        }
        if o.warmup_steps > o.steps {
            return bad("optim.warmup_steps", "exceeds optim.steps".into());
        }
        if o.accumulate == 0 {
            return bad("optim.accumulate", "must be at least 1".into());
        }
        if self.distributed.world_size > 1 << 16 {
            return bad(
                "distributed.world_size",
                format!("{} is more than 65536", self.distributed.world_size),
            );
        }
        if self.distributed.devices > 1024 {
            return bad(
                "distributed.devices",
                format!("{} is more than 1024", self.distributed.devices),
            );
        }
        // Automatic devices (0) are chosen to divide the batch; check the rest with one.
        let ranks = self.distributed.devices.max(1) * self.distributed.world_size;
        if ranks == 0 {
            return bad("distributed.world_size", "must be positive".into());
        }
        let d = &self.data;
        let per = d.batch_size / ranks.max(1);
        if d.batch_size == 0
            || d.batch_size > 1 << 20
            || !d.batch_size.is_multiple_of(ranks)
            || !per.is_multiple_of(o.accumulate)
        {
            return bad(
                "data.batch_size",
                "must be in 1..=1048576 and divisible by devices × world_size × accumulate".into(),
            );
        }
        if d.workers > 256 {
            return bad("data.workers", format!("{} is more than 256", d.workers));
        }
        range("data.max_skip_fraction", d.max_skip_fraction, 0.0, 1.0)?;
        d.augment
            .validate()
            .map_err(|e| TrainError::Config(format!("`data.augment`: {e}")))?;
        d.shapes
            .validate()
            .map_err(|e| TrainError::Config(format!("`data.shapes`: {e}")))?;
        if d.shapes.image_size > 4096 {
            return bad(
                "data.shapes.image_size",
                format!("{} is more than 4096", d.shapes.image_size),
            );
        }
        let ctx = self.tokenizer.context_length;
        if !(2..=8192).contains(&ctx) {
            return bad(
                "tokenizer.context_length",
                format!("{ctx} is not in 2..=8192"),
            );
        }
        let m = &self.model;
        if m.init.is_some() && m.init_from.is_some() {
            return bad(
                "model.init_from",
                "set together with `model.init`: start from one or the other".into(),
            );
        }
        if m.teacher.is_some() && m.teacher_from.is_some() {
            return bad(
                "model.teacher_from",
                "set together with `model.teacher`: name the teacher one way".into(),
            );
        }
        if m.preset == "shapes-tiny" && m.config.is_none() && m.init.is_none() {
            for (f, v) in [
                ("model.width", m.width),
                ("model.layers", m.layers),
                ("model.heads", m.heads),
                ("model.embed_dim", m.embed_dim),
                ("model.patch_size", m.patch_size),
            ] {
                if v == 0 || v > 65536 {
                    return bad(f, format!("{v} is not in 1..=65536"));
                }
            }
            if !m.width.is_multiple_of(m.heads) {
                return bad(
                    "model.heads",
                    format!("{} heads do not divide width {}", m.heads, m.width),
                );
            }
        }
        if m.image_size > 4096 {
            return bad(
                "model.image_size",
                format!("{} is more than 4096", m.image_size),
            );
        }
        if !matches!(self.precision.mode.as_str(), "f32" | "bf16" | "f16") {
            return bad("precision.mode", "expected f32, bf16 or f16".into());
        }
        if let Some(t) = self.eval.templates.iter().find(|t| !t.contains("{}")) {
            return bad(
                "eval.templates",
                format!("\"{t}\" has no {{}} for the class name"),
            );
        }
        if self.eval.templates.is_empty() {
            return bad("eval.templates", "needs at least one template".into());
        }
        if self.checkpoint.keep_last == 0 {
            return bad("checkpoint.keep_last", "must be at least 1".into());
        }
        if self.distributed.world_size > 1 && self.distributed.coordinator.is_empty() {
            return bad(
                "distributed.coordinator",
                "a multi-node run needs the coordinator's HOST:PORT".into(),
            );
        }
        range(
            "distributed.timeout_s",
            self.distributed.timeout_s,
            1.0,
            86_400.0,
        )?;
        if self.distributed.rank >= self.distributed.world_size {
            return bad("distributed.rank", "must be below world_size".into());
        }
        if o.lock_image && o.lock_text {
            return bad(
                "optim.lock_text",
                "locking both towers leaves nothing to train".into(),
            );
        }
        if self.method.kind.is_empty() {
            return bad(
                "method.kind",
                "names the training method (clip, siglip, filip, ...)".into(),
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
    fn every_number_is_checked_and_the_message_names_the_field() {
        for (set, field) in [
            ("optim.min_lr=nan", "optim.min_lr"),
            ("optim.beta1=5", "optim.beta1"),
            ("optim.eps=-1", "optim.eps"),
            ("optim.lr=inf", "optim.lr"),
            ("optim.lr=1e30", "optim.lr"),
            ("optim.weight_decay=nan", "optim.weight_decay"),
            ("optim.grad_clip=nan", "optim.grad_clip"),
            ("optim.momentum=1.5", "optim.momentum"),
            ("optim.power=0", "optim.power"),
            ("optim.optimizer=\"adam\"", "optim.optimizer"),
            ("optim.schedule=\"linear\"", "optim.schedule"),
            ("optim.min_lr=0.01", "optim.min_lr"),
            ("data.max_skip_fraction=2", "data.max_skip_fraction"),
            (
                "data.augment.hflip=nan",
                "`data.augment`: invalid config field `hflip`",
            ),
            ("data.augment.blur_sigma=[2.0, 0.5]", "field `blur_sigma`"),
            ("data.augment.scale=[0.9, 0.1]", "data.augment"),
            ("data.batch_size=0", "data.batch_size"),
            ("data.workers=100000", "data.workers"),
            ("data.shapes.image_size=100000", "data.shapes.image_size"),
            ("tokenizer.context_length=0", "tokenizer.context_length"),
            (
                "tokenizer.context_length=100000",
                "tokenizer.context_length",
            ),
            ("model.heads=3", "model.heads"),
            ("model.width=0", "model.width"),
            ("eval.templates=[\"no placeholder\"]", "eval.templates"),
            ("checkpoint.keep_last=0", "checkpoint.keep_last"),
            ("method.kind=\"\"", "method.kind"),
        ] {
            let e = TrainConfig::load(None, &[set.to_string()])
                .err()
                .unwrap_or_else(|| panic!("{set} was accepted"))
                .to_string();
            assert!(e.contains(field), "{set}: {e}");
        }
        let e = TrainConfig::load(
            None,
            &["optim.groups=[{prefix = \"text_model.\", lr_scale = -1.0}]".into()],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("optim.groups[0].lr_scale"), "{e}");
    }

    #[test]
    fn method_tables_belong_to_their_method() {
        let c = TrainConfig::load(
            None,
            &[
                "method.kind=\"filip\"".into(),
                "method.filip.clip_weight=0.5".into(),
            ],
        )
        .unwrap();
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct F {
            clip_weight: f64,
        }
        assert_eq!(c.method.parse::<F>("filip").unwrap().clip_weight, 0.5);
        // Another method's table, or an unknown key in the method's own, is an error naming it.
        let e = c.method.parse::<F>("clip").unwrap_err().to_string();
        assert!(e.contains("method.filip") && e.contains("clip"), "{e}");
        let c = TrainConfig::load(
            None,
            &[
                "method.kind=\"filip\"".into(),
                "method.filip.clip_wieght=0.5".into(),
            ],
        )
        .unwrap();
        let e = c.method.parse::<F>("filip").unwrap_err().to_string();
        assert!(e.contains("filip") && e.contains("clip_wieght"), "{e}");
    }

    #[test]
    fn overrides_parse_toml_values() {
        let c = TrainConfig::load(
            None,
            &[
                "optim.lr=3e-4".into(),
                "method.kind=siglip".into(),
                "data.shapes.image_size=32".into(),
                "eval.templates=[\"a {}\"]".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.optim.lr, 3e-4);
        assert_eq!(c.method.kind, "siglip");
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

    #[test]
    fn automatic_devices_divide_the_batch_and_respect_explicit_choices() {
        let c = |sets: &[&str]| {
            TrainConfig::load(
                None,
                &sets.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
            .unwrap()
        };
        let d = c(&[]);
        assert_eq!(d.distributed.devices, 0, "automatic by default");
        assert_eq!(d.auto_devices(2), 2);
        assert_eq!(d.auto_devices(1), 1);
        assert_eq!(d.auto_devices(0), 1);
        // At most 8, and a divisor of the batch with its accumulation: 128 on 12 cores → 8;
        // batch 96 with accumulate 4 on 7 cores → 6 (96 = 6 × 4 × 4).
        assert_eq!(d.auto_devices(12), 8);
        assert_eq!(
            c(&["data.batch_size=96", "optim.accumulate=4"]).auto_devices(7),
            6
        );
        // An odd batch on 2 cores: 1. An explicit number is kept.
        assert_eq!(c(&["data.batch_size=33"]).auto_devices(2), 1);
        assert_eq!(
            c(&["distributed.devices=3", "data.batch_size=33"]).auto_devices(8),
            3
        );
        // A multi-node process takes one device unless told.
        let m = c(&[
            "distributed.world_size=2",
            "distributed.coordinator=\"127.0.0.1:1\"",
        ]);
        assert_eq!(m.auto_devices(8), 1);
        let e = TrainConfig::load(None, &["distributed.devices=5000".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("distributed.devices"), "{e}");
    }
}
