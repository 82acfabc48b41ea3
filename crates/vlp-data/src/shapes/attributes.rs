//! The closed vocabulary of ShapesWorld: shapes, colours, sizes, textures, relations.

use serde::{Deserialize, Serialize};

/// Object shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// A disc.
    Circle,
    /// An axis-aligned square.
    Square,
    /// An upward equilateral-ish triangle.
    Triangle,
    /// A five-pointed star.
    Star,
    /// A plus-shaped cross.
    Cross,
}

impl Shape {
    /// Every shape, in class-index order.
    pub const ALL: [Shape; 5] = [
        Shape::Circle,
        Shape::Square,
        Shape::Triangle,
        Shape::Star,
        Shape::Cross,
    ];

    /// The word for it.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Star => "star",
            Shape::Cross => "cross",
        }
    }

    /// The plural.
    pub fn plural(self) -> &'static str {
        match self {
            Shape::Circle => "circles",
            Shape::Square => "squares",
            Shape::Triangle => "triangles",
            Shape::Star => "stars",
            Shape::Cross => "crosses",
        }
    }

    /// Index in [`Shape::ALL`].
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|s| *s == self).expect("listed")
    }
}

/// Object colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Colour {
    /// Red.
    Red,
    /// Green.
    Green,
    /// Blue.
    Blue,
    /// Yellow.
    Yellow,
    /// Purple.
    Purple,
    /// Orange.
    Orange,
}

impl Colour {
    /// Every colour, in class-index order.
    pub const ALL: [Colour; 6] = [
        Colour::Red,
        Colour::Green,
        Colour::Blue,
        Colour::Yellow,
        Colour::Purple,
        Colour::Orange,
    ];

    /// The word for it.
    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
            Colour::Purple => "purple",
            Colour::Orange => "orange",
        }
    }

    /// Base RGB in the default palette.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [220, 40, 40],
            Colour::Green => [40, 180, 60],
            Colour::Blue => [40, 80, 220],
            Colour::Yellow => [235, 215, 40],
            Colour::Purple => [150, 60, 200],
            Colour::Orange => [245, 140, 30],
        }
    }

    /// Index in [`Colour::ALL`].
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|c| *c == self).expect("listed")
    }
}

/// Object size class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Size {
    /// Radius under 0.13 of the image side.
    Small,
    /// Radius of 0.13 of the image side or more.
    Large,
}

impl Size {
    /// The word for it.
    pub fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Large => "large",
        }
    }
}

/// Surface pattern (the fine-grained variant of ShapesWorld).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Texture {
    /// Flat colour.
    Solid,
    /// Diagonal stripes.
    Striped,
    /// A grid of light dots.
    Dotted,
}

impl Texture {
    /// The adjective (empty for solid, which captions leave unsaid).
    pub fn name(self) -> &'static str {
        match self {
            Texture::Solid => "solid",
            Texture::Striped => "striped",
            Texture::Dotted => "dotted",
        }
    }
}

/// A spatial or size relation between two objects, true by geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Relation {
    /// Centre further left by a clear margin.
    LeftOf,
    /// Centre further right by a clear margin.
    RightOf,
    /// Centre higher by a clear margin.
    Above,
    /// Centre lower by a clear margin.
    Below,
    /// At least 1.5 times the area.
    BiggerThan,
    /// At most two thirds of the area.
    SmallerThan,
    /// The two footprints overlap, one lying on the other (an action; only with
    /// `ShapesWorldConfig::actions`).
    Overlapping,
    /// A triangle (triangles point up) whose tip faces the other object's centre, within 30° of
    /// straight up (an action; only with `ShapesWorldConfig::actions`).
    PointingAt,
    /// The converse of [`Relation::PointingAt`].
    PointedAtBy,
}

impl Relation {
    /// The phrase for it.
    pub fn phrase(self) -> &'static str {
        match self {
            Relation::LeftOf => "to the left of",
            Relation::RightOf => "to the right of",
            Relation::Above => "above",
            Relation::Below => "below",
            Relation::BiggerThan => "bigger than",
            Relation::SmallerThan => "smaller than",
            Relation::Overlapping => "overlapping",
            Relation::PointingAt => "pointing at",
            Relation::PointedAtBy => "pointed at by",
        }
    }

    /// Whether it is one of the actions of the compositional mode.
    pub fn is_action(self) -> bool {
        matches!(
            self,
            Relation::Overlapping | Relation::PointingAt | Relation::PointedAtBy
        )
    }

    /// The relation with subject and object swapped.
    pub fn converse(self) -> Self {
        match self {
            Relation::LeftOf => Relation::RightOf,
            Relation::RightOf => Relation::LeftOf,
            Relation::Above => Relation::Below,
            Relation::Below => Relation::Above,
            Relation::BiggerThan => Relation::SmallerThan,
            Relation::SmallerThan => Relation::BiggerThan,
            Relation::Overlapping => Relation::Overlapping,
            Relation::PointingAt => Relation::PointedAtBy,
            Relation::PointedAtBy => Relation::PointingAt,
        }
    }
}

/// Number words used in captions and answers.
pub const NUMBERS: [&str; 5] = ["zero", "one", "two", "three", "four"];
