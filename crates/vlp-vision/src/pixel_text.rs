//! A pixel sentence encoder (PIXEL's ViT as Pixel-Linguist uses it; Rust et al., 2023, and Xiao
//! et al., 2024): a sentence rendered as a strip (`vlp_data::render`) is cut into patches of the
//! strip's full height, embedded linearly, given learned positions, run through the shared
//! transformer encoder with the blank patches after the text masked out, and mean-pooled over
//! the text's patches followed by a LayerNorm (the official `PoolingMode.MEAN` with
//! `pooler_add_layer_norm=True`; the CLS token is discarded in that mode, so there is none).
//!
//! Where this departs from PIXEL: patches are `height × patch_width` of a one-channel strip
//! (PIXEL: 16×16 RGB) and the model is a few layers wide for CPU tests; the MAE decoder used for
//! PIXEL's pretraining is not part of it.

use std::path::Path;

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Distribution, Tensor, TensorData};
use vlp_core::checkpoint::{
    Source, StoredDType, TensorFile, check_sizes, collect_params, load_params, write_safetensors,
};
use vlp_core::nn::{
    Activation, AttentionMask, LayerNorm, LayerNormConfig, TransformerEncoder,
    TransformerEncoderConfig, linear_2d,
};
use vlp_core::{CoreError, Result};

/// Configuration of a [`PixelTextEncoder`].
#[derive(Config, Debug, PartialEq)]
pub struct PixelTextEncoderConfig {
    /// Strip height in pixels (the renderer's line height).
    #[config(default = 8)]
    pub height: usize,
    /// Patch width in pixels; a patch spans the strip's height.
    #[config(default = 8)]
    pub patch_width: usize,
    /// Patches per strip (Pixel-Linguist's `max_seq_length`).
    #[config(default = 64)]
    pub max_patches: usize,
    /// Residual width.
    #[config(default = 64)]
    pub d_model: usize,
    /// Transformer blocks.
    #[config(default = 2)]
    pub n_layers: usize,
    /// Attention heads.
    #[config(default = 4)]
    pub n_heads: usize,
    /// MLP hidden width.
    #[config(default = 256)]
    pub d_hidden: usize,
    /// LayerNorm epsilon (ViT-MAE's 1e-12 in PIXEL; 1e-6 keeps f16 finite).
    #[config(default = 1e-6)]
    pub eps: f64,
}

/// Rendered sentence in, sentence embedding out.
#[derive(Module, Debug)]
pub struct PixelTextEncoder<B: Backend> {
    /// Patch pixels to the residual width.
    pub patch_embedding: Linear<B>,
    /// Learned position of each patch, `[max_patches, d_model]`.
    pub position_embedding: Param<Tensor<B, 2>>,
    /// The transformer.
    pub encoder: TransformerEncoder<B>,
    /// Norm after the last block.
    pub post_layernorm: LayerNorm<B>,
    /// The pooler's LayerNorm over the mean of the text's patches.
    pub pooler_norm: LayerNorm<B>,
}

impl PixelTextEncoderConfig {
    /// Checks that the shape is consistent, naming the field at fault.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, reason: String| CoreError::Config {
            field: field.into(),
            reason,
        };
        for (f, v) in [
            ("height", self.height),
            ("patch_width", self.patch_width),
            ("max_patches", self.max_patches),
            ("d_model", self.d_model),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("d_hidden", self.d_hidden),
        ] {
            if v == 0 {
                return Err(bad(f, "must be positive".into()));
            }
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return Err(bad(
                "n_heads",
                format!(
                    "{} heads do not divide width {}",
                    self.n_heads, self.d_model
                ),
            ));
        }
        Ok(())
    }

    /// Pixels of one strip (`height × patch_width · max_patches`).
    pub fn strip_width(&self) -> usize {
        self.patch_width * self.max_patches
    }

    /// Creates the encoder on `device`.
    pub fn init<B: Backend>(&self, device: &B::Device) -> PixelTextEncoder<B> {
        PixelTextEncoder {
            patch_embedding: LinearConfig::new(self.height * self.patch_width, self.d_model)
                .init(device),
            position_embedding: Param::from_tensor(Tensor::random(
                [self.max_patches, self.d_model],
                Distribution::Normal(0.0, 0.02),
                device,
            )),
            encoder: TransformerEncoderConfig::new(
                self.d_model,
                self.n_layers,
                self.n_heads,
                self.d_hidden,
            )
            .with_activation(Activation::Gelu)
            .with_eps(self.eps)
            .init(device),
            post_layernorm: LayerNormConfig::new(self.d_model)
                .with_eps(self.eps)
                .init(device),
            pooler_norm: LayerNormConfig::new(self.d_model)
                .with_eps(self.eps)
                .init(device),
        }
    }
}

