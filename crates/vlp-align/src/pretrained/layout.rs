//! Checkpoint key layouts: how our parameter paths map onto Hugging Face and open_clip keys.
//!
//! Our modules are named after the Hugging Face layout, so that map is the identity. open_clip
//! keys are one table away ([`open_clip_key`]); its fused `in_proj` loads into our fused
//! attention as is, and its `visual.proj` / `text_projection` (used as `x @ W`) are transposed.

use vlp_core::checkpoint::Source;

/// The key layout of a checkpoint file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// transformers `CLIPModel` / `SiglipModel` (`vision_model.*`, `text_model.*`).
    Hf,
    /// open_clip `CLIP` (`visual.*`, `transformer.resblocks.*`, ...), the layout of OpenAI's and
    /// LAION's original weights.
    OpenClip,
}

impl Layout {
    /// Detects the layout from a checkpoint's keys; `None` if neither fits.
    pub fn detect<'a>(keys: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        let mut hf = false;
        let mut oc = false;
        for k in keys {
            hf |= k.starts_with("vision_model.") || k.starts_with("text_model.");
            oc |= k.starts_with("visual.")
                || k.starts_with("transformer.resblocks.")
                || k == "token_embedding.weight";
        }
        match (hf, oc) {
            (true, false) => Some(Self::Hf),
            (false, true) => Some(Self::OpenClip),
            _ => None,
        }
    }

    /// Whether attention projections are fused in this layout.
    pub fn fused_qkv(self) -> bool {
        self == Self::OpenClip
    }

    /// Where parameter `path` of our model lives in a checkpoint of this layout.
    pub fn source(self, path: &str) -> Source {
        match self {
            Self::Hf => Source::Key(hf_key(path)),
            Self::OpenClip => open_clip_key(path),
        }
    }

    /// Keys present in real checkpoints that are buffers, not parameters (safe to skip).
    pub fn is_buffer(self, key: &str) -> bool {
        match self {
            // Older transformers saved the position-id buffers.
            Self::Hf => key.ends_with("embeddings.position_ids"),
            // OpenAI's original files carry the causal mask and a few integers.
            Self::OpenClip => {
                matches!(
                    key,
                    "attn_mask" | "input_resolution" | "context_length" | "vocab_size"
                )
            }
        }
    }
}

/// Our path → transformers key. Identical except where transformers keeps a PyTorch
/// `nn.MultiheadAttention` (SigLIP's pooling head), whose fused projection is a bare parameter.
pub fn hf_key(path: &str) -> String {
    if let Some(p) = path.strip_suffix(".in_proj.weight") {
        format!("{p}.in_proj_weight")
    } else if let Some(p) = path.strip_suffix(".in_proj.bias") {
        format!("{p}.in_proj_bias")
    } else {
        path.to_string()
    }
}

/// Renames inside one transformer block: HF → open_clip.
fn block_key(rest: &str) -> String {
    const RENAMES: &[(&str, &str)] = &[
        ("self_attn.in_proj.weight", "attn.in_proj_weight"),
        ("self_attn.in_proj.bias", "attn.in_proj_bias"),
        ("self_attn.out_proj.", "attn.out_proj."),
        ("layer_norm1.", "ln_1."),
        ("layer_norm2.", "ln_2."),
        ("mlp.fc1.", "mlp.c_fc."),
        ("mlp.fc2.", "mlp.c_proj."),
    ];
    for (ours, theirs) in RENAMES {
        if let Some(tail) = rest.strip_prefix(ours) {
            return format!("{theirs}{tail}");
        }
    }
    rest.to_string()
}

/// Where our parameter `path` lives in an open_clip state dict.
pub fn open_clip_key(path: &str) -> Source {
    const PREFIXES: &[(&str, &str)] = &[
        ("vision_model.embeddings.patch_embedding.", "visual.conv1."),
        (
            "vision_model.embeddings.class_embedding",
            "visual.class_embedding",
        ),
        (
            "vision_model.embeddings.position_embedding.weight",
            "visual.positional_embedding",
        ),
        ("vision_model.pre_layrnorm.", "visual.ln_pre."),
        ("vision_model.post_layernorm.", "visual.ln_post."),
        ("text_model.embeddings.token_embedding.", "token_embedding."),
        (
            "text_model.embeddings.position_embedding.weight",
            "positional_embedding",
        ),
        ("text_model.final_layer_norm.", "ln_final."),
    ];
    match path {
        "visual_projection.weight" => return Source::Transposed("visual.proj".into()),
        "text_projection.weight" => return Source::Transposed("text_projection".into()),
        _ => {}
    }
    for (ours, theirs) in PREFIXES {
        if let Some(tail) = path.strip_prefix(ours) {
            return Source::Key(format!("{theirs}{tail}"));
        }
    }
    for (ours, theirs) in [
        (
            "vision_model.encoder.layers.",
            "visual.transformer.resblocks.",
        ),
        ("text_model.encoder.layers.", "transformer.resblocks."),
    ] {
        if let Some(tail) = path.strip_prefix(ours) {
            let (index, rest) = tail.split_once('.').unwrap_or((tail, ""));
            return Source::Key(format!("{theirs}{index}.{}", block_key(rest)));
        }
    }
    Source::Key(path.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_clip_table() {
        let cases = [
            (
                "vision_model.embeddings.patch_embedding.weight",
                Source::Key("visual.conv1.weight".into()),
            ),
            (
                "vision_model.encoder.layers.3.self_attn.in_proj.weight",
                Source::Key("visual.transformer.resblocks.3.attn.in_proj_weight".into()),
            ),
            (
                "text_model.encoder.layers.11.mlp.fc2.bias",
                Source::Key("transformer.resblocks.11.mlp.c_proj.bias".into()),
            ),
            (
                "text_model.encoder.layers.0.layer_norm1.weight",
                Source::Key("transformer.resblocks.0.ln_1.weight".into()),
            ),
            (
                "visual_projection.weight",
                Source::Transposed("visual.proj".into()),
            ),
            (
                "text_model.embeddings.position_embedding.weight",
                Source::Key("positional_embedding".into()),
            ),
            ("logit_scale", Source::Key("logit_scale".into())),
        ];
        for (ours, want) in cases {
            assert_eq!(open_clip_key(ours), want, "{ours}");
        }
    }

    #[test]
    fn detects_layouts() {
        assert_eq!(
            Layout::detect(["vision_model.x", "logit_scale"]),
            Some(Layout::Hf)
        );
        assert_eq!(
            Layout::detect(["visual.conv1.weight", "logit_scale"]),
            Some(Layout::OpenClip)
        );
        assert_eq!(Layout::detect(["foo.bar"]), None);
        assert_eq!(
            Layout::detect(["visual.conv1.weight", "vision_model.x"]),
            None
        );
    }
}
