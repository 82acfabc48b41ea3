//! Text rendered as pixels (TextRender): sentences become fixed-height grey-scale strips for
//! pixel-based language encoders (PIXEL, Pixel-Linguist), drawn with a built-in 5×7 bitmap font
//! so that nothing is downloaded.
//!
//! Besides printable ASCII the renderer draws synthetic scripts: alphabets at private-use
//! code-point offsets whose glyphs are the Latin ones mirrored or flipped ([`Script`]). A
//! sentence [`transliterated`](Script::transliterate) into one reads the same to a person who
//! knows the script and shares no pixels-in-place with its Latin form, which is what
//! cross-script transfer tests need.
//!
//! Pixel-Linguist renders with PangoCairo at 16 px per patch and 529 patches; here a strip is
//! `height` (8) pixels high, characters advance 6 pixels (glyph plus one blank column), and the
//! strip is `max_patches × patch_width` wide. Text beyond the width is cut and counted.

mod font;

pub use font::{FIRST, GLYPH_HEIGHT, GLYPH_WIDTH, LAST};

use serde::{Deserialize, Serialize};

/// A writing system the renderer draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Script {
    /// Printable ASCII.
    Latin,
    /// Latin glyphs mirrored left to right, at U+E000 + (c − 0x20).
    Mirrored,
    /// Latin glyphs upside down, at U+E100 + (c − 0x20).
    Flipped,
}

impl Script {
    /// Every script, Latin first.
    pub const ALL: [Script; 3] = [Script::Latin, Script::Mirrored, Script::Flipped];

    /// Its name in configs.
    pub fn name(self) -> &'static str {
        match self {
            Script::Latin => "latin",
            Script::Mirrored => "mirrored",
            Script::Flipped => "flipped",
        }
    }

    /// First code point of the script's block (the character for U+0020).
    fn base(self) -> u32 {
        match self {
            Script::Latin => 0x20,
            Script::Mirrored => 0xE000,
            Script::Flipped => 0xE100,
        }
    }

    /// `text` written in this script: every printable ASCII character but the space moves to
    /// the script's block; spaces and other characters stay as they are.
    pub fn transliterate(self, text: &str) -> String {
        text.chars()
            .map(|c| {
                let cp = c as u32;
                if c != ' ' && (FIRST..=LAST).contains(&c) {
                    char::from_u32(self.base() + cp - 0x20).expect("private-use code point")
                } else {
                    c
                }
            })
            .collect()
    }

    /// The script of `c` and its Latin counterpart, when the renderer draws it.
    pub fn of(c: char) -> Option<(Script, char)> {
        let cp = c as u32;
        Script::ALL.into_iter().find_map(|s| {
            let k = cp.checked_sub(s.base())?;
            (k < 95).then(|| (s, char::from_u32(0x20 + k).expect("ASCII")))
        })
    }
}

/// The rows of the glyph drawn for `c` (bit 4 = leftmost column), and whether the font has it
/// (a missing character is drawn as a hollow box).
pub fn glyph(c: char) -> ([u8; GLYPH_HEIGHT], bool) {
    let Some((script, latin)) = Script::of(c) else {
        return (font::TOFU, false);
    };
    let rows = font::GLYPHS[latin as usize - 0x20];
    let out = match script {
        Script::Latin => rows,
        Script::Mirrored => rows.map(|r| r.reverse_bits() >> 3),
        Script::Flipped => {
            let mut f = rows;
            f.reverse();
            f
        }
    };
    (out, true)
}

/// How strips are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextRenderer {
    /// Strip height in pixels (at least the glyph's 7).
    pub height: usize,
    /// Patch width in pixels: the encoder's token width.
    pub patch_width: usize,
    /// Patches per strip; the strip is `max_patches · patch_width` pixels wide.
    pub max_patches: usize,
}

impl Default for TextRenderer {
    fn default() -> Self {
        Self {
            height: 8,
            patch_width: 8,
            max_patches: 64,
        }
    }
}

/// Horizontal advance of one character: the glyph and a blank column.
pub const ADVANCE: usize = GLYPH_WIDTH + 1;

/// One rendered line of text.
#[derive(Debug, Clone, PartialEq)]
pub struct Strip {
    /// Ink (1) on paper (0), `[height, width]` row-major.
    pub pixels: Vec<f32>,
    /// Strip width in pixels (`max_patches · patch_width`).
    pub width: usize,
    /// Patches that hold text (at least 1): the encoder attends to these only.
    pub patches: usize,
    /// Characters drawn.
    pub drawn: usize,
    /// Characters cut because the strip was full.
    pub cut: usize,
    /// Characters the font lacks, drawn as boxes.
    pub unsupported: usize,
}

impl TextRenderer {
    /// Checks the geometry.
    pub fn validate(&self) -> Result<(), String> {
        if self.height < GLYPH_HEIGHT {
            return Err(format!(
                "height {} is below the glyph height {GLYPH_HEIGHT}",
                self.height
            ));
        }
        if self.patch_width == 0 || self.max_patches == 0 {
            return Err("patch_width and max_patches must be positive".into());
        }
        Ok(())
    }

    /// Strip width in pixels.
    pub fn width(&self) -> usize {
        self.patch_width * self.max_patches
    }

    /// Characters that fit on one strip.
    pub fn capacity(&self) -> usize {
        // The last character needs its glyph, not its trailing blank column.
        (self.width() + 1) / ADVANCE
    }

