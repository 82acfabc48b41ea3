//! ShapesWorld's sentence grammar as data: a [`Statement`] (one object, or two objects and a
//! relation) that can be written several ways (paraphrases), read back from ShapesWorld's own
//! long-caption sentences, and changed in one attribute (a contradiction). Text-only methods
//! use it for paraphrase/contradiction pairs (Pixel-Linguist's supervised stage) and for a
//! graded sentence-similarity benchmark (`vlp_tasks::sts`).

use super::attributes::{Colour, Relation, Shape, Size, Texture};
use crate::shapes::Rng;

/// Relations a statement can use.
const RELATIONS: [Relation; 9] = [
    Relation::LeftOf,
    Relation::RightOf,
    Relation::Above,
    Relation::Below,
    Relation::BiggerThan,
    Relation::SmallerThan,
    Relation::Overlapping,
    Relation::PointingAt,
    Relation::PointedAtBy,
];
const SIZES: [Size; 2] = [Size::Small, Size::Large];
const TEXTURES: [Texture; 2] = [Texture::Striped, Texture::Dotted];

/// An object as a sentence names it; unnamed attributes are `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Thing {
    /// Size word, when named.
    pub size: Option<Size>,
    /// Pattern word, when named (solid is never named).
    pub texture: Option<Texture>,
    /// Colour word, when named.
    pub colour: Option<Colour>,
    /// The shape (always named).
    pub shape: Shape,
}

impl Thing {
    /// "large striped red circle": the named words in ShapesWorld's order.
    pub fn phrase(&self) -> String {
        let mut w: Vec<&str> = Vec::with_capacity(4);
        w.extend(self.size.map(Size::name));
        w.extend(self.texture.map(Texture::name));
        w.extend(self.colour.map(Colour::name));
        w.push(self.shape.name());
        w.join(" ")
    }

    fn with_article(&self) -> String {
        let p = self.phrase();
        let a = if p.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        format!("{a} {p}")
    }

    fn random(rng: &mut Rng, size: bool) -> Self {
        Self {
            size: size.then(|| *rng.pick(&SIZES)),
            texture: rng.chance(0.3).then(|| *rng.pick(&TEXTURES)),
            colour: Some(*rng.pick(&Colour::ALL)),
            shape: *rng.pick(&Shape::ALL),
        }
    }
}

/// What a sentence says: an object exists, or stands in a relation to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Statement {
    /// The object the sentence is about.
    pub subject: Thing,
    /// A relation to a second object, when there is one.
    pub relation: Option<(Relation, Thing)>,
}

/// Ways of writing a statement ([`Statement::write`]'s `style` is taken modulo this).
pub const STYLES: usize = 4;

fn capitalise(s: String) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => s,
    }
}

impl Statement {
    /// A random statement: a sized object, half the time in a spatial relation to another.
    pub fn random(rng: &mut Rng) -> Self {
        let subject = Thing::random(rng, true);
        let relation = rng.chance(0.5).then(|| {
            let r = *rng.pick(&RELATIONS[..4]);
            let sized = rng.chance(0.5);
            let mut object = Thing::random(rng, sized);
            while object.shape == subject.shape && object.colour == subject.colour {
                object.shape = *rng.pick(&Shape::ALL);
            }
            (r, object)
        });
        Self { subject, relation }
    }

    /// The statement in words, in one of [`STYLES`] ways; every style says the same thing
    /// (style 1 of a relation uses its converse: "the square is right of the circle").
    pub fn write(&self, style: usize) -> String {
        let s = &self.subject;
        let text = match self.relation {
            None => match style % STYLES {
                0 => format!("there is {}.", s.with_article()),
                1 => format!("{} is in the picture.", s.with_article()),
                2 => format!("the image shows {}.", s.with_article()),
                _ => format!("{} can be seen.", s.with_article()),
            },
            Some((r, o)) => match style % STYLES {
                0 => format!("the {} is {} the {}.", s.phrase(), r.phrase(), o.phrase()),
                1 => format!(
                    "the {} is {} the {}.",
                    o.phrase(),
                    r.converse().phrase(),
                    s.phrase()
                ),
                2 => format!(
                    "there is {} {} {}.",
                    s.with_article(),
                    r.phrase(),
                    o.with_article()
                ),
                _ => format!(
                    "{} has {} {} it.",
                    o.with_article(),
                    s.with_article(),
                    r.phrase()
                ),
            },
        };
        capitalise(text)
    }

    /// Reads ShapesWorld's long-caption sentences: "There is a large red circle." and "The red
    /// circle is to the left of the blue square." (any case, final full stop optional). Other
    /// sentences, or unknown words inside a noun phrase ("the leftmost red circle"), give `None`.
    pub fn parse(sentence: &str) -> Option<Self> {
        let lower = sentence.trim().trim_end_matches('.').to_lowercase();
        let words: Vec<&str> = lower.split_whitespace().collect();
        if let ["there", "is", "a" | "an", rest @ ..] = words.as_slice() {
            return Some(Self {
                subject: parse_thing(rest)?,
                relation: None,
            });
        }
        let ["the", rest @ ..] = words.as_slice() else {
            return None;
        };
        let is = rest.iter().position(|w| *w == "is")?;
        let subject = parse_thing(&rest[..is])?;
        let tail = rest[is + 1..].join(" ");
        RELATIONS.iter().find_map(|r| {
            let after = tail.strip_prefix(r.phrase())?.strip_prefix(' ')?;
            let object: Vec<&str> = after.split(' ').collect();
            let object = match object.as_slice() {
                ["the" | "a" | "an", o @ ..] => o,
                _ => return None,
            };
            Some(Self {
                subject,
                relation: Some((*r, parse_thing(object)?)),
            })
        })
    }

