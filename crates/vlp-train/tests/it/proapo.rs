//! ProAPO's claim in miniature (Qu et al., 2025: searching prompt templates on one shot per
//! class beats the hand-written template): on the pretrained fixture, 1-shot ProAPO over
//! OpenAI's 80 ImageNet templates against the library's first, "a photo of a {}.", mean of 3
//! seeds, with the best fitness never decreasing.

use vlp_core::backend::{DefaultBackend, default_device};
use vlp_tasks::fewshot::k_shot_indices;
use vlp_tasks::fewshot::proapo::{Proapo, ProapoConfig};
use vlp_tasks::templates::OPENAI_IMAGENET_TEMPLATES;

use crate::fixture::bench;

const SEEDS: [u64; 3] = [1, 2, 3];

/// methods.md row 18's CPU test: "final test accuracy ≥ template baseline + 5 points; best
/// fitness never decreases; seeded determinism", with the code's search (8 epochs, 4 top sets,
/// 8 add / remove / replace, 4 mutations, 16 crossovers) and methods.md's fitness weights for
/// the task-agnostic stage (0.5·top-1 + 0.05·top-5 − 10·CE).
///
/// Measured (2026-12-01, release, 2 cores, 10 s with the fixture cached): ProAPO 0.404, 0.394,
/// 0.396 (mean 0.398) against "a photo of a {}." at 0.159 and the whole 80-template ensemble at
/// 0.339; it picks 4–8 short templates ("the plastic {}.", "the embroidered {}.", "a cartoon
/// {}.", …), reaching 48–56 % on the 25 training shots against the baseline's 8–20 %, after
/// scoring 690–870 sets.
///
/// The class-specific stage on top (printed), with the offline source's 5 descriptions per class
/// of which 20 % name another class: 0.394, 0.356, 0.422 (mean 0.391, no gain: the offline
/// descriptions are templated sentences that add nothing the templates lack); it kept 15–28
/// descriptions, 0–2 of them wrong out of 21–30 wrong ones offered.
#[test]
#[ignore = "trains the fixture on first use: run with --release"]
fn one_shot_proapo_beats_the_hand_written_template() {
    let b = bench();
    let dev = default_device();
    let mut library = vec!["a photo of a {}.".to_string()];
    library.extend(
        OPENAI_IMAGENET_TEMPLATES
            .iter()
            .map(|t| t.to_string())
            .filter(|t| t != "a photo of a {}."),
    );
    let baseline = b.accuracies(&vlp_tasks::fewshot::ZeroShot, 1, &[1])[0];
    // For the record: the whole library as one ensemble (CLIP's 80-template classifier).
    let all = vlp_tasks::zeroshot::classifier(
        &b.inner,
        b.tok.tokenizer.as_ref(),
        &b.classes,
        &library,
        &dev,
    )
    .unwrap();
    let ensemble = vlp_tasks::zeroshot::evaluate(&b.test_x, &b.test_y, &all)
        .unwrap()
        .top1;
    println!("the 80-template ensemble: {ensemble:.3}");
    let mut ours = Vec::new();
    for seed in SEEDS {
        let method = Proapo::<DefaultBackend> {
            model: &b.inner,
            tokenizer: b.tok.tokenizer.as_ref(),
            classes: &b.classes,
            templates: library.clone(),
            descriptions: None,
            config: ProapoConfig {
                seed,
                ..Default::default()
            },
            device: dev.clone(),
        };
        let idx = k_shot_indices(&b.train_y, b.classes.len(), 1, seed);
        let mut shots = vlp_tasks::embed::Features::default();
        for &i in &idx {
            shots.extend(vlp_tasks::embed::Features {
                data: b.train_x.row(i).to_vec(),
                rows: 1,
                dim: b.train_x.dim,
            });
        }
        let labels: Vec<usize> = idx.iter().map(|&i| b.train_y[i]).collect();
        let (r, _) = method.search(&shots, &labels).unwrap();
        assert!(
            r.history.windows(2).all(|w| w[1] >= w[0]),
            "{:?}",
            r.history
        );
        let best: Vec<&str> = r.best.iter().map(|&i| library[i].as_str()).collect();
        let acc = b.accuracies(&method, 1, &[seed])[0];
        println!(
            "seed {seed}: {} templates {best:?}; fitness {:.2} (baseline {:.2}), train top-1 \
             {:.0} % (baseline {:.0} %); test {acc:.3}; {} sets scored",
            r.best.len(),
            r.fitness.score,
            r.baseline.score,
            r.fitness.top1,
            r.baseline.top1,
            r.evaluated
        );
        ours.push(acc);
        // The class-specific stage on top, with the offline source's descriptions (20 % of them
        // about another class): printed, not asserted.
        let source = vlp_curate::describe::TemplateDescriptions {
            seed,
            ..Default::default()
        };
        use vlp_curate::describe::DescriptionSource;
        let described = source.describe(&b.classes, 5).unwrap();
        let wrong = described.iter().flatten().filter(|d| d.wrong).count();
        let with = Proapo::<DefaultBackend> {
            descriptions: Some(
                described
                    .iter()
                    .map(|ds| ds.iter().map(|d| d.text.clone()).collect())
                    .collect(),
            ),
            ..method
        };
        let fit = with.fit(&shots, &labels).unwrap();
        let stage = fit.descriptions.as_ref().unwrap();
        let kept_wrong: usize = stage
            .chosen
            .iter()
            .enumerate()
            .map(|(c, js)| js.iter().filter(|&&j| described[c][j].wrong).count())
            .sum();
        let kept: usize = stage.chosen.iter().map(Vec::len).sum();
        println!(
            "  + descriptions: test {:.3}; {kept} kept ({kept_wrong} wrong, of {wrong} wrong \
             offered) in {} groups",
            b.accuracies(&with, 1, &[seed])[0],
            stage.groups.len()
        );
    }
    let mean = ours.iter().sum::<f64>() / ours.len() as f64;
    println!("1-shot ProAPO {ours:?} (mean {mean:.3}); \"a photo of a {{}}.\" {baseline:.3}");
    assert!(
        mean >= baseline + 0.05,
        "ProAPO {mean:.3} is not 5 points above the template baseline {baseline:.3}"
    );
}
