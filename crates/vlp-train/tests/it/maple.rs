//! MaPLe's claim in miniature (Khattak et al., 2023: coupled prompts in both towers generalise
//! to unseen classes better than CoOp's text-only context): base-to-novel on the pretrained
//! fixture, 15 base classes with shots and 15 novel ones, MaPLe against CoOp trained in the same
//! test on the same shots, mean of 3 seeds.

use vlp_align::fit::FewShotFitConfig;
use vlp_align::prompt::{CoopConfig, MapleConfig};
use vlp_core::backend::{DefaultBackend, TrainBackend, default_device};
use vlp_data::augment::AugmentConfig;
use vlp_tasks::fewshot::{
    AugmentedShots, BaseToNovel, Coop, HandWritten, Maple, OpenVocabularyMethod, ShotViews,
};

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

/// Views per shot: each of the code's epochs sees one fresh crop and flip of every shot, and
/// both methods' epochs are counted in views (MaPLe's 5 epochs = 1 pass over 5 views).
const VIEWS: usize = 5;

/// `method` trained on [`VIEWS`] crops (50–100 % of the image) and flips of each shot.
fn views<'a>(
    b: &'a Bench,
    method: &'a dyn OpenVocabularyMethod,
    seed: u64,
) -> AugmentedShots<'a, DefaultBackend> {
    AugmentedShots {
        method,
        model: &b.inner,
        views: ShotViews {
            augment: AugmentConfig {
                scale: [0.5, 1.0],
                hflip: 0.5,
                ..Default::default()
            },
            views: VIEWS,
        },
        seed,
        device: default_device(),
    }
}

/// methods.md row 21's CPU test: "H(MaPLe) ≥ H(CoOp) − 1 point and novel accuracy ≥ CoOp's
/// (3 seeds)". Each method with its code's training recipe for 16 shots: MaPLe SGD, batch 4, 5
/// epochs (`vit_b16_c2_ep5_batch4_2ctx.yaml`), prompts in all 3 blocks of the fixture (the
/// code's depth 9 is for 12); CoOp lr 0.002, batch 32, 200 epochs (`*_ep200.yaml`); both with
/// one epoch of warm-up and the code's random resized crops and flips, drawn up front as 5
/// views per shot ([`AugmentedShots`]), crops of 50–100 % of the image (the code's 8 % lose
/// ShapesWorld's objects). Both learn the same 8 random shared context vectors (CoOp's 16 do not
/// fit the fixture's context with a class name).
///
/// MaPLe's learning rate is 0.001, not the code's 0.0035 (tuned for ViT-B/16): at 0.0035 its
/// training loss rises once the warm-up ends (seed 3: 1.97 at the start, 2.5–2.9 for the next
/// 100 steps) and some runs collapse to chance (seed 3: B 0.354, N 0.086; seed 6 without the
/// warm-up: N 0.070); at 0.001 the loss falls (to ≈ 0.8) on every seed.
///
/// Why not MaPLe's 2 vectors from "a photo of a": that phrase is tuned to OpenAI's CLIP, and
/// the fixture's captions never say it, so the two words it keeps fixed ("of a") only hurt.
/// Measured on seed 1 without views (2026-12-01): 2 vectors from the phrase N 0.182; 2 random
/// vectors N 0.307; 8 random vectors N 0.432; depth 2 N 0.421, depth 1 (shallow) 0.295.
///
/// **The claim does not hold here.** Measured (2026-12-02, release, 2 cores, ~100 s with the
/// fixture cached), B / N / H:
/// | seed | CoOp | MaPLe |
/// | --- | --- | --- |
/// | 1 | 0.583 / 0.513 / 0.546 | 0.585 / 0.450 / 0.509 |
/// | 2 | 0.671 / 0.431 / 0.524 | 0.560 / 0.421 / 0.481 |
/// | 3 | 0.632 / 0.407 / 0.495 | 0.519 / 0.407 / 0.456 |
/// | 4–6 (not asserted) | 0.637 / 0.399 / 0.490 | 0.536 / 0.367 / 0.435 |
/// (the hand-written prompt: 0.174 / 0.215 / 0.192). MaPLe trails CoOp on every seed, by little
/// on novel classes. The paper's premise is that CoOp overfits the base classes and falls below
/// the hand-written prompt on novel ones while MaPLe stays close to it; here the hand-written
/// prompt is poor (the fixture never read "a photo of a"), so learning the prompt's language is
/// what carries to novel classes, and CoOp's 200 epochs do that best. Without views (the
/// previous recipe, lr 0.0035, 3 seeds): CoOp 0.650 / 0.484 / 0.548, MaPLe 0.637 / 0.435 /
/// 0.515.
#[test]
#[ignore = "fails today (MaPLe N 0.426 vs CoOp 0.450 on seeds 1-3, see above); trains the fixture on first use, then CoOp and MaPLe three times: run with --release"]
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
    let warmup = 1.0 / VIEWS as f64;
    let (mut coop, mut maple) = (Vec::new(), Vec::new());
    for seed in SEEDS {
        let c = Coop::<TrainBackend> {
            model: &b.model,
            tokenizer: tok,
            classes: &b.classes,
            config: CoopConfig::new().with_n_ctx(8),
            fit: FewShotFitConfig::new()
                .with_epochs(200 / VIEWS)
                .with_warmup_epochs(warmup)
                .with_seed(seed),
            device: dev.clone(),
        };
        coop.push(run(&b, &views(&b, &c, seed), seed));
        let m = Maple::<TrainBackend> {
            model: &b.model,
            tokenizer: tok,
            config: MapleConfig::new()
                .with_n_ctx(8)
                .with_init(None)
                .with_depth(3),
            fit: FewShotFitConfig::new()
                .with_epochs(5 / VIEWS)
                .with_warmup_epochs(warmup)
                .with_batch_size(4)
                .with_lr(0.001)
                .with_seed(seed),
            device: dev.clone(),
        };
        maple.push(run(&b, &views(&b, &m, seed), seed));
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
