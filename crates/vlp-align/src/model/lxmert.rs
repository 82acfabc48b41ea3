//! LXMERT (Tan & Bansal, 2019): a language encoder, an object-relationship encoder and a
//! cross-modality encoder over words and detected objects, with the heads of its four
//! pretraining tasks (masked words, masked objects, image–sentence matching, image QA).
//!
//! Ported from the official code (`airsplay/lxmert`, `src/lxrt/modeling.py`); sizes are scaled
//! down for ShapesWorld. Deliberate differences: the object features come from a small CNN
//! trained with the model, pooled per box with RoIAlign and concatenated with the box's own
//! pooled pixels (LXMERT reads frozen Faster R-CNN features); the feature-regression target is
//! those pooled pixels, fixed as the frozen features are in the paper, so training cannot
//! collapse it; the output heads are not tied to the word embeddings. Token ids are the
//! tokenizer's, plus one more id, `vocab_size`, for `[MASK]`.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::{gelu, relu};
use burn::tensor::{Bool, Int, Tensor, TensorData, backend::Backend};
use vlp_core::nn::{
    AttentionMask, CrossModalityLayer, LayerNorm, LayerNormConfig, PostNormConfig, PostNormLayer,
    Roi, RoiAlignConfig, linear_2d, roi_align,
};

use std::path::Path;

use vlp_core::checkpoint::{
    Source, StoredDType, TensorFile, check_sizes, collect_params, load_params, write_safetensors,
};

use crate::error::{AlignError, Result};

/// Configuration of an [`Lxmert`] model.
#[derive(Config, Debug)]
pub struct LxmertConfig {
    /// Tokenizer vocabulary; the model adds one id (`vocab_size`) for `[MASK]`.
    pub vocab_size: usize,
    /// Longest token sequence (the tokenizer's context length).
    pub max_len: usize,
    /// Answers the QA head scores.
    pub num_answers: usize,
    /// Object classes the masked-object head predicts (ShapesWorld: shape × colour, 30).
    pub num_object_labels: usize,
    /// Hidden width.
    #[config(default = 64)]
    pub d_model: usize,
    /// Attention heads.
    #[config(default = 4)]
    pub n_heads: usize,
    /// Feed-forward width.
    #[config(default = 128)]
    pub d_hidden: usize,
    /// Language-encoder layers (LXMERT: 9).
    #[config(default = 2)]
    pub l_layers: usize,
    /// Object-relationship-encoder layers (LXMERT: 5).
    #[config(default = 1)]
    pub r_layers: usize,
    /// Cross-modality layers (LXMERT: 5).
    #[config(default = 2)]
    pub x_layers: usize,
    /// Channels of the CNN's second (last) convolution; its first has half.
    #[config(default = 32)]
    pub cnn_channels: usize,
    /// RoIAlign bins per box side (features and regression target).
    #[config(default = 2)]
    pub roi_size: usize,
    /// LayerNorm epsilon (BERT: 1e-12).
    #[config(default = 1e-12)]
    pub eps: f64,
}

/// Two stride-2 3×3 convolutions with ReLU: a feature map at a quarter of the image side.
#[derive(Module, Debug)]
pub struct ConvBackbone<B: Backend> {
    /// `3 → channels / 2`.
    pub conv1: Conv2d<B>,
    /// `channels / 2 → channels`.
    pub conv2: Conv2d<B>,
}

impl<B: Backend> ConvBackbone<B> {
    /// # Shapes
    /// - `images`: `[batch, 3, size, size]`
    /// - returns: `[batch, channels, ⌈size/4⌉, ⌈size/4⌉]`
    pub fn forward(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        relu(self.conv2.forward(relu(self.conv1.forward(images))))
    }
}

