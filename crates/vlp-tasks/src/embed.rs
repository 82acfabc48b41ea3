//! Turning datasets and texts into normalised embeddings.

use burn::tensor::{Tensor, TensorData, backend::Backend};
use vlp_align::{ClipModel, normalize};
use vlp_data::loader::Loader;
use vlp_data::render::TextRenderer;
use vlp_text::Tokenizer;
use vlp_vision::pixel_text::{PixelTextEncoder, PixelTextEncoderConfig};

use crate::error::{Result, TaskError};

/// Row-major feature matrix on the host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Features {
    /// `rows × dim` values.
    pub data: Vec<f32>,
    /// Number of rows.
    pub rows: usize,
    /// Feature width.
    pub dim: usize,
}

impl Features {
    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Uploads to `device` as `[rows, dim]`.
    pub fn to_tensor<B: Backend>(&self, device: &B::Device) -> Tensor<B, 2> {
        Tensor::from_data(
            TensorData::new(self.data.clone(), [self.rows, self.dim]),
            device,
        )
    }

    /// Copies a `[rows, dim]` tensor to the host.
    pub fn from_tensor<B: Backend>(t: Tensor<B, 2>) -> Self {
        let [rows, dim] = t.dims();
        Self {
            data: t.into_data().convert::<f32>().into_vec().expect("f32"),
            rows,
            dim,
        }
    }

    /// Fails when a value is NaN or infinite (a model with broken weights, an overflow), naming
    /// the first such row by `names` when given: wrong numbers must not pass as results.
    pub fn check_finite(&self, what: &str, names: Option<&[String]>) -> Result<()> {
        let Some(k) = self.data.iter().position(|v| !v.is_finite()) else {
            return Ok(());
        };
        let row = k / self.dim.max(1);
        let name = names
            .and_then(|n| n.get(row))
            .map(|n| format!(" (\"{n}\")"))
            .unwrap_or_default();
        Err(TaskError::Invalid {
            task: what.into(),
            reason: format!(
                "embedding {row}{name} is not finite ({}): the model's outputs are NaN or infinite",
                self.data[k]
            ),
        })
    }

    /// Appends the rows of `other`.
    pub fn extend(&mut self, other: Features) {
        if self.rows == 0 {
            self.dim = other.dim;
        }
        self.data.extend(other.data);
        self.rows += other.rows;
    }
}

/// Image embeddings of a whole loader epoch, with keys, labels and every caption.
#[derive(Debug, Clone, Default)]
pub struct ImageSet {
    /// L2-normalised image embeddings.
    pub features: Features,
    /// Sample keys.
    pub keys: Vec<String>,
    /// Labels, where the source has them.
    pub labels: Vec<Option<usize>>,
    /// Every caption of every image.
    pub captions: Vec<Vec<String>>,
    /// Samples the loader skipped, summarised.
    pub skipped: String,
    /// Number of skipped samples.
    pub skipped_count: usize,
    /// The skips themselves, by reason.
    pub skip_stats: vlp_data::loader::SkipStats,
}

/// Embeds every image of one epoch of `loader` (which should not shuffle or drop).
pub fn embed_images<B: Backend>(
    model: &ClipModel<B>,
    loader: &Loader,
    device: &B::Device,
    mut progress: impl FnMut(usize),
) -> Result<ImageSet> {
    let mut out = ImageSet::default();
    let mut epoch = loader.epoch(0, 0);
    for batch in epoch.by_ref() {
        let b = batch?;
        let f = Features::from_tensor(normalize(model.encode_image(b.images_tensor::<B>(device))));
        f.check_finite("image embedding", Some(&b.keys))?;
        out.features.extend(f);
        progress(b.len());
        out.keys.extend(b.keys);
        out.labels.extend(b.labels);
        out.captions.extend(b.all_captions);
    }
    out.skipped = epoch.stats().summary();
    out.skipped_count = epoch.stats().skipped_count();
    out.skip_stats = epoch.stats().clone();
    Ok(out)
}

/// The renderer whose strips a pixel text encoder reads.
pub fn renderer_for(config: &PixelTextEncoderConfig) -> TextRenderer {
    TextRenderer {
        height: config.height,
        patch_width: config.patch_width,
        max_patches: config.max_patches,
    }
}

/// What rendering lost on the way to a pixel text encoder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenderLoss {
    /// Texts longer than a strip (their tail was cut).
    pub cut_texts: usize,
    /// Characters the font lacks (drawn as boxes).
    pub unsupported_chars: usize,
}

