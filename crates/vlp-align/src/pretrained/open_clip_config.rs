//! open_clip's `open_clip_config.json` (and its bare `model_configs/*.json` form).
//!
//! Absent fields take open_clip's dataclass defaults (`CLIPVisionCfg`, `CLIPTextCfg`). Options
//! that change the architecture in ways vlp does not implement (timm or HF towers, LayerScale,
//! attentional pooling, class-token text pooling, ResNet towers) are rejected by name rather than
//! silently ignored.

use serde_json::{Map, Value};
use vlp_core::nn::Activation;
use vlp_text::{TextPooling, TextTransformerConfig};
use vlp_vision::VitConfig;

use super::json::{FieldResult, Fields};
use super::preprocess;
use crate::model::{ClipConfig, ModelKind};
use vlp_core::preprocess::ImagePipeline;

fn is_false(v: &Value) -> bool {
    v == &Value::Bool(false)
}

/// Builds the model config and, when `preprocess_cfg` is present, the image pipeline.
pub fn parse(root: &Map<String, Value>) -> FieldResult<(ClipConfig, Option<ImagePipeline>)> {
    let r = Fields::new(root, "");
    // Hub repos wrap the model under `model_cfg`; open_clip's own model_configs/*.json do not.
    let m = if r.get("model_cfg").is_some() {
        r.object("model_cfg")?
    } else {
        Fields::new(root, "")
    };
    let embed_dim = m.get("embed_dim").ok_or_else(|| {
        format!(
            "missing field `{}embed_dim`",
            if m.prefix.is_empty() {
                ""
            } else {
                "model_cfg."
            }
        )
    })?;
    let embed_dim = embed_dim
        .as_u64()
        .ok_or_else(|| format!("field `embed_dim` must be an integer, got {embed_dim}"))?
        as usize;
    let act = if m.bool_or("quick_gelu", false)? {
        Activation::QuickGelu
    } else {
        Activation::Gelu
    };
    for key in ["custom_text", "cast_dtype"] {
        m.reject_unless(
            key,
            |v| is_false(v) || v.is_string(),
            "only the plain CLIP text tower",
        )?;
    }

    let v = m.object("vision_cfg")?;
    if v.get("layers").is_some_and(Value::is_array) {
        return Err("field `vision_cfg.layers` is a list: ResNet towers are not supported".into());
    }
    v.reject_unless("timm_model_name", |_| false, "timm towers")?;
    v.reject_unless("ls_init_value", |_| false, "LayerScale")?;
    v.reject_unless("attentional_pool", is_false, "attentional pooling")?;
    v.reject_unless("no_ln_pre", is_false, "ViTs without ln_pre")?;
    v.reject_unless("pool_type", |p| p == "tok", "class-token pooling only")?;
    v.reject_unless(
        "pos_embed_type",
        |p| p == "learnable",
        "learned position embeddings only",
    )?;
    v.reject_unless(
        "norm_kwargs",
        |p| p.as_object().is_some_and(Map::is_empty),
        "default LayerNorm only",
    )?;
    let width = v.usize_or("width", 768)?;
    let head_width = v.usize_or("head_width", 64)?;
    let vision = VitConfig::new(
        width,
        v.usize_or("layers", 12)?,
        width / head_width.max(1),
        (width as f64 * v.f64_or("mlp_ratio", 4.0)?) as usize,
    )
    .with_image_size(v.square_or("image_size", 224)?)
    .with_patch_size(v.square_or("patch_size", 16)?)
    .with_hidden_act(act)
    .with_fused_qkv(true);

    let t = m.object("text_cfg")?;
    t.reject_unless("hf_model_name", |_| false, "Hugging Face text towers")?;
    t.reject_unless("ls_init_value", |_| false, "LayerScale")?;
    t.reject_unless("embed_cls", is_false, "class-token text pooling")?;
    t.reject_unless("proj_bias", is_false, "biased text projections")?;
    t.reject_unless("proj_type", |p| p == "linear", "linear text projections")?;
    let pooling = match t.str_or("pool_type", "argmax")? {
        "argmax" => TextPooling::ArgmaxId,
        "last" => TextPooling::Last,
        "eos" => TextPooling::FirstEos {
            eos_token_id: 49407,
        },
        other => {
            return Err(format!(
                "field `text_cfg.pool_type` = \"{other}\" is not supported (argmax, last, eos)"
            ));
        }
    };
    let t_width = t.usize_or("width", 512)?;
    let text = TextTransformerConfig::new(
        t.usize_or("vocab_size", 49408)?,
        t_width,
        t.usize_or("layers", 12)?,
        t.usize_or("heads", 8)?,
        (t_width as f64 * t.f64_or("mlp_ratio", 4.0)?) as usize,
    )
    .with_max_position_embeddings(t.usize_or("context_length", 77)?)
    .with_hidden_act(act)
    .with_causal(!t.bool_or("no_causal_mask", false)?)
    .with_pooling(pooling)
    .with_fused_qkv(true);

    let config =
        ClipConfig::new(ModelKind::Clip, vision, text).with_projection_dim(Some(embed_dim));
    config.validate().map_err(|e| e.to_string())?;
    let preprocess = match r.get("preprocess_cfg") {
        Some(_) => Some(preprocess::from_open_clip(
            &r.object("preprocess_cfg")?,
            config.vision.image_size,
        )?),
        None => None,
    };
    Ok((config, preprocess))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_bare_model_config_with_defaults() {
        let (c, p) = parse(
            json!({"embed_dim": 512, "vision_cfg": {"patch_size": 32}, "text_cfg": {}})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(c.vision.num_attention_heads, 12);
        assert_eq!(c.vision.intermediate_size, 3072);
        assert_eq!(c.text.pooling, TextPooling::ArgmaxId);
        assert_eq!(c.vision.hidden_act, Activation::Gelu);
        assert!(p.is_none());
    }

    #[test]
    fn rejects_what_it_cannot_build_by_name() {
        for (cfg, field) in [
            (
                json!({"embed_dim": 8, "vision_cfg": {"timm_model_name": "vit_base"}}),
                "vision_cfg.timm_model_name",
            ),
            (
                json!({"embed_dim": 8, "vision_cfg": {"layers": [3, 4, 6, 3]}}),
                "vision_cfg.layers",
            ),
            (
                json!({"embed_dim": 8, "text_cfg": {"hf_model_name": "xlm-roberta"}}),
                "text_cfg.hf_model_name",
            ),
            (
                json!({"model_cfg": {"vision_cfg": {}}}),
                "model_cfg.embed_dim",
            ),
        ] {
            let e = parse(cfg.as_object().unwrap()).unwrap_err();
            assert!(e.contains(field), "{e}");
        }
    }
}
