//! An ARO-like compositional benchmark (Yuksekgonul et al., 2023, "When and why vision-language
//! models behave like bags-of-words"; SyViC evaluates on it): for each image, a true caption
//! against the same caption with its attributes swapped between two objects, with the order of a
//! relation swapped, or with one object replaced by one that is not there. A model "gets" an
//! item when it scores the true caption above the false one (ties count as wrong); accuracy is
//! reported per kind, chance 50 %.
//!
//! Items come from box annotations whose names are `[attribute ...] noun` ("red circle"), so any
//! source with named boxes serves (ShapesWorld's, COCO's attribute-free names give only object
//! items). Each image's pair is its largest object and another one, drawn under the seed.

use std::collections::{BTreeMap, BTreeSet};

use burn::tensor::backend::Backend;
use serde::Serialize;
use vlp_align::ClipModel;
use vlp_core::rng::Rng;
use vlp_data::sample::Annotations;
use vlp_text::Tokenizer;

use crate::battery::EvalImages;
use crate::embed::{Features, embed_texts};
use crate::error::{Result, TaskError};

/// What a false caption changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SwapKind {
    /// Two objects' attributes exchanged ("a blue circle and a red square" for a red circle and
    /// a blue square).
    Attribute,
    /// A spatial relation with subject and object exchanged.
    Relation,
    /// One object's noun replaced by one no object of the image has with that attribute.
    Object,
}

impl SwapKind {
    /// Every kind, in report order.
    pub const ALL: [SwapKind; 3] = [SwapKind::Attribute, SwapKind::Relation, SwapKind::Object];

    /// Name in reports and metric keys (`swap_attribute`, ...).
    pub fn name(self) -> &'static str {
        match self {
            SwapKind::Attribute => "attribute",
            SwapKind::Relation => "relation",
            SwapKind::Object => "object",
        }
    }
}

/// One true/false caption pair for an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwapItem {
    /// Index of the image.
    pub image: usize,
    /// True of the image.
    pub positive: String,
    /// False of the image.
    pub negative: String,
    /// What the false caption changes.
    pub kind: SwapKind,
}

/// Accuracy on one kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KindScore {
    /// Fraction of items whose true caption scored higher.
    pub accuracy: f64,
    /// Items of this kind.
    pub items: usize,
}

/// Accuracy per kind (kinds without items are left out).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SwapReport {
    /// By [`SwapKind::name`].
    pub kinds: BTreeMap<String, KindScore>,
}

impl SwapReport {
    /// `swap_attribute`, `swap_relation`, `swap_object` accuracies, for training logs.
    pub fn metrics(&self) -> Vec<(String, f64)> {
        self.kinds
            .iter()
            .map(|(k, s)| (format!("swap_{k}"), s.accuracy))
            .collect()
    }
}

/// A named object of an image.
struct Named<'a> {
    attribute: &'a str,
    noun: &'a str,
    name: &'a str,
    centre: [f32; 2],
    area: f32,
}

fn article(phrase: &str) -> &'static str {
    if phrase.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn with_article(phrase: &str) -> String {
    format!("{} {phrase}", article(phrase))
}

fn joined(attribute: &str, noun: &str) -> String {
    if attribute.is_empty() {
        noun.to_string()
    } else {
        format!("{attribute} {noun}")
    }
}

fn named(a: &Annotations) -> Vec<Named<'_>> {
    a.boxes
        .iter()
        .filter(|b| b.bbox[2] > b.bbox[0] && b.bbox[3] > b.bbox[1] && !b.name.trim().is_empty())
        .map(|b| {
            let name = b.name.trim();
            let (attribute, noun) = name.rsplit_once(' ').unwrap_or(("", name));
            Named {
                attribute: attribute.trim(),
                noun,
                name,
                centre: [(b.bbox[0] + b.bbox[2]) / 2.0, (b.bbox[1] + b.bbox[3]) / 2.0],
                area: (b.bbox[2] - b.bbox[0]) * (b.bbox[3] - b.bbox[1]),
            }
        })
        .collect()
}

/// The benchmark's items for images with these annotations, at most one per kind and image.
///
/// `image_size` is the side the boxes are measured in; a relation needs the two centres apart by
/// at least `margin` of it on that axis (0.15 keeps "to the left of" unambiguous). The draws of
/// image `i` depend only on `(seed, i)`.
pub fn swap_items(
    annotations: &[Annotations],
    image_size: usize,
    margin: f32,
    seed: u64,
) -> Vec<SwapItem> {
    let nouns: BTreeSet<&str> = annotations
        .iter()
        .flat_map(|a| named(a).into_iter().map(|o| o.noun))
        .collect();
    let nouns: Vec<&str> = nouns.into_iter().collect();
    swap_items_with(annotations, &nouns, image_size, margin, seed)
}

