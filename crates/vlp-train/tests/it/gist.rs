//! GIST's claims in miniature (Lewis et al., 2023: text matched to each image among its class's
//! descriptions, then contrastive fine-tuning on it, beats a probe on plain CLIP features for
//! fine-grained few-shot classification). The task: the fixture's images classified by shape
//! (5 classes); each shape is described in every colour by the offline description source, 20 %
//! of the descriptions naming another shape. The colour is the image-specific attribute the
//! matching must find.
//!
//! The descriptions use the fixture's own phrasing ("circle coloured red"): it read nothing
//! else, as OpenAI's CLIP read the web's language an LLM writes in. With other phrasings ("a red
//! circle.", "a circle in red.") the matching is near chance (0.42 of the kept descriptions
//! agree, seeds 1–3, 2026-12-02).

use vlp_core::backend::{DefaultBackend, TrainBackend, default_device};
use vlp_curate::describe::{Description, DescriptionSource, TemplateDescriptions};
use vlp_data::augment::AugmentConfig;
use vlp_data::shapes::{Colour, Shape, class_of};
use vlp_tasks::fewshot::gist::match_descriptions;
use vlp_tasks::fewshot::{Gist, GistConfig, ImageRows, k_shot_indices};
use vlp_tasks::probe::{accuracy, fit};

use crate::fixture::{Bench, bench};

const SHOTS: usize = 5;
const SEEDS: [u64; 3] = [1, 2, 3];
/// Descriptions drawn per class: 8 per colour, so that the 4 kept per image can all be right.
const PER_CLASS: usize = 48;

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn shape_index(label: usize) -> usize {
    let shape = class_of(label).0;
    Shape::ALL.iter().position(|&s| s == shape).unwrap()
}

/// The shape task on the fixture's data with `seed`'s descriptions and 5 shots per shape.
struct Task {
    classes: Vec<String>,
    described: Vec<Vec<Description>>,
    descriptions: Vec<Vec<String>>,
    /// Indices of the shots in `train`.
    shots: Vec<usize>,
    labels: Vec<usize>,
    rows: ImageRows,
    test_y: Vec<usize>,
}

fn task(b: &Bench, seed: u64) -> Task {
    let classes: Vec<String> = Shape::ALL.iter().map(|s| s.name().to_string()).collect();
    let templates: Vec<String> = Colour::ALL
        .iter()
        .map(|c| format!("{{}} coloured {}", c.name()))
        .collect();
    let source = TemplateDescriptions {
        templates,
        error_rate: 0.2,
        seed,
        ..Default::default()
    };
    let described = source.describe(&classes, PER_CLASS).unwrap();
    let descriptions = described
        .iter()
        .map(|list| list.iter().map(|d| d.text.clone()).collect())
        .collect();
    let train_y: Vec<usize> = b.train_y.iter().map(|&l| shape_index(l)).collect();
    let shots = k_shot_indices(&train_y, classes.len(), SHOTS, seed);
    let labels = shots.iter().map(|&i| train_y[i]).collect();
    let rows = b.train_rows.select(&shots);
    let test_y = b.test_y.iter().map(|&l| shape_index(l)).collect();
    Task {
        classes,
        described,
        descriptions,
        shots,
        labels,
        rows,
        test_y,
    }
}

/// methods.md row 28's first CPU test: "matched descriptions agree with the image's colour
/// ≥ 80 %" — every description kept for fine-tuning (4 per image) must name the image's shape
/// and its colour; a random pick among the class's descriptions would agree 0.8 / 6 ≈ 13 % of
/// the time. Measured (2026-12-02): 0.88, 0.92, 0.87 (mean 0.890); on seeds 11–13 (not
/// asserted) 0.91, 0.95, 0.79 (0.883).
#[test]
#[ignore = "trains the fixture on first use: run with --release"]
fn gist_matches_each_shot_to_descriptions_of_its_own_colour() {
    let b = bench();
    let dev = default_device();
    let kept = GistConfig::new().captions_per_image;
    let mut agree = Vec::new();
    for seed in SEEDS {
        let t = task(&b, seed);
        let matched = match_descriptions(
            &b.inner,
            b.tok.tokenizer.as_ref(),
            &t.rows.features,
            &t.labels,
            &t.descriptions,
            kept,
            &dev,
        )
        .unwrap();
        assert_eq!(matched.len(), t.shots.len());
        let (mut right, mut all) = (0, 0);
        for (j, m) in matched.iter().enumerate() {
            assert_eq!(m.len(), kept);
            let colour = class_of(b.train_y[t.shots[j]]).1.name();
            for &d in m {
                let desc = &t.described[t.labels[j]][d];
                all += 1;
                right += usize::from(!desc.wrong && desc.text.ends_with(colour));
            }
        }
        agree.push(right as f64 / all as f64);
        println!("seed {seed}: {right} of {all} kept descriptions agree");
    }
    println!("agreement {agree:?} (mean {:.3})", mean(&agree));
    assert!(
        mean(&agree) >= 0.8,
        "matched descriptions agree {:.3} < 0.8",
        mean(&agree)
    );
}