impl<B: Backend> PixelTextEncoder<B> {
    fn dims(&self) -> (usize, usize, usize) {
        let [max_patches, d] = self.position_embedding.val().dims();
        let [patch_pixels, _] = self.patch_embedding.weight.val().dims();
        (max_patches, patch_pixels, d)
    }

    /// Sentence embeddings (not normalised) of rendered strips.
    ///
    /// # Shapes
    /// - `strips`: `[batch, height, max_patches · patch_width]`, ink 1 on paper 0
    /// - `patches`: the patches each strip's text covers (1 ..= max_patches), `batch` values
    /// - returns: `[batch, d_model]`
    pub fn forward(&self, strips: Tensor<B, 3>, patches: &[usize]) -> Result<Tensor<B, 2>> {
        let [n, h, w] = strips.dims();
        let (p, patch_pixels, d) = self.dims();
        let pw = w / p.max(1);
        if n != patches.len() || h * pw != patch_pixels || pw * p != w {
            return Err(CoreError::Shape {
                what: "pixel text strips (height × max_patches · patch_width)".into(),
                expected: vec![patches.len(), patch_pixels / pw.max(1), p * pw],
                got: vec![n, h, w],
            });
        }
        if let Some(bad) = patches.iter().find(|k| **k == 0 || **k > p) {
            return Err(CoreError::Config {
                field: "patches".into(),
                reason: format!("{bad} text patches on a strip of {p}"),
            });
        }
        let device = strips.device();
        // [n, h, p, pw] -> [n, p, h, pw] -> [n, p, h·pw]: patch k is columns k·pw .. (k+1)·pw.
        let x = strips
            .reshape([n, h, p, pw])
            .swap_dims(1, 2)
            .reshape([n, p, h * pw]);
        let x =
            linear_2d(&self.patch_embedding, x) + self.position_embedding.val().reshape([1, p, d]);
        let keep: Vec<f32> = patches
            .iter()
            .flat_map(|&k| (0..p).map(move |j| if j < k { 1.0 } else { 0.0 }))
            .collect();
        let keep = Tensor::<B, 2>::from_data(TensorData::new(keep, [n, p]), &device);
        let padding: Tensor<B, 2, Bool> = keep.clone().lower_elem(0.5);
        let mask = AttentionMask::key_padding(padding);
        let h = self
            .encoder
            .forward(x, Some(&mask), false)
            .last_hidden_state;
        let h = self.post_layernorm.forward(h);
        // Under mixed precision the hidden states are in the compute type; the weights follow.
        let keep = keep.cast(h.dtype()).reshape([n, p, 1]);
        let counts = keep.clone().sum_dim(1).reshape([n, 1]);
        let mean = (h * keep).sum_dim(1).reshape([n, d]) / counts;
        Ok(self.pooler_norm.forward(mean))
    }
}

/// File of an exported encoder's weights (safetensors, keys = field paths).
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// File of an exported encoder's [`PixelTextEncoderConfig`].
pub const CONFIG_FILE: &str = "pixel_text_config.json";

