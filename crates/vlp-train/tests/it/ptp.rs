//! PTP's claim in miniature (Wang et al., 2023: position-guided prompts teach a
//! vision-language model where objects are, without costing retrieval): PTP and CLIP trained
//! in this test on the same batches from the same seeds (mean of 3 seeds).
//!
//! Asserted: the decoder fills "… The block [?] has a red circle." in (the block scored best
//! among the 9 holds an object of that name) on at least 0.7 of the held-out prompts, the
//! issue's bar (chance 0.111; always answering the most frequent block, 4, scores 0.227), and
//! PTP's retrieval R@5 is not below CLIP's (within 0.02, the spread between seeds). Measured
//! (2026-12-01, 2-core AMD EPYC, release build, 1130 s, 7.1 GB): block filling 0.787, 0.807,
//! 0.790 (mean 0.794); R@5 PTP 0.280, 0.272, 0.288 (0.280) against CLIP 0.275, 0.248, 0.260
//! (0.261).
//!
//! PTP trains here with its contrastive and language-modelling losses; BLIP's matching loss is
//! off (`itm_weight = 0`): it costs two thirds of every step, and what fills the prompt in is
//! the decoder. With it on, block filling stayed within the spread of seeds (1500 steps: 0.49
//! with, 0.52 without on 2026-11-30; seed 1 on 2026-12-01, 0.597 with, 0.567 without), and the
//! full method on this test's model, seed 1, 4000 steps (`vlp train --config configs/ptp.toml`,
//! release build, 1214 s) filled 0.817 in.
//!
//! Steps decide: block filling rises late (2026-12-01, seed 1, release build, this test's
//! model and losses): 0.57 after 1500 steps, 0.81 after 4000; the language-modelling loss
//! alone reaches 0.67 and 0.82. Small objects (4 to 8 pixels across at 32 pixels) are the last
//! to be placed: by quarters of object area, 0.33, 0.51, 0.69, 0.73 after 1500 steps, 0.68,
//! 0.85, 0.88, 0.83 after 4000. Neither a higher resolution (48 pixels, 0.51), smaller patches
//! (4 pixels, 0.51), a CLIP-pretrained tower (0.54), nor a heavier language-modelling weight
//! (3, 0.52) helped at 1500 steps.
//!
//! The decoder places the image tokens with learned position embeddings
//! (`PtpSettings::image_positions`; BLIP has none, its pretrained ViT's tokens keep their
//! positions). Without them the decoder never told the blocks apart here: 0.227 on every seed
//! after 300 to 2000 steps.
use std::sync::Arc;

use vlp_core::backend::default_device;
use vlp_train::TrainConfig;
use vlp_train::method::clip::ClipMethod;
use vlp_train::method::ptp::{PtpMethod, PtpSettings, block_filling};
use vlp_train::method::{Method, Metrics};
use vlp_train::model::build_tokenizer;

use crate::{batches_with, claim_config, evaluated, held_out, per_seed, trained};

/// Steps of each training run.
const STEPS: usize = 4000;

fn config(seed: u64) -> TrainConfig {
    claim_config(
        seed,
        STEPS,
        &[
            // Caption and prompt: ShapesWorld's longest captions and 9 prompt tokens.
            "tokenizer.context_length=40",
        ],
    )
}

/// (PTP block filling, PTP R@5, CLIP R@5), R@5 the mean of both directions.
fn run(seed: u64) -> (f64, f64, f64) {
    let cfg = config(seed);
    let settings = PtpSettings {
        d_hidden: 128,
        // See the module comment: the decoder fills the prompt in; matching would triple the
        // test's time.
        itm_weight: 0.0,
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
#[ignore = "trains 6 models of 4000 steps (about 20 min on 2 cores in a release build); run \
            with `cargo test --release -p vlp-train --test it ptp -- --ignored --nocapture`"]
fn position_prompted_pretraining_learns_where_objects_are_and_keeps_clip_retrieval() {
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
        "mean: block filling {block:.3} (the issue asks 0.7; chance 0.111, most frequent \
         block 0.227); R@5 PTP {ptp:.3} CLIP {clip:.3}"
    );
    assert!(
        block >= 0.7,
        "block filling {block:.3} is below the issue's 0.7"
    );
    assert!(
        ptp >= clip - 0.02,
        "PTP's R@5 {ptp:.3} is below CLIP's {clip:.3}"
    );
}
