//! Comparing a loaded model with reference outputs saved by transformers or open_clip.
//!
//! The expected file holds the inputs (`pixel_values`, `input_ids`, `attention_mask`) and any of
//! the outputs named in [`KNOWN_OUTPUTS`]; everything it holds that we know is recomputed and
//! compared element-wise.

use std::path::Path;

use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use vlp_core::checkpoint::{HostTensor, TensorFile};

use crate::error::{AlignError, Result};
use crate::model::normalize;
use crate::pretrained::{Layout, Pretrained};

/// Outputs [`check_parity`] can recompute, with the meaning the reference libraries give them.
pub const KNOWN_OUTPUTS: &[(&str, &str)] = &[
    (
        "vision_embeddings",
        "transformers' hidden_states[0]: the encoder input (for CLIP after pre_layrnorm)",
    ),
    (
        "vision_last_hidden_state",
        "vision tokens after the last block",
    ),
    (
        "vision_pooler_output",
        "pooled vision feature, as transformers 5 returns it: CLIP after its projection, SigLIP after the head",
    ),
    ("text_embeddings", "token + position embeddings"),
    (
        "text_last_hidden_state",
        "text tokens after the final LayerNorm",
    ),
    (
        "text_pooler_output",
        "pooled text feature, as transformers 5 returns it: CLIP after its projection, SigLIP after the head",
    ),
    (
        "image_embeds",
        "projected, L2-normalised image embedding (transformers)",
    ),
    (
        "text_embeds",
        "projected, L2-normalised text embedding (transformers)",
    ),
    (
        "image_features",
        "projected image embedding, not normalised (open_clip encode_image)",
    ),
    (
        "text_features",
        "projected text embedding, not normalised (open_clip encode_text)",
    ),
    (
        "image_features_normalized",
        "projected, L2-normalised image embedding (open_clip)",
    ),
    (
        "text_features_normalized",
        "projected, L2-normalised text embedding (open_clip)",
    ),
    (
        "logits_per_image",
        "scaled image-text similarities [images, texts]",
    ),
    (
        "logits_per_text",
        "scaled text-image similarities [texts, images]",
    ),
];

const INPUTS: &[&str] = &["pixel_values", "input_ids", "attention_mask"];

/// One compared tensor.
#[derive(Debug, Clone)]
pub struct TensorCheck {
    /// Its name in the expected file.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Largest absolute difference.
    pub max_abs_err: f32,
    /// Mean absolute difference.
    pub mean_abs_err: f32,
    /// Whether `max_abs_err` is within the tolerance.
    pub passed: bool,
}

/// The outcome of [`check_parity`].
#[derive(Debug, Clone, Default)]
pub struct ParityReport {
    /// Every compared tensor, in file order.
    pub checks: Vec<TensorCheck>,
    /// Names in the file that are neither inputs nor known outputs.
    pub unknown: Vec<String>,
}

impl ParityReport {
    /// Whether something was compared and everything passed.
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }
}

fn to_tensor<B: Backend, const D: usize>(t: HostTensor, device: &B::Device) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(t.data, t.shape), device)
}

fn to_ids<B: Backend>(t: HostTensor, device: &B::Device) -> Tensor<B, 2, Int> {
    // The reference files store integer inputs as float32.
    let ids: Vec<i64> = t.data.iter().map(|v| v.round() as i64).collect();
    Tensor::from_data(TensorData::new(ids, t.shape), device)
}

