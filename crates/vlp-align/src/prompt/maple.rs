//! MaPLe (Khattak et al., 2023, "MaPLe: Multi-modal Prompt Learning"): prompts in both towers,
//! coupled. The text tower gets CoOp's learned context at its input and a fresh set of prompt
//! tokens at each of the next `depth − 1` blocks; the image tower gets the same number of prompt
//! tokens at the same depths, each a linear projection of the text prompts of that depth, so
//! that the two branches learn together. Both towers stay frozen; only the prompt learner trains.
//!
//! Following the official code (`muzairkhattak/multimodal-prompt-learning`, `trainers/maple.py`,
//! `clip/model.py::ResidualAttentionBlock_MaPLe` and `VisionTransformer_MaPLe`,
//! `configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml`):
//! - `n_ctx` = 2 context vectors initialised from the first two tokens of "a photo of a"; the
//!   prompt is still the whole phrase, "a photo of a {class}.", with those two tokens replaced
//!   (so "of a" stays as fixed words); random N(0, 0.02²) with "X X {class}." without a phrase;
//! - `depth` J = 9: `compound_prompts_text` are J − 1 sets of `n_ctx` vectors, N(0, 0.02²);
//!   `proj` maps the input context and `compound_prompt_projections[i]` the deeper sets into the
//!   image tower's width (`nn.Linear` with bias, PyTorch's default initialisation);
//! - the image tower appends the projected context after the patch tokens (before `ln_pre`);
//! - at blocks 1 … J − 1 the prompt tokens are *replaced* by the next set, not added to: in
//!   the text tower positions `[1, 1 + n_ctx)` (after the start token), in the image tower the
//!   last `n_ctx` tokens; blocks from J on carry them along;
//! - CLIP's class token pools the image and the text tower pools its end token, so the prompt
//!   tokens only act through attention; we drop the image prompts after the last block so that
//!   the tower's token count is unchanged for other poolings;
//! - logits `exp(logit_scale)·img·txtᵀ`, cross-entropy; SGD lr 0.0035, batch 4, one constant
//!   warm-up epoch at 1e-5 then cosine (the code's 5 epochs are for 16 shots; the epochs are the
//!   caller's, through [`FewShotFitConfig`]).
//!
//! Departure: the code augments every step (random resized crop, flip); [`fit_maple`] takes the
//! pixels once, so pass augmented copies to get that.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use vlp_core::nn::EncoderHook;
use vlp_text::{TextOutput, Tokenizer};
use vlp_vision::VitOutput;

use crate::error::{AlignError, Result};
use crate::fit::{FewShotFitConfig, fit_few_shot_with_loss};
use crate::model::{ClipModel, normalize};
use crate::prompt::coop::{
    ClassTokenPosition, CoopPrompts, encode_prompt_embeddings, splice_context,
};

/// A MaPLe prompt learner.
#[derive(Config, Debug)]
pub struct MapleConfig {
    /// Context vectors per prompted layer (the code's `N_CTX`, 2).
    #[config(default = 2)]
    pub n_ctx: usize,
    /// Phrase whose first `n_ctx` tokens initialise the context (the code's `CTX_INIT`, "a photo
    /// of a"); the rest of it stays in the prompt as fixed words. `None`: random context.
    #[config(default = "Some(String::from(\"a photo of a\"))")]
    pub init: Option<String>,
    /// Prompted blocks J, counting the input (the code's `PROMPT_DEPTH`, 9 of ViT-B/16's 12):
    /// J − 1 deeper prompt sets.
    #[config(default = 9)]
    pub depth: usize,
}

/// MaPLe's prompt learner (`prompt_learner` in the code; the names are the code's).
#[derive(Module, Debug)]
pub struct MaplePromptLearner<B: Backend> {
    /// The text context at the input, `[n_ctx, text width]`.
    pub ctx: Param<Tensor<B, 2>>,
    /// Text context → image prompts of the input, `text width → vision width`.
    pub proj: Linear<B>,
    /// Text prompts of blocks 1 … J − 1, each `[n_ctx, text width]`.
    pub compound_prompts_text: Vec<Param<Tensor<B, 2>>>,
    /// Their projections into image prompts, one per depth.
    pub compound_prompt_projections: Vec<Linear<B>>,
}

fn bad(what: &str, reason: impl Into<String>) -> AlignError {
    AlignError::Input {
        model: format!("MaPLe {what}"),
        reason: reason.into(),
    }
}