/// [`swap_items`] with the nouns object items replace from given (a training transform sees one
/// image at a time, so the set's nouns are not at hand).
pub fn swap_items_with(
    annotations: &[Annotations],
    nouns: &[&str],
    image_size: usize,
    margin: f32,
    seed: u64,
) -> Vec<SwapItem> {
    let gap = margin * image_size as f32;
    let mut items = Vec::new();
    for (image, a) in annotations.iter().enumerate() {
        let mut objects = named(a);
        if objects.is_empty() {
            continue;
        }
        // The largest object first (ShapesWorld's main object).
        objects.sort_by(|x, y| y.area.total_cmp(&x.area));
        let present: BTreeSet<&str> = objects.iter().map(|o| o.name).collect();
        let unique = |name: &str| objects.iter().filter(|o| o.name == name).count() == 1;
        let mut rng = Rng::for_item(seed, 0x5a9, image as u64);
        let main = &objects[0];
        let others: Vec<&Named<'_>> = objects[1..].iter().collect();

        // Attribute: exchange the attributes of the main object and another.
        let swappable: Vec<&&Named<'_>> = others
            .iter()
            .filter(|o| {
                !o.attribute.is_empty()
                    && !main.attribute.is_empty()
                    && o.attribute != main.attribute
                    && o.noun != main.noun
                    && !present.contains(joined(o.attribute, main.noun).as_str())
                    && !present.contains(joined(main.attribute, o.noun).as_str())
            })
            .collect();
        if !swappable.is_empty() {
            let o = *rng.pick(&swappable);
            let (first, second) = if rng.chance(0.5) {
                (main, *o)
            } else {
                (*o, main)
            };
            items.push(SwapItem {
                image,
                positive: format!(
                    "{} and {}",
                    with_article(first.name),
                    with_article(second.name)
                ),
                negative: format!(
                    "{} and {}",
                    with_article(&joined(second.attribute, first.noun)),
                    with_article(&joined(first.attribute, second.noun))
                ),
                kind: SwapKind::Attribute,
            });
        }

        // Relation: "the A is to the left of the B" against "the B is to the left of the A".
        if unique(main.name) {
            let mut facts: Vec<(&str, &str, &str)> = Vec::new();
            for o in others
                .iter()
                .filter(|o| unique(o.name) && o.name != main.name)
            {
                let dx = o.centre[0] - main.centre[0];
                let dy = o.centre[1] - main.centre[1];
                // (subject, phrase, object), true of the image.
                if dx.abs() >= gap {
                    let (l, r) = if dx > 0.0 { (main, *o) } else { (*o, main) };
                    facts.push((l.name, "to the left of", r.name));
                    facts.push((r.name, "to the right of", l.name));
                }
                if dy.abs() >= gap {
                    let (u, d) = if dy > 0.0 { (main, *o) } else { (*o, main) };
                    facts.push((u.name, "above", d.name));
                    facts.push((d.name, "below", u.name));
                }
            }
            if !facts.is_empty() {
                let (s, p, o) = *rng.pick(&facts);
                items.push(SwapItem {
                    image,
                    positive: format!("the {s} is {p} the {o}"),
                    negative: format!("the {o} is {p} the {s}"),
                    kind: SwapKind::Relation,
                });
            }
        }

        // Object: replace the noun of one object by a noun absent with its attribute.
        let target = if others.is_empty() || rng.chance(0.5) {
            main
        } else {
            *rng.pick(&others)
        };
        let replacements: Vec<&str> = nouns
            .iter()
            .copied()
            .filter(|n| {
                *n != target.noun && !present.contains(joined(target.attribute, n).as_str())
            })
            .collect();
        if !replacements.is_empty() {
            let n = *rng.pick(&replacements);
            let swapped = joined(target.attribute, n);
            let (positive, negative) = match others.iter().find(|o| o.name != target.name) {
                Some(other) if target.name == main.name => (
                    format!(
                        "{} and {}",
                        with_article(main.name),
                        with_article(other.name)
                    ),
                    format!(
                        "{} and {}",
                        with_article(&swapped),
                        with_article(other.name)
                    ),
                ),
                _ if target.name != main.name => (
                    format!(
                        "{} and {}",
                        with_article(main.name),
                        with_article(target.name)
                    ),
                    format!("{} and {}", with_article(main.name), with_article(&swapped)),
                ),
                _ => (with_article(target.name), with_article(&swapped)),
            };
            items.push(SwapItem {
                image,
                positive,
                negative,
                kind: SwapKind::Object,
            });
        }
    }
    items
}