/// L2-normalised embeddings of `texts` rendered as pixels (`vlp_data::render`) and read by a
/// pixel text encoder, `batch` at a time, with what rendering lost.
pub fn embed_rendered_texts<B: Backend, S: AsRef<str>>(
    model: &PixelTextEncoder<B>,
    config: &PixelTextEncoderConfig,
    texts: &[S],
    batch: usize,
    device: &B::Device,
) -> Result<(Features, RenderLoss)> {
    let r = renderer_for(config);
    r.validate().map_err(|reason| TaskError::Invalid {
        task: "pixel text embedding".into(),
        reason: format!("the encoder's strips cannot be drawn: {reason}"),
    })?;
    let mut out = Features::default();
    let mut loss = RenderLoss::default();
    for chunk in texts.chunks(batch.max(1)) {
        let mut pixels = Vec::with_capacity(chunk.len() * r.height * r.width());
        let mut patches = Vec::with_capacity(chunk.len());
        for t in chunk {
            let s = r.render(t.as_ref());
            loss.cut_texts += usize::from(s.cut > 0);
            loss.unsupported_chars += s.unsupported;
            pixels.extend_from_slice(&s.pixels);
            patches.push(s.patches);
        }
        let strips = Tensor::<B, 3>::from_data(
            TensorData::new(pixels, [chunk.len(), r.height, r.width()]),
            device,
        );
        let f = model
            .forward(strips, &patches)
            .map_err(|e| TaskError::Invalid {
                task: "pixel text embedding".into(),
                reason: e.to_string(),
            })?;
        let f = Features::from_tensor(normalize(f));
        let names: Vec<String> = chunk.iter().map(|t| t.as_ref().to_string()).collect();
        f.check_finite("pixel text embedding", Some(&names))?;
        out.extend(f);
    }
    Ok((out, loss))
}

/// L2-normalised embeddings of `texts`, `batch` at a time.
///
/// Causal text towers get the padding mask (transformers' CLIP); bidirectional ones (SigLIP) see
/// the padded sequence as transformers feeds it.
pub fn embed_texts<B: Backend>(
    model: &ClipModel<B>,
    tokenizer: &dyn Tokenizer,
    texts: &[&str],
    batch: usize,
    device: &B::Device,
) -> Result<Features> {
    let mut out = Features::default();
    for chunk in texts.chunks(batch.max(1)) {
        let (ids, mask) = tokenizer
            .encode_batch(chunk)
            .map_err(|e| TaskError::Invalid {
                task: "text embedding".into(),
                reason: e.to_string(),
            })?
            .to_tensors::<B>(device);
        let f = normalize(model.encode_text(ids, model.text_model.causal.then_some(mask)));
        let f = Features::from_tensor(f);
        let names: Vec<String> = chunk.iter().map(|t| t.to_string()).collect();
        f.check_finite("text embedding", Some(&names))?;
        out.extend(f);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vlp_core::backend::{DefaultBackend as B, default_device};

    fn small() -> PixelTextEncoderConfig {
        PixelTextEncoderConfig::new()
            .with_patch_width(4)
            .with_max_patches(6)
            .with_d_model(16)
            .with_n_heads(2)
            .with_d_hidden(32)
    }

    #[test]
    fn rendered_texts_embed_to_unit_rows_and_report_what_rendering_lost() {
        let dev = default_device();
        let cfg = small();
        let m = cfg.init::<B>(&dev);
        // Six patches of 4 pixels hold 4 characters: the second text is cut, "é" is unknown.
        let (f, lost) = embed_rendered_texts(&m, &cfg, &["ab", "abcdefg", "é"], 2, &dev).unwrap();
        assert_eq!((f.rows, f.dim), (3, 16));
        for i in 0..3 {
            let n: f32 = f.row(i).iter().map(|x| x * x).sum();
            assert!((n - 1.0).abs() < 1e-4);
        }
        assert_eq!(
            lost,
            RenderLoss {
                cut_texts: 1,
                unsupported_chars: 1
            }
        );
        // A strip lower than the font's glyphs is an error, not a half-drawn text.
        let low = small().with_height(6);
        let e = embed_rendered_texts(&low.init::<B>(&dev), &low, &["ab"], 2, &dev)
            .unwrap_err()
            .to_string();
        assert!(e.contains("height 6"), "{e}");
    }
}
