//! Hugging Face `config.json` for `CLIPModel` and `SiglipModel`, read and written.
//!
//! transformers saves only the fields that differ from its class defaults (hub configs often
//! omit `num_hidden_layers`, for instance), so absent fields take transformers' defaults for the
//! model type; a config that loads in transformers loads here and builds the same model. The
//! one field without a default is `model_type`.

use serde_json::{Map, Value, json};
use vlp_core::nn::Activation;
use vlp_text::{TextPooling, TextTransformerConfig};
use vlp_vision::{VitConfig, VitLayout};

use super::json::{FieldResult, Fields};
use crate::model::{ClipConfig, ModelKind};

struct Defaults {
    text_vocab: usize,
    text_hidden: usize,
    text_mlp: usize,
    text_layers: usize,
    text_heads: usize,
    text_positions: usize,
    vision_hidden: usize,
    vision_mlp: usize,
    vision_heads: usize,
    patch: usize,
    act: &'static str,
    eps: f64,
}

const CLIP: Defaults = Defaults {
    text_vocab: 49408,
    text_hidden: 512,
    text_mlp: 2048,
    text_layers: 12,
    text_heads: 8,
    text_positions: 77,
    vision_hidden: 768,
    vision_mlp: 3072,
    vision_heads: 12,
    patch: 32,
    act: "quick_gelu",
    eps: 1e-5,
};

const SIGLIP: Defaults = Defaults {
    text_vocab: 32000,
    text_hidden: 768,
    text_mlp: 3072,
    text_layers: 12,
    text_heads: 12,
    text_positions: 64,
    vision_hidden: 768,
    vision_mlp: 3072,
    vision_heads: 12,
    patch: 16,
    act: "gelu_pytorch_tanh",
    eps: 1e-6,
};

fn activation(f: &Fields, default: &str) -> FieldResult<Activation> {
    let name = f.str_or("hidden_act", default)?;
    Activation::from_hf_name(name).ok_or_else(|| {
        format!("field `{}.hidden_act` = \"{name}\" is not supported (quick_gelu, gelu, gelu_pytorch_tanh)", f.prefix)
    })
}

/// Merges a legacy `*_config_dict` (transformers < 4.25) over the `*_config` object.
fn sub_config(root: &Fields, key: &str) -> FieldResult<Map<String, Value>> {
    let mut m = root.object(key)?.obj.clone();
    if let Value::Object(legacy) = root.obj.get(&format!("{key}_dict")).unwrap_or(&Value::Null) {
        m.extend(legacy.clone());
    }
    Ok(m)
}

