//! ShapesWorld: ground-truth consistency, determinism, splits.

use rayon::prelude::*;
use vlp_data::shapes::{
    Colour, Placement, Relation, Shape, ShapesWorld, ShapesWorldConfig, Split, class_index,
};

fn world() -> ShapesWorld {
    ShapesWorld::new(ShapesWorldConfig::default()).unwrap()
}

/// (colour, shape) pairs a text names.
fn mentioned(text: &str) -> Vec<(Colour, Shape)> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let mut out = Vec::new();
    for w in words.windows(2) {
        let c = Colour::ALL.iter().find(|c| c.name() == w[0]);
        let s = Shape::ALL.iter().find(|s| s.name() == w[1]);
        if let (Some(c), Some(s)) = (c, s) {
            out.push((*c, *s));
        }
    }
    out
}

#[test]
fn ground_truth_is_consistent() {
    for placement in [Placement::Free, Placement::Grid] {
        let w = ShapesWorld::new(ShapesWorldConfig {
            placement,
            texture_prob: 0.3,
            ..Default::default()
        })
        .unwrap();
        let size = w.config().image_size;
        for i in 0..300 {
            let s = w.sample(Split::Train, i);
            let n = s.objects.len();
            assert!((1..=4).contains(&n));
            assert_eq!(s.counts.total, n);
            assert_eq!(s.counts.per_shape.iter().sum::<usize>(), n);
            assert_eq!(s.counts.per_colour.iter().sum::<usize>(), n);
            assert_eq!(
                s.label,
                class_index(s.objects[0].shape, s.objects[0].colour)
            );
            // Masks inside boxes, areas equal to mask pixels, semantic mask agrees.
            let mut area = vec![0u32; n];
            for (p, &id) in s.instance_mask.iter().enumerate() {
                let (x, y) = ((p % size) as u32, (p / size) as u32);
                if id == 0 {
                    assert_eq!(s.semantic_mask[p], 0);
                    continue;
                }
                let o = &s.objects[id as usize - 1];
                let b = o.bbox;
                assert!(
                    x >= b[0] && x < b[2] && y >= b[1] && y < b[3],
                    "{}: pixel outside box",
                    s.key
                );
                assert_eq!(s.semantic_mask[p] as usize, o.shape.index() + 1);
                area[id as usize - 1] += 1;
            }
            for (o, a) in s.objects.iter().zip(&area) {
                assert_eq!(o.area, *a);
                assert!(o.area > 0, "{}: invisible object", s.key);
                assert!(o.area <= o.full_area);
            }
            // The main object is in front and the largest.
            assert!(
                s.objects
                    .iter()
                    .skip(1)
                    .all(|o| o.radius < s.objects[0].radius)
            );
            assert_eq!(s.objects[0].area, s.objects[0].full_area);
            // Relations true by geometry.
            for r in &s.relations {
                let (a, b) = (&s.objects[r.subject], &s.objects[r.object]);
                let ok = match r.relation {
                    Relation::LeftOf => a.center[0] < b.center[0],
                    Relation::RightOf => a.center[0] > b.center[0],
                    Relation::Above => a.center[1] < b.center[1],
                    Relation::Below => a.center[1] > b.center[1],
                    Relation::BiggerThan => a.full_area > b.full_area,
                    Relation::SmallerThan => a.full_area < b.full_area,
                    Relation::Overlapping | Relation::PointingAt | Relation::PointedAtBy => {
                        panic!("{}: an action in the plain world", s.key)
                    }
                };
                assert!(ok, "{}: {r:?} false", s.key);
            }
            // Captions name only what is there; the short one names the main object.
            let present: Vec<(Colour, Shape)> =
                s.objects.iter().map(|o| (o.colour, o.shape)).collect();
            for text in [&s.captions.short, &s.captions.long] {
                for m in mentioned(text) {
                    assert!(present.contains(&m), "{}: {text:?} mentions {m:?}", s.key);
                }
            }
            let names_main = mentioned(&s.captions.short).contains(&present[0])
                || s.captions.short.starts_with(&format!(
                    "{} coloured {}",
                    present[0].1.name(),
                    present[0].0.name()
                ));
            assert!(names_main, "{}: {:?}", s.key, s.captions.short);
            // Hard negatives are false: a colour/shape negative names a pair that is absent.
            for h in &s.captions.hard_negatives {
                assert_ne!(h.positive, h.negative);
                if h.kind == "colour" || h.kind == "shape" {
                    assert!(mentioned(&h.negative).iter().any(|m| *m != present[0]));
                }
            }
            // Every referring expression singles out one object.
            assert_eq!(s.captions.referring.len(), n);
            let mut refs = s.captions.referring.clone();
            refs.sort();
            refs.dedup();
            assert_eq!(refs.len(), n, "{}: ambiguous referring expressions", s.key);
            // VQA count answers are right.
            let total = s
                .captions
                .vqa
                .iter()
                .find(|q| q.question == "how many objects are there?")
                .unwrap();
            assert_eq!(total.answer, vlp_data::shapes::NUMBERS[n]);
        }
    }
}