/// Recomputes every known output in `expected` with `pretrained` and compares within `atol`.
pub fn check_parity<B: Backend>(
    pretrained: &Pretrained<B>,
    expected: impl AsRef<Path>,
    atol: f32,
    device: &B::Device,
) -> Result<ParityReport> {
    let file = TensorFile::open(expected.as_ref())?;
    let path = file.path().to_path_buf();
    let fail = |reason: String| AlignError::Parity {
        path: path.clone(),
        reason,
    };
    let model = &pretrained.model;
    let wanted: Vec<String> = file
        .keys()
        .filter(|k| KNOWN_OUTPUTS.iter().any(|(n, _)| n == k))
        .map(str::to_string)
        .collect();
    let unknown = file
        .keys()
        .filter(|k| !INPUTS.contains(k) && !wanted.iter().any(|w| w == k))
        .map(str::to_string)
        .collect();
    let needs_vision = wanted
        .iter()
        .any(|w| w.starts_with("vision") || w.starts_with("image") || w.starts_with("logits"));
    let needs_text = wanted
        .iter()
        .any(|w| w.starts_with("text") || w.starts_with("logits"));

    let vision = if needs_vision {
        let px = to_tensor::<B, 4>(
            file.get("pixel_values")
                .map_err(|_| fail("no `pixel_values` input".into()))?,
            device,
        );
        let out = model.vision_model.forward_with(px, true);
        let emb = out.hidden_states.as_ref().expect("requested")[0].clone();
        Some((out, emb))
    } else {
        None
    };
    let text = if needs_text {
        let ids = to_ids::<B>(
            file.get("input_ids")
                .map_err(|_| fail("no `input_ids` input".into()))?,
            device,
        );
        // transformers masks padding; open_clip relies on the causal mask alone.
        let mask = match (pretrained.layout, file.contains("attention_mask")) {
            (Layout::Hf, true) => Some(to_ids::<B>(file.get("attention_mask")?, device)),
            _ => None,
        };
        Some(model.text_model.forward_with(ids, mask, true))
    } else {
        None
    };
    let img_feat = vision
        .as_ref()
        .map(|(v, _)| model.project_image(v.pooler_output.clone()));
    let txt_feat = text
        .as_ref()
        .map(|t| model.project_text(t.pooler_output.clone()));

    let mut checks = Vec::new();
    for name in wanted {
        let want = file.get(&name)?;
        let got: Tensor<B, 3> = match name.as_str() {
            "vision_embeddings" => vision.as_ref().map(|v| v.1.clone()),
            "vision_last_hidden_state" => vision.as_ref().map(|v| v.0.last_hidden_state.clone()),
            // transformers 5's CLIPModel overwrites the towers' pooler_output with the projected
            // feature (get_image_features / get_text_features); SigLIP has no projection.
            "vision_pooler_output" => img_feat.clone().map(|f| f.unsqueeze()),
            "text_embeddings" => text
                .as_ref()
                .map(|t| t.hidden_states.as_ref().expect("requested")[0].clone()),
            "text_last_hidden_state" => text.as_ref().map(|t| t.last_hidden_state.clone()),
            "text_pooler_output" => txt_feat.clone().map(|f| f.unsqueeze()),
            "image_features" => img_feat.clone().map(|f| f.unsqueeze()),
            "text_features" => txt_feat.clone().map(|f| f.unsqueeze()),
            "image_embeds" | "image_features_normalized" => {
                img_feat.clone().map(|f| normalize(f).unsqueeze())
            }
            "text_embeds" | "text_features_normalized" => {
                txt_feat.clone().map(|f| normalize(f).unsqueeze())
            }
            "logits_per_image" | "logits_per_text" => {
                let (i, t) = (
                    normalize(img_feat.clone().expect("vision ran")),
                    normalize(txt_feat.clone().expect("text ran")),
                );
                let l = model.logits(i, t);
                Some(
                    if name == "logits_per_text" {
                        l.transpose()
                    } else {
                        l
                    }
                    .unsqueeze(),
                )
            }
            _ => None,
        }
        .expect("every known output is computed");
        let got = HostTensor::from_tensor(got);
        let n: usize = want.shape.iter().product();
        if got.numel() != n {
            return Err(fail(format!(
                "`{name}` has shape {:?} in the file but vlp computes {:?}",
                want.shape, got.shape
            )));
        }
        let diffs: Vec<f32> = got
            .data
            .iter()
            .zip(&want.data)
            .map(|(a, b)| (a - b).abs())
            .collect();
        let max =
            diffs.iter().copied().fold(
                0.0f32,
                |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
            );
        let mean = diffs.iter().sum::<f32>() / n.max(1) as f32;
        // A non-finite output is a failure whatever the tolerance (even `--atol inf`).
        let finite = got.data.iter().chain(&want.data).all(|v| v.is_finite());
        checks.push(TensorCheck {
            name,
            shape: want.shape,
            max_abs_err: max,
            mean_abs_err: mean,
            passed: finite && max <= atol,
        });
    }
    Ok(ParityReport { checks, unknown })
}