/// Writes `model` and its `config` to `dir` (created).
pub fn save_pixel_text<B: Backend>(
    model: &PixelTextEncoder<B>,
    config: &PixelTextEncoderConfig,
    dir: &Path,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| CoreError::io(dir, e))?;
    vlp_core::io::write_atomic(dir.join(CONFIG_FILE), config.to_string().as_bytes())?;
    write_safetensors(
        dir.join(WEIGHTS_FILE),
        &collect_params(model),
        StoredDType::F32,
        None,
    )
}

/// Whether `dir` holds an encoder written by [`save_pixel_text`].
pub fn is_pixel_text_dir(dir: &Path) -> bool {
    dir.join(CONFIG_FILE).is_file()
}

/// Reads an encoder written by [`save_pixel_text`]; every weight must be there with its shape.
pub fn load_pixel_text<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(PixelTextEncoder<B>, PixelTextEncoderConfig)> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| CoreError::io(&path, e))?;
    let config: PixelTextEncoderConfig =
        serde_json::from_str(&text).map_err(|e| CoreError::Checkpoint {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    config.validate().map_err(|e| CoreError::Checkpoint {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    // Every field is bounded before anything is allocated from it (the file is untrusted).
    check_sizes(&[
        ("height", config.height, 0..=256),
        ("patch_width", config.patch_width, 0..=256),
        ("max_patches", config.max_patches, 0..=4096),
        ("d_model", config.d_model, 0..=1 << 14),
        ("n_layers", config.n_layers, 0..=128),
        ("n_heads", config.n_heads, 0..=256),
        ("d_hidden", config.d_hidden, 0..=1 << 16),
    ])
    .map_err(|reason| CoreError::Checkpoint { path, reason })?;
    let file = TensorFile::open(dir.join(WEIGHTS_FILE))?;
    let model = load_params(
        config.init::<B>(device),
        &file,
        |p| Source::Key(p.to_string()),
        |_| false,
    )?;
    Ok((model, config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vlp_core::backend::{DefaultBackend as B, default_device};

    fn strips(n: usize, cfg: &PixelTextEncoderConfig, seed: u64) -> Vec<f32> {
        let mut rng = vlp_core::rng::Rng::new(seed);
        (0..n * cfg.height * cfg.strip_width())
            .map(|_| if rng.chance(0.3) { 1.0 } else { 0.0 })
            .collect()
    }

    fn small() -> PixelTextEncoderConfig {
        PixelTextEncoderConfig::new()
            .with_patch_width(4)
            .with_max_patches(6)
            .with_d_model(16)
            .with_n_heads(2)
            .with_d_hidden(32)
    }

    #[test]
    fn pixels_after_the_text_do_not_matter_and_patches_are_columns() {
        let dev = default_device();
        let cfg = small();
        let m = cfg.init::<B>(&dev);
        let (h, w) = (cfg.height, cfg.strip_width());
        let a = strips(2, &cfg, 1);
        let mut b = a.clone();
        // Change everything right of patch 3 of strip 0 and right of patch 5 of strip 1.
        for y in 0..h {
            for x in 12..w {
                b[y * w + x] = 1.0 - b[y * w + x];
            }
            for x in 20..w {
                b[h * w + y * w + x] = 1.0 - b[h * w + y * w + x];
            }
        }
        let run = |v: Vec<f32>| {
            m.forward(
                Tensor::from_data(TensorData::new(v, [2, h, w]), &dev),
                &[3, 5],
            )
            .unwrap()
            .into_data()
            .to_vec::<f32>()
            .unwrap()
        };
        let (ya, yb) = (run(a.clone()), run(b));
        assert_eq!(ya.len(), 2 * 16);
        for (x, y) in ya.iter().zip(&yb) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
        // A pixel inside the text changes the embedding.
        let mut c = a;
        c[2] = 1.0 - c[2];
        let yc = run(c);
        assert!(
            ya.iter()
                .zip(&yc)
                .take(16)
                .any(|(x, y)| (x - y).abs() > 1e-4)
        );
        // The pooler's LayerNorm (weight 1, bias 0): every row has mean 0 and variance 1.
        for row in ya.chunks(16) {
            let mean: f32 = row.iter().sum::<f32>() / 16.0;
            let var: f32 = row.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 16.0;
            assert!(
                mean.abs() < 1e-4 && (var - 1.0).abs() < 1e-3,
                "{mean} {var}"
            );
        }
    }

    #[test]
    fn mean_pooling_matches_a_loop_over_the_text_patches() {
        let dev = default_device();
        let cfg = small().with_n_layers(1);
        let m = cfg.init::<B>(&dev);
        let (h, w) = (cfg.height, cfg.strip_width());
        let v = strips(1, &cfg, 7);
        let x = Tensor::<B, 3>::from_data(TensorData::new(v.clone(), [1, h, w]), &dev);
        let got = m.forward(x, &[4]).unwrap();
        // The same thing by hand: patches as a loop, only the 4 text tokens go in.
        let mut tokens = Vec::new();
        for k in 0..4 {
            for y in 0..h {
                for x in 0..4 {
                    tokens.push(v[y * w + k * 4 + x]);
                }
            }
        }
        let t = Tensor::<B, 3>::from_data(TensorData::new(tokens, [1, 4, h * 4]), &dev);
        let pos = m
            .position_embedding
            .val()
            .slice([0..4, 0..16])
            .reshape([1, 4, 16]);
        let x = linear_2d(&m.patch_embedding, t) + pos;
        let hid = m
            .post_layernorm
            .forward(m.encoder.forward(x, None, false).last_hidden_state);
        let want = m.pooler_norm.forward(hid.mean_dim(1).reshape([1, 16]));
        let (g, w_) = (
            got.into_data().to_vec::<f32>().unwrap(),
            want.into_data().to_vec::<f32>().unwrap(),
        );
        assert_eq!(g.len(), 16);
        for (a, b) in g.iter().zip(&w_) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }

    #[test]
    fn bad_shapes_and_counts_are_errors_and_export_round_trips() {
        let dev = default_device();
        let cfg = small();
        let m = cfg.init::<B>(&dev);
        let x = Tensor::<B, 3>::zeros([2, cfg.height, cfg.strip_width()], &dev);
        assert!(m.forward(x.clone(), &[1]).is_err());
        assert!(m.forward(x.clone(), &[0, 1]).is_err());
        assert!(m.forward(x.clone(), &[1, 7]).is_err());
        let wrong = Tensor::<B, 3>::zeros([2, cfg.height, 20], &dev);
        assert!(m.forward(wrong, &[1, 1]).is_err());
        let dir = std::env::temp_dir().join(format!("vlp-pixel-text-{}", std::process::id()));
        save_pixel_text(&m, &cfg, &dir).unwrap();
        assert!(is_pixel_text_dir(&dir));
        let (back, got) = load_pixel_text::<B>(&dir, &dev).unwrap();
        assert_eq!(got, cfg);
        let a = m.forward(x.clone(), &[2, 6]).unwrap().into_data();
        let b = back.forward(x, &[2, 6]).unwrap().into_data();
        assert_eq!(a, b);
        // A width the heads cannot split, a size too large to allocate, a truncated file: each
        // is an error naming the file (and the field).
        let write = |c: PixelTextEncoderConfig| {
            std::fs::write(dir.join(CONFIG_FILE), c.to_string()).unwrap();
            load_pixel_text::<B>(&dir, &dev).unwrap_err().to_string()
        };
        let e = write(small().with_d_model(15));
        assert!(e.contains(CONFIG_FILE) && e.contains("n_heads"), "{e}");
        let e = write(small().with_d_hidden(1 << 40));
        assert!(e.contains(CONFIG_FILE) && e.contains("d_hidden"), "{e}");
        std::fs::write(dir.join(CONFIG_FILE), "{\"d_model\": 16").unwrap();
        let e = load_pixel_text::<B>(&dir, &dev).unwrap_err().to_string();
        assert!(e.contains(CONFIG_FILE), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