/// LXMERT with its pretraining and QA heads.
#[derive(Module, Debug)]
pub struct Lxmert<B: Backend> {
    /// Object features' CNN.
    pub backbone: ConvBackbone<B>,
    /// Word table, `[vocab + 1, d]` (the last row is `[MASK]`).
    pub word_embeddings: Embedding<B>,
    /// Positions, `[max_len, d]`.
    pub position_embeddings: Embedding<B>,
    /// Norm of the summed embeddings.
    pub embeddings_norm: LayerNorm<B>,
    /// RoI feature (CNN bins and pooled pixels) → hidden (LXMERT `visn_fc`).
    pub visn_fc: Linear<B>,
    /// Its norm (`visn_layer_norm`).
    pub visn_layer_norm: LayerNorm<B>,
    /// Box `[x0, y0, x1, y1]` (fractions of the side) → hidden (`box_fc`).
    pub box_fc: Linear<B>,
    /// Its norm (`box_layer_norm`).
    pub box_layer_norm: LayerNorm<B>,
    /// Language encoder.
    pub l_layers: Vec<PostNormLayer<B>>,
    /// Object-relationship encoder.
    pub r_layers: Vec<PostNormLayer<B>>,
    /// Cross-modality encoder.
    pub x_layers: Vec<CrossModalityLayer<B>>,
    /// `tanh(W · h[CLS])` (BERT's pooler).
    pub pooler: Linear<B>,
    /// Masked-word head: dense, GELU, norm, then to the vocabulary.
    pub mlm_transform: Linear<B>,
    /// Its norm.
    pub mlm_norm: LayerNorm<B>,
    /// Hidden → vocabulary logits.
    pub mlm_decoder: Linear<B>,
    /// Masked-object head: dense, GELU, norm (`BertVisualObjHead.transform`).
    pub obj_transform: Linear<B>,
    /// Its norm.
    pub obj_norm: LayerNorm<B>,
    /// → object-label logits.
    pub obj_label: Linear<B>,
    /// → regressed RoI pixels.
    pub obj_feat: Linear<B>,
    /// Pooled → matched / not matched (`seq_relationship`).
    pub matched: Linear<B>,
    /// Answer head: `Linear(d, 2d)`, GELU, norm, `Linear(2d, answers)` (LXMERT's `answer_head`).
    pub answer_fc1: Linear<B>,
    /// Its norm.
    pub answer_norm: LayerNorm<B>,
    /// → answer logits.
    pub answer_fc2: Linear<B>,
    /// RoIAlign bins per side.
    pub roi_size: usize,
}

/// What the model reads for a batch.
#[derive(Debug, Clone)]
pub struct LxmertInput<B: Backend> {
    /// Images, `[batch, 3, size, size]`.
    pub images: Tensor<B, 4>,
    /// Per image, its object boxes `[x0, y0, x1, y1]` in pixels (at least one each).
    pub boxes: Vec<Vec<[f32; 4]>>,
    /// Token ids, `[batch, tokens]` (`vocab_size` = `[MASK]`).
    pub input_ids: Tensor<B, 2, Int>,
    /// `1` = token, `0` = padding, `[batch, tokens]`.
    pub attention_mask: Tensor<B, 2, Int>,
    /// Objects whose input feature is replaced (masked-object modelling), row-major over
    /// `[batch, max objects]`: `None` keeps it, `Some(None)` zeroes it, `Some(Some(k))` puts
    /// flat object `k`'s feature there. Empty: nothing replaced.
    pub feature_replacements: Vec<Option<Option<usize>>>,
}

/// What [`Lxmert::forward`] returns.
#[derive(Debug, Clone)]
pub struct LxmertOutput<B: Backend> {
    /// Language stream, `[batch, tokens, d]`.
    pub lang: Tensor<B, 3>,
    /// Object stream, `[batch, objects, d]` (objects padded to the batch's most).
    pub visn: Tensor<B, 3>,
    /// Pooled `[CLS]`, `[batch, d]`.
    pub pooled: Tensor<B, 2>,
    /// Each object's pooled pixels, the regression target, `[batch, objects, 3 · roi²]`.
    pub roi_pixels: Tensor<B, 3>,
    /// `true` at padded object slots, `[batch, objects]`.
    pub object_padding: Tensor<B, 2, Bool>,
}

impl LxmertConfig {
    /// Width of the pooled pixels an object regresses to.
    pub fn target_dim(&self) -> usize {
        3 * self.roi_size * self.roi_size
    }

