//! CoOp (Zhou et al., 2022, "Learning to Prompt for Vision-Language Models"): the words of a
//! zero-shot prompt ("a photo of a {class}.") become `n_ctx` vectors learned in the frozen text
//! tower's token-embedding space, shared by all classes (unified context) or one set per class
//! (class-specific context, CSC), with the class name at the end, in the middle or at the front.
//! Only the context trains; both towers and the token table stay frozen.
//!
//! Following the official code (`KaiyangZhou/CoOp`, `trainers/coop.py`): the prompt is tokenised
//! as `"X X … X {class}."` and the placeholders' embeddings are replaced by the context, so the
//! start token, the class tokens, the full stop, the end token and the pooling position are the
//! tokenizer's own; the context starts from N(0, 0.02²) or from the embeddings of an
//! initialisation phrase ("a photo of a", whose token count then sets `n_ctx`); logits are
//! `exp(logit_scale) · img · txtᵀ` with CLIP's learned scale; trained by [`fit_few_shot`], the
//! code's recipe: SGD with momentum 0.9, weight decay
//! 5e-4, one epoch of constant warm-up at 1e-5, then cosine (`configs/trainers/CoOp/*.yaml`).
//! The image tower is frozen, so [`fit_coop`] trains on image features computed once; the code's
//! random crops and flips would need the tower at every step and are left to the caller (pass
//! features of augmented views).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use vlp_text::Tokenizer;

use crate::error::{AlignError, Result};
use crate::fit::{FewShotFitConfig, fit_few_shot};
use crate::model::{ClipModel, normalize};

/// The placeholder word CoOp's code tokenises where the context goes.
const PLACEHOLDER: &str = "X";

/// Where the class name sits among the context vectors (CoOp's `CLASS_TOKEN_POSITION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassTokenPosition {
    /// `[ctx] {class}.` (the paper's default).
    #[default]
    End,
    /// `[first half of ctx] {class} [second half].`
    Middle,
    /// `{class} [ctx].`
    Front,
}

/// A CoOp prompt learner.
#[derive(Config, Debug)]
pub struct CoopConfig {
    /// Number of context vectors (the paper's M: 16 by default, 4 with "a photo of a").
    #[config(default = 16)]
    pub n_ctx: usize,
    /// Phrase whose token embeddings initialise the context (its token count replaces `n_ctx`);
    /// `None`: random N(0, 0.02²).
    #[config(default = "None")]
    pub init: Option<String>,
    /// One context per class (the paper's class-specific context, CSC) instead of one shared.
    #[config(default = false)]
    pub class_specific: bool,
    /// Where the class name goes.
    #[config(default = "ClassTokenPosition::End")]
    pub position: ClassTokenPosition,
}

/// The frozen half of a CoOp prompt: each class's tokenised `"X … X {class}."` and where its
/// parts lie.
#[derive(Debug, Clone)]
pub struct CoopPrompts {
    /// Class names, in class order.
    pub classes: Vec<String>,
    /// Token ids, `classes × context_length`, row-major.
    pub ids: Vec<u32>,
    /// Attention mask of the same shape (`1` = token).
    pub attention_mask: Vec<u32>,
    /// Tokens per prompt (the tokenizer's context length).
    pub context_length: usize,
    /// Tokens before the context (the start token, if the tokenizer has one).
    pub prefix: usize,
    /// Context vectors.
    pub n_ctx: usize,
    /// Tokens of each class name.
    pub name_lens: Vec<usize>,
}

fn bad(class: &str, reason: impl Into<String>) -> AlignError {
    AlignError::Input {
        model: format!("CoOp prompt for class \"{class}\""),
        reason: reason.into(),
    }
}

fn encode(tok: &dyn Tokenizer, class: &str, text: &str) -> Result<(Vec<u32>, Vec<u32>)> {
    let e = tok
        .encode(text)
        .map_err(|e| bad(class, format!("cannot tokenise \"{text}\": {e}")))?;
    Ok((e.ids, e.attention_mask))
}

