//! FILIP's claim in miniature (Yao et al., 2021: token-wise alignment localises words and
//! retrieves better): FILIP and CLIP trained in this test at equal steps, data and seeds (mean of
//! 3 seeds); on held-out ShapesWorld images, the patch that scores highest against the main
//! object's colour–shape phrase lies on that object far more often for FILIP, and FILIP's
//! retrieval R@5 is at least CLIP's with captions that describe the image object by object (its
//! long caption, the fine-grained retrieval the paper is about). Retrieval with the short
//! training captions, which name little more than the main object, is reported too.

use std::sync::Arc;

use vlp_core::backend::default_device;
use vlp_tasks::battery::EvalImages;
use vlp_tasks::battery::clip_retrieval;
use vlp_tasks::retrieval::retrieval_scored;
use vlp_tasks::scoring::LateInteractionScorer;
use vlp_train::TrainConfig;
use vlp_train::method::clip::ClipMethod;
use vlp_train::method::filip::{FilipMethod, FilipSettings};
use vlp_train::model::build_tokenizer;

use crate::{batches, claim_config, trained};

/// Steps of each training run: pointing is well above chance after ~50, long-caption retrieval
/// separates after ~90 (measured on seeds other than these).
const STEPS: usize = 120;

fn config(seed: u64) -> TrainConfig {
    claim_config(seed, STEPS, &[])
}

/// What the test measures on the held-out images.
struct Outcome {
    /// Fraction of images whose best patch for the main object's phrase lies on the object.
    pointing: f64,
    /// The same for a patch picked at random.
    chance: f64,
    /// Mean of image→text and text→image R@5 with each image's long caption (one sentence per
    /// object: the fine-grained retrieval FILIP is about).
    long_r5: f64,
    /// Mean R@5 with the short training-style captions (reported).
    short_r5: f64,
}

fn held_out(cfg: &TrainConfig) -> EvalImages {
    crate::held_out(cfg, "shapes:test:300")
}

fn mean_r5(r: &vlp_tasks::retrieval::RetrievalResult) -> f64 {
    (r.i2t_recall[1] + r.t2i_recall[1]) / 2.0
}

fn run(seed: u64) -> (Outcome, Outcome) {
    let cfg = config(seed);
    let data = batches(&cfg, STEPS);
    let set = held_out(&cfg);
    let tok = build_tokenizer(&cfg).unwrap();
    let tok = tok.tokenizer.as_ref();
    let dev = default_device();
    let (long, long_links) = set.long_caption_links().unwrap();
    let (short, short_links) = set.caption_links(true).unwrap();

    let filip = Arc::new(FilipMethod::new(FilipSettings::default(), &cfg).unwrap());
    let f = trained(filip.clone(), &cfg, &data);
    let images = filip.image_set(&f.clip, &set, &dev);
    let scored = |texts: &[String], links: &[usize]| {
        let t = filip.text_tokens(&f.clip, tok, texts, &dev).unwrap();
        let s = LateInteractionScorer::<vlp_core::backend::DefaultBackend> {
            images: &images,
            texts: &t,
            device: dev,
        };
        mean_r5(&retrieval_scored(&s, links).unwrap())
    };
    let p = filip.pointing(&f.clip, &set, tok, &dev).unwrap().unwrap();
    let filip_out = Outcome {
        pointing: p.accuracy,
        chance: p.chance,
        long_r5: scored(&long, &long_links),
        short_r5: scored(&short, &short_links),
    };

    let clip = Arc::new(ClipMethod::clip(&cfg).unwrap());
    let c = trained(clip, &cfg, &data);
    // The same pointing procedure on CLIP's projected patch and word tokens.
    let p = filip.pointing(&c, &set, tok, &dev).unwrap().unwrap();
    let feats = set.embed(&c, &dev);
    let pooled = |texts: &[String], links: &[usize]| {
        mean_r5(&clip_retrieval(&c, tok, &feats, texts, links, &dev).unwrap())
    };
    let clip_out = Outcome {
        pointing: p.accuracy,
        chance: p.chance,
        long_r5: pooled(&long, &long_links),
        short_r5: pooled(&short, &short_links),
    };
    (filip_out, clip_out)
}

#[test]
fn token_level_alignment_points_at_objects_and_retrieves_fine_grained_captions_better() {
    let seeds = [1u64, 2, 3];
    let n = seeds.len() as f64;
    let (mut fp, mut cp, mut fl, mut cl, mut fs, mut cs, mut chance) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    // One thread per seed: the runs are independent, and the test takes a third of the time.
    let outcomes: Vec<(Outcome, Outcome)> = std::thread::scope(|s| {
        let hs: Vec<_> = seeds
            .iter()
            .map(|&seed| s.spawn(move || run(seed)))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(outcomes.len(), seeds.len());
    for (&seed, (f, c)) in seeds.iter().zip(&outcomes) {
        println!(
            "seed {seed}: pointing FILIP {:.3} CLIP {:.3} (chance {:.3}); long-caption R@5 FILIP {:.3} CLIP {:.3}; short-caption R@5 FILIP {:.3} CLIP {:.3}",
            f.pointing, c.pointing, f.chance, f.long_r5, c.long_r5, f.short_r5, c.short_r5
        );
        fp += f.pointing / n;
        cp += c.pointing / n;
        fl += f.long_r5 / n;
        cl += c.long_r5 / n;
        fs += f.short_r5 / n;
        cs += c.short_r5 / n;
        chance += f.chance / n;
    }
    println!(
        "mean of {} seeds: pointing FILIP {fp:.3} CLIP {cp:.3} (chance {chance:.3}); long-caption R@5 FILIP {fl:.3} CLIP {cl:.3}; short-caption R@5 FILIP {fs:.3} CLIP {cs:.3}",
        seeds.len()
    );
    assert!(
        fp >= 0.6,
        "FILIP points at the object in {fp:.3} of cases (< 0.6)"
    );
    assert!(
        fp > cp + 0.2,
        "FILIP {fp:.3} does not beat CLIP {cp:.3} at pointing"
    );
    assert!(fl >= cl, "FILIP long-caption R@5 {fl:.3} < CLIP {cl:.3}");
}