/// Builds a [`ClipConfig`] from the JSON of a transformers `config.json`.
pub fn parse(root: &Map<String, Value>) -> FieldResult<ClipConfig> {
    let r = Fields::new(root, "");
    let model_type = r
        .get("model_type")
        .and_then(Value::as_str)
        .ok_or("missing field `model_type` (expected \"clip\" or \"siglip\")")?;
    let (kind, d) = match model_type {
        "clip" => (ModelKind::Clip, &CLIP),
        "siglip" => (ModelKind::Siglip, &SIGLIP),
        other => {
            return Err(format!(
                "field `model_type` = \"{other}\" is not supported (expected \"clip\" or \"siglip\")"
            ));
        }
    };
    let (tm, vm) = (
        sub_config(&r, "text_config")?,
        sub_config(&r, "vision_config")?,
    );
    let (t, v) = (
        Fields::new(&tm, "text_config"),
        Fields::new(&vm, "vision_config"),
    );

    let eos = match t.get("eos_token_id") {
        Some(Value::Array(a)) => a.first().and_then(Value::as_u64).unwrap_or(49407),
        Some(x) => x.as_u64().ok_or_else(|| {
            format!("field `text_config.eos_token_id` must be an integer, got {x}")
        })?,
        None => 49407,
    } as u32;
    let text_hidden = t.usize_or("hidden_size", d.text_hidden)?;
    let mut text = TextTransformerConfig::new(
        t.usize_or("vocab_size", d.text_vocab)?,
        text_hidden,
        t.usize_or("num_hidden_layers", d.text_layers)?,
        t.usize_or("num_attention_heads", d.text_heads)?,
        t.usize_or("intermediate_size", d.text_mlp)?,
    )
    .with_max_position_embeddings(t.usize_or("max_position_embeddings", d.text_positions)?)
    .with_hidden_act(activation(&t, d.act)?)
    .with_layer_norm_eps(t.f64_or("layer_norm_eps", d.eps)?)
    .with_attention_dropout(t.f64_or("attention_dropout", 0.0)?);

    let mut vision = VitConfig::new(
        v.usize_or("hidden_size", d.vision_hidden)?,
        v.usize_or("num_hidden_layers", 12)?,
        v.usize_or("num_attention_heads", d.vision_heads)?,
        v.usize_or("intermediate_size", d.vision_mlp)?,
    )
    .with_image_size(v.square_or("image_size", 224)?)
    .with_patch_size(v.square_or("patch_size", d.patch)?)
    .with_num_channels(v.usize_or("num_channels", 3)?)
    .with_hidden_act(activation(&v, d.act)?)
    .with_layer_norm_eps(v.f64_or("layer_norm_eps", d.eps)?)
    .with_attention_dropout(v.f64_or("attention_dropout", 0.0)?);

    let config = match kind {
        ModelKind::Clip => {
            // transformers pools at argmax(id) when the config carries the pre-2023 eos id 2.
            let pooling = if eos == 2 {
                TextPooling::ArgmaxId
            } else {
                TextPooling::FirstEos { eos_token_id: eos }
            };
            text = text.with_pooling(pooling);
            ClipConfig::new(kind, vision, text)
                .with_projection_dim(Some(r.usize_or("projection_dim", 512)?))
                .with_logit_scale_init(r.f64_or("logit_scale_init_value", 2.6592)?)
        }
        ModelKind::Siglip => {
            if !v.bool_or("vision_use_head", true)? {
                return Err("field `vision_config.vision_use_head` = false is not supported (vlp pools with the head)".into());
            }
            vision = vision.with_layout(VitLayout::Siglip);
            let projection = t.usize_or("projection_size", text_hidden)?;
            text = text
                .with_causal(false)
                .with_pooling(TextPooling::Last)
                .with_projection_size(Some(projection));
            ClipConfig::new(kind, vision, text)
                .with_logit_scale_init(10f64.ln())
                .with_logit_bias_init(Some(-10.0))
        }
    };
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

/// The transformers `config.json` of `config`, or why transformers cannot express it.
pub fn write(config: &ClipConfig) -> FieldResult<Value> {
    let t = &config.text;
    let v = &config.vision;
    let mut text = json!({
        "vocab_size": t.vocab_size,
        "hidden_size": t.hidden_size,
        "intermediate_size": t.intermediate_size,
        "num_hidden_layers": t.num_hidden_layers,
        "num_attention_heads": t.num_attention_heads,
        "max_position_embeddings": t.max_position_embeddings,
        "hidden_act": t.hidden_act.hf_name(),
        "layer_norm_eps": t.layer_norm_eps,
        "attention_dropout": t.attention_dropout,
        "bos_token_id": 49406,
    });
    let mut vision = json!({
        "hidden_size": v.hidden_size,
        "intermediate_size": v.intermediate_size,
        "num_hidden_layers": v.num_hidden_layers,
        "num_attention_heads": v.num_attention_heads,
        "num_channels": v.num_channels,
        "image_size": v.image_size,
        "patch_size": v.patch_size,
        "hidden_act": v.hidden_act.hf_name(),
        "layer_norm_eps": v.layer_norm_eps,
        "attention_dropout": v.attention_dropout,
    });
    let (tm, vm) = (
        text.as_object_mut().expect("object"),
        vision.as_object_mut().expect("object"),
    );
    match config.kind {
        ModelKind::Clip => {
            if !t.causal {
                return Err("transformers' CLIP text model is always causal".into());
            }
            // With the end token as the largest id (CLIP's 49407, vlp's word vocabularies),
            // pooling at the argmax id and at the first end token agree.
            let eos = match t.pooling {
                TextPooling::FirstEos { eos_token_id } => eos_token_id,
                TextPooling::ArgmaxId => (t.vocab_size - 1) as u32,
                TextPooling::Last => {
                    return Err(
                        "transformers' CLIP text model cannot pool at the last position".into(),
                    );
                }
            };
            let proj = config.projection_dim.ok_or("CLIP needs projection_dim")?;
            tm.insert("model_type".into(), json!("clip_text_model"));
            tm.insert("eos_token_id".into(), json!(eos));
            tm.insert("pad_token_id".into(), json!(1));
            tm.insert("projection_dim".into(), json!(proj));
            vm.insert("model_type".into(), json!("clip_vision_model"));
            vm.insert("projection_dim".into(), json!(proj));
            Ok(json!({
                "architectures": ["CLIPModel"],
                "model_type": "clip",
                "projection_dim": proj,
                "logit_scale_init_value": config.logit_scale_init,
                "text_config": text,
                "vision_config": vision,
            }))
        }
        ModelKind::Siglip => {
            if t.causal || t.pooling != TextPooling::Last {
                return Err("transformers' SigLIP text model is bidirectional and pools at the last position".into());
            }
            tm.insert("model_type".into(), json!("siglip_text_model"));
            tm.insert("eos_token_id".into(), json!(49407));
            tm.insert("pad_token_id".into(), json!(1));
            tm.insert(
                "projection_size".into(),
                json!(t.projection_size.unwrap_or(t.hidden_size)),
            );
            vm.insert("model_type".into(), json!("siglip_vision_model"));
            vm.insert("vision_use_head".into(), json!(true));
            Ok(json!({
                "architectures": ["SiglipModel"],
                "model_type": "siglip",
                "text_config": text,
                "vision_config": vision,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn diff_serialised_hub_config_takes_transformers_defaults() {
        // google/siglip-base-patch16-224's config.json omits the layer counts and the text width.
        let c = parse(&obj(json!({
            "model_type": "siglip",
            "text_config": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "vocab_size": 32000},
            "vision_config": {"hidden_size": 768, "image_size": 224, "intermediate_size": 3072, "num_attention_heads": 12, "patch_size": 16},
            "some_future_field": 1
        })))
        .unwrap();
        assert_eq!(c.vision.num_hidden_layers, 12);
        assert_eq!(c.text.max_position_embeddings, 64);
        assert_eq!(c.text.projection_size, Some(768));
        assert_eq!(c.vision.hidden_act, Activation::GeluTanh);
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse(&obj(json!({"text_config": {}}))).unwrap_err();
        assert!(e.contains("model_type"), "{e}");
        let e = parse(&obj(
            json!({"model_type": "clip", "vision_config": {"hidden_size": "wide"}}),
        ))
        .unwrap_err();
        assert!(e.contains("vision_config.hidden_size"), "{e}");
        let e = parse(&obj(
            json!({"model_type": "clip", "text_config": {"hidden_act": "swish"}}),
        ))
        .unwrap_err();
        assert!(e.contains("text_config.hidden_act"), "{e}");
        let e = parse(&obj(
            json!({"model_type": "clip", "vision_config": {"patch_size": 10}}),
        ))
        .unwrap_err();
        assert!(e.contains("patch_size"), "{e}");
    }

    #[test]
    fn legacy_eos_id_pools_at_argmax() {
        let c = parse(&obj(
            json!({"model_type": "clip", "text_config": {"eos_token_id": 2}}),
        ))
        .unwrap();
        assert_eq!(c.text.pooling, TextPooling::ArgmaxId);
    }

    #[test]
    fn argmax_pooling_exports_the_largest_id_as_end_token() {
        let mut c = ClipConfig::vit_b_32();
        c.text.vocab_size = 59;
        c.text.pooling = TextPooling::ArgmaxId;
        let back = parse(write(&c).unwrap().as_object().unwrap()).unwrap();
        assert_eq!(
            back.text.pooling,
            TextPooling::FirstEos { eos_token_id: 58 }
        );
    }

    #[test]
    fn write_then_parse_is_the_same_config() {
        for c in [
            ClipConfig::vit_b_32(),
            ClipConfig::vit_l_14_336(),
            ClipConfig::siglip_b_16_224(),
        ] {
            let back = parse(write(&c).unwrap().as_object().unwrap()).unwrap();
            assert_eq!(format!("{back}"), format!("{c}"));
        }
    }
}
