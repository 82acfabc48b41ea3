//! The improved CLIP recipe's claim in miniature (Fini et al., 2023: weak/strong image and text
//! views with a local InfoNCE through separate projectors and label smoothing improve zero-shot
//! classification over plain CLIP): the recipe and CLIP trained in this test at equal steps,
//! batch size, model, data and seeds (mean of 3 seeds), zero-shot top-1 on held-out ShapesWorld
//! images with the default prompt.
//!
//! Measured (2026-11-30, this test's regime: 640 training images, 300 steps of 32): recipe
//! 0.237 against CLIP 0.227 on seeds 1–3 (0.268/0.230, 0.250/0.237, 0.195/0.212), 0.230
//! against 0.169 on seeds 4–6, 0.223 against 0.209 on seeds 7–9: ahead on 7 of 9 seeds, by 2.9
//! points on average, with per-seed differences from −3.5 to +9.5 points, so the margin on any
//! three seeds is small. A lone training run is bit-exact from run to run since the layer
//! norm's backward sums its partial gradients in a fixed order, but with the three seeds
//! training side by side the recipe still varies (seed 2 gave 0.250 and 0.190 in two CI runs;
//! CLIP does not vary): some other reduction still follows thread timing. So the test is not
//! run by CI (`#[ignore]`); run it with
//! `cargo test -p vlp-train --test it improved_recipe -- --ignored --nocapture` (about 2.5 min).
//!
//! Where the recipe does not help (single runs of seeds 1–3, before that fix): on fresh data
//! (200 000 images, 150 or 300 steps) both are within a point of each other (0.232/0.228,
//! 0.237/0.242), as the paper's gains shrink with data; with the code's hue jitter, which turns
//! ShapesWorld's red into orange, the recipe is behind on fresh data (0.224/0.228) and on 2 000
//! images (0.227/0.248), and ahead by less here (0.243/0.226); on 320 images for 400 steps it is
//! behind (0.188/0.214; 0.213 with strong crops of 0.3–1).

use std::sync::Arc;

use vlp_train::TrainConfig;
use vlp_train::method::clip::ClipMethod;
use vlp_train::method::clip_rocket::{ClipRocketMethod, ClipRocketSettings};
use vlp_train::method::{DataRequest, Method};
use vlp_train::model::build_tokenizer;

use crate::{batches_for, claim_config, held_out, per_seed, tiny, trained, zero_shot};

/// Steps of each training run.
const STEPS: usize = 300;

fn config(seed: u64) -> TrainConfig {
    claim_config(
        seed,
        STEPS,
        &[
            // 640 images seen 15 times: the paper's regime (CC3M, 32 epochs), where CLIP starts to
            // overfit its captions and the views and label smoothing regularise.
            "data.train=\"shapes:train:640\"",
        ],
    )
}

/// The official recipe with `configs/clip-rocket.toml`'s two ShapesWorld changes (no hue
/// jitter: colour names are the class labels; no flip: captions say "left of"), and the local
/// projectors' hidden width scaled to the model (the code's 4096 is for towers 6 to 12 times
/// wider than this test's).
fn settings() -> ClipRocketSettings {
    ClipRocketSettings {
        local_hidden: 256,
        strong_jitter_hue: 0.0,
        strong_hflip: 0.0,
        ..ClipRocketSettings::default()
    }
}

/// Zero-shot top-1 of the recipe and of CLIP for one seed.
fn run(seed: u64) -> (f64, f64) {
    let cfg = config(seed);
    let rocket = Arc::new(ClipRocketMethod::new(settings(), &cfg).unwrap());
    let data = batches_for(&cfg, STEPS, seed, rocket.data());
    assert_eq!(data.len(), STEPS);
    assert_eq!(
        data[0].views.len(),
        2,
        "two strong views after the weak one"
    );
    assert_eq!(
        data[0].text_tokens.as_ref().map(|t| t.batch),
        Some(32 * 3),
        "each sample carries a weak and two strong texts"
    );
    let set = held_out(&cfg, "shapes:test:400");
    let r = trained(Arc::clone(&rocket), &cfg, &data);
    let rocket_top1 = zero_shot(rocket.as_ref(), &r, &set, &cfg);
    // Plain CLIP: the runner's default augmentation and captions, the same seeds and steps.
    let clip = Arc::new(ClipMethod::clip(&cfg).unwrap());
    let plain = batches_for(&cfg, STEPS, seed, DataRequest::default());
    let c = trained(Arc::clone(&clip), &cfg, &plain);
    let clip_top1 = zero_shot(clip.as_ref(), &c, &set, &cfg);
    (rocket_top1, clip_top1)
}

#[test]
#[ignore = "noisy: a small mean margin, and the recipe's training still varies when seeds train side by side (module doc)"]
fn improved_recipe_beats_plain_clip_at_zero_shot() {
    let seeds = [1u64, 2, 3];
    let n = seeds.len() as f64;
    let outcomes = per_seed(&seeds, run);
    let (mut r, mut c) = (0.0, 0.0);
    for (&seed, (ro, cl)) in seeds.iter().zip(&outcomes) {
        println!("seed {seed}: zero-shot top-1 improved recipe {ro:.3}, CLIP {cl:.3}");
        r += ro / n;
        c += cl / n;
    }
    println!(
        "mean of {} seeds: improved recipe {r:.3}, CLIP {c:.3}",
        seeds.len()
    );
    assert!(
        r >= c,
        "the improved recipe's zero-shot top-1 {r:.3} < CLIP's {c:.3}"
    );
}

