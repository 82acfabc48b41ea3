//! PTP's claim in miniature (Wang et al., 2023: position-guided prompts teach a
//! vision-language model where objects are, without costing retrieval): PTP and CLIP trained
//! in this test on the same batches from the same seeds (mean of 3 seeds).
//!
//! Asserted: PTP's retrieval R@5 on held-out images is not below CLIP's (within 0.02, the
//! spread between seeds). **Not met, printed**: the issue's ≥ 0.7 for filling
//! "… The block [?] has a red circle." with the decoder. Measured (seeds 1–3, 300 steps,
//! 2026-11-30): block filling 0.227 on every seed, which is always answering block 4, the
//! most frequent block of the training prompts (0.20 of them; uniform chance 0.11). The
//! decoder does read the image (a caption's log-likelihood drops by about 3 nats with another
//! image's tokens) but not where objects are: after 600, 1000 and 2000 steps, at 64 px, without
//! augmentation, without the class token in the decoder's context, with the language-model loss
//! alone, at lr 7e-4, with one object per image (0.240), and even with the object named before
//! the block ("The red circle has a block [?]"), the score of each block stays the same for
//! every image. The training prompts are right (a pixel-difference heuristic finds the named
//! object's block in each checked sample). What does learn, in 2000 steps: one object per image
//! with the decoder reading the tower's *input* tokens (patch and position embeddings): 0.72.
//! Not with its output tokens (0.24), nor from input tokens with several objects (0.23).

use std::sync::Arc;

use vlp_core::backend::default_device;
use vlp_train::TrainConfig;
use vlp_train::method::clip::ClipMethod;
use vlp_train::method::ptp::{PtpMethod, PtpSettings, block_filling};
use vlp_train::method::{Method, Metrics};
use vlp_train::model::build_tokenizer;

use crate::{batches_with, evaluated, held_out, per_seed, tiny, trained};

/// Steps of each training run.
const STEPS: usize = 300;

fn config(seed: u64) -> TrainConfig {
    tiny(&[
        "model.width=64",
        "model.layers=2",
        "model.heads=2",
        "model.embed_dim=64",
        "model.patch_size=8",
        "data.batch_size=32",
        // Caption and prompt: ShapesWorld's longest captions and 9 prompt tokens.
        "tokenizer.context_length=40",
        &format!("optim.steps={STEPS}"),
        "optim.warmup_steps=20",
        "optim.lr=0.003",
        &format!("run.seed={seed}"),
    ])
}

/// (PTP block filling, PTP R@5, CLIP R@5), R@5 the mean of both directions.
fn run(seed: u64) -> (f64, f64, f64) {
    let cfg = config(seed);
    let settings = PtpSettings {
        d_hidden: 128,
        ..PtpSettings::default()
    };
    let method = Arc::new(PtpMethod::new(settings, &cfg).unwrap());
    let data = batches_with(&cfg, STEPS, method.data().text_transform);
    let first = &data[0].texts[0][0];
    assert!(
        first.contains(". The block "),
        "no position prompt in {first:?}"
    );
    let set = held_out(&cfg, "shapes:test:300");
    let p = trained(Arc::clone(&method), &cfg, &data);
    let m = evaluated(method.as_ref(), &p, &set, &cfg);
    let tok = build_tokenizer(&cfg).unwrap();
    let filled = block_filling(
        &p,
        &set,
        tok.tokenizer.as_ref(),
        &method.prompt(),
        300,
        &default_device(),
    )
    .unwrap()
    .expect("ShapesWorld images have named boxes and captions");
    assert!(
        filled.prompts >= 250,
        "only {} prompts scored",
        filled.prompts
    );
    assert_eq!(m["block_accuracy"], filled.accuracy());
    let r5 = |m: &Metrics| (m["retrieval_i2t_r5"] + m["retrieval_t2i_r5"]) / 2.0;
    // CLIP on the same batches: it trains on their captions, without the prompt.
    let clip = ClipMethod::clip(&cfg).unwrap();
    let c = trained(Arc::new(clip.clone()), &cfg, &data);
    let cm = evaluated(&clip, &c, &set, &cfg);
    (filled.accuracy(), r5(&m), r5(&cm))
}

#[test]
#[ignore = "trains 6 models of 300 steps (about 2 min on 2 cores, 4 under load); run with \
            `cargo test -p vlp-train --test it ptp -- --ignored --nocapture`"]
fn position_prompted_pretraining_keeps_clip_retrieval() {
    let seeds = [1u64, 2, 3];
    let n = seeds.len() as f64;
    let (mut block, mut ptp, mut clip) = (0.0, 0.0, 0.0);
    for (&seed, (b, p, c)) in seeds.iter().zip(per_seed(&seeds, run)) {
        println!("seed {seed}: block filling {b:.3}; R@5 PTP {p:.3} CLIP {c:.3}");
        block += b / n;
        ptp += p / n;
        clip += c / n;
    }
    println!(
        "mean: block filling {block:.3} (the issue asks 0.7, not met; chance 0.111); \
         R@5 PTP {ptp:.3} CLIP {clip:.3}"
    );
    assert!(
        ptp >= clip - 0.02,
        "PTP's R@5 {ptp:.3} is below CLIP's {clip:.3}"
    );
}