/// Accuracy of a dual encoder on `items`, given the L2-normalised embeddings of the images
/// they index.
pub fn swap_accuracy<B: Backend>(
    model: &ClipModel<B>,
    tokenizer: &dyn Tokenizer,
    images: &Features,
    items: &[SwapItem],
    device: &B::Device,
) -> Result<SwapReport> {
    let texts: Vec<&str> = items
        .iter()
        .flat_map(|i| [i.positive.as_str(), i.negative.as_str()])
        .collect();
    let t = embed_texts(model, tokenizer, &texts, 256, device)?;
    score_swaps(images, &t, items)
}

/// Accuracy per kind from embeddings: item `k`'s true caption is row `2k` of `texts`, its
/// swapped twin row `2k + 1`; an item is right when the true one's dot product with its image
/// is strictly larger (a tie is wrong).
pub fn score_swaps(images: &Features, texts: &Features, items: &[SwapItem]) -> Result<SwapReport> {
    let bad = |reason: String| TaskError::Invalid {
        task: "compositional swaps".into(),
        reason,
    };
    if let Some(i) = items.iter().find(|i| i.image >= images.rows) {
        return Err(bad(format!(
            "an item names image {} but {} images were embedded",
            i.image, images.rows
        )));
    }
    if texts.rows != 2 * items.len() {
        return Err(bad(format!(
            "{} text embeddings for {} items (two each)",
            texts.rows,
            items.len()
        )));
    }
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let mut tally: BTreeMap<SwapKind, (usize, usize)> = BTreeMap::new();
    for (k, item) in items.iter().enumerate() {
        let img = images.row(item.image);
        let right = dot(img, texts.row(2 * k)) > dot(img, texts.row(2 * k + 1));
        let e = tally.entry(item.kind).or_default();
        e.0 += usize::from(right);
        e.1 += 1;
    }
    Ok(SwapReport {
        kinds: tally
            .into_iter()
            .map(|(k, (right, n))| {
                (
                    k.name().to_string(),
                    KindScore {
                        accuracy: right as f64 / n as f64,
                        items: n,
                    },
                )
            })
            .collect(),
    })
}

/// Centre distance, as a fraction of the image side, below which no relation item is made.
pub const RELATION_MARGIN: f32 = 0.15;