fn real(mask: &[u32]) -> usize {
    mask.iter().filter(|&&m| m != 0).count()
}

impl CoopPrompts {
    /// Tokenises every class's prompt with `n_ctx` placeholders and checks that the tokenizer
    /// keeps each placeholder one token, the class name's tokens intact, and the whole prompt
    /// within its context length.
    pub fn new(tok: &dyn Tokenizer, classes: &[String], n_ctx: usize) -> Result<Self> {
        if classes.is_empty() {
            return Err(bad("", "no classes"));
        }
        if n_ctx == 0 {
            return Err(bad(&classes[0], "n_ctx must be at least 1"));
        }
        // Tokens before the first word: where the placeholder alone and the empty text differ.
        let (a, _) = encode(tok, PLACEHOLDER, PLACEHOLDER)?;
        let (empty, empty_mask) = encode(tok, "", "")?;
        let prefix = a.iter().zip(&empty).take_while(|(x, y)| x == y).count();
        let Some(&placeholder) = a.get(prefix).filter(|_| a != empty) else {
            return Err(bad(
                &classes[0],
                format!("the tokenizer gives the placeholder \"{PLACEHOLDER}\" no token"),
            ));
        };
        let specials = real(&empty_mask);
        let context = vec![PLACEHOLDER; n_ctx].join(" ");
        let l = tok.context_length();
        let (mut ids, mut attention_mask, mut name_lens) = (Vec::new(), Vec::new(), Vec::new());
        for class in classes {
            let (full, full_mask) = encode(tok, class, &format!("{context} {class}."))?;
            let (plain, plain_mask) = encode(tok, class, &format!("{class}."))?;
            let (name, name_mask) = encode(tok, class, class)?;
            let name_len = real(&name_mask).saturating_sub(specials);
            if name_len == 0 {
                return Err(bad(class, "the class name has no tokens"));
            }
            if real(&full_mask) != real(&plain_mask) + n_ctx || real(&full_mask) > l {
                return Err(bad(
                    class,
                    format!(
                        "{n_ctx} context tokens and the class name do not fit in the context \
                         length {l} (or the tokenizer does not keep \"{PLACEHOLDER}\" one token)"
                    ),
                ));
            }
            if full[prefix..prefix + n_ctx]
                .iter()
                .any(|&t| t != placeholder)
            {
                return Err(bad(
                    class,
                    format!(
                        "the tokenizer merges the placeholder \"{PLACEHOLDER}\" with its neighbours"
                    ),
                ));
            }
            if full[prefix + n_ctx..prefix + n_ctx + name_len] != name[prefix..prefix + name_len]
                || full[prefix + n_ctx..l] != plain[prefix..l - n_ctx]
            {
                return Err(bad(
                    class,
                    "the class name tokenises differently after the context",
                ));
            }
            ids.extend(full);
            attention_mask.extend(full_mask);
            name_lens.push(name_len);
        }
        Ok(Self {
            classes: classes.to_vec(),
            ids,
            attention_mask,
            context_length: l,
            prefix,
            n_ctx,
            name_lens,
        })
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.classes.len()
    }

    /// Whether there are no classes (never, once built).
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// Ids and mask as tensors, `[classes, context_length]` each.
    pub fn tensors<B: Backend>(
        &self,
        device: &B::Device,
    ) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
        let shape = [self.len(), self.context_length];
        let t = |v: &[u32]| {
            Tensor::from_data(
                TensorData::new(v.iter().map(|&i| i as i64).collect::<Vec<_>>(), shape),
                device,
            )
        };
        (t(&self.ids), t(&self.attention_mask))
    }
}

