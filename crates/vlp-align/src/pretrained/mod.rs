//! Loading the checkpoints users bring (Hugging Face and open_clip), and saving ours in
//! transformers' layout.

mod hf_config;
mod json;
mod layout;
mod open_clip_config;
mod preprocess;

pub use layout::{Layout, hf_key, open_clip_key};
pub use preprocess::to_hf_json as preprocessor_json;
pub use vlp_core::preprocess::ImagePipeline;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use serde_json::{Map, Value};
use vlp_core::checkpoint::{
    HostTensor, StoredDType, TensorFile, collect_params, load_params, param_infos,
    write_safetensors,
};

use crate::error::{AlignError, Result};
use crate::model::{ClipConfig, ClipModel, ModelKind};

/// A model loaded from a directory, with what came with it.
#[derive(Debug)]
pub struct Pretrained<B: Backend> {
    /// The model, weights loaded.
    pub model: ClipModel<B>,
    /// Its configuration.
    pub config: ClipConfig,
    /// The key layout the weights were stored in.
    pub layout: Layout,
    /// The image pipeline the checkpoint expects.
    pub preprocess: ImagePipeline,
    /// The weights file that was read.
    pub weights: PathBuf,
}

fn read_json(path: &Path) -> Result<Map<String, Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| AlignError::Io {
        path: path.into(),
        source: e,
    })?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(AlignError::Config {
            path: path.into(),
            reason: "not a JSON object".into(),
        }),
        Err(e) => Err(AlignError::Config {
            path: path.into(),
            reason: format!("invalid JSON: {e}"),
        }),
    }
}

/// Reads a transformers `config.json`.
pub fn read_hf_config(path: impl AsRef<Path>) -> Result<ClipConfig> {
    let path = path.as_ref();
    hf_config::parse(&read_json(path)?).map_err(|reason| AlignError::Config {
        path: path.into(),
        reason,
    })
}

/// Reads an `open_clip_config.json` (or a bare open_clip model config).
pub fn read_open_clip_config(
    path: impl AsRef<Path>,
) -> Result<(ClipConfig, Option<ImagePipeline>)> {
    let path = path.as_ref();
    open_clip_config::parse(&read_json(path)?).map_err(|reason| AlignError::Config {
        path: path.into(),
        reason,
    })
}

/// Loads weights from `file` into a model built from `config`, detecting the key layout.
///
/// The model is built in the layout of the file (fused attention for open_clip), so nothing is
/// split or concatenated. Every missing, unused or mis-shaped key is reported in one error.
pub fn load_weights<B: Backend>(
    config: &ClipConfig,
    file: impl AsRef<Path>,
    device: &B::Device,
) -> Result<(ClipModel<B>, Layout)> {
    let file = TensorFile::open(file)?;
    let layout = Layout::detect(file.keys()).ok_or_else(|| vlp_core::CoreError::Checkpoint {
        path: file.path().into(),
        reason: "keys match neither the transformers layout (vision_model.*, text_model.*) nor open_clip's (visual.*, transformer.*)".into(),
    })?;
    let mut config = config.clone();
    config.vision.fused_qkv = layout.fused_qkv();
    config.text.fused_qkv = layout.fused_qkv();
    let model = config.init::<B>(device);
    let model = load_params(model, &file, |p| layout.source(p), |k| layout.is_buffer(k))?;
    Ok((model, layout))
}

/// Loads a model directory as the hubs lay it out:
/// - transformers: `config.json` + `model.safetensors` (or `pytorch_model.bin`), optionally
///   `preprocessor_config.json`;
/// - open_clip: `open_clip_config.json` + `open_clip_model.safetensors` (or
///   `open_clip_pytorch_model.bin`).
pub fn load_pretrained<B: Backend>(
    dir: impl AsRef<Path>,
    device: &B::Device,
) -> Result<Pretrained<B>> {
    let (config, preprocess, weights) = read_pretrained_config(dir)?;
    let (model, layout) = load_weights::<B>(&config, &weights, device)?;
    Ok(Pretrained {
        model,
        config,
        layout,
        preprocess,
        weights,
    })
}

/// What [`load_pretrained`] reads before the weights: the architecture, the image pipeline and
/// the weights file of a model directory.
pub fn read_pretrained_config(
    dir: impl AsRef<Path>,
) -> Result<(ClipConfig, ImagePipeline, PathBuf)> {
    let dir = dir.as_ref();
    let first = |names: &[&str]| names.iter().map(|n| dir.join(n)).find(|p| p.is_file());
    let missing = |what: &str| AlignError::ModelDir {
        path: dir.into(),
        reason: what.into(),
    };
    let (config, preprocess, weights) = if let Some(cfg) = first(&["open_clip_config.json"]) {
        let (config, pre) = read_open_clip_config(&cfg)?;
        let weights = first(&["open_clip_model.safetensors", "open_clip_pytorch_model.bin", "model.safetensors"])
            .ok_or_else(|| missing("open_clip_config.json found but no open_clip_model.safetensors or open_clip_pytorch_model.bin"))?;
        let pre = pre.unwrap_or_else(|| ImagePipeline::clip(config.vision.image_size));
        (config, pre, weights)
    } else if let Some(cfg) = first(&["config.json"]) {
        let config = read_hf_config(&cfg)?;
        let pre = match first(&["preprocessor_config.json"]) {
            Some(p) => read_preprocessor_config(&p, config.vision.image_size)?,
            None if config.kind == ModelKind::Siglip => {
                ImagePipeline::siglip(config.vision.image_size)
            }
            None => ImagePipeline::clip(config.vision.image_size),
        };
        let weights = first(&["model.safetensors", "pytorch_model.bin"]).ok_or_else(|| {
            missing("config.json found but no model.safetensors or pytorch_model.bin")
        })?;
        (config, pre, weights)
    } else {
        return Err(missing(
            "no config.json (transformers) or open_clip_config.json (open_clip)",
        ));
    };
    // A pipeline that does not produce the model's input size would fail inside the ViT or,
    // worse, run on the wrong pixels.
    preprocess
        .check_model_size(config.vision.image_size)
        .map_err(|e| AlignError::ModelDir {
            path: dir.into(),
            reason: format!("preprocessing config: {e}"),
        })?;
    Ok((config, preprocess, weights))
}