/// The benchmark on held-out images: items from their annotations, scored by `model`; `None`
/// when no image has a qualifying pair (a source without named boxes).
pub fn clip_swaps<B: Backend>(
    model: &ClipModel<B>,
    tokenizer: &dyn Tokenizer,
    set: &EvalImages,
    seed: u64,
    device: &B::Device,
) -> Result<Option<SwapReport>> {
    let items = swap_items(&set.annotations, set.image_size, RELATION_MARGIN, seed);
    if items.is_empty() {
        return Ok(None);
    }
    let images = set.embed(model, device);
    swap_accuracy(model, tokenizer, &images, &items, device).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vlp_data::sample::ObjectBox;

    fn scene(boxes: &[(&str, [f32; 4])]) -> Annotations {
        Annotations {
            boxes: boxes
                .iter()
                .map(|(n, b)| ObjectBox {
                    bbox: *b,
                    label: None,
                    name: n.to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn items_are_true_and_false_as_built() {
        // A large red circle on the left, a small blue square on the right and below.
        let a = scene(&[
            ("blue square", [40.0, 40.0, 50.0, 50.0]),
            ("red circle", [4.0, 4.0, 24.0, 24.0]),
        ]);
        let mut seen = BTreeSet::new();
        for seed in 0..40 {
            let items = swap_items(std::slice::from_ref(&a), 64, 0.15, seed);
            assert_eq!(items.len(), 3, "one item per kind");
            for i in &items {
                seen.insert((i.kind, i.positive.clone(), i.negative.clone()));
            }
        }
        let of = |k| {
            seen.iter()
                .filter(|(kind, ..)| *kind == k)
                .map(|(_, p, n)| (p.as_str(), n.as_str()))
                .collect::<Vec<_>>()
        };
        let attr = of(SwapKind::Attribute);
        assert!(attr.contains(&(
            "a red circle and a blue square",
            "a blue circle and a red square"
        )));
        assert!(attr.contains(&(
            "a blue square and a red circle",
            "a red square and a blue circle"
        )));
        assert_eq!(attr.len(), 2);
        let rel = of(SwapKind::Relation);
        for (p, n) in &rel {
            let true_facts = [
                "the red circle is to the left of the blue square",
                "the blue square is to the right of the red circle",
                "the red circle is above the blue square",
                "the blue square is below the red circle",
            ];
            assert!(true_facts.contains(p), "{p}");
            assert!(!true_facts.contains(n), "{n}");
        }
        assert_eq!(rel.len(), 4);
        for (p, n) in of(SwapKind::Object) {
            // Only two nouns exist in this set: a replacement must be the other one, with the
            // attribute kept, and never a present object.
            assert!(
                [
                    (
                        "a red circle and a blue square",
                        "a red square and a blue square"
                    ),
                    (
                        "a red circle and a blue square",
                        "a red circle and a blue circle"
                    ),
                ]
                .contains(&(p, n)),
                "{p} / {n}"
            );
        }
    }

    #[test]
    fn scores_count_per_kind_ties_are_wrong_and_bad_indices_are_errors() {
        let feats = |rows: Vec<[f32; 2]>| Features {
            rows: rows.len(),
            dim: 2,
            data: rows.concat(),
        };
        let item = |image, kind| SwapItem {
            image,
            positive: String::new(),
            negative: String::new(),
            kind,
        };
        let images = feats(vec![[1.0, 0.0], [0.0, 1.0]]);
        let items = [
            item(0, SwapKind::Attribute), // right: 1 > 0
            item(1, SwapKind::Attribute), // wrong: 0 < 1
            item(1, SwapKind::Relation),  // tie: wrong
            item(0, SwapKind::Relation),  // right
            item(1, SwapKind::Relation),  // right
        ];
        let texts = feats(vec![
            [1.0, 0.0],
            [0.0, 1.0],
            [1.0, 0.0],
            [0.0, 1.0],
            [0.5, 0.5],
            [0.5, 0.5],
            [0.9, 0.1],
            [0.2, 0.8],
            [0.1, 0.9],
            [0.9, 0.1],
        ]);
        let r = score_swaps(&images, &texts, &items).unwrap();
        assert_eq!(r.kinds.len(), 2, "kinds without items are left out");
        assert_eq!(
            r.kinds["attribute"],
            KindScore {
                accuracy: 0.5,
                items: 2
            }
        );
        assert_eq!(r.kinds["relation"].items, 3);
        assert!((r.kinds["relation"].accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(
            r.metrics(),
            vec![
                ("swap_attribute".to_string(), 0.5),
                ("swap_relation".to_string(), r.kinds["relation"].accuracy)
            ]
        );
        let e = score_swaps(&images, &texts, &[item(2, SwapKind::Object)]).unwrap_err();
        assert!(e.to_string().contains("image 2 but 2 images"), "{e}");
        let e = score_swaps(&images, &texts, &items[..2]).unwrap_err();
        assert!(
            e.to_string().contains("10 text embeddings for 2 items"),
            "{e}"
        );
    }

    #[test]
    fn ambiguous_scenes_give_no_wrong_items() {
        // Swapped attributes would describe objects that are present: no attribute item. Two
        // red circles: "the red circle" is ambiguous, no relation item. Centres 5 px apart on
        // a 64 px image: no relation either.
        let a = scene(&[
            ("red circle", [0.0, 0.0, 20.0, 20.0]),
            ("blue square", [10.0, 0.0, 16.0, 6.0]),
            ("blue circle", [40.0, 40.0, 44.0, 44.0]),
            ("red square", [50.0, 50.0, 54.0, 54.0]),
        ]);
        let b = scene(&[
            ("red circle", [0.0, 0.0, 20.0, 20.0]),
            ("red circle", [40.0, 40.0, 50.0, 50.0]),
        ]);
        let c = scene(&[
            ("red circle", [20.0, 20.0, 40.0, 40.0]),
            ("blue square", [23.0, 23.0, 33.0, 33.0]),
        ]);
        for seed in 0..20 {
            let items = swap_items(&[a.clone(), b.clone(), c.clone()], 64, 0.15, seed);
            assert!(
                !items
                    .iter()
                    .any(|i| i.kind == SwapKind::Attribute && i.image == 0)
            );
            assert!(
                !items
                    .iter()
                    .any(|i| i.kind == SwapKind::Relation && i.image != 0)
            );
            assert!(items.iter().all(|i| i.positive != i.negative));
        }
        // An image without boxes gives nothing; the draws are a function of the seed.
        assert!(swap_items(&[Annotations::default()], 64, 0.15, 1).is_empty());
        let set = [a, b, c];
        assert_eq!(swap_items(&set, 64, 0.15, 7), swap_items(&set, 64, 0.15, 7));
    }
}
