//! Patch, class-token and position embeddings.

use burn::module::{Module, Param};
use burn::nn::conv::Conv2d;
use burn::nn::{Embedding, EmbeddingConfig, Initializer};
use burn::tensor::{Tensor, backend::Backend};
use vlp_core::checkpoint::HostTensor;
use vlp_core::numerics::bicubic_resize;

/// Turns pixels into the token sequence of a ViT (HF `vision_model.embeddings`).
#[derive(Module, Debug)]
pub struct VitEmbeddings<B: Backend> {
    /// Non-overlapping patch projection, a convolution with kernel = stride = patch size
    /// (open_clip `conv1`).
    pub patch_embedding: Conv2d<B>,
    /// Learned class token, `[hidden]` (CLIP layout only).
    pub class_embedding: Option<Param<Tensor<B, 1>>>,
    /// Learned absolute positions, `[tokens, hidden]` (open_clip `positional_embedding`).
    pub position_embedding: Embedding<B>,
}

impl<B: Backend> VitEmbeddings<B> {
    pub(crate) fn new(
        patch_embedding: Conv2d<B>,
        class_token: bool,
        positions: usize,
        d: usize,
        device: &B::Device,
    ) -> Self {
        Self {
            patch_embedding,
            // CLIP initialises both with std = width^-0.5 (open_clip `VisionTransformer.__init__`).
            class_embedding: class_token.then(|| {
                Initializer::Normal {
                    mean: 0.0,
                    std: (d as f64).powf(-0.5),
                }
                .init([d], device)
            }),
            position_embedding: EmbeddingConfig::new(positions, d)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: (d as f64).powf(-0.5),
                })
                .init(device),
        }
    }

    /// Patch grid side the position table was made for.
    pub fn grid(&self) -> usize {
        let n = self.position_embedding.weight.lazy_shape().dims::<2>()[0]
            - usize::from(self.class_embedding.is_some());
        (n as f64).sqrt().round() as usize
    }

    /// Embeds pixels into tokens (HF's `vision_embeddings`, before any LayerNorm).
    ///
    /// # Shapes
    /// - `pixels`: `[batch, channels, H, W]` with `H / patch = W / patch = grid`
    /// - returns: `[batch, tokens, hidden]`, class token first when there is one
    ///
    /// # Panics
    /// If the image does not give the patch grid the position table was made for; resize the
    /// table with [`VitEmbeddings::with_grid`] to use another resolution.
    pub fn forward(&self, pixels: Tensor<B, 4>) -> Tensor<B, 3> {
        let patches = self.patch_embedding.forward(pixels);
        let [b, d, gh, gw] = patches.dims();
        let g = self.grid();
        assert!(
            gh == g && gw == g,
            "ViT: the image gives a {gh}x{gw} patch grid but the position embedding is for {g}x{g}; \
             resize images to the model's image_size or interpolate the positions (VitEmbeddings::with_grid)"
        );
        let mut x = patches.reshape([b, d, gh * gw]).swap_dims(1, 2);
        if let Some(cls) = &self.class_embedding {
            let cls = cls.val().reshape([1, 1, d]).expand([b, 1, d]);
            x = Tensor::cat(vec![cls, x], 1);
        }
        x + self.position_embedding.weight.val().unsqueeze::<3>()
    }

    /// Resamples the position table to a `grid × grid` patch grid with bicubic interpolation
    /// (`align_corners = false`, as transformers' `interpolate_pos_encoding`); the class-token
    /// position is kept as is.
    pub fn with_grid(mut self, grid: usize) -> Self {
        let old = self.grid();
        if old == grid {
            return self;
        }
        let weight = self.position_embedding.weight.val();
        let device = weight.device();
        let table = HostTensor::from_tensor(weight);
        let d = table.shape[1];
        let extra = usize::from(self.class_embedding.is_some());
        // [tokens, d] -> channel planes [d, old, old]
        let mut planes = vec![0.0f32; d * old * old];
        for p in 0..old * old {
            for c in 0..d {
                planes[c * old * old + p] = table.data[(extra + p) * d + c];
            }
        }
        let resized = bicubic_resize(&planes, d, (old, old), (grid, grid));
        let mut data = table.data[..extra * d].to_vec();
        for p in 0..grid * grid {
            data.extend((0..d).map(|c| resized[c * grid * grid + p]));
        }
        let n = extra + grid * grid;
        let tensor = HostTensor::new(vec![n, d], data).into_tensor::<B, 2>(&device);
        self.position_embedding = Embedding {
            weight: Param::from_tensor(tensor),
        };
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::Distribution;
    use vlp_core::backend::{DefaultBackend as B, default_device};

    fn host<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec().unwrap()
    }

    /// The patch convolution equals "flatten each patch, multiply by the kernel, add the bias".
    #[test]
    fn patch_embedding_matches_naive_loops() {
        let dev = default_device();
        for bias in [false, true] {
            let conv = Conv2dConfig::new([3, 5], [4, 4])
                .with_stride([4, 4])
                .with_bias(bias)
                .init::<B>(&dev);
            let e = VitEmbeddings::new(conv, false, 16, 5, &dev);
            let px = Tensor::<B, 4>::random([2, 3, 16, 16], Distribution::Normal(0.0, 1.0), &dev);
            let got = host(e.forward(px.clone()));
            let x = host(px);
            let w = host(e.patch_embedding.weight.val());
            let b = e
                .patch_embedding
                .bias
                .as_ref()
                .map(|b| host(b.val()))
                .unwrap_or(vec![0.0; 5]);
            let pos = host(e.position_embedding.weight.val());
            for n in 0..2 {
                for p in 0..16 {
                    let (py, pxx) = (p / 4, p % 4);
                    for o in 0..5 {
                        let mut acc = b[o] + pos[p * 5 + o];
                        for c in 0..3 {
                            for ky in 0..4 {
                                for kx in 0..4 {
                                    let xi = ((n * 3 + c) * 16 + py * 4 + ky) * 16 + pxx * 4 + kx;
                                    acc += x[xi] * w[((o * 3 + c) * 4 + ky) * 4 + kx];
                                }
                            }
                        }
                        let g = got[(n * 16 + p) * 5 + o];
                        assert!(
                            (g - acc).abs() < 1e-4,
                            "bias {bias}: patch {p} channel {o}: {g} vs {acc}"
                        );
                    }
                }
            }
        }
    }
}
