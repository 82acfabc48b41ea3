//! CoOp's claim in miniature (Zhou et al., 2022: a learned prompt context beats a hand-written
//! prompt with a few shots): on the pretrained fixture, whose captions never say "a photo of a",
//! 4-shot CoOp against the hand-written "a photo of a {class}." on held-out ShapesWorld images.

use vlp_align::adapter::ClipAdapterConfig;
use vlp_align::fit::FewShotFitConfig;
use vlp_align::prompt::CoopConfig;
use vlp_core::backend::{DefaultBackend, TrainBackend, default_device};
use vlp_tasks::fewshot::{
    ClipAdapter, Coop, FewShotMethod, LinearProbe, TipAdapter, ZeroShot, run_few_shot,
};

use crate::fixture::bench;

const SHOTS: usize = 4;
/// Context vectors: the paper's 16 do not fit the fixture's 16-token context with a class name,
/// so half of them (random init, shared, class name at the end: the paper's default otherwise).
const N_CTX: usize = 8;

/// Test accuracy of CoOp at [`SHOTS`] shots for each seed, and of the hand-written prompt.
fn accuracies(seeds: &[u64]) -> (Vec<f64>, f64) {
    let b = bench();
    let dev = default_device();
    let tok = b.tok.tokenizer.as_ref();
    let hand_acc = b.accuracies(&ZeroShot, SHOTS, &[1])[0];
    // The feature-only baselines at the same shots, for the record (not asserted).
    let clip_adapter = ClipAdapter::<TrainBackend> {
        config: ClipAdapterConfig::new(b.train_x.dim),
        fit: FewShotFitConfig::new().with_epochs(100),
        logit_scale: f64::from(b.model.logit_scale.val().exp().into_scalar()),
        device: dev.clone(),
    };
    let probe = LinearProbe::<DefaultBackend> {
        lambda: 1e-3,
        device: dev.clone(),
    };
    let tip = TipAdapter::default();
    let methods: [&dyn FewShotMethod; 3] = [&probe, &tip, &clip_adapter];
    for row in run_few_shot(
        &methods,
        &b.train_x,
        &b.train_y,
        &b.test_x,
        &b.test_y,
        &b.context(),
        &[SHOTS],
        seeds,
    )
    .unwrap()
    {
        println!(
            "{}-shot {}: {:.3} {:?} ({} trained parameters, {} images)",
            row.k, row.method, row.mean, row.accuracies, row.trainable_params, row.samples
        );
    }
    let coop = |seed: u64| Coop {
        model: &b.model,
        tokenizer: tok,
        classes: &b.classes,
        config: CoopConfig::new().with_n_ctx(N_CTX),
        fit: FewShotFitConfig::new().with_epochs(100).with_seed(seed),
        device: dev.clone(),
    };
    // Each seed draws the shots and, through the method's fit seed, the context and the order.
    let accs = seeds
        .iter()
        .map(|&seed| b.accuracies(&coop(seed), SHOTS, &[seed])[0])
        .collect();
    (accs, hand_acc)
}

/// The "4-shot CoOp ≥ hand-written prompt + 10 points", mean of 3 seeds (the seed draws
/// the shots, the context's initialisation and the shot order). 100 epochs, as the code trains 4
/// shots (`configs/trainers/CoOp/*_ep100.yaml`), the code's other defaults.
///
/// Measured (2026-12-01, release, 2 cores; fixture 1000 steps of 64, trained once in ~190 s,
/// then 39 s): CoOp 0.511, 0.489, 0.495 (mean 0.498) against the hand-written prompt's 0.159;
/// the fixture's own phrasing "circle coloured red" scores 0.501 zero-shot. Initialised from "a
/// photo of a" instead (4 vectors): 0.493 mean. On a weaker fixture (600 steps of 32, 64 wide;
/// its own phrasing 0.326, the hand-written prompt 0.176) CoOp reached only 0.208 (8 random
/// vectors), 0.218 ("a photo of a") and 0.190 (4 random): prompt learning cannot exceed what the
/// towers know, hence the larger fixture.
///
/// The feature baselines at the same shots (printed, not asserted): linear probe 0.494 (0.497,
/// 0.510, 0.476), Tip-Adapter 0.322, CLIP-Adapter 0.159 at the code's lr 0.002 — its adapted
/// feature keeps 80 % of the original and is classified by the same poor hand-written prompts
/// (0.194 at lr 0.05, 0.187 at 0.5): a learned prompt, not a better image feature, is what this
/// fixture lacks.
///
/// Base-to-novel is measured in MaPLe's claim (`tests/it/maple.rs`).
#[test]
#[ignore = "trains the fixture on first use and CoOp three times: run with --release"]
fn four_shot_coop_beats_a_hand_written_prompt() {
    let (coop, hand) = accuracies(&[1, 2, 3]);
    let mean = coop.iter().sum::<f64>() / coop.len() as f64;
    println!("4-shot CoOp {coop:?} (mean {mean:.3}), hand-written prompt {hand:.3}");
    assert!(
        mean >= hand + 0.10,
        "CoOp {mean:.3} is not 10 points above the hand-written prompt {hand:.3}"
    );
}
