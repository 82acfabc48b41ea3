//! Building the model and tokenizer a configuration asks for.

use std::sync::Arc;

use burn::tensor::backend::Backend;
use vlp_align::loss::LossKind;
use vlp_align::pretrained::{load_pretrained, read_hf_config, read_open_clip_config};
use vlp_align::{ClipConfig, ClipModel, ModelKind};
use vlp_core::nn::Activation;
use vlp_data::preprocess::ImagePipeline;
use vlp_text::tokenizer::word_tokenizer;
use vlp_text::{
    ClipTokenizer, HfTokenizer, Padding, TextPooling, TextTransformerConfig, Tokenizer,
};
use vlp_vision::VitConfig;

use crate::config::TrainConfig;
use crate::error::{Result, TrainError};

/// A tokenizer plus what the text tower must know about it.
pub struct BuiltTokenizer {
    /// The tokenizer.
    pub tokenizer: Arc<dyn Tokenizer>,
    /// Its `tokenizer.json` form, written next to exported models.
    pub hf: Option<HfTokenizer>,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Where the text tower pools.
    pub pooling: TextPooling,
}

/// Builds the tokenizer of `[tokenizer]`.
pub fn build_tokenizer(cfg: &TrainConfig) -> Result<BuiltTokenizer> {
    let ctx = cfg.tokenizer.context_length;
    if ctx < 2 {
        return Err(TrainError::Config(
            "`tokenizer.context_length` must be at least 2".into(),
        ));
    }
    Ok(match cfg.tokenizer.kind.as_str() {
        "words" => {
            let tok = word_tokenizer(&vlp_data::shapes::vocabulary(), ctx);
            let vocab_size = tok.vocab_size();
            // The end token is the largest id: argmax pooling = first end token.
            BuiltTokenizer {
                tokenizer: Arc::new(tok.clone()),
                hf: Some(tok),
                vocab_size,
                pooling: TextPooling::ArgmaxId,
            }
        }
        "clip" => BuiltTokenizer {
            tokenizer: Arc::new(ClipTokenizer::new(ctx, Padding::Zero)),
            hf: None,
            vocab_size: 49408,
            pooling: TextPooling::ArgmaxId,
        },
        path => {
            let tok = HfTokenizer::from_file(path, Some(ctx))?;
            let vocab_size = tok.vocab_size();
            let eos = ["<|endoftext|>", "</s>", "[SEP]"]
                .iter()
                .find_map(|t| tok.token_to_id(t));
            let pooling = eos
                .map(|e| TextPooling::FirstEos { eos_token_id: e })
                .unwrap_or(TextPooling::Last);
            BuiltTokenizer {
                tokenizer: Arc::new(tok.clone()),
                hf: Some(tok),
                vocab_size,
                pooling,
            }
        }
    })
}

/// The architecture of `[model]` for a tokenizer.
pub fn model_config(cfg: &TrainConfig, tok: &BuiltTokenizer) -> Result<ClipConfig> {
    let m = &cfg.model;
    let siglip_loss = m.loss == LossKind::Siglip;
    let mut config = if let Some(path) = &m.config {
        // transformers names its file config.json; open_clip uses open_clip_config.json or <model>.json.
        if std::path::Path::new(path)
            .file_name()
            .is_some_and(|f| f != "config.json")
        {
            read_open_clip_config(path)?.0
        } else {
            read_hf_config(path)?
        }
    } else if m.preset == "shapes-tiny" {
        let image = if m.image_size > 0 {
            m.image_size
        } else {
            cfg.data.shapes.image_size
        };
        let act = Activation::Gelu;
        let vision = VitConfig::new(m.width, m.layers, m.heads, 4 * m.width)
            .with_image_size(image)
            .with_patch_size(m.patch_size)
            .with_hidden_act(act);
        let text =
            TextTransformerConfig::new(tok.vocab_size, m.width, m.layers, m.heads, 4 * m.width)
                .with_max_position_embeddings(cfg.tokenizer.context_length)
                .with_hidden_act(act)
                .with_pooling(tok.pooling);
        ClipConfig::new(ModelKind::Clip, vision, text).with_projection_dim(Some(m.embed_dim))
    } else {
        ClipConfig::preset(&m.preset).ok_or_else(|| {
            TrainError::Config(format!(
                "`model.preset` = \"{}\" is unknown (shapes-tiny, {})",
                m.preset,
                ClipConfig::PRESETS.join(", ")
            ))
        })?
    };
    if m.preset != "shapes-tiny" || m.config.is_some() {
        if m.image_size > 0 {
            config.vision.image_size = m.image_size;
        }
        if config.text.vocab_size != tok.vocab_size {
            return Err(TrainError::Config(format!(
                "the model's vocabulary has {} ids but tokenizer `{}` has {}: pick a matching `tokenizer.kind`",
                config.text.vocab_size, cfg.tokenizer.kind, tok.vocab_size
            )));
        }
        config.text.max_position_embeddings = config
            .text
            .max_position_embeddings
            .max(cfg.tokenizer.context_length);
    }
    // The sigmoid loss needs a bias; SigLIP initialises scale 10 and bias -10.
    if siglip_loss && config.logit_bias_init.is_none() {
        config.logit_bias_init = Some(-10.0);
        config.logit_scale_init = 10f64.ln();
    }
    config
        .validate()
        .map_err(|e| TrainError::Config(e.to_string()))?;
    Ok(config)
}

/// The model to train: fresh from `config`, or loaded from `[model] init`.
pub fn build_model<B: Backend>(
    cfg: &TrainConfig,
    config: &ClipConfig,
    device: &B::Device,
) -> Result<(ClipModel<B>, ClipConfig)> {
    match &cfg.model.init {
        Some(dir) => {
            let p = load_pretrained::<B>(dir, device)?;
            Ok((p.model, p.config))
        }
        None => Ok((config.init::<B>(device), config.clone())),
    }
}

/// The image pipeline feeding the model: CLIP's at the model's input size.
pub fn pipeline(config: &ClipConfig) -> ImagePipeline {
    match config.kind {
        ModelKind::Clip => ImagePipeline::clip(config.vision.image_size),
        ModelKind::Siglip => ImagePipeline::siglip(config.vision.image_size),
    }
}