/// CoOp's learned context (`prompt_learner.ctx` in the code).
#[derive(Module, Debug)]
pub struct CoopPromptLearner<B: Backend> {
    /// Context vectors, `[1 or classes, n_ctx, width]`.
    pub ctx: Param<Tensor<B, 3>>,
    /// Where the class name goes.
    pub position: ClassTokenPosition,
}

impl CoopConfig {
    /// Tokenises the classes' prompts and initialises the context from `model`'s token table.
    pub fn init<B: Backend>(
        &self,
        model: &ClipModel<B>,
        tok: &dyn Tokenizer,
        classes: &[String],
        device: &B::Device,
    ) -> Result<(CoopPromptLearner<B>, CoopPrompts)> {
        let width = model.text_model.hidden_size();
        let sets = if self.class_specific {
            classes.len()
        } else {
            1
        };
        let (ctx, n_ctx) = match &self.init {
            Some(phrase) => {
                let probe = CoopPrompts::new(tok, &classes[..classes.len().min(1)], 1)?;
                let (ids, mask) = encode(tok, phrase, phrase)?;
                let (_, empty) = encode(tok, "", "")?;
                let n = real(&mask).saturating_sub(real(&empty));
                if n == 0 {
                    return Err(bad(phrase, "the initialisation phrase has no tokens"));
                }
                let words: Vec<i64> = ids[probe.prefix..probe.prefix + n]
                    .iter()
                    .map(|&i| i as i64)
                    .collect();
                let words = Tensor::<B, 2, Int>::from_data(TensorData::new(words, [1, n]), device);
                let e = model
                    .text_model
                    .embeddings
                    .token_embedding
                    .forward(words)
                    .detach();
                (e.repeat_dim(0, sets).detach(), n)
            }
            None => (
                Tensor::random(
                    [sets, self.n_ctx, width],
                    Distribution::Normal(0.0, 0.02),
                    device,
                ),
                self.n_ctx,
            ),
        };
        let prompts = CoopPrompts::new(tok, classes, n_ctx)?;
        Ok((
            CoopPromptLearner {
                ctx: Param::from_tensor(ctx),
                position: self.position,
            },
            prompts,
        ))
    }
}

/// The prompts' token embeddings with `ctx` in place of the placeholders, the class name where
/// `position` puts it.
///
/// # Shapes
/// - `ctx`: `[1 or classes, n_ctx, width]`
/// - returns: `[classes, context_length, width]`
pub(crate) fn splice_context<B: Backend>(
    model: &ClipModel<B>,
    prompts: &CoopPrompts,
    ctx: Tensor<B, 3>,
    position: ClassTokenPosition,
) -> Tensor<B, 3> {
    let device = ctx.device();
    let (ids, _) = prompts.tensors::<B>(&device);
    let emb = model.text_model.embeddings.token_embedding.forward(ids);
    let [c, l, d] = emb.dims();
    let (p, n) = (prompts.prefix, prompts.n_ctx);
    let ctx = if ctx.dims()[0] == 1 {
        ctx.expand([c, n, d])
    } else {
        ctx
    };
    if position == ClassTokenPosition::End {
        return Tensor::cat(
            vec![
                emb.clone().slice([0..c, 0..p, 0..d]),
                ctx,
                emb.slice([0..c, p + n..l, 0..d]),
            ],
            1,
        );
    }
    let rows = (0..c)
        .map(|i| {
            let m = prompts.name_lens[i];
            let e = |r: std::ops::Range<usize>| emb.clone().slice([i..i + 1, r, 0..d]);
            let x = |r: std::ops::Range<usize>| ctx.clone().slice([i..i + 1, r, 0..d]);
            let (start, name, rest) = (e(0..p), e(p + n..p + n + m), e(p + n + m..l));
            let parts = match position {
                ClassTokenPosition::Middle => {
                    let half = n / 2;
                    vec![start, x(0..half), name, x(half..n), rest]
                }
                _ => vec![start, name, x(0..n), rest],
            };
            Tensor::cat(parts, 1)
        })
        .collect();
    Tensor::cat(rows, 0)
}

