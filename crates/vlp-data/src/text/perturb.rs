//! Visually grounded perturbations of a sentence, Pixel-Linguist's positives (Xiao et al., 2024,
//! §3.2; the official data `gowitheflow/wiki1M-character-level-all` and
//! `wiki1M-word-random-shuffle`): character edits that keep most of the rendered pixels, and a
//! shuffle of the words. Seeded: the same generator state gives the same result.

use serde::{Deserialize, Serialize};

use crate::shapes::Rng;

/// A kind of perturbation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Perturbation {
    /// Character edits inside words: swap two neighbours, drop one, double one or replace one.
    Typo,
    /// The words in a random different order.
    Shuffle,
}

impl Perturbation {
    /// Applies the perturbation (`edits` character edits for [`Typo`](Self::Typo)).
    pub fn apply(self, text: &str, edits: usize, rng: &mut Rng) -> String {
        match self {
            Perturbation::Typo => typo(text, edits, rng),
            Perturbation::Shuffle => shuffle_words(text, rng),
        }
    }
}

/// `text` with `edits` character edits, each at a random letter: swap it with the next letter
/// of its word, drop it, double it, or replace it with another lower-case letter. Every edit
/// changes the string (a swap of two equal letters is redrawn); a text without letters comes
/// back unchanged.
pub fn typo(text: &str, edits: usize, rng: &mut Rng) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for _ in 0..edits {
        let letters: Vec<usize> = (0..chars.len())
            .filter(|&i| chars[i].is_alphabetic())
            .collect();
        if letters.is_empty() {
            break;
        }
        loop {
            let i = *rng.pick(&letters);
            match rng.below(4) {
                0 => {
                    let j = i + 1;
                    if j < chars.len() && chars[j].is_alphabetic() && chars[j] != chars[i] {
                        chars.swap(i, j);
                        break;
                    }
                }
                1 => {
                    chars.remove(i);
                    break;
                }
                2 => {
                    chars.insert(i, chars[i]);
                    break;
                }
                _ => {
                    let c = (b'a' + rng.below(26) as u8) as char;
                    if c != chars[i] {
                        chars[i] = c;
                        break;
                    }
                }
            }
        }
    }
    chars.into_iter().collect()
}

/// The words of `text` (split at whitespace, punctuation staying with its word) in a random
/// order different from the original when the words are not all equal; one space between them.
pub fn shuffle_words(text: &str, rng: &mut Rng) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut order: Vec<usize> = (0..words.len()).collect();
    let distinct = words.iter().any(|w| *w != words[0]);
    loop {
        rng.shuffle(&mut order);
        let out: Vec<&str> = order.iter().map(|&i| words[i]).collect();
        if !distinct || out != words {
            return out.join(" ");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit_distance(a: &str, b: &str) -> usize {
        // Optimal string alignment distance (a swap of neighbours counts once).
        let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
        let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
        for (i, row) in d.iter_mut().enumerate() {
            row[0] = i;
        }
        for (j, x) in d[0].iter_mut().enumerate() {
            *x = j;
        }
        for i in 1..=a.len() {
            for j in 1..=b.len() {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                d[i][j] = (d[i - 1][j] + 1)
                    .min(d[i][j - 1] + 1)
                    .min(d[i - 1][j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
                }
            }
        }
        d[a.len()][b.len()]
    }

    #[test]
    fn one_typo_is_one_edit_and_seeded() {
        let s = "There is a large striped red circle.";
        for seed in 0..200 {
            let t = typo(s, 1, &mut Rng::new(seed));
            assert_eq!(edit_distance(s, &t), 1, "{t:?}");
            assert_eq!(t, typo(s, 1, &mut Rng::new(seed)));
            // Spaces and punctuation are never touched.
            assert_eq!(t.matches(' ').count(), s.matches(' ').count());
            assert!(t.ends_with('.'));
        }
        let two: Vec<usize> = (0..200)
            .map(|seed| edit_distance(s, &typo(s, 2, &mut Rng::new(seed))))
            .collect();
        assert!(two.iter().all(|d| *d <= 2));
        assert!(two.iter().filter(|d| **d == 2).count() > 150);
        assert_eq!(typo("1 + 2 = 3", 3, &mut Rng::new(0)), "1 + 2 = 3");
    }

    #[test]
    fn shuffle_keeps_the_words_and_changes_the_order() {
        let s = "the red circle is above the blue square";
        let mut sorted: Vec<&str> = s.split(' ').collect();
        sorted.sort();
        for seed in 0..100 {
            let t = shuffle_words(s, &mut Rng::new(seed));
            assert_ne!(t, s);
            let mut w: Vec<&str> = t.split(' ').collect();
            w.sort();
            assert_eq!(w, sorted);
        }
        assert_eq!(shuffle_words("a a  a", &mut Rng::new(1)), "a a a");
        assert_eq!(shuffle_words("", &mut Rng::new(1)), "");
    }
}