fn real_tokens(tok: &dyn Tokenizer, text: &str) -> Result<(Vec<u32>, usize)> {
    let e = tok
        .encode(text)
        .map_err(|e| bad("prompt", format!("cannot tokenise \"{text}\": {e}")))?;
    let n = e.attention_mask.iter().filter(|&&m| m != 0).count();
    Ok((e.ids, n))
}

impl MapleConfig {
    /// The words of the initialisation phrase that stay in every prompt (after the first
    /// `n_ctx`, which the context replaces), checking that those first words are one token each.
    fn fixed_words(&self, tok: &dyn Tokenizer) -> Result<Option<String>> {
        let Some(phrase) = &self.init else {
            return Ok(None);
        };
        let words: Vec<&str> = phrase.split_whitespace().collect();
        if self.n_ctx > words.len() {
            return Err(bad(
                "initialisation",
                format!(
                    "n_ctx {} but the phrase \"{phrase}\" has {} words",
                    self.n_ctx,
                    words.len()
                ),
            ));
        }
        let (_, specials) = real_tokens(tok, "")?;
        let head = words[..self.n_ctx].join(" ");
        let (_, n) = real_tokens(tok, &head)?;
        if n - specials != self.n_ctx {
            return Err(bad(
                "initialisation",
                format!(
                    "\"{head}\" is {} tokens, not one per context vector ({})",
                    n - specials,
                    self.n_ctx
                ),
            ));
        }
        Ok(Some(words[self.n_ctx..].join(" ")))
    }

    /// The tokenised prompts of `classes`: `"X … X {rest of the phrase} {class}."`, the
    /// placeholders where the context goes. Used at initialisation and for new class names.
    pub fn prompts(&self, tok: &dyn Tokenizer, classes: &[String]) -> Result<CoopPrompts> {
        let names: Vec<String> = match self.fixed_words(tok)? {
            Some(rest) if !rest.is_empty() => {
                classes.iter().map(|c| format!("{rest} {c}")).collect()
            }
            _ => classes.to_vec(),
        };
        let mut p = CoopPrompts::new(tok, &names, self.n_ctx)?;
        p.classes = classes.to_vec();
        Ok(p)
    }

    /// A fresh prompt learner for `model` and the prompts of `classes`.
    pub fn init<B: Backend>(
        &self,
        model: &ClipModel<B>,
        tok: &dyn Tokenizer,
        classes: &[String],
        device: &B::Device,
    ) -> Result<(MaplePromptLearner<B>, CoopPrompts)> {
        let layers = model.shared_depth();
        if self.depth == 0 || self.depth > layers {
            return Err(bad(
                "prompt depth",
                format!(
                    "depth {} must lie in 1..={layers} (the blocks of the shallower tower)",
                    self.depth
                ),
            ));
        }
        if self.n_ctx == 0 {
            return Err(bad("context", "n_ctx must be at least 1"));
        }
        let prompts = self.prompts(tok, classes)?;
        let (dt, dv) = (
            model.text_model.hidden_size(),
            model.vision_model.hidden_size(),
        );
        let ctx = match &self.init {
            Some(phrase) => {
                let (ids, _) = real_tokens(tok, phrase)?;
                let words: Vec<i64> = ids[prompts.prefix..prompts.prefix + self.n_ctx]
                    .iter()
                    .map(|&i| i as i64)
                    .collect();
                let words =
                    Tensor::<B, 2, Int>::from_data(TensorData::new(words, [1, self.n_ctx]), device);
                let e = model.text_model.embeddings.token_embedding.forward(words);
                e.reshape([self.n_ctx, dt]).detach()
            }
            None => Tensor::random([self.n_ctx, dt], Distribution::Normal(0.0, 0.02), device),
        };
        let deep = self.depth - 1;
        let learner = MaplePromptLearner {
            ctx: Param::from_tensor(ctx),
            proj: LinearConfig::new(dt, dv).init(device),
            compound_prompts_text: (0..deep)
                .map(|_| {
                    Param::from_tensor(Tensor::random(
                        [self.n_ctx, dt],
                        Distribution::Normal(0.0, 0.02),
                        device,
                    ))
                })
                .collect(),
            compound_prompt_projections: (0..deep)
                .map(|_| LinearConfig::new(dt, dv).init(device))
                .collect(),
        };
        Ok((learner, prompts))
    }
}

/// Replaces the text prompt tokens at blocks 1 … J − 1 (`ResidualAttentionBlock_MaPLe`, text
/// branch).
struct TextPrompts<B: Backend> {
    /// One `[n_ctx, width]` set per deeper block.
    prompts: Vec<Tensor<B, 2>>,
    /// Where the context starts (after the start token).
    start: usize,
}

