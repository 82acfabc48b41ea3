//! CoCu's curation claim in miniature (Xing et al., 2023: concepts curated by vision-driven
//! expansion and text-to-vision-guided ranking recover what captions leave out). ShapesWorld's
//! short captions name the main object and only now and then another; a CLIP trained in this
//! test curates the first 1000 training images (the index is the data itself, as CoCu curates
//! CC3M against CC3M), and its top-3 concepts are checked against the objects present but not
//! mentioned, next to 3 concepts drawn at random from each image's archive (expansion without
//! ranking) and 3 drawn at random from the gallery.
//!
//! Measured (seeds 1–3, 150 steps, two runs): recall of omitted objects CoCu 0.180–0.184
//! (0.167, 0.195, 0.178–0.191), archive at random 0.112–0.113, gallery at random 0.043–0.045.
//! The issue asks for 0.6, which this curation model cannot give: ranking all 30 object concepts
//! by its own image–text similarity recalls only 0.17 of the omitted objects (0.16–0.17 also
//! after 1000 steps, with a 128-wide 3-layer model, or trained on the short captions themselves),
//! because at 32 px the secondary objects it would have to see are a few pixels wide; at 64 px
//! and 300 steps CoCu's top 3 reach 0.22 (archive at random 0.16). The test asserts what holds:
//! expansion beats the gallery and ranking beats the unranked archive.
//!
//! Where the 0.6 is lost (measured 2026-12-01, seeds 1–3, this test's curation model unless
//! said): (1) expansion: the union of the 8 neighbours' caption concepts holds only 0.35–0.39 of
//! the omitted objects (0.59–0.76 with 32 neighbours, 0.87–0.96 with 128), so no ranking of an
//! L = 8 archive (methods.md row 1) can reach 0.6 while captions name a secondary object 15 % of
//! the time; (2) recognition: ranking all 30 object concepts directly, leaving out those the
//! caption names, recalls 0.19–0.20 (the tower's own training sentence as the prompt 0.20–0.22,
//! the best of six crops 0.21–0.23, scores standardised per concept 0.19), and the tower puts the
//! *main* object first among the 30 only 0.12–0.17 of the time. Its top 3 of the 30 are mostly
//! the main object's colour: they hold a secondary object's colour for 0.28 of the secondary
//! objects, fewer than 3 random concepts (0.44), and its shape for 0.60 (random 0.48): the
//! tower encodes the main object and little else. A 128-wide 3-layer tower trained
//! 1500 steps of 128 on the object sentences (seed 1) lifts the 8-neighbour archive to 0.48 but
//! direct ranking only to 0.24 (main object first 0.29), and CoCu's top 3 to 0.22.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use vlp_core::backend::default_device;
use vlp_core::rng::Rng;
use vlp_curate::cocu::{
    CONCEPT_PROMPT, ConceptGallery, Selection, concept_archive, pluralize, select_concepts,
};
use vlp_data::shapes::{Colour, Shape, ShapesWorld, Split};
use vlp_tasks::embed::embed_texts;
use vlp_train::TrainConfig;
use vlp_train::method::clip::ClipMethod;
use vlp_train::model::build_tokenizer;

use crate::{batches_with, claim_config, per_seed, trained};

const STEPS: usize = 150;
const IMAGES: usize = 1000;

fn config(seed: u64) -> TrainConfig {
    claim_config(seed, STEPS, &[])
}

/// "red circle" for every colour and shape, and the generic nouns any caption gallery holds.
fn gallery() -> ConceptGallery {
    let mut concepts: Vec<String> = Colour::ALL
        .iter()
        .flat_map(|c| {
            Shape::ALL
                .iter()
                .map(move |s| format!("{} {}", c.name(), s.name()))
        })
        .collect();
    concepts.extend(["photo", "picture", "image", "background"].map(String::from));
    ConceptGallery::new(concepts)
}

