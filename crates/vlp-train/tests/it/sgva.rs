//! SgVA-CLIP's claim in miniature (Peng et al., 2022: a semantic-guided visual adapter beats
//! zero-shot CLIP by a wide margin with a few shots and matches or beats a linear probe): on the
//! pretrained fixture, 4-shot SgVA-CLIP against the hand-written prompt's zero-shot accuracy and
//! a linear probe on the same shots, mean of 3 seeds.

use vlp_align::adapter::{ClipAdapterConfig, SgvaConfig};
use vlp_align::fit::FewShotFitConfig;
use vlp_align::prompt::CoopConfig;
use vlp_core::backend::{DefaultBackend, TrainBackend, default_device};
use vlp_tasks::fewshot::{LinearProbe, Sgva, ZeroShot};

use crate::fixture::bench;

const SHOTS: usize = 4;
const SEEDS: [u64; 3] = [1, 2, 3];

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// methods.md row 7's CPU test: "≥ zero-shot + 10 points; ≥ linear probe − 2 points" at 4 shots.
/// The prompt is CoOp's as in CoOp's claim (8 random shared vectors: 16 do not fit the
/// fixture's context with a class name), trained 100 epochs with CoOp's recipe; the adapter is
/// CLIP-Adapter's (reduction 4, α 0.2); τ 0.07, λ₁ = λ₂ = β = 1.
#[test]
#[ignore = "trains the fixture on first use and SgVA-CLIP three times: run with --release"]
fn four_shot_sgva_beats_zero_shot_and_matches_a_linear_probe() {
    let b = bench();
    let dev = default_device();
    let zero_shot = mean(&b.accuracies(&ZeroShot, SHOTS, &SEEDS));
    let probe = LinearProbe::<DefaultBackend> {
        lambda: 1e-3,
        device: dev.clone(),
    };
    let probe = b.accuracies(&probe, SHOTS, &SEEDS);
    let sgva = |seed: u64| Sgva::<TrainBackend> {
        model: &b.model,
        tokenizer: b.tok.tokenizer.as_ref(),
        classes: &b.classes,
        config: SgvaConfig::new(
            ClipAdapterConfig::new(b.train_x.dim),
            CoopConfig::new().with_n_ctx(8),
        ),
        fit: FewShotFitConfig::new().with_epochs(100).with_seed(seed),
        device: dev.clone(),
    };
    // Each seed draws the shots and, through the fit seed, the prompt, adapter and order.
    let ours: Vec<f64> = SEEDS
        .iter()
        .map(|&s| b.accuracies(&sgva(s), SHOTS, &[s])[0])
        .collect();
    println!(
        "4-shot SgVA-CLIP {ours:?} (mean {:.3}); linear probe {probe:?} (mean {:.3}); \
         zero-shot {zero_shot:.3}",
        mean(&ours),
        mean(&probe)
    );
    assert!(
        mean(&ours) >= zero_shot + 0.10,
        "SgVA-CLIP {:.3} is not 10 points above zero-shot {zero_shot:.3}",
        mean(&ours)
    );
    assert!(
        mean(&ours) >= mean(&probe) - 0.02,
        "SgVA-CLIP {:.3} is more than 2 points below the linear probe {:.3}",
        mean(&ours),
        mean(&probe)
    );
}
