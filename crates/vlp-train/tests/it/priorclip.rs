//! PriorCLIP's claim in miniature (Pan et al., 2024: the prior-guided vision tower and the
//! affiliation loss raise remote-sensing retrieval's mean recall over CLIP): PriorCLIP and CLIP
//! trained in this test at equal steps, data and seeds on SceneWorld, mean recall as the
//! remote-sensing papers measure it (every caption of every held-out image, R@1/5/10 both ways).
//!
//! The held-out set has 112 images, 14 per class as RSITMD's test set has (452 images, 32
//! classes). SceneWorld's captions need the BPE tokenizer: under ShapesWorld's closed vocabulary
//! (`words`, the default) almost every word of them is `<unk>` (the runner now refuses that), and
//! the earlier measurements in `vlp_train::method::priorclip` were made that way.
//!
//! Measured (seeds 1–3, 500 steps, 4000 training scenes, 2026-12-02), mean recall over every
//! caption: PriorCLIP as configured here (prior network from scratch, the code's form) 0.527
//! (0.536, 0.534, 0.512) against CLIP 0.539 (0.491, 0.564, 0.563), 138 s for both on 2 cores.
//! Explored with the same data (not asserted): the affiliation loss alone 0.529; PriorCLIP with
//! the prior network pretrained on scene labels first (300 steps, 97 % training accuracy: the
//! paper's AID pretraining in miniature, not part of the method yet) 0.555, a mean carried by
//! CLIP's weak seed 1 (it loses on seeds 2 and 3); without the affiliation loss 0.519. With 400
//! held-out images (50 per class, where telling images of one class apart matters more) CLIP
//! 0.194, affiliation alone 0.182, pretrained prior 0.169, its no-affiliation form 0.194; with
//! 800 training scenes (20 epochs) CLIP 0.243 against 0.198–0.204 for the rest. The affiliation
//! loss does what it says, pulling each class together (zero-shot top-1 0.60 → 0.79–0.81), but
//! SceneWorld's captions name each image's layout ("a lake in the north-west"), so exact-pair
//! recall rests on telling one class's images apart, which the class pull works against.
//!
//! Also explored (2026-12-02, not kept): a SceneWorld with five captions per image as RSICD and
//! RSITMD have, the two above plus three class-level ones drawn from five per class ("many green
//! trees are in the forest"), shared across the class as those datasets' captions are, so that
//! recall rests on the class more. It did not separate them either: seeds 1–3 PriorCLIP 0.390
//! against CLIP 0.386, seeds 4–6 0.390 against 0.397.

use std::sync::Arc;

use burn::tensor::Tensor;
use vlp_align::ClipModel;
use vlp_core::backend::{DefaultBackend as B, default_device};
use vlp_tasks::battery::{EvalImages, clip_retrieval};
use vlp_train::TrainConfig;
use vlp_train::method::clip::ClipMethod;
use vlp_train::method::priorclip::{PriorClipMethod, PriorClipSettings};
use vlp_train::model::build_tokenizer;

use crate::{batches, claim_config, held_out, per_seed, trained};

/// Steps of each training run.
const STEPS: usize = 500;

fn config(seed: u64) -> TrainConfig {
    claim_config(
        seed,
        STEPS,
        &[
            "data.train=\"scenes:train:4000\"",
            "tokenizer.kind=\"clip\"",
            "tokenizer.context_length=20",
        ],
    )
}

/// Mean recall over every caption of `set` (the remote-sensing protocol), images through
/// `encode`.
fn mean_recall(
    clip: &ClipModel<B>,
    set: &EvalImages,
    cfg: &TrainConfig,
    encode: &dyn Fn(Tensor<B, 4>) -> Tensor<B, 2>,
) -> f64 {
    let tok = build_tokenizer(cfg).unwrap();
    let dev = default_device();
    let feats = set.embed_with(&dev, encode);
    let (texts, links) = set.caption_links(false).unwrap();
    assert_eq!(
        texts.len(),
        2 * set.keys.len(),
        "SceneWorld has two captions per image"
    );
    clip_retrieval(clip, tok.tokenizer.as_ref(), &feats, &texts, &links, &dev)
        .unwrap()
        .mean_recall()
}

/// (PriorCLIP, CLIP) mean recall for one seed.
fn run(seed: u64) -> (f64, f64) {
    let cfg = config(seed);
    let data = batches(&cfg, STEPS);
    let set = held_out(&cfg, "scenes:test:112");
    let settings = PriorClipSettings::default();
    let (rank, renormalize) = (settings.rank_weights, settings.renormalize);
    let m = Arc::new(PriorClipMethod::new(settings, &cfg).unwrap());
    let p = trained(m, &cfg, &data);
    let prior = mean_recall(&p.clip, &set, &cfg, &|px| {
        p.encode_image(px, rank, renormalize)
    });
    let c = trained(Arc::new(ClipMethod::clip(&cfg).unwrap()), &cfg, &data);
    let clip = mean_recall(&c, &set, &cfg, &|px| c.encode_image(px));
    (prior, clip)
}

#[test]
#[ignore = "claim not reproduced (PriorCLIP's mean recall does not beat CLIP's on SceneWorld: \
            numbers in the module comment); about 3 minutes on 2 cores: cargo test --release \
            -p vlp-train --test it priorclip_claim -- --ignored --nocapture"]
fn priorclip_claim_mean_recall_beats_clip() {
    let seeds = [1u64, 2, 3];
    let outcomes = per_seed(&seeds, run);
    let n = seeds.len() as f64;
    let (mut p, mut c) = (0.0, 0.0);
    for (seed, (pr, cl)) in seeds.iter().zip(&outcomes) {
        println!("seed {seed}: mean recall PriorCLIP {pr:.4} CLIP {cl:.4}");
        p += pr / n;
        c += cl / n;
    }
    println!("mean of 3 seeds: PriorCLIP {p:.4} CLIP {c:.4}");
    assert!(
        p > c,
        "PriorCLIP's mean recall {p:.4} does not beat CLIP's {c:.4}"
    );
}