/// The curation model's training text: one of the image's per-object sentences ("There is a
/// large blue star."), at random each time, so that it has seen every object named, as CoCu's
/// off-the-shelf CLIP has seen what CC3M's captions leave out.
struct ObjectSentences;

impl vlp_data::TextTransform for ObjectSentences {
    fn texts(&self, sample: &vlp_data::TextInput<'_>, rng: &mut Rng) -> Vec<String> {
        let s = &sample.annotations.object_captions;
        if s.is_empty() {
            return Vec::new();
        }
        vec![s[rng.below(s.len())].clone()]
    }
}

/// A curation of the first [`IMAGES`] training images by a CLIP trained on object sentences.
struct Curated {
    scenes: Vec<vlp_data::shapes::Scene>,
    gallery: ConceptGallery,
    /// Each image's caption concepts.
    index_concepts: Vec<Vec<usize>>,
    /// Each image's ranked archive.
    archive: Vec<Vec<vlp_curate::cocu::ScoredConcept>>,
}

fn curate(seed: u64) -> Curated {
    let cfg = config(seed);
    let data = batches_with(&cfg, STEPS, Some(Arc::new(ObjectSentences)));
    let clip = trained(Arc::new(ClipMethod::clip(&cfg).unwrap()), &cfg, &data);
    let dev = default_device();
    let spec = format!("shapes:train:{IMAGES}");
    let set = crate::held_out(&cfg, &spec);
    assert_eq!(set.len(), IMAGES);
    let images = set.embed(&clip, &dev);
    let gallery = gallery();
    let prompts: Vec<String> = gallery
        .names()
        .iter()
        .map(|c| CONCEPT_PROMPT.replace("{}", c))
        .collect();
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let tok = build_tokenizer(&cfg).unwrap();
    let concepts = embed_texts(&clip, tok.tokenizer.as_ref(), &refs, 256, &dev).unwrap();
    let world = ShapesWorld::new(cfg.data.shapes.clone()).unwrap();
    let scenes: Vec<_> = (0..IMAGES as u64)
        .map(|i| world.sample(Split::Train, i))
        .collect();
    let captions: Vec<String> = set.captions.iter().map(|c| c[0].clone()).collect();
    assert_eq!(captions[0], scenes[0].captions.short);
    let index_concepts: Vec<Vec<usize>> = captions.iter().map(|c| gallery.concepts_in(c)).collect();
    let archive = concept_archive(
        &images.data,
        &images.data,
        &index_concepts,
        &concepts.data,
        images.dim,
        8,
    );
    Curated {
        scenes,
        gallery,
        index_concepts,
        archive,
    }
}

/// Recall of the omitted objects by CoCu's top 3, by 3 concepts of the archive at random and by
/// 3 gallery concepts at random.
fn recalls(seed: u64) -> (f64, f64, f64) {
    let Curated {
        scenes,
        gallery: g,
        index_concepts,
        archive,
        ..
    } = curate(seed);
    // A plural counts as its singular.
    let singular: HashMap<usize, String> = g
        .names()
        .iter()
        .flat_map(|c| {
            let p = pluralize(c);
            [(g.position(c), c.clone()), (g.position(&p), c.clone())]
        })
        .filter_map(|(i, c)| i.map(|i| (i, c)))
        .collect();
    let mut rng = Rng::new(seed);
    let (mut omitted, mut hit, mut hit_random, mut hit_archive) = (0usize, 0usize, 0usize, 0usize);
    for (i, s) in scenes.iter().enumerate() {
        let mentioned: HashSet<&str> = index_concepts[i]
            .iter()
            .map(|c| singular[c].as_str())
            .collect();
        let missing: HashSet<String> = s
            .objects
            .iter()
            .map(|o| format!("{} {}", o.colour.name(), o.shape.name()))
            .filter(|p| !mentioned.contains(p.as_str()))
            .collect();
        let top: HashSet<&str> = select_concepts(&archive[i], 3, Selection::Top, &[], 0, &mut rng)
            .iter()
            .map(|c| singular[c].as_str())
            .collect();
        let mut pool: Vec<usize> = archive[i].iter().map(|c| c.concept).collect();
        rng.shuffle(&mut pool);
        let from_archive: HashSet<&str> =
            pool.iter().take(3).map(|c| singular[c].as_str()).collect();
        hit_archive += missing
            .iter()
            .filter(|m| from_archive.contains(m.as_str()))
            .count();
        let mut random = HashSet::new();
        while random.len() < 3 {
            random.insert(singular[&rng.below(g.len())].as_str());
        }
        omitted += missing.len();
        hit += missing.iter().filter(|m| top.contains(m.as_str())).count();
        hit_random += missing
            .iter()
            .filter(|m| random.contains(m.as_str()))
            .count();
    }
    assert!(omitted > IMAGES / 2, "only {omitted} omitted objects");
    let recall = |hits: usize| hits as f64 / omitted as f64;
    (recall(hit), recall(hit_archive), recall(hit_random))
}

