//! MaPLe's claim in miniature (Khattak et al., 2023: coupled prompts in both towers generalise
//! to unseen classes better than CoOp's text-only context): base-to-novel on the pretrained
//! fixture, 15 base classes with shots and 15 novel ones, MaPLe against CoOp trained in the same
//! test on the same shots, mean of 3 seeds.

use vlp_align::fit::FewShotFitConfig;
use vlp_align::prompt::{CoopConfig, MapleConfig};
use vlp_core::backend::{TrainBackend, default_device};
use vlp_tasks::fewshot::{BaseToNovel, Coop, HandWritten, Maple, OpenVocabularyMethod};

use crate::fixture::{Bench, bench};

/// The protocol's shots per base class (CoCoOp's and MaPLe's base-to-novel uses 16).
const SHOTS: usize = 16;
const SEEDS: [u64; 3] = [1, 2, 3];

fn mean(rows: &[BaseToNovel], f: impl Fn(&BaseToNovel) -> f64) -> f64 {
    rows.iter().map(f).sum::<f64>() / rows.len() as f64
}

fn run(b: &Bench, method: &dyn OpenVocabularyMethod, seed: u64) -> BaseToNovel {
    let r = b.base_to_novel(method, SHOTS, seed);
    println!(
        "seed {seed} {}: base {:.3}, novel {:.3}, H {:.3}",
        method.name(),
        r.base,
        r.novel,
        r.harmonic
    );
    r
}

/// methods.md row 21's CPU test: "H(MaPLe) ≥ H(CoOp) − 1 point and novel accuracy ≥ CoOp's
/// (3 seeds)". Each method with its code's training recipe for 16 shots: MaPLe SGD lr 0.0035,
/// batch 4, 5 epochs (`vit_b16_c2_ep5_batch4_2ctx.yaml`), prompts in all 3 blocks of the
/// fixture (the code's depth 9 is for 12); CoOp lr 0.002, batch 32, 200 epochs (`*_ep200.yaml`).
/// Both learn the same 8 random shared context vectors (CoOp's 16 do not fit the fixture's
/// context with a class name).
///
/// Why not MaPLe's 2 vectors from "a photo of a": that phrase is tuned to OpenAI's CLIP, and
/// the fixture's captions never say it, so the two words it keeps fixed ("of a") only hurt.
/// Measured on seed 1 (2026-12-01): 2 vectors from the phrase B 0.423 N 0.182 H 0.255 (20
/// epochs: N 0.194); 2 random vectors, 20 epochs, N 0.307; 8 random vectors N 0.432 (5 epochs)
/// and 0.442 (20) against CoOp's 0.354; depth 2 instead of 3 N 0.421, depth 1 (shallow) 0.295
/// with 2 vectors against 0.307 at depth 3.
///
/// **The claim does not hold here today.** Measured (2026-12-01, release, 2 cores, ~80 s with
/// the fixture cached), B / N / H per seed:
/// | seed | CoOp | MaPLe |
/// | --- | --- | --- |
/// | 1 | 0.679 / 0.354 / 0.466 | 0.673 / 0.432 / 0.527 |
/// | 2 | 0.636 / 0.542 / 0.585 | 0.611 / 0.505 / 0.553 |
/// | 3 | 0.636 / 0.556 / 0.593 | 0.628 / 0.368 / 0.464 |
/// | mean | 0.650 / 0.484 / 0.548 | 0.637 / 0.435 / 0.515 |
/// (the hand-written prompt: 0.174 / 0.215 / 0.192). MaPLe wins on seed 1 only. Not yet tried:
/// the code's random resized crops and flips at every step (both methods train on fixed images
/// here), which matter more for MaPLe, whose image prompts can fit the base images.
#[test]
#[ignore = "fails today (MaPLe N 0.435 vs CoOp 0.484, see above); trains the fixture on first use, then CoOp and MaPLe three times: run with --release"]
fn maple_generalises_to_novel_classes_at_least_as_well_as_coop() {
    let b = bench();
    let dev = default_device();
    let tok = b.tok.tokenizer.as_ref();
    let hand = HandWritten {
        model: &b.inner,
        tokenizer: tok,
        templates: vec!["a photo of a {}.".into()],
        device: dev.clone(),
    };
    run(&b, &hand, 1);
    let (mut coop, mut maple) = (Vec::new(), Vec::new());
    for seed in SEEDS {
        let c = Coop::<TrainBackend> {
            model: &b.model,
            tokenizer: tok,
            classes: &b.classes,
            config: CoopConfig::new().with_n_ctx(8),
            fit: FewShotFitConfig::new().with_epochs(200).with_seed(seed),
            device: dev.clone(),
        };
        coop.push(run(&b, &c, seed));
        let m = Maple::<TrainBackend> {
            model: &b.model,
            tokenizer: tok,
            config: MapleConfig::new()
                .with_n_ctx(8)
                .with_init(None)
                .with_depth(3),
            fit: FewShotFitConfig::new()
                .with_epochs(5)
                .with_batch_size(4)
                .with_lr(0.0035)
                .with_seed(seed),
            device: dev.clone(),
        };
        maple.push(run(&b, &m, seed));
    }
    let (h_coop, h_maple) = (mean(&coop, |r| r.harmonic), mean(&maple, |r| r.harmonic));
    let (n_coop, n_maple) = (mean(&coop, |r| r.novel), mean(&maple, |r| r.novel));
    println!(
        "mean: CoOp B {:.3} N {n_coop:.3} H {h_coop:.3}; MaPLe B {:.3} N {n_maple:.3} H {h_maple:.3}",
        mean(&coop, |r| r.base),
        mean(&maple, |r| r.base)
    );
    assert!(
        h_maple >= h_coop - 0.01,
        "MaPLe's H {h_maple:.3} is more than a point below CoOp's {h_coop:.3}"
    );
    assert!(
        n_maple >= n_coop,
        "MaPLe's novel accuracy {n_maple:.3} is below CoOp's {n_coop:.3}"
    );
}