    /// The statement with one named attribute (a colour, shape, size or pattern of either
    /// object) changed to another value, or its relation reversed: false whenever `self` is
    /// true.
    pub fn contradict(&self, rng: &mut Rng) -> Self {
        let mut out = *self;
        let things = 1 + usize::from(self.relation.is_some());
        loop {
            let pick = rng.below(4 * things + usize::from(self.relation.is_some()));
            if pick == 4 * things {
                let (r, o) = self.relation.expect("counted");
                let other = if r.converse() != r {
                    r.converse()
                } else {
                    loop {
                        let x = *rng.pick(&RELATIONS);
                        if x != r {
                            break x;
                        }
                    }
                };
                out.relation = Some((other, o));
                return out;
            }
            let mut t = if pick < 4 {
                self.subject
            } else {
                self.relation.expect("counted").1
            };
            let changed = match pick % 4 {
                0 => t
                    .colour
                    .map(|c| Some(other_of(&Colour::ALL, c, rng)))
                    .map(|c| t.colour = c),
                1 => {
                    t.shape = other_of(&Shape::ALL, t.shape, rng);
                    Some(())
                }
                2 => t
                    .size
                    .map(|s| Some(other_of(&SIZES, s, rng)))
                    .map(|s| t.size = s),
                _ => t
                    .texture
                    .map(|x| Some(other_of(&TEXTURES, x, rng)))
                    .map(|x| t.texture = x),
            };
            if changed.is_none() {
                continue;
            }
            if pick < 4 {
                out.subject = t;
            } else {
                out.relation = self.relation.map(|(r, _)| (r, t));
            }
            return out;
        }
    }
}

fn other_of<T: Copy + PartialEq>(all: &[T], x: T, rng: &mut Rng) -> T {
    loop {
        let y = *rng.pick(all);
        if y != x {
            return y;
        }
    }
}

/// `[size] [pattern] [colour] shape`, every word known and in that order.
fn parse_thing(words: &[&str]) -> Option<Thing> {
    let (shape, mods) = words.split_last()?;
    let shape = *Shape::ALL.iter().find(|s| s.name() == *shape)?;
    let mut t = Thing {
        size: None,
        texture: None,
        colour: None,
        shape,
    };
    let mut stage = 0;
    for w in mods {
        if let Some(s) = SIZES.iter().find(|s| s.name() == *w).filter(|_| stage < 1) {
            t.size = Some(*s);
            stage = 1;
        } else if let Some(x) = TEXTURES
            .iter()
            .find(|x| x.name() == *w)
            .filter(|_| stage < 2)
        {
            t.texture = Some(*x);
            stage = 2;
        } else if let Some(c) = Colour::ALL
            .iter()
            .find(|c| c.name() == *w)
            .filter(|_| stage < 3)
        {
            t.colour = Some(*c);
            stage = 3;
        } else {
            return None;
        }
    }
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapes::{ShapesWorld, ShapesWorldConfig, Split};

    #[test]
    fn every_style_of_every_statement_reads_back_or_is_another_form() {
        let mut rng = Rng::new(3);
        for _ in 0..300 {
            let s = Statement::random(&mut rng);
            assert_eq!(Statement::parse(&s.write(0)), Some(s), "{}", s.write(0));
            let styles: std::collections::HashSet<String> =
                (0..STYLES).map(|k| s.write(k)).collect();
            assert_eq!(styles.len(), STYLES, "{s:?}");
            if let Some((r, o)) = s.relation {
                // The converse form reads back as the converse statement.
                let conv = Statement {
                    subject: o,
                    relation: Some((r.converse(), s.subject)),
                };
                assert_eq!(Statement::parse(&s.write(1)), Some(conv));
            }
        }
    }

    #[test]
    fn shapes_world_long_captions_parse() {
        let world = ShapesWorld::new(ShapesWorldConfig {
            actions: true,
            ..Default::default()
        })
        .unwrap();
        let (mut parsed, mut total) = (0, 0);
        for i in 0..50 {
            let scene = world.sample(Split::Train, i);
            for sentence in crate::text::split_sentences(&scene.captions.long) {
                total += 1;
                if let Some(s) = Statement::parse(&sentence) {
                    parsed += 1;
                    let again = s.write(0);
                    assert_eq!(
                        again.trim_end_matches('.').to_lowercase(),
                        sentence.to_lowercase(),
                        "round trip"
                    );
                }
            }
        }
        // Only referring expressions with "leftmost"/"middle"/"rightmost" are left out.
        assert!(parsed * 10 >= total * 9, "{parsed} of {total}");
    }

    #[test]
    fn contradictions_change_exactly_one_thing() {
        let mut rng = Rng::new(11);
        for _ in 0..300 {
            let s = Statement::random(&mut rng);
            let c = s.contradict(&mut rng);
            assert_ne!(c, s);
            let diff = |a: &Thing, b: &Thing| {
                usize::from(a.size != b.size)
                    + usize::from(a.texture != b.texture)
                    + usize::from(a.colour != b.colour)
                    + usize::from(a.shape != b.shape)
            };
            let mut n = diff(&s.subject, &c.subject);
            if let (Some((r1, o1)), Some((r2, o2))) = (s.relation, c.relation) {
                n += usize::from(r1 != r2) + diff(&o1, &o2);
            }
            assert_eq!(n, 1, "{s:?} -> {c:?}");
        }
        assert_eq!(
            Statement::parse("the leftmost red circle is above the star"),
            None
        );
        assert_eq!(Statement::parse("there is a red large circle."), None);
        assert_eq!(Statement::parse("a photo of a circle"), None);
    }
}