    /// Creates the model on `device`.
    ///
    /// # Panics
    /// If `n_heads` does not divide `d_model`, or a size is zero (a programming error).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Lxmert<B> {
        assert!(
            self.vocab_size > 0 && self.num_answers > 0 && self.num_object_labels > 0,
            "lxmert: empty vocabulary, answer or label set"
        );
        let d = self.d_model;
        let norm = |w: usize| LayerNormConfig::new(w).with_eps(self.eps).init(device);
        let lin = |i: usize, o: usize| LinearConfig::new(i, o).init(device);
        let block = PostNormConfig::new(d, self.n_heads, self.d_hidden).with_eps(self.eps);
        let c = self.cnn_channels.max(2);
        let conv = |i: usize, o: usize| {
            Conv2dConfig::new([i, o], [3, 3])
                .with_stride([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        Lxmert {
            backbone: ConvBackbone {
                conv1: conv(3, c / 2),
                conv2: conv(c / 2, c),
            },
            word_embeddings: EmbeddingConfig::new(self.vocab_size + 1, d).init(device),
            position_embeddings: EmbeddingConfig::new(self.max_len, d).init(device),
            embeddings_norm: norm(d),
            visn_fc: lin((c + 3) * self.roi_size * self.roi_size, d),
            visn_layer_norm: norm(d),
            box_fc: lin(4, d),
            box_layer_norm: norm(d),
            l_layers: (0..self.l_layers)
                .map(|_| block.init_layer(device))
                .collect(),
            r_layers: (0..self.r_layers)
                .map(|_| block.init_layer(device))
                .collect(),
            x_layers: (0..self.x_layers)
                .map(|_| block.init_cross_modality(device))
                .collect(),
            pooler: lin(d, d),
            mlm_transform: lin(d, d),
            mlm_norm: norm(d),
            mlm_decoder: lin(d, self.vocab_size),
            obj_transform: lin(d, d),
            obj_norm: norm(d),
            obj_label: lin(d, self.num_object_labels),
            obj_feat: lin(d, self.target_dim()),
            matched: lin(d, 2),
            answer_fc1: lin(d, 2 * d),
            answer_norm: norm(2 * d),
            answer_fc2: lin(2 * d, self.num_answers),
            roi_size: self.roi_size,
        }
    }
}

impl<B: Backend> Lxmert<B> {
    /// The `[MASK]` id.
    pub fn mask_token(&self) -> usize {
        self.word_embeddings.weight.lazy_shape().dims::<2>()[0] - 1
    }

    /// Words the masked-word head predicts.
    pub fn vocab_size(&self) -> usize {
        self.mask_token()
    }

    /// Answers the QA head scores.
    pub fn num_answers(&self) -> usize {
        self.answer_fc2.weight.lazy_shape().dims::<2>()[1]
    }

    /// Longest token sequence.
    pub fn max_len(&self) -> usize {
        self.position_embeddings.weight.lazy_shape().dims::<2>()[0]
    }

    /// Pools `map` (`[batch, c, h, w]`, `scale` map pixels per image pixel) over every box,
    /// padded to `[batch, objects, c · roi²]`.
    fn pool(
        &self,
        map: Tensor<B, 4>,
        boxes: &[Vec<[f32; 4]>],
        scale: f32,
        objects: usize,
    ) -> Result<Tensor<B, 3>> {
        let c = map.dims()[1];
        let device = map.device();
        let rois: Vec<Roi> = boxes
            .iter()
            .enumerate()
            .flat_map(|(image, bs)| bs.iter().map(move |&corners| Roi { image, corners }))
            .collect();
        let mut cfg = RoiAlignConfig::new([self.roi_size, self.roi_size]);
        cfg.spatial_scale = scale;
        cfg.sampling_ratio = 2;
        let k = c * self.roi_size * self.roi_size;
        let pooled = roi_align(map, &rois, &cfg)?.reshape([rois.len(), k]);
        // Scatter the boxes into padded slots: slot (i, j) takes box j of image i, padding a
        // zero row (index `rois.len()` of the extended table).
        let zero = Tensor::<B, 2>::zeros([1, k], &device).cast(pooled.dtype());
        let table = Tensor::cat(vec![pooled, zero], 0);
        let mut index = Vec::with_capacity(boxes.len() * objects);
        let mut next = 0i64;
        for bs in boxes {
            for j in 0..objects {
                if j < bs.len() {
                    index.push(next + j as i64);
                } else {
                    index.push(rois.len() as i64);
                }
            }
            next += bs.len() as i64;
        }
        let index = Tensor::<B, 1, Int>::from_data(
            TensorData::new(index, [boxes.len() * objects]),
            &device,
        );
        Ok(table.select(0, index).reshape([boxes.len(), objects, k]))
    }

    /// Runs the three encoders.
    ///
    /// # Shapes
    /// See [`LxmertInput`]; returns [`LxmertOutput`].
    ///
    /// # Errors
    /// When an image has no box, a box is not finite, or the batch sizes disagree.
    pub fn forward(&self, input: LxmertInput<B>) -> Result<LxmertOutput<B>> {
        let LxmertInput {
            images,
            boxes,
            input_ids,
            attention_mask,
            feature_replacements,
        } = input;
        let [b, _, h, w] = images.dims();
        let [bt, l] = input_ids.dims();
        let bad = |reason: String| AlignError::Input {
            model: "lxmert".into(),
            reason,
        };
        if boxes.len() != b || bt != b {
            return Err(bad(format!(
                "{b} images, {} box lists and {bt} token rows",
                boxes.len()
            )));
        }
        if let Some(i) = boxes.iter().position(Vec::is_empty) {
            return Err(bad(format!("image {i} has no object box")));
        }
        if l > self.max_len() {
            return Err(bad(format!(
                "{l} tokens, more than max_len {}",
                self.max_len()
            )));
        }
        let objects = boxes.iter().map(Vec::len).max().unwrap_or(1);
        if !feature_replacements.is_empty() && feature_replacements.len() != b * objects {
            return Err(bad(format!(
                "{} feature replacements for {b} × {objects} object slots",
                feature_replacements.len()
            )));
        }
        let device = images.device();

        // Objects: RoI features and box positions, each through FC + LN, averaged (LXMERT's
        // `VisualFeatEncoder`).
        let map = self.backbone.forward(images.clone());
        let scale = map.dims()[2] as f32 / h as f32;
        let roi_pixels = self.pool(images, &boxes, 1.0, objects)?;
        // The object's feature: the CNN's bins and the box's own pooled pixels (colour is then
        // read off directly, as a detector's features carry it).
        let feats = Tensor::cat(
            vec![self.pool(map, &boxes, scale, objects)?, roi_pixels.clone()],
            2,
        );
        let feats = self.replace_features(feats, &feature_replacements);
        let side = [w as f32, h as f32, w as f32, h as f32];
        let mut pos = Vec::with_capacity(b * objects * 4);
        let mut padding = Vec::with_capacity(b * objects);
        for bs in &boxes {
            for j in 0..objects {
                match bs.get(j) {
                    Some(bx) => {
                        pos.extend((0..4).map(|k| bx[k] / side[k]));
                        padding.push(false);
                    }
                    None => {
                        pos.extend([0.0; 4]);
                        padding.push(true);
                    }
                }
            }
        }
        // In the images' type (half precision under mixed precision), like the features.
        let pos = Tensor::<B, 3>::from_data(TensorData::new(pos, [b, objects, 4]), &device)
            .cast(feats.dtype());
        let object_padding =
            Tensor::<B, 2, Bool>::from_data(TensorData::new(padding, [b, objects]), &device);
        let x = self
            .visn_layer_norm
            .forward(linear_2d(&self.visn_fc, feats));
        let y = self.box_layer_norm.forward(linear_2d(&self.box_fc, pos));
        let mut visn = (x + y) / 2.0;

        // Words: BERT embeddings (no token types: there is one sentence).
        let positions = Tensor::<B, 1, Int>::arange(0..l as i64, &device)
            .reshape([1, l])
            .expand([b, l]);
        let mut lang = self.embeddings_norm.forward(
            self.word_embeddings.forward(input_ids) + self.position_embeddings.forward(positions),
        );

        let lang_mask = AttentionMask::from_attention_mask(attention_mask);
        let visn_mask = AttentionMask::key_padding(object_padding.clone());
        for layer in &self.l_layers {
            lang = layer.forward(lang, Some(&lang_mask));
        }
        for layer in &self.r_layers {
            visn = layer.forward(visn, Some(&visn_mask));
        }
        for layer in &self.x_layers {
            (lang, visn) = layer.forward(lang, Some(&lang_mask), visn, Some(&visn_mask));
        }
        let d = lang.dims()[2];
        let cls = lang.clone().slice([0..b, 0..1, 0..d]).reshape([b, d]);
        let pooled = linear_2d(&self.pooler, cls).tanh();
        Ok(LxmertOutput {
            lang,
            visn,
            pooled,
            roi_pixels,
            object_padding,
        })
    }

    fn replace_features(
        &self,
        feats: Tensor<B, 3>,
        replacements: &[Option<Option<usize>>],
    ) -> Tensor<B, 3> {
        if replacements.iter().all(Option::is_none) {
            return feats;
        }
        let [b, o, k] = feats.dims();
        let device = feats.device();
        let flat = feats.reshape([b * o, k]);
        let source: Vec<i64> = replacements
            .iter()
            .enumerate()
            .map(|(i, r)| match r {
                Some(Some(from)) => *from as i64,
                _ => i as i64,
            })
            .collect();
        let zero: Vec<bool> = replacements
            .iter()
            .map(|r| matches!(r, Some(None)))
            .collect();
        let source = Tensor::<B, 1, Int>::from_data(TensorData::new(source, [b * o]), &device);
        let zero = Tensor::<B, 2, Bool>::from_data(TensorData::new(zero, [b * o, 1]), &device);
        flat.select(0, source)
            .mask_fill(zero.expand([b * o, k]), 0.0)
            .reshape([b, o, k])
    }

    /// Masked-word logits, `[batch, tokens, vocab]`.
    pub fn mlm_logits(&self, lang: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = self
            .mlm_norm
            .forward(gelu(linear_2d(&self.mlm_transform, lang)));
        linear_2d(&self.mlm_decoder, h)
    }

    /// Masked-object heads: label logits `[batch, objects, labels]` and regressed pixels
    /// `[batch, objects, 3 · roi²]`.
    pub fn object_heads(&self, visn: Tensor<B, 3>) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let h = self
            .obj_norm
            .forward(gelu(linear_2d(&self.obj_transform, visn)));
        (
            linear_2d(&self.obj_label, h.clone()),
            linear_2d(&self.obj_feat, h),
        )
    }

    /// Matched / not-matched logits, `[batch, 2]` (index 1 = matched).
    pub fn matched_logits(&self, pooled: Tensor<B, 2>) -> Tensor<B, 2> {
        linear_2d(&self.matched, pooled)
    }

    /// Answer logits, `[batch, answers]`.
    pub fn answer_logits(&self, pooled: Tensor<B, 2>) -> Tensor<B, 2> {
        let h = self
            .answer_norm
            .forward(gelu(linear_2d(&self.answer_fc1, pooled)));
        linear_2d(&self.answer_fc2, h)
    }
}

/// File of an exported model's weights (safetensors, PyTorch orientation, keys = field paths).
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// File of an exported model's [`LxmertConfig`].
pub const CONFIG_FILE: &str = "lxmert_config.json";

/// Writes `model` and its `config` to `dir` (created).
pub fn save_lxmert<B: Backend>(model: &Lxmert<B>, config: &LxmertConfig, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| AlignError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(CONFIG_FILE);
    vlp_core::io::write_atomic(&path, config.to_string().as_bytes())?;
    write_safetensors(
        dir.join(WEIGHTS_FILE),
        &collect_params(model),
        StoredDType::F32,
        None,
    )?;
    Ok(())
}

/// Whether `dir` holds a model written by [`save_lxmert`].
pub fn is_lxmert_dir(dir: &Path) -> bool {
    dir.join(CONFIG_FILE).is_file()
}

/// Reads a model written by [`save_lxmert`]; every weight must be there with its shape.
pub fn load_lxmert<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(Lxmert<B>, LxmertConfig)> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| AlignError::Io {
        path: path.clone(),
        source,
    })?;
    let config: LxmertConfig = serde_json::from_str(&text).map_err(|e| AlignError::Config {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let bad = |reason: String| AlignError::Config {
        path: path.clone(),
        reason,
    };
    // Sizes come from a file: bounded before anything is allocated from them (the embeddings,
    // the answer and label heads and the RoI grid are allocated from these at init).
    let c = &config;
    check_sizes(&[
        ("vocab_size", c.vocab_size, 1..=1 << 20),
        ("max_len", c.max_len, 1..=1 << 16),
        ("num_answers", c.num_answers, 1..=1 << 16),
        ("num_object_labels", c.num_object_labels, 1..=1 << 16),
        ("d_model", c.d_model, 1..=1 << 14),
        ("n_heads", c.n_heads, 1..=1 << 10),
        ("d_hidden", c.d_hidden, 1..=1 << 16),
        ("cnn_channels", c.cnn_channels, 1..=1 << 12),
        ("roi_size", c.roi_size, 1..=64),
        ("l_layers", c.l_layers, 0..=256),
        ("r_layers", c.r_layers, 0..=256),
        ("x_layers", c.x_layers, 0..=256),
    ])
    .map_err(bad)?;
    if !c.d_model.is_multiple_of(c.n_heads) {
        return Err(bad(format!(
            "{} heads do not divide width {}",
            c.n_heads, c.d_model
        )));
    }
    if !(c.eps > 0.0 && c.eps < 1.0) {
        return Err(bad(format!("`eps` = {} is not in (0, 1)", c.eps)));
    }
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
    use burn::tensor::Distribution;
    use vlp_core::backend::{DefaultBackend as B, default_device};

    fn model() -> Lxmert<B> {
        LxmertConfig::new(20, 8, 7, 5)
            .with_d_model(16)
            .with_n_heads(2)
            .with_d_hidden(24)
            .with_cnn_channels(8)
            .init(&default_device())
    }

    fn input(boxes: Vec<Vec<[f32; 4]>>, ids: &[[i64; 4]]) -> LxmertInput<B> {
        let dev = default_device();
        let b = boxes.len();
        let flat: Vec<i64> = ids.iter().flatten().copied().collect();
        let mask: Vec<i64> = flat.iter().map(|&t| (t != 0) as i64).collect();
        LxmertInput {
            images: Tensor::random([b, 3, 16, 16], Distribution::Normal(0.0, 1.0), &dev),
            boxes,
            input_ids: Tensor::from_data(TensorData::new(flat, [b, 4]), &dev),
            attention_mask: Tensor::from_data(TensorData::new(mask, [b, 4]), &dev),
            feature_replacements: Vec::new(),
        }
    }

    fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    #[test]
    fn padded_objects_and_words_do_not_reach_the_real_ones() {
        let m = model();
        let one = input(vec![vec![[1.0, 2.0, 9.0, 8.0]]], &[[3, 4, 5, 0]]);
        // The same image and words beside an image with three boxes and four words: the first
        // sample is now padded to three objects.
        let mut two = input(
            vec![
                vec![[1.0, 2.0, 9.0, 8.0]],
                vec![
                    [0.0, 0.0, 5.0, 5.0],
                    [4.0, 4.0, 15.0, 12.0],
                    [2.5, 1.5, 7.5, 15.0],
                ],
            ],
            &[[3, 4, 5, 0], [6, 7, 8, 9]],
        );
        two.images = Tensor::cat(
            vec![
                one.images.clone(),
                two.images.slice([1..2, 0..3, 0..16, 0..16]),
            ],
            0,
        );
        let a = m.forward(one).unwrap();
        let b = m.forward(two).unwrap();
        assert_eq!(b.visn.dims(), [2, 3, 16]);
        assert_eq!(b.roi_pixels.dims(), [2, 3, 12]);
        assert_eq!(
            b.object_padding
                .clone()
                .into_data()
                .to_vec::<bool>()
                .unwrap(),
            vec![false, true, true, false, false, false]
        );
        let err = |x: Vec<f32>, y: Vec<f32>| {
            x.iter()
                .zip(&y)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max)
        };
        let e_pool = err(values(a.pooled), values(b.pooled.slice([0..1, 0..16])));
        let e_lang = err(
            values(a.lang.slice([0..1, 0..3, 0..16])),
            values(b.lang.slice([0..1, 0..3, 0..16])),
        );
        let e_obj = err(values(a.visn), values(b.visn.slice([0..1, 0..1, 0..16])));
        assert!(
            e_pool < 1e-5 && e_lang < 1e-5 && e_obj < 1e-5,
            "padding leaked: pooled {e_pool}, words {e_lang}, object {e_obj}"
        );
    }

    #[test]
    fn roi_pixels_are_the_box_means_of_a_flat_image() {
        let m = model();
        let mut x = input(vec![vec![[2.0, 2.0, 10.0, 6.0]]], &[[1, 2, 0, 0]]);
        // Channel c is the constant c + 1: every bin of every box pools to it.
        let dev = default_device();
        x.images = Tensor::cat(
            (0..3)
                .map(|c| Tensor::<B, 4>::full([1, 1, 16, 16], c as f32 + 1.0, &dev))
                .collect(),
            1,
        );
        let out = m.forward(x).unwrap();
        let px = values(out.roi_pixels);
        assert_eq!(px.len(), 12);
        for (i, v) in px.iter().enumerate() {
            assert!((v - (i / 4 + 1) as f32).abs() < 1e-6, "bin {i}: {v}");
        }
    }

    #[test]
    fn replaced_features_change_the_object_stream() {
        let m = model();
        let boxes = vec![vec![[0.0, 0.0, 8.0, 8.0], [8.0, 8.0, 16.0, 16.0]]];
        let base = input(boxes, &[[1, 2, 3, 0]]);
        let run = |r: Vec<Option<Option<usize>>>| {
            let mut x = base.clone();
            x.feature_replacements = r;
            values(m.forward(x).unwrap().visn)
        };
        let plain = run(Vec::new());
        assert_eq!(
            plain,
            run(vec![None, None]),
            "no replacement must change nothing"
        );
        assert_ne!(plain, run(vec![Some(None), None]), "zeroing object 0");
        assert_ne!(
            plain,
            run(vec![None, Some(Some(0))]),
            "object 0's feature in slot 1"
        );
    }

    #[test]
    fn feature_replacements_zero_copy_or_keep_each_slot() {
        let m = model();
        let dev = default_device();
        // [1 image, 3 slots, 2 features]: slot 0 zeroed, slot 1 takes slot 2's row, slot 2 kept.
        let feats = Tensor::<B, 3>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [1, 3, 2]),
            &dev,
        );
        let out = m.replace_features(feats, &[Some(None), Some(Some(2)), None]);
        assert_eq!(values(out), vec![0.0, 0.0, 5.0, 6.0, 5.0, 6.0]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let m = model();
        let e = m
            .forward(input(vec![vec![]], &[[1, 2, 0, 0]]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("image 0 has no object box"), "{e}");
        let mut x = input(vec![vec![[0.0, 0.0, 4.0, 4.0]]], &[[1, 2, 0, 0]]);
        x.feature_replacements = vec![None, None];
        let e = m.forward(x).unwrap_err().to_string();
        assert!(e.contains("2 feature replacements for 1 × 1"), "{e}");
        let x = input(vec![vec![[0.0, f32::NAN, 4.0, 4.0]]], &[[1, 2, 0, 0]]);
        assert!(m.forward(x).is_err());
    }

    #[test]
    fn saved_models_load_with_the_same_outputs() {
        let m = model();
        let x = input(
            vec![vec![[1.0, 1.0, 9.0, 12.0], [3.0, 3.0, 6.0, 6.0]]],
            &[[1, 5, 2, 0]],
        );
        let want = values(m.forward(x.clone()).unwrap().pooled);
        let dir = tempfile::tempdir().unwrap();
        let cfg = LxmertConfig::new(20, 8, 7, 5)
            .with_d_model(16)
            .with_n_heads(2)
            .with_d_hidden(24)
            .with_cnn_channels(8);
        save_lxmert(&m, &cfg, dir.path()).unwrap();
        assert!(is_lxmert_dir(dir.path()));
        let (back, cfg2) = load_lxmert::<B>(dir.path(), &default_device()).unwrap();
        assert_eq!(cfg2.d_hidden, 24);
        assert_eq!(values(back.forward(x).unwrap().pooled), want);
        // A config whose sizes disagree with the weights names the mismatched keys.
        std::fs::write(
            dir.path().join(CONFIG_FILE),
            cfg.clone().with_d_hidden(32).to_string(),
        )
        .unwrap();
        let e = load_lxmert::<B>(dir.path(), &default_device())
            .unwrap_err()
            .to_string();
        assert!(e.contains("fc1"), "{e}");
        // Sizes from the file are bounded before anything is allocated, each error naming
        // the file and the field.
        for (bad, field) in [
            (cfg.clone().with_d_model(1 << 30), "d_model"),
            (cfg.clone().with_roi_size(0), "roi_size"),
            (cfg.clone().with_x_layers(1 << 20), "x_layers"),
            (LxmertConfig::new(1 << 40, 8, 7, 5), "vocab_size"),
            (cfg.clone().with_eps(0.0), "eps"),
        ] {
            std::fs::write(dir.path().join(CONFIG_FILE), bad.to_string()).unwrap();
            let e = load_lxmert::<B>(dir.path(), &default_device())
                .unwrap_err()
                .to_string();
            assert!(e.contains(field) && e.contains(CONFIG_FILE), "{field}: {e}");
        }
    }
}