#[test]
fn curated_concepts_recover_objects_the_captions_leave_out() {
    let seeds = [1u64, 2, 3];
    let outcomes = per_seed(&seeds, recalls);
    let n = seeds.len() as f64;
    let (mut cocu, mut archive, mut gallery) = (0.0, 0.0, 0.0);
    for (seed, (c, a, g)) in seeds.iter().zip(&outcomes) {
        println!(
            "seed {seed}: recall of omitted objects: CoCu top-3 {c:.3}, archive at random {a:.3}, gallery at random {g:.3}"
        );
        cocu += c / n;
        archive += a / n;
        gallery += g / n;
    }
    println!(
        "mean of 3 seeds: CoCu {cocu:.3}, archive at random {archive:.3}, gallery at random {gallery:.3}"
    );
    assert!(
        cocu > gallery + 0.08,
        "CoCu's top 3 recall {cocu:.3} of omitted objects, random gallery concepts {gallery:.3}"
    );
    assert!(
        cocu > archive + 0.03,
        "ranking does not help: CoCu {cocu:.3}, the archive at random {archive:.3}"
    );
}

/// Training images of the multi-label claim, seen 4.8 times in [`ML_STEPS`] steps of 32 (CoCu
/// trains 30 epochs over its data).
const ML_IMAGES: usize = 4000;
/// Steps of each training run of the multi-label claim.
const ML_STEPS: usize = 600;