impl<B: Backend> EncoderHook<B> for TextPrompts<B> {
    fn before_layer(&mut self, layer: usize, x: Tensor<B, 3>) -> Tensor<B, 3> {
        if layer == 0 || layer > self.prompts.len() {
            return x;
        }
        let p = self.prompts[layer - 1].clone();
        let [b, t, d] = x.dims();
        let n = p.dims()[0];
        let s = self.start;
        Tensor::cat(
            vec![
                x.clone().slice([0..b, 0..s, 0..d]),
                p.unsqueeze::<3>().expand([b, n, d]),
                x.slice([0..b, s + n..t, 0..d]),
            ],
            1,
        )
    }
}

/// Replaces the image prompt tokens (the last `n_ctx`) at blocks 1 … J − 1 and drops them after
/// the last block (`ResidualAttentionBlock_MaPLe`, vision branch).
struct VisionPrompts<B: Backend> {
    /// One `[n_ctx, width]` set per deeper block.
    prompts: Vec<Tensor<B, 2>>,
    /// Prompt tokens at the end of the sequence.
    n_ctx: usize,
    /// Index of the tower's last block.
    last: usize,
}

impl<B: Backend> EncoderHook<B> for VisionPrompts<B> {
    fn before_layer(&mut self, layer: usize, x: Tensor<B, 3>) -> Tensor<B, 3> {
        if layer == 0 || layer > self.prompts.len() {
            return x;
        }
        let p = self.prompts[layer - 1].clone();
        let [b, t, d] = x.dims();
        Tensor::cat(
            vec![
                x.slice([0..b, 0..t - self.n_ctx, 0..d]),
                p.unsqueeze::<3>().expand([b, self.n_ctx, d]),
            ],
            1,
        )
    }

    fn after_layer(&mut self, layer: usize, x: Tensor<B, 3>) -> Tensor<B, 3> {
        if layer != self.last {
            return x;
        }
        let [b, t, d] = x.dims();
        x.slice([0..b, 0..t - self.n_ctx, 0..d])
    }
}

impl<B: Backend> MaplePromptLearner<B> {
    /// Context vectors per prompted layer.
    pub fn n_ctx(&self) -> usize {
        self.ctx.dims()[0]
    }

    /// The text tower on the class prompts: normalised class embeddings (`[classes, embed]`)
    /// and the tower's output (hidden states if asked: block `i` receives `hidden_states[i]`).
    pub fn encode_text(
        &self,
        model: &ClipModel<B>,
        prompts: &CoopPrompts,
        output_hidden_states: bool,
    ) -> (Tensor<B, 2>, TextOutput<B>) {
        let emb = splice_context(
            model,
            prompts,
            self.ctx.val().unsqueeze::<3>(),
            ClassTokenPosition::End,
        );
        let mut hook = TextPrompts {
            prompts: self.compound_prompts_text.iter().map(|p| p.val()).collect(),
            start: prompts.prefix,
        };
        encode_prompt_embeddings(model, prompts, emb, output_hidden_states, &mut hook)
    }

    /// The image tower with the coupled prompts: normalised image embeddings (`[n, embed]`) and
    /// the tower's output.
    ///
    /// # Shapes
    /// - `pixels`: `[n, 3, image_size, image_size]`, normalised
    pub fn encode_image(
        &self,
        model: &ClipModel<B>,
        pixels: Tensor<B, 4>,
        output_hidden_states: bool,
    ) -> (Tensor<B, 2>, VitOutput<B>) {
        let vision = &model.vision_model;
        let x = vision.embeddings.forward(pixels);
        let [b, _, dv] = x.dims();
        let n = self.n_ctx();
        let shallow = self
            .proj
            .forward(self.ctx.val())
            .unsqueeze::<3>()
            .expand([b, n, dv]);
        let mut hook = VisionPrompts {
            prompts: self
                .compound_prompt_projections
                .iter()
                .zip(&self.compound_prompts_text)
                .map(|(proj, p)| proj.forward(p.val()))
                .collect(),
            n_ctx: n,
            last: vision.encoder.layers.len() - 1,
        };
        let out = vision.forward_tokens_hooked(
            Tensor::cat(vec![x, shallow], 1),
            output_hidden_states,
            &mut hook,
        );
        (
            normalize(model.project_image(out.pooler_output.clone())),
            out,
        )
    }