/// Runs the prompts' token embeddings through the frozen text tower with `hook` around its
/// blocks; the pooled output, projected and L2-normalised, and the tower's output.
///
/// # Shapes
/// - `embeddings`: `[classes, context_length, width]`
/// - returns: `[classes, embed]`
pub(crate) fn encode_prompt_embeddings<B: Backend>(
    model: &ClipModel<B>,
    prompts: &CoopPrompts,
    embeddings: Tensor<B, 3>,
    output_hidden_states: bool,
    hook: &mut dyn vlp_core::nn::EncoderHook<B>,
) -> (Tensor<B, 2>, vlp_text::TextOutput<B>) {
    let device = embeddings.device();
    let (ids, mask) = prompts.tensors::<B>(&device);
    let pool = model.text_model.pool_index(ids);
    let mask = model.text_model.causal.then_some(mask);
    let out = model.text_model.forward_token_embeddings_hooked(
        embeddings,
        mask,
        pool,
        output_hidden_states,
        hook,
    );
    (
        normalize(model.project_text(out.pooler_output.clone())),
        out,
    )
}

impl<B: Backend> CoopPromptLearner<B> {
    /// The prompts' token embeddings with the context in place of the placeholders.
    ///
    /// # Shapes
    /// - returns: `[classes, context_length, width]`
    pub fn prompt_embeddings(&self, model: &ClipModel<B>, prompts: &CoopPrompts) -> Tensor<B, 3> {
        splice_context(model, prompts, self.ctx.val(), self.position)
    }

    /// Every class's text embedding through the frozen tower, projected and L2-normalised.
    ///
    /// # Shapes
    /// - returns: `[classes, embed]`
    pub fn class_embeddings(&self, model: &ClipModel<B>, prompts: &CoopPrompts) -> Tensor<B, 2> {
        let emb = self.prompt_embeddings(model, prompts);
        encode_prompt_embeddings(model, prompts, emb, false, &mut vlp_core::nn::NoHook).0
    }
}

