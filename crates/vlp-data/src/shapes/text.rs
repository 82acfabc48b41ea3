//! Text about a scene: captions, referring expressions, questions and hard negatives.

use serde::{Deserialize, Serialize};

use super::attributes::{Colour, NUMBERS, Relation, Shape, Texture};
use super::{Counts, Object, RelationFact};
use vlp_core::rng::Rng;

/// Kind of a VQA pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QaKind {
    /// "What colour is the star?"
    Colour,
    /// "What shape is the red object?"
    Shape,
    /// "How many circles are there?"
    Count,
    /// "Is there a blue square?"
    Existence,
    /// "Is the red circle to the left of the blue square?"
    Relation,
}

/// A question with its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Qa {
    /// The question.
    pub question: String,
    /// A one-word answer.
    pub answer: String,
    /// What it asks about.
    pub kind: QaKind,
}

/// A true caption and a minimal edit of it that is false for the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardNegative {
    /// True of the image.
    pub positive: String,
    /// False of the image; differs from `positive` in one attribute, binding or relation.
    pub negative: String,
    /// `colour`, `shape`, `binding` or `relation`.
    pub kind: String,
}

/// All text generated for a scene.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Captions {
    /// Alt-text-like caption: always names the main object, often leaves others out.
    pub short: String,
    /// One sentence per object, then up to three relations.
    pub long: String,
    /// The per-object sentences of `long`, in object order.
    pub objects: Vec<String>,
    /// For each object, the shortest description that singles it out.
    pub referring: Vec<String>,
    /// Questions and answers.
    pub vqa: Vec<Qa>,
    /// Compositional hard negatives.
    pub hard_negatives: Vec<HardNegative>,
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// "large striped red circle", with the parts asked for.
fn noun_phrase(o: &Object, size: bool) -> String {
    let mut words = Vec::new();
    if size {
        words.push(o.size.name());
    }
    if o.texture != Texture::Solid {
        words.push(o.texture.name());
    }
    words.push(o.colour.name());
    words.push(o.shape.name());
    words.join(" ")
}

fn with_article(phrase: &str) -> String {
    format!("{} {phrase}", article(phrase))
}

/// The shortest description that singles out object `i`.
fn referring(objects: &[Object], i: usize) -> String {
    let o = &objects[i];
    let unique = |f: &dyn Fn(&Object) -> bool| objects.iter().filter(|x| f(x)).count() == 1;
    if unique(&|x| x.shape == o.shape) {
        return format!("the {}", o.shape.name());
    }
    if unique(&|x| x.shape == o.shape && x.colour == o.colour) {
        return format!("the {} {}", o.colour.name(), o.shape.name());
    }
    if unique(&|x| x.shape == o.shape && x.colour == o.colour && x.size == o.size) {
        return format!(
            "the {} {} {}",
            o.size.name(),
            o.colour.name(),
            o.shape.name()
        );
    }
    let same: Vec<&Object> = objects
        .iter()
        .filter(|x| x.shape == o.shape && x.colour == o.colour)
        .collect();
    let leftmost = same.iter().all(|x| x.center[0] >= o.center[0]);
    let pos = if leftmost {
        "leftmost"
    } else if same.iter().all(|x| x.center[0] <= o.center[0]) {
        "rightmost"
    } else {
        "middle"
    };
    format!("the {pos} {} {}", o.colour.name(), o.shape.name())
}

