//! LXMERT's claims in miniature (Tan & Bansal, 2019), on ShapesWorld with oracle boxes (64 px,
//! the default 64-wide model: 2 language, 1 object-relationship, 2 cross-modality layers).
//!
//! The claim test pretrains with the four tasks for 1000 steps and fine-tunes on questions alone
//! for 1000 (as the paper fine-tunes for VQA); the baseline trains the same fresh model on
//! questions alone for 1250 steps: the fine-tuning's 1000 plus the 250 batches' worth of
//! matched questions with answers that pretraining showed (a quarter of its samples), so the
//! baseline has seen at least as many answered questions. Both on the same batches; VQA accuracy
//! on every question of 200 held-out images.
//!
//! Measured (2026-11-30, 2-core AMD EPYC): seed 2 (this test): pretrained and fine-tuned 0.861
//! (colour 1.000, shape 0.983, existence 0.995, count 0.682, relation 0.611) against 0.756 for
//! questions alone (colour 0.877, shape 0.666, existence 0.920, count 0.662, relation 0.624);
//! after pretraining alone (QA on a quarter of the samples) 0.511. Seed 1, explored first with a
//! 1000-step baseline: 0.875 against 0.729. Seed 3 (2026-12-01, this test with `seed = 3`,
//! release build, 325 s): 0.851 against 0.621, just above the 0.85 bar (count 0.677, relation
//! 0.614). Counting and relations (yes/no: left of, above, ...)
//! stay the weak types for both. Steps cost about 0.18 s
//! (1000 steps ≈ 3 min), so the test takes about 13 minutes (805 s) and CI does not run it
//! (`#[ignore]`); run it with
//! `cargo test -p vlp-train --test it pretraining_with_four_tasks -- --ignored --nocapture`.

use std::sync::Arc;

use vlp_core::backend::default_device;
use vlp_tasks::battery::EvalImages;
use vlp_train::TrainConfig;
use vlp_train::method::lxmert::{LxmertMethod, LxmertSettings};

use vlp_core::rng::Rng;

use crate::{batches, tiny};

fn config(seed: u64, steps: usize) -> TrainConfig {
    tiny(&[
        "data.shapes.image_size=64",
        "data.batch_size=32",
        &format!("optim.steps={steps}"),
        "optim.warmup_steps=20",
        "optim.lr=0.001",
        "optim.weight_decay=0.01",
        &format!("run.seed={seed}"),
    ])
}

fn held_out(cfg: &TrainConfig) -> EvalImages {
    crate::held_out(cfg, "shapes:test:200")
}

/// Trains `method` from `model` on `data`; returns the autodiff model.
fn train_from(
    method: Arc<LxmertMethod>,
    cfg: &TrainConfig,
    model: vlp_align::model::lxmert::Lxmert<vlp_core::backend::TrainBackend>,
    data: &[vlp_data::loader::Batch],
) -> vlp_align::model::lxmert::Lxmert<vlp_core::backend::TrainBackend> {
    let mut t = vlp_train::trainer::Trainer::new(
        cfg,
        method,
        model,
        default_device(),
        vlp_train::comm::Single,
    );
    for b in data {
        t.step(b).unwrap();
    }
    t.model
}

fn fresh(
    method: &LxmertMethod,
    seed: u64,
) -> vlp_align::model::lxmert::Lxmert<vlp_core::backend::TrainBackend> {
    let dev = default_device();
    crate::seeded_model::<vlp_core::backend::TrainBackend, _, std::convert::Infallible>(
        &dev,
        seed,
        || Ok(method.architecture().init(&dev)),
    )
    .unwrap()
}

/// Pretraining steps, fine-tuning steps, and the baseline's steps (module doc).
const PRETRAIN: usize = 1000;
const FINETUNE: usize = 1000;
const BASELINE: usize = FINETUNE + PRETRAIN / 4;

fn settings_qa() -> LxmertSettings {
    LxmertSettings {
        tasks: vec!["qa".into()],
        question_fraction: 1.0,
        ..Default::default()
    }
}

fn accuracy(
    method: &LxmertMethod,
    model: &vlp_align::model::lxmert::Lxmert<vlp_core::backend::TrainBackend>,
    set: &EvalImages,
    what: &str,
) -> f64 {
    use burn::module::AutodiffModule;
    let r = method
        .vqa(&model.valid(), set, &default_device())
        .unwrap()
        .unwrap();
    let kinds: Vec<String> = r
        .per_kind
        .iter()
        .map(|(k, t)| format!("{k} {:.3}", t.accuracy()))
        .collect();
    eprintln!(
        "{what}: VQA {:.3} ({})",
        r.overall.accuracy(),
        kinds.join(", ")
    );
    r.overall.accuracy()
}