/// Zero-shot top-1 of CoCu's training and of CLIP's on the captions, for one seed, at equal
/// steps, batch, model and data. CLIP trains first and then curates the training images
/// ([`rank_archive`], as `vlp curate cocu`: 8 neighbours, this test's gallery), as CoCu curates its data
/// with a CLIP; CoCu then trains from that archive with its defaults (3 concept prompts per
/// image from CLIP's 80 templates, multi-label weight 1).
fn zero_shots(seed: u64) -> (f64, f64) {
    use vlp_train::method::Method;
    use vlp_train::method::cocu::curate::{Curation, rank_archive};
    use vlp_train::method::cocu::{CocuMethod, CocuSettings};
    let train = format!("data.train=\"shapes:train:{ML_IMAGES}\"");
    let cfg = claim_config(seed, ML_STEPS, &[&train]);
    let dev = default_device();
    let test = crate::held_out(&cfg, "shapes:test:1000");
    let clip_method = ClipMethod::clip(&cfg).unwrap();
    let data = crate::batches(&cfg, ML_STEPS);
    let clip = trained(Arc::new(clip_method.clone()), &cfg, &data);
    drop(data);
    let clip_top1 = crate::zero_shot(&clip_method, &clip, &test, &cfg);

    let set = crate::held_out(&cfg, &format!("shapes:train:{ML_IMAGES}"));
    assert_eq!(set.len(), ML_IMAGES);
    let images = set.embed(&clip, &dev);
    let captions: Vec<String> = set.captions.iter().map(|c| c[0].clone()).collect();
    let tok = build_tokenizer(&cfg).unwrap();
    let curation = Curation {
        keys: &set.keys,
        captions: &captions,
        rows: &images.data,
        index_captions: &captions,
        index_rows: &images.data,
    };
    let archive = rank_archive(
        &clip,
        tok.tokenizer.as_ref(),
        curation,
        &gallery(),
        CONCEPT_PROMPT,
        8,
        serde_json::json!({}),
        &dev,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("archive.json");
    archive.write(&path).unwrap();
    let settings = CocuSettings {
        archive: path,
        ..CocuSettings::default()
    };
    let cocu = CocuMethod::new(settings, &cfg).unwrap();
    let data = crate::batches_for(&cfg, ML_STEPS, 0, cocu.data());
    assert_eq!(
        data[0].text_tokens.as_ref().map(|t| t.batch),
        Some(32 * 4),
        "each image trains with its caption and 3 concept prompts"
    );
    let model = trained(Arc::new(cocu.clone()), &cfg, &data);
    drop(data);
    (crate::zero_shot(&cocu, &model, &test, &cfg), clip_top1)
}

/// CoCu's training claim in miniature (the issue's "multi-label contrastive training with
/// curated concepts reaches zero-shot top-1 ≥ caption-only training at equal steps"): mean of
/// seeds 1–3.
///
/// Measured (2026-12-01, release, 2 cores, the three seeds side by side in 145 s): CoCu 0.322
/// against CLIP 0.283 on seeds 1–3 (0.325/0.281, 0.313/0.264, 0.327/0.304), 0.314/0.300 on
/// seeds 4–6, 0.313/0.284 on seeds 7–9: ahead on 8 of 9 seeds (−2.1 to +4.9 points). After 300
/// steps the means are 0.262/0.241, 0.239/0.233 and 0.262/0.229 (ahead on 7 of 9). The earlier
/// attempt (1000 images curated by a CLIP trained on per-object sentences, ~5 epochs in 150
/// steps, 9 in 300) was behind after 300 steps (0.206 against 0.260; `vlp_train::method::cocu`).
/// What helps is not what the curation adds: with each archive cut to the concepts its own
/// caption names, CoCu gives the same 0.322 on seeds 1–3 (0.299, 0.341, 0.325): the templated
/// prompts of the caption's own object and the multi-label loss on them do the work here.
/// Not run by CI (`#[ignore]`: six training runs of 600 steps, too slow for CI's debug build);
/// run it with `cargo test --release -p vlp-train --test it curated_concepts -- --ignored
/// --nocapture`.
#[test]
#[ignore = "six 600-step training runs: run with --release (about 2.5 min)"]
fn curated_concepts_train_a_zero_shot_classifier_as_good_as_captions_alone() {
    let seeds = [1u64, 2, 3];
    let outcomes = per_seed(&seeds, zero_shots);
    let n = seeds.len() as f64;
    let (mut cocu, mut clip) = (0.0, 0.0);
    for (seed, (c, b)) in seeds.iter().zip(&outcomes) {
        println!("seed {seed}: zero-shot top-1 CoCu {c:.3}, CLIP on the captions {b:.3}");
        cocu += c / n;
        clip += b / n;
    }
    println!("mean of 3 seeds: CoCu {cocu:.3}, CLIP {clip:.3}");
    assert!(
        cocu >= clip,
        "CoCu's zero-shot top-1 {cocu:.3} is below caption-only CLIP's {clip:.3}"
    );
}

/// `[method.cocu] curate_with` through the runner: the curation run trains first, its CLIP
/// curates the training data into the archive, CoCu trains from it; a second run reuses the
/// archive; data too large to curate in memory and multi-process runs are refused with a
/// message naming the field.
#[test]
fn a_run_curates_its_training_data_when_the_archive_is_missing() {
    use vlp_curate::cocu::ConceptArchive;
    let root = tempfile::tempdir().unwrap();
    let dir = format!("run.dir={:?}", root.path().to_str().unwrap());
    let curator = crate::tiny(&[
        "run.name=\"curator\"",
        &dir,
        "data.train=\"shapes:train:96\"",
        "optim.steps=4",
    ]);
    let curator_file = root.path().join("curator.toml");
    std::fs::write(&curator_file, toml::to_string_pretty(&curator).unwrap()).unwrap();
    let archive = root.path().join("archives/train.json");
    let settings = [
        "method.kind=\"cocu\"".to_string(),
        format!("method.cocu.archive={:?}", archive.to_str().unwrap()),
        format!(
            "method.cocu.curate_with={:?}",
            curator_file.to_str().unwrap()
        ),
        "method.cocu.min_count=2".into(),
        dir.clone(),
        "data.train=\"shapes:train:96\"".into(),
        "optim.steps=4".into(),
    ];
    let refs: Vec<&str> = settings.iter().map(String::as_str).collect();
    let cfg = crate::tiny(&refs);
    // Valid before the archive exists; a bad setting stops the run before the curator trains.
    vlp_train::registry::check(&cfg).unwrap();
    let mut bad = settings.to_vec();
    bad.push("method.cocu.neighbours=0".into());
    let refs: Vec<&str> = bad.iter().map(String::as_str).collect();
    let bad = crate::tiny(&refs);
    let err = vlp_train::registry::check(&bad).unwrap_err().to_string();
    assert!(err.contains("neighbours"), "{err}");
    let err = vlp_train::train::<vlp_core::backend::TrainBackend>(
        &bad,
        crate::devices(&bad),
        vlp_train::RunOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("neighbours"), "{err}");
    assert!(!root.path().join("curator").exists());

    let report = crate::train_into(&cfg, &root.path().join("cocu"));
    assert_eq!(report.method, "cocu");
    assert!(root.path().join("curator/final.json").is_file());
    let written = ConceptArchive::read(&archive).unwrap();
    assert_eq!(written.images.len(), 96);
    assert_eq!(written.images[0].key, "shapes-train-00000000");
    assert!(
        written.images.iter().all(|e| !e.concepts.is_empty()),
        "every image has concepts: its own caption's at least"
    );
    assert_eq!(written.summary["neighbours"], 8);
    // The archive is reused as it is (a stale one is deleted by hand to curate again).
    let before = std::fs::read(&archive).unwrap();
    crate::train_into(&cfg, &root.path().join("cocu-again"));
    assert_eq!(std::fs::read(&archive).unwrap(), before);

    let mut stream = settings.to_vec();
    stream.push(format!(
        "method.cocu.archive={:?}",
        root.path().join("other.json").to_str().unwrap()
    ));
    stream.push(format!(
        "data.train=\"shapes:train:{}\"",
        vlp_train::method::cocu::curate::MAX_CURATED_IN_RUN + 1
    ));
    let refs: Vec<&str> = stream.iter().map(String::as_str).collect();
    let cfg = crate::tiny(&refs);
    let err = vlp_train::train::<vlp_core::backend::TrainBackend>(
        &cfg,
        crate::devices(&cfg),
        vlp_train::RunOptions {
            run_dir: Some(root.path().join("stream")),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("method.cocu.curate_with") && err.contains("vlp curate cocu"),
        "{err}"
    );
    assert!(!root.path().join("other.json").exists());

    // Several processes would each curate: refused before anything starts.
    let mut nodes = settings.to_vec();
    nodes.extend([
        format!(
            "method.cocu.archive={:?}",
            root.path().join("nodes.json").to_str().unwrap()
        ),
        "distributed.world_size=2".into(),
        "distributed.coordinator=\"127.0.0.1:9\"".into(),
        "distributed.node_address=\"127.0.0.1:9\"".into(),
    ]);
    let refs: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let cfg = crate::tiny(&refs);
    let err = vlp_train::train::<vlp_core::backend::TrainBackend>(
        &cfg,
        crate::devices(&cfg),
        vlp_train::RunOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("multi-process") && err.contains("vlp curate cocu"),
        "{err}"
    );
    assert!(!root.path().join("nodes.json").exists());
}