/// Trains `learner`'s context on frozen image features with [`fit_few_shot`]'s recipe (CoOp's),
/// returning the trained learner and each epoch's mean loss.
///
/// # Shapes
/// - `image_features`: `[shots, embed]`, L2-normalised (the frozen image tower's, projected)
/// - `labels`: one class per shot, `< prompts.len()`
pub fn fit_coop<B: AutodiffBackend>(
    model: &ClipModel<B>,
    learner: CoopPromptLearner<B>,
    prompts: &CoopPrompts,
    image_features: Tensor<B, 2>,
    labels: &[usize],
    cfg: &FewShotFitConfig,
) -> Result<(CoopPromptLearner<B>, Vec<f64>)> {
    // A clone of a parameter not drawn yet would draw its own values: train against the
    // caller's weights.
    vlp_core::backend::materialize(model);
    let model = model.clone().no_grad();
    let scale = model.logit_scale.val().exp().detach().unsqueeze::<2>();
    fit_few_shot(
        "CoOp",
        learner,
        image_features,
        labels,
        prompts.len(),
        cfg,
        |learner, x| {
            let text = learner.class_embeddings(&model, prompts);
            x.matmul(text.transpose()) * scale.clone()
        },
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ClipConfig;
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::tensor::ElementConversion;
    use vlp_core::backend::{DefaultBackend, TrainBackend, default_device};
    use vlp_text::TextPooling;
    use vlp_text::tokenizer::word_tokenizer;

    const WORDS: &[&str] = &[
        "a", "photo", "of", "red", "blue", "circle", "big", "star", ".",
    ];

    pub(crate) fn tokenizer(context: usize) -> vlp_text::HfTokenizer {
        word_tokenizer(WORDS, context)
    }

    pub(crate) fn model<B: Backend>(tok: &dyn Tokenizer, device: &B::Device) -> ClipModel<B> {
        model_with_layers(tok, 1, device)
    }

    /// An 8-wide CLIP with `layers` blocks in each tower over `tok`'s ids, drawn now.
    pub(crate) fn model_with_layers<B: Backend>(
        tok: &dyn Tokenizer,
        layers: usize,
        device: &B::Device,
    ) -> ClipModel<B> {
        // <pad>=0, the words 1..=9, <unk>=10, sot=11, eot=12.
        let eot = tok.encode("").unwrap().ids[1];
        let m = ClipConfig::shapes_tiny(
            8,
            layers,
            2,
            6,
            8,
            16,
            tok.vocab_size(),
            tok.context_length(),
            TextPooling::FirstEos { eos_token_id: eot },
        )
        .init(device);
        // Drawn now (under the caller's seed), not lazily at first use.
        vlp_core::backend::materialize(&m);
        m
    }

    fn classes() -> Vec<String> {
        ["red circle", "star", "big blue star"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn prompts_keep_the_tokenizers_start_name_stop_and_end() {
        let tok = tokenizer(12);
        let p = CoopPrompts::new(&tok, &classes(), 3).unwrap();
        let (sot, unk, eot) = (11, 10, 12);
        assert_eq!((p.prefix, p.n_ctx, p.context_length), (1, 3, 12));
        assert_eq!(p.name_lens, vec![2, 1, 3]);
        // "X X X big blue star." = sot, 3 placeholders, big blue star, ".", eot, padding.
        let row = |i: usize| p.ids[i * 12..(i + 1) * 12].to_vec();
        assert_eq!(row(2), vec![sot, unk, unk, unk, 7, 5, 8, 9, eot, 0, 0, 0]);
        assert_eq!(row(1), vec![sot, unk, unk, unk, 8, 9, eot, 0, 0, 0, 0, 0]);
        assert_eq!(
            p.attention_mask[12..24],
            [1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn a_prompt_that_does_not_fit_names_its_class() {
        // "X X X X big blue star." needs 10 tokens.
        let tok = tokenizer(9);
        let err = CoopPrompts::new(&tok, &classes(), 4)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"big blue star\"") && err.contains("context length 9"),
            "{err}"
        );
        assert!(CoopPrompts::new(&tok, &classes(), 3).is_ok());
        let err = CoopPrompts::new(&tok, &[], 3).unwrap_err().to_string();
        assert!(err.contains("no classes"), "{err}");
    }

    /// The embeddings of every layout against a loop over the token ids.
    #[test]
    fn context_replaces_the_placeholders_at_every_class_position() {
        type B = DefaultBackend;
        let dev = default_device();
        let tok = tokenizer(12);
        let m = model::<B>(&tok, &dev);
        let table = m.text_model.embeddings.token_embedding.weight.val();
        let table: Vec<f32> = table.into_data().to_vec().unwrap();
        let d = 8;
        for csc in [false, true] {
            for position in [
                ClassTokenPosition::End,
                ClassTokenPosition::Middle,
                ClassTokenPosition::Front,
            ] {
                let cfg = CoopConfig::new()
                    .with_n_ctx(3)
                    .with_class_specific(csc)
                    .with_position(position);
                let (learner, p) = cfg.init(&m, &tok, &classes(), &dev).unwrap();
                let sets = if csc { 3 } else { 1 };
                assert_eq!(learner.ctx.dims(), [sets, 3, d]);
                // Context vector k of class c is the constant 100·c + k + 1.
                let ctx: Vec<f32> = (0..sets * 3 * d)
                    .map(|i| (100 * (i / (3 * d)) + (i / d) % 3 + 1) as f32)
                    .collect();
                let learner = CoopPromptLearner {
                    ctx: Param::from_tensor(Tensor::from_data(
                        TensorData::new(ctx, [sets, 3, d]),
                        &dev,
                    )),
                    position,
                };
                let got: Vec<f32> = learner
                    .prompt_embeddings(&m, &p)
                    .into_data()
                    .to_vec()
                    .unwrap();
                assert_eq!(got.len(), 3 * 12 * d);
                for c in 0..3 {
                    let ids = &p.ids[c * 12..(c + 1) * 12];
                    let name: Vec<u32> = ids[4..4 + p.name_lens[c]].to_vec();
                    let rest: Vec<u32> = ids[4 + p.name_lens[c]..].to_vec();
                    // Each position: Ok(token id) or Err(context index).
                    let mut want: Vec<Result<u32, usize>> = vec![Ok(ids[0])];
                    let ctx = |r: std::ops::Range<usize>| r.map(Err).collect::<Vec<_>>();
                    let words = |v: &[u32]| v.iter().map(|&t| Ok(t)).collect::<Vec<_>>();
                    match position {
                        ClassTokenPosition::End => {
                            want.extend(ctx(0..3));
                            want.extend(words(&name));
                        }
                        ClassTokenPosition::Middle => {
                            want.extend(ctx(0..1));
                            want.extend(words(&name));
                            want.extend(ctx(1..3));
                        }
                        ClassTokenPosition::Front => {
                            want.extend(words(&name));
                            want.extend(ctx(0..3));
                        }
                    }
                    want.extend(words(&rest));
                    assert_eq!(want.len(), 12);
                    for (t, w) in want.iter().enumerate() {
                        let row = &got[(c * 12 + t) * d..(c * 12 + t + 1) * d];
                        let expect: Vec<f32> = match *w {
                            Ok(id) => table[id as usize * d..(id as usize + 1) * d].to_vec(),
                            Err(k) => vec![(100 * if csc { c } else { 0 } + k + 1) as f32; d],
                        };
                        assert_eq!(
                            row,
                            &expect[..],
                            "{position:?} csc {csc} class {c} token {t}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn an_initialisation_phrase_sets_the_context_to_its_embeddings() {
        type B = DefaultBackend;
        let dev = default_device();
        let tok = tokenizer(12);
        let m = model::<B>(&tok, &dev);
        let cfg = CoopConfig::new()
            .with_init(Some("a photo of a".into()))
            .with_class_specific(true);
        let (learner, p) = cfg.init(&m, &tok, &classes(), &dev).unwrap();
        assert_eq!(p.n_ctx, 4);
        assert_eq!(learner.ctx.dims(), [3, 4, 8]);
        let ids =
            Tensor::<B, 2, Int>::from_data(TensorData::new(vec![1i64, 2, 3, 1], [1, 4]), &dev);
        let want = m.text_model.embeddings.token_embedding.forward(ids);
        for c in 0..3 {
            let got = learner.ctx.val().slice([c..c + 1, 0..4, 0..8]);
            got.into_data().assert_eq(&want.clone().into_data(), true);
        }
        // With the phrase in place, the prompt is the hand-written one.
        let (ids, mask) = tok
            .encode_batch(&["a photo of a red circle."])
            .unwrap()
            .to_tensors::<B>(&dev);
        let hand = normalize(m.encode_text(ids, Some(mask)));
        let learned = learner.class_embeddings(&m, &p).slice([0..1, 0..6]);
        learned
            .into_data()
            .assert_approx_eq::<f32>(&hand.into_data(), burn::tensor::Tolerance::absolute(1e-6));
    }

    #[test]
    fn only_the_context_receives_gradients() {
        type B = TrainBackend;
        let dev = default_device();
        let tok = tokenizer(12);
        let m = model::<B>(&tok, &dev).no_grad();
        let (learner, p) = CoopConfig::new()
            .with_n_ctx(2)
            .init(&m, &tok, &classes(), &dev)
            .unwrap();
        let loss = learner.class_embeddings(&m, &p).sum();
        let grads = loss.backward();
        let g = learner.ctx.grad(&grads).expect("context gradient");
        assert!(g.abs().sum().into_scalar() > 0.0);
        assert!(
            m.text_model
                .embeddings
                .token_embedding
                .weight
                .grad(&grads)
                .is_none()
        );
        assert!(
            m.text_projection
                .as_ref()
                .unwrap()
                .weight
                .grad(&grads)
                .is_none()
        );
        assert!(m.logit_scale.grad(&grads).is_none());
    }

    /// One step of `fit_coop` against SGD written out: the context moves by the learning rate
    /// times (the loss gradient + weight decay × context), the towers do not move, and bad labels
    /// and counts are refused.
    #[test]
    fn a_fitting_step_is_sgd_on_the_context_alone() {
        type B = TrainBackend;
        let dev = default_device();
        let tok = tokenizer(12);
        let names: Vec<String> = ["red circle", "blue star", "photo"]
            .map(String::from)
            .to_vec();
        let labels = [2usize, 0, 1, 1];
        let (m, learner, p, x) = vlp_core::backend::seeded::<B, _>(&dev, 7, || {
            let m = model::<B>(&tok, &dev);
            let (learner, p) = CoopConfig::new()
                .with_n_ctx(3)
                .init(&m, &tok, &names, &dev)
                .unwrap();
            let x = normalize(Tensor::<B, 2>::random(
                [4, 6],
                Distribution::Normal(0.0, 1.0),
                &dev,
            ));
            (m, learner, p, x)
        });
        let table = |m: &ClipModel<B>| -> Vec<f32> {
            let w = m.text_model.embeddings.token_embedding.weight.val();
            w.into_data().to_vec().unwrap()
        };
        let before = table(&m);
        // The gradient by hand: CE of exp(logit_scale)·x·textᵀ over the four shots.
        let frozen = m.clone().no_grad();
        let text = learner.class_embeddings(&frozen, &p);
        let scale = frozen.logit_scale.val().exp().unsqueeze::<2>();
        let logits = x.clone().matmul(text.transpose()) * scale;
        let y = Tensor::<B, 1, Int>::from_data(TensorData::new(vec![2i64, 0, 1, 1], [4]), &dev);
        let loss = CrossEntropyLossConfig::new().init(&dev).forward(logits, y);
        let loss0 = loss.clone().into_scalar().elem::<f64>();
        let grad = learner.ctx.grad(&loss.backward()).unwrap();
        let ctx0 = learner.ctx.val().inner();
        let (lr, wd) = (0.1, 0.01);
        let want = ctx0.clone() - (grad + ctx0.clone() * wd) * lr;
        let fit = FewShotFitConfig::new()
            .with_epochs(1)
            .with_warmup_epochs(0.0)
            .with_batch_size(4)
            .with_lr(lr)
            .with_weight_decay(wd);
        let (trained, losses) =
            fit_coop(&m, learner.clone(), &p, x.clone(), &labels, &fit).unwrap();
        assert!((losses[0] - loss0).abs() < 1e-5, "{} vs {loss0}", losses[0]);
        let got = trained.ctx.val().inner();
        got.clone()
            .into_data()
            .assert_approx_eq::<f32>(&want.into_data(), burn::tensor::Tolerance::absolute(1e-6));
        assert!(
            (got - ctx0).abs().max().into_scalar() > 1e-4,
            "the context did not move"
        );
        assert_eq!(before, table(&m), "the token table moved");
        let err = fit_coop(&m, learner.clone(), &p, x.clone(), &[0, 1, 5, 0], &fit).unwrap_err();
        assert!(err.to_string().contains("label 5 but 3 classes"), "{err}");
        let err = fit_coop(&m, learner, &p, x, &[0, 1], &fit).unwrap_err();
        assert!(
            err.to_string().contains("4 image features for 2 labels"),
            "{err}"
        );
    }
}