    /// Draws `text` from the left edge, one glyph every [`ADVANCE`] pixels, the glyph's top
    /// row at the top; leading and trailing whitespace is dropped and other whitespace becomes
    /// one space (PIXEL's renderer also draws one line).
    pub fn render(&self, text: &str) -> Strip {
        let width = self.width();
        let mut pixels = vec![0.0f32; self.height * width];
        let chars: Vec<char> = text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .collect();
        let fit = chars.len().min(self.capacity());
        let mut unsupported = 0;
        for (i, &c) in chars[..fit].iter().enumerate() {
            let (rows, known) = glyph(c);
            unsupported += usize::from(!known);
            let x0 = i * ADVANCE;
            // A strip lower than the glyph (refused by `validate`) keeps its top rows.
            for (y, row) in rows.iter().enumerate().take(self.height) {
                for x in 0..GLYPH_WIDTH {
                    if row >> (GLYPH_WIDTH - 1 - x) & 1 == 1 {
                        pixels[y * width + x0 + x] = 1.0;
                    }
                }
            }
        }
        let used = (fit * ADVANCE).saturating_sub(1);
        Strip {
            pixels,
            width,
            patches: used.div_ceil(self.patch_width).clamp(1, self.max_patches),
            drawn: fit,
            cut: chars.len() - fit,
            unsupported,
        }
    }

    /// [`render`](Self::render) of every text, laid out `[n, height, width]`, with the patches
    /// each uses.
    pub fn render_batch<S: AsRef<str>>(&self, texts: &[S]) -> (Vec<f32>, Vec<usize>) {
        let mut pixels = Vec::with_capacity(texts.len() * self.height * self.width());
        let mut patches = Vec::with_capacity(texts.len());
        for t in texts {
            let s = self.render(t.as_ref());
            pixels.extend_from_slice(&s.pixels);
            patches.push(s.patches);
        }
        (pixels, patches)
    }
}

impl Strip {
    /// The strip as text art (`#` ink, `.` paper), `height` lines of the used width; for
    /// golden tests and debugging.
    pub fn art(&self, height: usize) -> String {
        let used = (self.drawn * ADVANCE).saturating_sub(1);
        (0..height)
            .map(|y| {
                (0..used)
                    .map(|x| {
                        if self.pixels[y * self.width + x] > 0.5 {
                            '#'
                        } else {
                            '.'
                        }
                    })
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_supported_character_has_its_own_glyph_in_every_script() {
        for script in Script::ALL {
            let mut seen = HashSet::new();
            for c in (FIRST..=LAST).filter(|c| *c != ' ') {
                let t = script.transliterate(&c.to_string());
                let ch = t.chars().next().unwrap();
                assert_eq!(Script::of(ch), Some((script, c)), "{c:?} in {script:?}");
                let (rows, known) = glyph(ch);
                assert!(known, "{c:?} in {script:?}");
                assert!(rows.iter().any(|r| *r != 0), "{c:?} in {script:?} is blank");
                assert!(rows.iter().all(|r| *r < 32), "{c:?} wider than 5");
                assert!(seen.insert(rows), "{c:?} in {script:?} repeats a glyph");
                assert_ne!(rows, font::TOFU, "{c:?} looks like a missing character");
            }
        }
        assert_eq!(glyph(' '), ([0; 7], true));
    }

    #[test]
    fn golden_strings() {
        let r = TextRenderer::default();
        let s = r.render("Hi!");
        assert_eq!(
            s.art(8),
            [
                "#...#...#.....#..",
                "#...#.........#..",
                "#...#..##.....#..",
                "#####...#.....#..",
                "#...#...#........",
                "#...#...#........",
                "#...#..###....#..",
                ".................",
            ]
            .join("\n")
        );
        assert_eq!((s.drawn, s.cut, s.unsupported, s.patches), (3, 0, 0, 3));
        // Mirrored: each glyph reflected in place, the order of characters kept.
        let m = r.render(&Script::Mirrored.transliterate("b"));
        assert_eq!(m.art(7), r.render("d").art(7));
        let f = r.render(&Script::Flipped.transliterate("7"));
        assert_eq!(
            f.art(7),
            [
                ".#...", ".#...", ".#...", "..#..", "...#.", "....#", "#####"
            ]
            .join("\n")
        );
        assert_eq!(f.art(8).lines().nth(7), Some("....."));
    }

    #[test]
    fn rendering_is_deterministic_and_whitespace_normalised() {
        let r = TextRenderer::default();
        let a = r.render("a red  circle\tis above\n a square");
        assert_eq!(a, r.render("a red circle is above a square"));
        assert_eq!(a, r.render(" a red circle is above a square "));
        assert_eq!(a.drawn, 30);
        // 30 characters: 179 pixels wide, 23 patches of 8.
        assert_eq!(a.patches, 23);
        let total: f32 = a.pixels.iter().sum();
        assert!(total > 100.0 && a.pixels.iter().all(|p| *p == 0.0 || *p == 1.0));
    }

    #[test]
    fn long_text_is_cut_and_counted_and_unknown_characters_counted() {
        let r = TextRenderer {
            height: 8,
            patch_width: 4,
            max_patches: 6,
        };
        // 24 pixels hold 4 characters (the last one's blank column falls off the edge).
        assert_eq!(r.capacity(), 4);
        let s = r.render("abcdefg");
        assert_eq!((s.drawn, s.cut, s.patches), (4, 3, 6));
        let u = r.render("aé€");
        assert_eq!((u.drawn, u.unsupported), (3, 2));
        assert!(u.art(7).contains("#####"));
        assert_eq!(r.render("").patches, 1);
        assert!(TextRenderer { height: 6, ..r }.validate().is_err());
    }
}