#[test]
fn deterministic_across_runs_and_threads() {
    let w = world();
    let serial: Vec<Vec<u8>> = (0..64)
        .map(|i| w.sample(Split::Train, i).image.into_raw())
        .collect();
    let parallel: Vec<Vec<u8>> = (0..64u64)
        .into_par_iter()
        .map(|i| w.sample(Split::Train, i).image.into_raw())
        .collect();
    assert_eq!(serial, parallel);
    let again = world();
    assert_eq!(again.sample(Split::Train, 17).image.into_raw(), serial[17]);
    // A fixed checksum pins the bytes across platforms and releases.
    let checksum = serial.iter().flatten().fold(0u64, |h, &b| {
        h.wrapping_mul(0x100_0000_01b3)
            .wrapping_add(b as u64 ^ 0xcbf2_9ce4_8422_2325)
    });
    assert_eq!(
        checksum, CHECKSUM,
        "ShapesWorld bytes changed: update CHECKSUM only on purpose"
    );
    // Different splits and seeds give different images.
    assert_ne!(w.sample(Split::Val, 17).image.into_raw(), serial[17]);
    let other = ShapesWorld::new(ShapesWorldConfig {
        seed: 1,
        ..Default::default()
    })
    .unwrap();
    assert_ne!(other.sample(Split::Train, 17).image.into_raw(), serial[17]);
}

const CHECKSUM: u64 = 6_537_123_728_387_661_569;

#[test]
fn held_out_combinations_only_in_the_unseen_split() {
    let w = world();
    let held = &w.config().held_out;
    for i in 0..500 {
        for split in [Split::Train, Split::Val, Split::Test] {
            let s = w.sample(split, i);
            assert!(
                s.objects
                    .iter()
                    .all(|o| !held.contains(&(o.shape, o.colour))),
                "{}",
                s.key
            );
        }
        let u = w.sample(Split::Unseen, i);
        assert!(held.contains(&(u.objects[0].shape, u.objects[0].colour)));
    }
}

#[test]
fn bad_configs_name_the_field() {
    for (cfg, field) in [
        (
            ShapesWorldConfig {
                image_size: 4,
                ..Default::default()
            },
            "image_size",
        ),
        (
            ShapesWorldConfig {
                min_objects: 3,
                max_objects: 2,
                ..Default::default()
            },
            "max_objects",
        ),
        (
            ShapesWorldConfig {
                max_occlusion: 1.5,
                ..Default::default()
            },
            "max_occlusion",
        ),
    ] {
        let e = ShapesWorld::new(cfg).unwrap_err().to_string();
        assert!(e.contains(field), "{e}");
    }
    let e = serde_json::from_str::<ShapesWorldConfig>(r#"{"image_sise": 64}"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("image_sise"), "{e}");
}

/// The compositional mode adds actions true by geometry, states them all in the long caption,
/// and leaves the images and every other relation as the plain world draws them.
#[test]
fn actions_are_true_by_geometry_and_change_nothing_else() {
    let cfg = ShapesWorldConfig {
        texture_prob: 0.3,
        ..Default::default()
    };
    let plain = ShapesWorld::new(cfg.clone()).unwrap();
    let acting = ShapesWorld::new(ShapesWorldConfig {
        actions: true,
        ..cfg
    })
    .unwrap();
    let (mut overlaps, mut points) = (0, 0);
    for i in 0..300 {
        let (p, a) = (
            plain.sample(Split::Train, i),
            acting.sample(Split::Train, i),
        );
        assert_eq!(p.image, a.image);
        assert_eq!(p.captions.short, a.captions.short);
        let kept: Vec<_> = a
            .relations
            .iter()
            .filter(|r| !r.relation.is_action())
            .copied()
            .collect();
        assert_eq!(kept, p.relations, "{}", a.key);
        for r in a.relations.iter().filter(|r| r.relation.is_action()) {
            let (s, o) = (&a.objects[r.subject], &a.objects[r.object]);
            // Every action has its converse.
            assert!(a.relations.contains(&vlp_data::shapes::RelationFact {
                subject: r.object,
                relation: r.relation.converse(),
                object: r.subject,
            }));
            match r.relation {
                Relation::Overlapping => {
                    overlaps += 1;
                    // The footprints are within reach of each other.
                    let d = ((s.center[0] - o.center[0]).powi(2)
                        + (s.center[1] - o.center[1]).powi(2))
                    .sqrt();
                    assert!(d < s.radius + o.radius, "{}: {r:?} {d}", a.key);
                }
                Relation::PointingAt => {
                    points += 1;
                    assert_eq!(s.shape, Shape::Triangle);
                    let up = s.center[1] - o.center[1];
                    assert!(up >= 0.1 && (s.center[0] - o.center[0]).abs() <= 0.58 * up);
                }
                Relation::PointedAtBy => assert_eq!(o.shape, Shape::Triangle),
                _ => unreachable!(),
            }
            // Stated in the long caption, with the referring expressions.
            if r.subject < r.object {
                let sentence = format!(
                    "The {} is {} {}.",
                    &a.captions.referring[r.subject][4..],
                    r.relation.phrase(),
                    a.captions.referring[r.object]
                );
                assert!(a.captions.long.contains(&sentence), "{}: {sentence}", a.key);
            }
        }
    }
    assert!(
        overlaps > 20 && points > 10,
        "{overlaps} overlaps, {points} pointings"
    );
    // The actions' words are in the vocabulary.
    let v = vlp_data::shapes::vocabulary();
    for w in ["overlapping", "pointing", "pointed", "at", "by"] {
        assert!(v.contains(&w), "{w}");
    }
}