/// Key and shape of every tensor [`save_hf`] writes for `config`: transformers' state dict.
/// Computed from the lazily-initialised module, so full-size layouts cost no weight memory.
pub fn hf_state_dict_layout<B: Backend>(
    config: &ClipConfig,
    device: &B::Device,
) -> BTreeMap<String, Vec<usize>> {
    let model = config.init::<B>(device);
    let mut out = BTreeMap::new();
    for info in param_infos(&model) {
        for (key, shape) in hf_keys(config.kind, &info.path, &info.shape) {
            out.insert(key, shape);
        }
    }
    out
}

/// transformers keys for one of our parameters: fused projections split into q/k/v, and CLIP's
/// scalar `logit_scale` written 0-dimensional as transformers stores it.
fn hf_keys(kind: ModelKind, path: &str, shape: &[usize]) -> Vec<(String, Vec<usize>)> {
    let fused = path
        .strip_suffix("in_proj.weight")
        .or_else(|| path.strip_suffix("in_proj.bias"));
    if let Some(prefix) = fused.filter(|p| !p.ends_with("head.attention.")) {
        let leaf = if path.ends_with("weight") {
            "weight"
        } else {
            "bias"
        };
        let mut s = shape.to_vec();
        s[0] /= 3;
        return ["q_proj", "k_proj", "v_proj"]
            .iter()
            .map(|p| (format!("{prefix}{p}.{leaf}"), s.clone()))
            .collect();
    }
    if path == "logit_scale" && kind == ModelKind::Clip {
        return vec![(path.to_string(), vec![])];
    }
    vec![(layout::hf_key(path), shape.to_vec())]
}

/// Reads transformers' `preprocessor_config.json` at `path`; `image_size` fills what it leaves
/// out.
pub fn read_preprocessor_config(path: &Path, image_size: usize) -> Result<ImagePipeline> {
    preprocess::from_hf(&json::Fields::new(&read_json(path)?, ""), image_size).map_err(|reason| {
        AlignError::Config {
            path: path.to_path_buf(),
            reason,
        }
    })
}

/// Writes transformers' `preprocessor_config.json` for `pipeline` into `dir`.
pub fn save_preprocessor_config(pipeline: &ImagePipeline, dir: impl AsRef<Path>) -> Result<()> {
    let path = dir.as_ref().join("preprocessor_config.json");
    let text = serde_json::to_string_pretty(&preprocess::to_hf_json(pipeline))
        .expect("JSON value serialises");
    std::fs::write(&path, text).map_err(|e| AlignError::Io { path, source: e })
}

/// Saves `model` as a transformers checkpoint: `config.json` and `model.safetensors` (weights
/// stored in `dtype`) in `dir`, loadable by `CLIPModel.from_pretrained` /
/// `SiglipModel.from_pretrained` and by vlp.
pub fn save_hf<B: Backend>(
    model: &ClipModel<B>,
    config: &ClipConfig,
    dir: impl AsRef<Path>,
    dtype: StoredDType,
) -> Result<()> {
    let dir = dir.as_ref();
    std::fs::create_dir_all(dir).map_err(|e| AlignError::Io {
        path: dir.into(),
        source: e,
    })?;
    let json = hf_config::write(config).map_err(|reason| AlignError::Config {
        path: dir.join("config.json"),
        reason,
    })?;
    let mut tensors = BTreeMap::new();
    for (path, t) in collect_params(model) {
        let keys = hf_keys(config.kind, &path, &t.shape);
        if keys.len() == 3 {
            let n = t.shape[0] / 3;
            for (i, (key, _)) in keys.into_iter().enumerate() {
                tensors.insert(key, t.rows(i * n, n));
            }
        } else {
            let (key, shape) = keys.into_iter().next().expect("one key");
            tensors.insert(key, HostTensor::new(shape, t.data));
        }
    }
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    write_safetensors(dir.join("model.safetensors"), &tensors, dtype, Some(meta))?;
    let cfg_path = dir.join("config.json");
    let text = serde_json::to_string_pretty(&json).expect("JSON value serialises");
    std::fs::write(&cfg_path, text).map_err(|e| AlignError::Io {
        path: cfg_path,
        source: e,
    })
}