#[test]
#[ignore = "slow: three trainings of 1000-1250 steps, about 13 minutes (module doc)"]
fn pretraining_with_four_tasks_answers_held_out_questions_and_beats_qa_alone() {
    let seed = 2;
    let cfg = config(seed, BASELINE);
    let data = batches(&cfg, BASELINE);
    let set = held_out(&cfg);
    let four = Arc::new(LxmertMethod::new(LxmertSettings::default(), &cfg).unwrap());
    let qa = Arc::new(LxmertMethod::new(settings_qa(), &cfg).unwrap());
    let steps = |n: usize| {
        let mut c = cfg.clone();
        c.optim.steps = n;
        c
    };
    let pre = train_from(
        four.clone(),
        &steps(PRETRAIN),
        fresh(&four, seed),
        &data[..PRETRAIN],
    );
    accuracy(&qa, &pre, &set, "after pretraining");
    let tuned = train_from(qa.clone(), &steps(FINETUNE), pre, &data[..FINETUNE]);
    let pretrained = accuracy(
        &qa,
        &tuned,
        &set,
        "pretrained, then fine-tuned on questions",
    );
    let alone = train_from(qa.clone(), &steps(BASELINE), fresh(&qa, seed), &data);
    let baseline = accuracy(&qa, &alone, &set, "questions alone");
    assert!(pretrained >= 0.85, "VQA accuracy {pretrained:.3} < 0.85");
    assert!(
        pretrained >= baseline + 0.05,
        "pretraining {pretrained:.3} does not beat questions alone {baseline:.3} by 0.05"
    );
}

#[test]
fn masks_and_pairs_follow_the_code_and_never_touch_padding() {
    let cfg = config(0, 30);
    let batch = &batches(&cfg, 1)[0];
    let m = LxmertMethod::new(LxmertSettings::default(), &cfg).unwrap();
    let vocab = build_vocab(&cfg);
    let n = batch.len();
    let (mut words, mut labelled, mut as_mask, mut kept) = (0usize, 0usize, 0usize, 0usize);
    let (mut objects, mut masked, mut zeroed) = (0usize, 0usize, 0usize);
    let (mut pairs, mut unmatched, mut questions) = (0usize, 0usize, 0usize);
    for seed in 0..200 {
        let d = m.draw(batch, &mut Rng::new(seed)).unwrap();
        let ctx = d.ids.len() / n;
        let slots = d.object_labels.len() / n;
        for i in 0..n {
            let len = d.mask[i * ctx..(i + 1) * ctx]
                .iter()
                .filter(|&&v| v == 1)
                .count();
            assert!(
                d.mask[i * ctx..i * ctx + len].iter().all(|&v| v == 1),
                "padding is at the end"
            );
            for p in 0..ctx {
                let at = i * ctx + p;
                let l = d.word_labels[at];
                if p == 0 || p + 1 >= len {
                    assert_eq!(
                        l, -1,
                        "seed {seed} sample {i}: start, end or padding position {p} masked"
                    );
                    continue;
                }
                words += 1;
                if l >= 0 {
                    labelled += 1;
                    as_mask += usize::from(d.ids[at] == vocab as i64);
                    kept += usize::from(d.ids[at] == l);
                }
            }
            for j in 0..slots {
                let at = i * slots + j;
                let real = j < d.boxes[i].len();
                if !real {
                    assert_eq!(d.object_labels[at], -1);
                    assert_eq!(d.object_masked[at], 0.0);
                    assert_eq!(d.replacements[at], None);
                    continue;
                }
                objects += 1;
                if d.object_masked[at] == 1.0 {
                    masked += 1;
                    zeroed += usize::from(d.replacements[at] == Some(None));
                } else {
                    assert_eq!(d.replacements[at], None, "an unmasked object was replaced");
                }
                if let Some(Some(from)) = d.replacements[at] {
                    assert!(
                        from % slots < d.boxes[from / slots].len(),
                        "replaced by a padding slot"
                    );
                }
            }
            pairs += 1;
            unmatched += usize::from(d.matched[i] == 0);
            let qa = &batch.annotations[i].qa;
            if d.answers[i] >= 0 {
                questions += 1;
                assert_eq!(d.matched[i], 1, "an unmatched sentence has an answer");
                let q = qa
                    .iter()
                    .find(|q| q.question == d.sentences[i])
                    .expect("the sample's own question");
                assert_eq!(m.answers.index(&q.answer), Some(d.answers[i] as usize));
            }
        }
    }
    let rate = |a: usize, b: usize| a as f64 / b as f64;
    let near = |what: &str, got: f64, want: f64, tol: f64| {
        assert!(
            (got - want).abs() < tol,
            "{what}: {got:.3}, expected {want} ± {tol}"
        );
    };
    near("words masked", rate(labelled, words), 0.15, 0.015);
    near(
        "masked words shown as [MASK]",
        rate(as_mask, labelled),
        0.8,
        0.03,
    );
    // 10 % kept, plus the random words that happen to be the word itself.
    near("masked words kept", rate(kept, labelled), 0.1, 0.03);
    near("objects masked", rate(masked, objects), 0.15, 0.02);
    near("masked objects zeroed", rate(zeroed, masked), 0.8, 0.05);
    near("pairs unmatched", rate(unmatched, pairs), 0.5, 0.03);
    // Half the sentences are questions, half of those stay matched.
    near("samples with an answer", rate(questions, pairs), 0.25, 0.03);

    // QA alone: every sentence a question with its answer, nothing masked, nothing swapped.
    let qa = LxmertMethod::new(
        LxmertSettings {
            tasks: vec!["qa".into()],
            question_fraction: 1.0,
            ..Default::default()
        },
        &cfg,
    )
    .unwrap();
    let d = qa.draw(batch, &mut Rng::new(5)).unwrap();
    assert!(d.word_labels.iter().all(|&l| l == -1));
    assert!(d.object_labels.iter().all(|&l| l == -1));
    assert!(d.matched.iter().all(|&v| v == 1));
    assert!(d.answers.iter().all(|&a| a >= 0), "{:?}", d.answers);
}

fn build_vocab(cfg: &TrainConfig) -> usize {
    vlp_train::model::build_tokenizer(cfg).unwrap().vocab_size
}