/// methods.md row 28's second CPU test: "5-shot probe after GIST ≥ CLIP probe + 3 points".
/// Fine-tuning: the code's recipe (every parameter, Adam β (0.9, 0.98), ε 1e-6, weight decay
/// 0.001, batch 20, 200 epochs, 4 captions per image, crops and flips) except the learning
/// rate, 1e-5 instead of 1e-6 (the code's is for ViT-L/14 at 336 px; the fixture was pretrained
/// at 2e-3), and crops of 50–100 % of the image (the code's 8 % lose ShapesWorld's objects).
///
/// **The claim does not hold here.** Measured (2026-12-02, release, 2 cores, ~80 s a seed):
/// GIST's probe 0.461, 0.432, 0.421 (mean 0.438) against the CLIP probe's 0.466, 0.437, 0.495
/// (0.466). Tried before with 24 descriptions per class (4 per colour): 0.446 vs 0.466; and on
/// seeds 11–13 (not the asserted ones): lr 5e-6, 200 epochs 0.415 vs 0.431; lr 1e-5, 20 epochs
/// 0.424 vs 0.431. The contrastive loss falls (1.3–1.7 → 0.8–1.1) but the
/// shape probe does not gain: the descriptions' image-specific attribute (colour) is a nuisance
/// for the shape task, where GIST's bird and aircraft descriptions name what tells classes apart,
/// and 25 images with ~4 pairs each make most in-batch negatives near-duplicates.
///
/// Also measured (2026-12-02, seeds 11–13, not the asserted ones; a seed where one is listed):
/// any fine-tuning of the fixture on these shots lowers the probe. Class names alone as text
/// (FLYP's captions) 0.425 and 0.342 vs 0.440 and 0.454 (seeds 11, 12); lr 1e-4 0.318 vs 0.440
/// (seed 11); the description alone, without the "{class}: " prefix that moves it off the
/// positions the fixture read, 0.401 vs 0.440 (seed 11); the 30 colour-and-shape classes (more
/// like GIST's fine-grained sets: 150 shots, fewer duplicate texts in a batch; 40 epochs) 0.478
/// vs 0.483.
#[test]
#[ignore = "fails today (GIST probe 0.438 vs CLIP probe 0.466, see above); fine-tunes the fixture three times: run with --release"]
fn gist_fine_tuning_beats_a_clip_probe_at_five_shots() {
    let b = bench();
    let dev = default_device();
    let config = GistConfig::new()
        .with_lr(1e-5)
        .with_augment(Some(AugmentConfig {
            scale: [0.5, 1.0],
            hflip: 0.5,
            ..Default::default()
        }));
    let test_px = b.test_rows.pixels.as_ref().unwrap();
    let (mut gist, mut plain) = (Vec::new(), Vec::new());
    for seed in SEEDS {
        let t = task(&b, seed);
        let n = t.classes.len();
        let fitted = Gist::<TrainBackend> {
            model: &b.model,
            tokenizer: b.tok.tokenizer.as_ref(),
            classes: &t.classes,
            descriptions: &t.descriptions,
            config: config.clone().with_seed(seed),
            device: dev.clone(),
        }
        .fit(&t.rows, &t.labels)
        .unwrap();
        let losses = &fitted.losses;
        assert!(losses[losses.len() - 1] < losses[0], "{losses:?}");
        let shots_px = t.rows.pixels.as_ref().unwrap();
        let predicted = fitted
            .classify(shots_px, &t.labels, n, test_px, config.probe_lambda, &dev)
            .unwrap();
        gist.push(accuracy(&predicted, &t.test_y));
        let probe = fit::<DefaultBackend>(
            &t.rows.features,
            &t.labels,
            n,
            config.probe_lambda,
            100,
            &dev,
        )
        .unwrap();
        plain.push(accuracy(&probe.predict(&b.test_x, &dev), &t.test_y));
        println!(
            "seed {seed}: GIST probe {:.3}, CLIP probe {:.3}; loss {:.3} → {:.3}",
            gist[gist.len() - 1],
            plain[plain.len() - 1],
            losses[0],
            losses[losses.len() - 1]
        );
    }
    let (g, p) = (mean(&gist), mean(&plain));
    println!("mean: GIST probe {g:.3}; CLIP probe {p:.3}");
    assert!(
        g >= p + 0.03,
        "GIST's probe {g:.3} is not 3 points above the CLIP probe {p:.3}"
    );
}