/// Captions, referring expressions, questions and hard negatives for a scene.
pub(super) fn captions(
    objects: &[Object],
    relations: &[RelationFact],
    counts: &Counts,
    rng: &mut Rng,
) -> Captions {
    let main = &objects[0];
    let m = noun_phrase(main, rng.chance(0.3));
    // Alt text names the main object and only now and then another one.
    let others: Vec<&Object> = objects[1..].iter().filter(|_| rng.chance(0.15)).collect();
    let mut short = match rng.below(7) {
        0 => with_article(&m),
        1 => format!("a photo of {}", with_article(&m)),
        2 => format!("{} coloured {}", main.shape.name(), main.colour.name()),
        3 => format!("there is {} in this image", with_article(&m)),
        4 => format!("{} on a background", with_article(&m)),
        5 => format!("a picture of {}", with_article(&m)),
        _ => m.clone(),
    };
    for o in &others {
        short += &format!(" and {}", with_article(&noun_phrase(o, false)));
    }

    let refs: Vec<String> = (0..objects.len()).map(|i| referring(objects, i)).collect();
    let per_object: Vec<String> = objects
        .iter()
        .map(|o| format!("There is {}.", with_article(&noun_phrase(o, true))))
        .collect();
    let mut long = per_object.clone();
    let mut facts: Vec<&RelationFact> = relations.iter().filter(|r| r.subject < r.object).collect();
    rng.shuffle(&mut facts);
    // Actions (the compositional mode's) are all stated; spatial relations up to three. Without
    // actions this is the shuffled list itself.
    let (acts, facts): (Vec<&RelationFact>, Vec<&RelationFact>) =
        facts.into_iter().partition(|f| f.relation.is_action());
    for f in facts.iter().take(3).chain(&acts) {
        long.push(format!(
            "The {} is {} {}.",
            &refs[f.subject][4..],
            f.relation.phrase(),
            refs[f.object]
        ));
    }

    let mut vqa = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        if refs[i] == format!("the {}", o.shape.name()) {
            vqa.push(Qa {
                question: format!("what colour is the {}?", o.shape.name()),
                answer: o.colour.name().into(),
                kind: QaKind::Colour,
            });
        }
        if objects.iter().filter(|x| x.colour == o.colour).count() == 1 {
            vqa.push(Qa {
                question: format!("what shape is the {} object?", o.colour.name()),
                answer: o.shape.name().into(),
                kind: QaKind::Shape,
            });
        }
    }
    vqa.push(Qa {
        question: "how many objects are there?".into(),
        answer: NUMBERS[counts.total.min(4)].into(),
        kind: QaKind::Count,
    });
    let s = *rng.pick(&Shape::ALL);
    vqa.push(Qa {
        question: format!("how many {} are there?", s.plural()),
        answer: NUMBERS[counts.per_shape[s.index()].min(4)].into(),
        kind: QaKind::Count,
    });
    vqa.push(Qa {
        question: format!(
            "is there {}?",
            with_article(&format!("{} {}", main.colour.name(), main.shape.name()))
        ),
        answer: "yes".into(),
        kind: QaKind::Existence,
    });
    let absent = loop {
        let (s, c) = (*rng.pick(&Shape::ALL), *rng.pick(&Colour::ALL));
        if !objects.iter().any(|o| o.shape == s && o.colour == c) {
            break (s, c);
        }
    };
    vqa.push(Qa {
        question: format!(
            "is there {}?",
            with_article(&format!("{} {}", absent.1.name(), absent.0.name()))
        ),
        answer: "no".into(),
        kind: QaKind::Existence,
    });
    if let Some(f) = facts.first() {
        let (a, b) = (&refs[f.subject], &refs[f.object]);
        vqa.push(Qa {
            question: format!("is {a} {} {b}?", f.relation.phrase()),
            answer: "yes".into(),
            kind: QaKind::Relation,
        });
        vqa.push(Qa {
            question: format!("is {a} {} {b}?", f.relation.converse().phrase()),
            answer: "no".into(),
            kind: QaKind::Relation,
        });
    }

    let mut hard_negatives = Vec::new();
    let positive = with_article(&format!("{} {}", main.colour.name(), main.shape.name()));
    let other_colour = loop {
        let c = *rng.pick(&Colour::ALL);
        if c != main.colour {
            break c;
        }
    };
    let other_shape = loop {
        let s = *rng.pick(&Shape::ALL);
        if s != main.shape {
            break s;
        }
    };
    hard_negatives.push(HardNegative {
        positive: positive.clone(),
        negative: with_article(&format!("{} {}", other_colour.name(), main.shape.name())),
        kind: "colour".into(),
    });
    hard_negatives.push(HardNegative {
        positive: positive.clone(),
        negative: with_article(&format!("{} {}", main.colour.name(), other_shape.name())),
        kind: "shape".into(),
    });
    // Attribute binding: swap the colours of two objects of different colours and shapes, when
    // no object has the swapped combinations.
    if let Some(o) = objects[1..].iter().find(|o| {
        o.colour != main.colour
            && o.shape != main.shape
            && !objects.iter().any(|x| {
                (x.colour, x.shape) == (o.colour, main.shape)
                    || (x.colour, x.shape) == (main.colour, o.shape)
            })
    }) {
        hard_negatives.push(HardNegative {
            positive: format!(
                "{positive} and {}",
                with_article(&format!("{} {}", o.colour.name(), o.shape.name()))
            ),
            negative: format!(
                "{} and {}",
                with_article(&format!("{} {}", o.colour.name(), main.shape.name())),
                with_article(&format!("{} {}", main.colour.name(), o.shape.name()))
            ),
            kind: "binding".into(),
        });
    }
    if let Some(f) = facts.first().filter(|f| {
        matches!(
            f.relation,
            Relation::LeftOf | Relation::RightOf | Relation::Above | Relation::Below
        )
    }) {
        let (a, b) = (&refs[f.subject], &refs[f.object]);
        hard_negatives.push(HardNegative {
            positive: format!("{a} is {} {b}", f.relation.phrase()),
            negative: format!("{a} is {} {b}", f.relation.converse().phrase()),
            kind: "relation".into(),
        });
    }
    Captions {
        short,
        long: long.join(" "),
        objects: per_object,
        referring: refs,
        vqa,
        hard_negatives,
    }
}

/// Every word ShapesWorld text uses (lower case, punctuation stripped), for word-level
/// tokenizers. Prompts built from these words tokenise without unknowns.
pub fn vocabulary() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = vec![
        "a",
        "an",
        "the",
        "photo",
        "picture",
        "of",
        "there",
        "is",
        "in",
        "this",
        "image",
        "on",
        "background",
        "and",
        "coloured",
        "colour",
        "color",
        "shape",
        "object",
        "objects",
        "what",
        "how",
        "many",
        "are",
        "yes",
        "no",
        "to",
        "left",
        "right",
        "above",
        "below",
        "bigger",
        "smaller",
        "than",
        // The compositional mode's actions.
        "overlapping",
        "pointing",
        "pointed",
        "at",
        "by",
        "leftmost",
        "rightmost",
        "middle",
        "small",
        "large",
        "solid",
        "striped",
        "dotted",
        "it",
        "with",
        "one",
        "two",
        "three",
        "four",
        "zero",
        // PTP's position prompt ("The block 4 has a red circle.", `x` for a block the crop
        // cut away: `crate::text::PositionPrompt`).
        "block",
        "has",
        "x",
        "0",
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
        "7",
        "8",
        ".",
        ",",
        "?",
    ];
    for s in Shape::ALL {
        v.push(s.name());
        v.push(s.plural());
    }
    for c in Colour::ALL {
        v.push(c.name());
    }
    v.sort_unstable();
    v.dedup();
    v
}