/// BarLIP, SiamLIP (with its momentum encoder) and SwALIP on one batch: each part is what its
/// formula gives on the features `embed` produced, the loss is their weighted sum with CLIP's,
/// and a few steps train, the momentum encoder trailing the online towers.
#[test]
fn ssl_add_ons_add_their_losses() {
    use vlp_core::backend::{TrainBackend, default_device};
    use vlp_core::loss::barlow_twins_loss;
    use vlp_train::method::{BuildContext, StepInput};

    let cfg = tiny(&["data.shapes.image_size=32"]);
    let s = ClipRocketSettings {
        local_hidden: 32,
        label_smoothing: 0.0,
        barlip_weight: 1.0,
        barlip_hidden: 48,
        barlip_dim: 24,
        siamlip_weight: 0.5,
        siamlip_hidden: 40,
        siamlip_dim: 16,
        siamlip_momentum: 0.99,
        swalip_weight: 0.2,
        ..settings()
    };
    let m = Arc::new(ClipRocketMethod::new(s.clone(), &cfg).unwrap());
    let data = batches_for(&cfg, 3, 5, m.data());
    let tok = build_tokenizer(&cfg).unwrap();
    let ctx = BuildContext {
        config: &cfg,
        tokenizer: &tok,
    };
    let dev = default_device();
    let model = m.build::<TrainBackend>(&ctx, &dev).unwrap();
    let input = StepInput {
        batch: &data[0],
        device: &dev,
        dtype: None,
    };
    let e = m.embed(&model, &input).unwrap();
    let scalar = |t: burn::tensor::Tensor<TrainBackend, 1>| -> f64 { t.into_scalar() as f64 };
    let bt = |i: usize, t: usize| {
        scalar(barlow_twins_loss(
            e.rows(&format!("barlip_image_{i}")).unwrap(),
            e.rows(&format!("barlip_text_{t}")).unwrap(),
            s.barlip_lambda as f32,
            s.barlip_scale as f32,
        ))
    };
    let want_barlip = (bt(0, 0) + bt(1, 1) + bt(1, 2) + bt(2, 1) + bt(2, 2)) / 5.0;
    let o = m.objective(&model, e).unwrap();
    let parts: std::collections::BTreeMap<String, f64> = o
        .parts
        .iter()
        .map(|(k, v)| (k.clone(), scalar(v.clone())))
        .collect();
    let names: Vec<&str> = parts.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "barlip",
            "clip",
            "clip_global",
            "clip_local",
            "siamlip",
            "swalip"
        ]
    );
    assert!((parts["barlip"] - want_barlip).abs() < 1e-4 * want_barlip.max(1.0));
    // CLIP's part: (global + 2·local) / 3.
    let clip = (parts["clip_global"] + 2.0 * parts["clip_local"]) / 3.0;
    assert!((parts["clip"] - clip).abs() < 1e-5, "{parts:?}");
    // Negative cosine lies in [0, 4]; soft cross-entropy against distributions is positive.
    assert!((0.0..=4.0).contains(&parts["siamlip"]), "{parts:?}");
    assert!(parts["swalip"] > 0.0, "{parts:?}");
    let total = parts["clip"] + parts["barlip"] + 0.5 * parts["siamlip"] + 0.2 * parts["swalip"];
    let loss = scalar(o.loss);
    assert!((loss - total).abs() < 1e-4 * total, "{loss} vs {total}");
    // Backward through the batch-norm heads and the Sinkhorn targets: three steps train and
    // move the towers.
    let cfg3 = tiny(&["optim.steps=3", "optim.warmup_steps=1"]);
    let projection = |steps: usize| -> Vec<f32> {
        let t = trained(Arc::clone(&m), &cfg3, &data[..steps]);
        let w = t.clip.text_projection.as_ref().unwrap().weight.val();
        w.into_data().to_vec().unwrap()
    };
    let (before, after) = (projection(0), projection(3));
    // The momentum encoder starts as a copy and moves by 1 % of the online steps.
    let t = trained(Arc::clone(&m), &cfg3, &data[..3]);
    let mom = t
        .momentum
        .as_ref()
        .expect("siamlip_momentum > 0 builds the encoder");
    let w = mom.clip.text_projection.as_ref().unwrap().weight.val();
    let momentum: Vec<f32> = w.into_data().to_vec().unwrap();
    let dist = |a: &[f32], b: &[f32]| -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let (moved, online) = (dist(&momentum, &before), dist(&after, &before));
    assert!(
        moved > 0.0 && moved < 0.1 * online,
        "momentum moved {moved}, online {online}"
    );
    let z = trained(Arc::clone(&m), &cfg3, &data[..0]);
    let w0 = z
        .momentum
        .as_ref()
        .unwrap()
        .clip
        .text_projection
        .as_ref()
        .unwrap()
        .weight
        .val();
    assert_eq!(
        w0.into_data().to_vec::<f32>().unwrap(),
        before,
        "a copy at the start"
    );
    assert_eq!(before.len(), after.len());
    assert!(before.iter().zip(&after).any(|(a, b)| a != b));
    assert!(after.iter().all(|v| v.is_finite()));
}