    /// `exp(logit_scale)·img·txtᵀ` of `pixels` against every class of `prompts`.
    ///
    /// # Shapes
    /// - `pixels`: `[n, 3, image_size, image_size]`; returns `[n, classes]`
    pub fn logits(
        &self,
        model: &ClipModel<B>,
        prompts: &CoopPrompts,
        pixels: Tensor<B, 4>,
    ) -> Tensor<B, 2> {
        let (text, _) = self.encode_text(model, prompts, false);
        let (image, _) = self.encode_image(model, pixels, false);
        let scale = model.logit_scale.val().exp().unsqueeze::<2>();
        image.matmul(text.transpose()) * scale
    }
}

/// Trains `learner` on labelled images with [`fit_few_shot_with_loss`]'s recipe (pass the code's
/// lr 0.0035 and batch 4), both towers frozen; returns it and each epoch's mean loss.
///
/// # Shapes
/// - `pixels`: `[shots, 3, image_size, image_size]`, normalised
/// - `labels`: one class per shot, `< prompts.len()`
pub fn fit_maple<B: AutodiffBackend>(
    model: &ClipModel<B>,
    learner: MaplePromptLearner<B>,
    prompts: &CoopPrompts,
    pixels: Tensor<B, 4>,
    labels: &[usize],
    cfg: &FewShotFitConfig,
) -> Result<(MaplePromptLearner<B>, Vec<f64>)> {
    // A clone of a parameter not drawn yet would draw its own values.
    vlp_core::backend::materialize(model);
    let model = model.clone().no_grad();
    let ce = CrossEntropyLossConfig::new().init(&pixels.device());
    fit_few_shot_with_loss(
        "MaPLe",
        learner,
        pixels,
        labels,
        prompts.len(),
        cfg,
        |m, x, y| ce.forward(m.logits(&model, prompts, x), y),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompt::coop::tests::tokenizer;
    use vlp_core::backend::{DefaultBackend, TrainBackend, default_device, seeded};

    /// A CLIP whose towers have three blocks (8 wide, 16-pixel images in patches of 8).
    fn model<B: Backend>(tok: &dyn Tokenizer, device: &B::Device) -> ClipModel<B> {
        crate::prompt::coop::tests::model_with_layers(tok, 3, device)
    }

    fn classes() -> Vec<String> {
        ["red circle", "star", "big blue star"]
            .map(String::from)
            .to_vec()
    }

    fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().to_vec().unwrap()
    }

    #[test]
    fn prompts_are_the_phrase_with_its_first_tokens_replaced() {
        let tok = tokenizer(12);
        let p = MapleConfig::new().prompts(&tok, &classes()).unwrap();
        assert_eq!((p.prefix, p.n_ctx), (1, 2));
        assert_eq!(p.classes, classes());
        let hand = tok.encode("a photo of a big blue star.").unwrap().ids;
        let unk = 10;
        let row = &p.ids[2 * 12..3 * 12];
        assert_eq!(row[..3], [hand[0], unk, unk]);
        assert_eq!(row[3..], hand[3..]);
        // Without a phrase: CoOp's "X X {class}.".
        let p = MapleConfig::new()
            .with_init(None)
            .prompts(&tok, &classes())
            .unwrap();
        let hand = tok.encode("star.").unwrap().ids;
        assert_eq!(
            p.ids[12..12 + 6],
            [hand[0], unk, unk, hand[1], hand[2], hand[3]]
        );
        let err = MapleConfig::new()
            .with_n_ctx(5)
            .prompts(&tok, &classes())
            .unwrap_err();
        assert!(err.to_string().contains("n_ctx 5 but the phrase"), "{err}");
    }

    /// Block `i` (1 ≤ i < J) receives exactly the deeper prompt set `i` at the prompt positions
    /// of both towers — replaced, not added to the previous block's output there — and the
    /// previous block's output everywhere else; blocks from J on carry the prompts along; the
    /// image prompts are gone after the last block.
    #[test]
    fn deep_prompts_replace_the_prompt_tokens_at_every_prompted_layer() {
        type B = DefaultBackend;
        let dev = default_device();
        let tok = tokenizer(12);
        let (m, learner, p, pixels) = seeded::<B, _>(&dev, 11, || {
            let m = model::<B>(&tok, &dev);
            let (learner, p) = MapleConfig::new()
                .with_depth(2)
                .init(&m, &tok, &classes(), &dev)
                .unwrap();
            let px = Tensor::<B, 4>::random([2, 3, 16, 16], Distribution::Normal(0.0, 1.0), &dev);
            (m, learner, p, px)
        });
        assert_eq!(learner.compound_prompts_text.len(), 1);
        // Text: 3 classes × 12 tokens × 8 wide; the context at positions 1 and 2.
        let (_, out) = learner.encode_text(&m, &p, true);
        let h = out.hidden_states.unwrap();
        assert_eq!(h.len(), 4);
        let at =
            |t: &Tensor<B, 3>, r: std::ops::Range<usize>| values(t.clone().slice([0..3, r, 0..8]));
        let deep = values(learner.compound_prompts_text[0].val());
        assert_eq!(
            at(&h[1], 1..3),
            [deep.clone(), deep.clone(), deep.clone()].concat()
        );
        let (_, mask) = p.tensors::<B>(&dev);
        let causal = vlp_core::nn::AttentionMask::causal(12, &dev)
            .or(vlp_core::nn::AttentionMask::from_attention_mask(mask));
        let block0 = m.text_model.encoder.layers[0].forward(h[0].clone(), Some(&causal));
        assert_eq!(at(&h[1], 0..1), at(&block0, 0..1));
        assert_eq!(at(&h[1], 3..12), at(&block0, 3..12));
        let block1 = m.text_model.encoder.layers[1].forward(h[1].clone(), Some(&causal));
        assert_eq!(
            at(&h[2], 0..12),
            at(&block1, 0..12),
            "depth 2: block 2 is not prompted"
        );
        // Image: 2 images × (4 patches + class token + 2 prompts).
        let (_, out) = learner.encode_image(&m, pixels, true);
        let h = out.hidden_states.unwrap();
        let dims: Vec<usize> = h.iter().map(|t| t.dims()[1]).collect();
        assert_eq!(dims, [7, 7, 7, 5]);
        assert_eq!(out.last_hidden_state.dims(), [2, 5, 8]);
        let at =
            |t: &Tensor<B, 3>, r: std::ops::Range<usize>| values(t.clone().slice([0..2, r, 0..8]));
        let deep = values(
            learner.compound_prompt_projections[0].forward(learner.compound_prompts_text[0].val()),
        );
        assert_eq!(at(&h[1], 5..7), [deep.clone(), deep].concat());
        let block0 = m.vision_model.encoder.layers[0].forward(h[0].clone(), None);
        assert_eq!(at(&h[1], 0..5), at(&block0, 0..5));
    }

    #[test]
    fn gradients_reach_only_the_prompt_learner() {
        type B = TrainBackend;
        let dev = default_device();
        let tok = tokenizer(12);
        let (m, learner, p, pixels) = seeded::<B, _>(&dev, 12, || {
            let m = model::<B>(&tok, &dev).no_grad();
            let (learner, p) = MapleConfig::new()
                .with_depth(3)
                .with_init(None)
                .init(&m, &tok, &classes(), &dev)
                .unwrap();
            vlp_core::backend::materialize(&learner);
            let px = Tensor::<B, 4>::random([2, 3, 16, 16], Distribution::Normal(0.0, 1.0), &dev);
            (m, learner, p, px)
        });
        let grads = learner
            .logits(&m, &p, pixels)
            .powi_scalar(2)
            .sum()
            .backward();
        let nonzero = |g: Option<Tensor<DefaultBackend, 2>>| {
            g.is_some_and(|g| g.abs().sum().into_scalar() > 0.0)
        };
        assert!(nonzero(learner.ctx.grad(&grads)));
        assert!(nonzero(learner.proj.weight.grad(&grads)));
        for (t, proj) in learner
            .compound_prompts_text
            .iter()
            .zip(&learner.compound_prompt_projections)
        {
            assert!(nonzero(t.grad(&grads)));
            assert!(nonzero(proj.weight.grad(&grads)));
        }
        assert!(
            m.text_model
                .embeddings
                .token_embedding
                .weight
                .grad(&grads)
                .is_none()
        );
        assert!(
            m.vision_model.encoder.layers[2]
                .mlp
                .fc1
                .weight
                .grad(&grads)
                .is_none()
        );
        assert!(
            m.text_model.encoder.layers[0]
                .mlp
                .fc1
                .weight
                .grad(&grads)
                .is_none()
        );
        assert!(m.logit_scale.grad(&grads).is_none());
        let params = learner.num_params();
        // ctx 2×8, proj 8×8 + 8, and two deeper sets with their projections.
        assert_eq!(params, 3 * (2 * 8 + 8 * 8 + 8));
        let err = MapleConfig::new()
            .with_depth(4)
            .init(&m, &tok, &classes(), &dev)
            .unwrap_err();
        assert!(
            err.to_string().contains("depth 4 must lie in 1..=3"),
            "{err}"
        );
    }
}
