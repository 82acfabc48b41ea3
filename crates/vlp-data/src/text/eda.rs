//! Text augmentation of the improved CLIP recipe (Fini et al., 2023, "Improved baselines for
//! vision-language pre-training", §3; official code `facebookresearch/clip-rocket`,
//! `tokenizer.py`): stop-word removal (NLTK's English list) and the EDA operations of Wei & Zou
//! (2019) as the `textaugment` package implements them — synonym replacement, random swap and
//! random deletion — all seeded.
//!
//! Where this departs from the code: WordNet is replaced by a small built-in synonym table
//! ([`SYNONYMS`]) that keeps meaning (no colour "synonyms": WordNet's are shades, and colour is
//! a label in ShapesWorld); words are split on white space with punctuation as its own token
//! instead of NLTK's `word_tokenize`.

use crate::loader::{TextInput, TextTransform};
use crate::shapes::Rng;

/// NLTK's English stop words (`nltk.corpus.stopwords.words('english')`, 179 words).
pub const STOP_WORDS: &[&str] = &[
    "i",
    "me",
    "my",
    "myself",
    "we",
    "our",
    "ours",
    "ourselves",
    "you",
    "you're",
    "you've",
    "you'll",
    "you'd",
    "your",
    "yours",
    "yourself",
    "yourselves",
    "he",
    "him",
    "his",
    "himself",
    "she",
    "she's",
    "her",
    "hers",
    "herself",
    "it",
    "it's",
    "its",
    "itself",
    "they",
    "them",
    "their",
    "theirs",
    "themselves",
    "what",
    "which",
    "who",
    "whom",
    "this",
    "that",
    "that'll",
    "these",
    "those",
    "am",
    "is",
    "are",
    "was",
    "were",
    "be",
    "been",
    "being",
    "have",
    "has",
    "had",
    "having",
    "do",
    "does",
    "did",
    "doing",
    "a",
    "an",
    "the",
    "and",
    "but",
    "if",
    "or",
    "because",
    "as",
    "until",
    "while",
    "of",
    "at",
    "by",
    "for",
    "with",
    "about",
    "against",
    "between",
    "into",
    "through",
    "during",
    "before",
    "after",
    "above",
    "below",
    "to",
    "from",
    "up",
    "down",
    "in",
    "out",
    "on",
    "off",
    "over",
    "under",
    "again",
    "further",
    "then",
    "once",
    "here",
    "there",
    "when",
    "where",
    "why",
    "how",
    "all",
    "any",
    "both",
    "each",
    "few",
    "more",
    "most",
    "other",
    "some",
    "such",
    "no",
    "nor",
    "not",
    "only",
    "own",
    "same",
    "so",
    "than",
    "too",
    "very",
    "s",
    "t",
    "can",
    "will",
    "just",
    "don",
    "don't",
    "should",
    "should've",
    "now",
    "d",
    "ll",
    "m",
    "o",
    "re",
    "ve",
    "y",
    "ain",
    "aren",
    "aren't",
    "couldn",
    "couldn't",
    "didn",
    "didn't",
    "doesn",
    "doesn't",
    "hadn",
    "hadn't",
    "hasn",
    "hasn't",
    "haven",
    "haven't",
    "isn",
    "isn't",
    "ma",
    "mightn",
    "mightn't",
    "mustn",
    "mustn't",
    "needn",
    "needn't",
    "shan",
    "shan't",
    "shouldn",
    "shouldn't",
    "wasn",
    "wasn't",
    "weren",
    "weren't",
    "won",
    "won't",
    "wouldn",
    "wouldn't",
];

/// The built-in synonym table: a word and the words that may replace it.
pub const SYNONYMS: &[(&str, &[&str])] = &[
    ("photo", &["picture", "image", "photograph"]),
    ("picture", &["photo", "image"]),
    ("image", &["picture", "photo"]),
    ("photograph", &["photo", "picture"]),
    ("large", &["big", "huge"]),
    ("big", &["large"]),
    ("small", &["little", "tiny"]),
    ("little", &["small"]),
    ("bigger", &["larger"]),
    ("larger", &["bigger"]),
    ("smaller", &["tinier"]),
    ("above", &["over"]),
    ("below", &["under", "beneath"]),
    ("under", &["below", "beneath"]),
    ("shape", &["form", "figure"]),
    ("object", &["thing", "item"]),
    ("objects", &["things", "items"]),
    ("colour", &["color"]),
    ("color", &["colour"]),
    ("coloured", &["colored"]),
    ("background", &["backdrop"]),
    ("circle", &["disc", "disk"]),
    ("striped", &["stripy", "banded"]),
    ("dotted", &["spotted", "dotty"]),
    ("man", &["person"]),
    ("woman", &["person", "lady"]),
    ("dog", &["puppy"]),
    ("car", &["automobile"]),
    ("street", &["road"]),
    ("sitting", &["seated"]),
    ("standing", &["upright"]),
];

/// Whether `word` is a stop word (case-insensitive).
pub fn is_stop_word(word: &str) -> bool {
    let w = word.to_lowercase();
    STOP_WORDS.contains(&w.as_str())
}

/// Words and punctuation of `text`: white-space separated, with leading and trailing
/// punctuation split off as tokens of their own.
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for piece in text.split_whitespace() {
        let start = piece.len()
            - piece
                .trim_start_matches(|c: char| c.is_ascii_punctuation())
                .len();
        let core = piece.trim_matches(|c: char| c.is_ascii_punctuation());
        for c in piece[..start].chars() {
            out.push(c.to_string());
        }
        if !core.is_empty() {
            out.push(core.to_string());
            let end = start + core.len();
            for c in piece[end..].chars() {
                out.push(c.to_string());
            }
        }
    }
    out
}

/// `text` without its stop words (the code's `remove_stopwords`: tokens joined by spaces);
/// `text` itself when nothing would be left.
pub fn remove_stop_words(text: &str) -> String {
    let kept: Vec<String> = words(text)
        .into_iter()
        .filter(|w| !is_stop_word(w))
        .collect();
    if kept.is_empty() {
        text.to_string()
    } else {
        kept.join(" ")
    }
}

fn synonyms_of(word: &str) -> Option<&'static [&'static str]> {
    let w = word.to_lowercase();
    SYNONYMS
        .iter()
        .find(|(k, _)| *k == w.as_str())
        .map(|(_, s)| *s)
}

/// Replaces `n` distinct non-stop words that have synonyms (every occurrence of each) with a
/// synonym drawn at random (`textaugment`'s `EDA.synonym_replacement`); unchanged when none has
/// one.
pub fn synonym_replacement(text: &str, n: usize, rng: &mut Rng) -> String {
    let mut ws: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    let mut candidates: Vec<String> = Vec::new();
    for w in &ws {
        if !is_stop_word(w) && synonyms_of(w).is_some() && !candidates.contains(w) {
            candidates.push(w.clone());
        }
    }
    rng.shuffle(&mut candidates);
    for word in candidates.into_iter().take(n) {
        let syns = synonyms_of(&word).expect("filtered above");
        let s = *rng.pick(syns);
        for w in ws.iter_mut().filter(|w| **w == word) {
            *w = s.to_string();
        }
    }
    ws.join(" ")
}

/// Swaps two words chosen at random, `n` times (`EDA.random_swap`).
pub fn random_swap(text: &str, n: usize, rng: &mut Rng) -> String {
    let mut ws: Vec<&str> = text.split_whitespace().collect();
    if ws.len() < 2 {
        return text.to_string();
    }
    for _ in 0..n {
        let i = rng.below(ws.len());
        let j = rng.below(ws.len());
        ws.swap(i, j);
    }
    ws.join(" ")
}

/// Deletes each word with probability `p`; keeps one random word when all would go
/// (`EDA.random_deletion`).
pub fn random_deletion(text: &str, p: f32, rng: &mut Rng) -> String {
    let ws: Vec<&str> = text.split_whitespace().collect();
    if ws.len() <= 1 {
        return text.to_string();
    }
    let kept: Vec<&str> = ws.iter().copied().filter(|_| !rng.chance(p)).collect();
    if kept.is_empty() {
        return rng.pick(&ws).to_string();
    }
    kept.join(" ")
}

/// How the improved recipe augments a training sample's texts.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptionViews {
    /// Strongly augmented texts after the weak one (`num_augs`).
    pub strong: usize,
    /// Probability of removing stop words, in the weak and in the strong texts.
    pub remove_stop_words: f32,
    /// Relative weights of the strong texts' one EDA operation: identity (`no_text_augment_prob`),
    /// synonym replacement, random swap, random deletion.
    pub eda_weights: [f32; 4],
    /// Probability that random deletion drops a word.
    pub deletion_prob: f32,
}

impl Default for CaptionViews {
    /// The code's defaults (`main.py`): 2 strong texts, stop words removed with probability 0.8,
    /// EDA weights 0 / 0.4 / 0.4 / 0.2, deletion probability 0.1 (`textaugment`'s default).
    fn default() -> Self {
        Self {
            strong: 2,
            remove_stop_words: 0.8,
            eda_weights: [0.0, 0.4, 0.4, 0.2],
            deletion_prob: 0.1,
        }
    }
}

impl CaptionViews {
    /// The weak text: stop words removed with probability `remove_stop_words`.
    pub fn weak(&self, text: &str, rng: &mut Rng) -> String {
        if rng.chance(self.remove_stop_words) {
            remove_stop_words(text)
        } else {
            text.to_string()
        }
    }

    /// A strong text: the weak augmentation, then one EDA operation drawn by `eda_weights`
    /// (the original text when the operation leaves nothing).
    pub fn strong(&self, text: &str, rng: &mut Rng) -> String {
        let weak = self.weak(text, rng);
        let total: f32 = self.eda_weights.iter().sum();
        let mut u = rng.unit() * total;
        let op = self
            .eda_weights
            .iter()
            .position(|w| {
                let hit = u < *w;
                u -= w;
                hit
            })
            .unwrap_or(0);
        let out = match op {
            0 => weak.clone(),
            1 => synonym_replacement(&weak, 1, rng),
            2 => random_swap(&weak, 1, rng),
            _ => random_deletion(&weak, self.deletion_prob, rng),
        };
        if out.trim().is_empty() { weak } else { out }
    }
}

impl TextTransform for CaptionViews {
    /// The weak text of one caption drawn at random, then `strong` strong texts, each of its
    /// own random caption (the code's `SimpleTokenizer.__call__` on a tuple of captions).
    fn texts(&self, sample: &TextInput<'_>, rng: &mut Rng) -> Vec<String> {
        if sample.captions.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(self.strong + 1);
        let first = rng.pick(sample.captions).clone();
        out.push(self.weak(&first, rng));
        for _ in 0..self.strong {
            let c = rng.pick(sample.captions).clone();
            out.push(self.strong(&c, rng));
        }
        out
    }

    fn skip_reason(&self) -> &'static str {
        "no caption to augment"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Annotations;

    #[test]
    fn stop_words_go_and_punctuation_is_a_token() {
        assert_eq!(STOP_WORDS.len(), 179);
        assert_eq!(
            words("A red circle, above it."),
            ["A", "red", "circle", ",", "above", "it", "."]
        );
        assert_eq!(
            remove_stop_words("There is a red circle above the blue square."),
            "red circle blue square ."
        );
        // Nothing left: the text stays.
        assert_eq!(remove_stop_words("it is"), "it is");
    }

    #[test]
    fn eda_operations_are_seeded_and_do_what_they_say() {
        let text = "a large red circle above a small blue star";
        for seed in 0..50 {
            let a = synonym_replacement(text, 1, &mut Rng::new(seed));
            assert_eq!(a, synonym_replacement(text, 1, &mut Rng::new(seed)));
            // Exactly one of the words with synonyms (large, circle, above is a stop word,
            // small) changed, to one of its synonyms.
            let before: Vec<&str> = text.split(' ').collect();
            let after: Vec<&str> = a.split(' ').collect();
            assert_eq!(before.len(), after.len());
            let changed: Vec<usize> = (0..before.len())
                .filter(|&i| before[i] != after[i])
                .collect();
            assert_eq!(changed.len(), 1, "{a}");
            let i = changed[0];
            assert!(["large", "circle", "small"].contains(&before[i]), "{a}");
            assert!(synonyms_of(before[i]).unwrap().contains(&after[i]));

            let s = random_swap(text, 1, &mut Rng::new(seed));
            assert_eq!(s, random_swap(text, 1, &mut Rng::new(seed)));
            let mut x: Vec<&str> = s.split(' ').collect();
            let mut y = before.clone();
            x.sort_unstable();
            y.sort_unstable();
            assert_eq!(x, y, "a swap keeps the words");
            let diff = s
                .split(' ')
                .zip(text.split(' '))
                .filter(|(p, q)| p != q)
                .count();
            assert!(diff == 0 || diff == 2, "{s}");

            let d = random_deletion(text, 0.3, &mut Rng::new(seed));
            assert_eq!(d, random_deletion(text, 0.3, &mut Rng::new(seed)));
            // What remains is a subsequence of the words, never empty.
            let mut it = before.iter();
            assert!(!d.is_empty());
            assert!(d.split(' ').all(|w| it.any(|b| b == &w)), "{d}");
        }
        // Deletion at p = 1 keeps one word; nothing with synonyms is left alone.
        let one = random_deletion(text, 1.0, &mut Rng::new(3));
        assert_eq!(one.split(' ').count(), 1);
        assert_eq!(
            synonym_replacement("red and blue", 1, &mut Rng::new(1)),
            "red and blue"
        );
    }

    #[test]
    fn deletion_rate_matches_its_probability() {
        let text = vec!["word"; 50].join(" ");
        let mut rng = Rng::new(4);
        let kept: usize = (0..200)
            .map(|_| random_deletion(&text, 0.1, &mut rng).split(' ').count())
            .sum();
        let rate = 1.0 - kept as f64 / (200.0 * 50.0);
        assert!((rate - 0.1).abs() < 0.015, "{rate}");
    }

    #[test]
    fn caption_views_are_one_weak_then_strong_texts_deterministically() {
        let views = CaptionViews::default();
        let captions = vec!["a photo of a large red circle".to_string()];
        let ann = Annotations::default();
        let input = TextInput {
            key: "k",
            captions: &captions,
            annotations: &ann,
            label: None,
            geometry: &crate::sample::Geometry::identity(32),
        };
        let mut weak_stripped = 0;
        let mut strong_changed = 0;
        for seed in 0..200 {
            let t = views.texts(&input, &mut Rng::new(seed));
            assert_eq!(t, views.texts(&input, &mut Rng::new(seed)));
            assert_eq!(t.len(), 3);
            weak_stripped += usize::from(t[0] == "photo large red circle");
            assert!(
                t[0] == captions[0] || t[0] == "photo large red circle",
                "{}",
                t[0]
            );
            strong_changed += t[1..]
                .iter()
                .filter(|s| **s != captions[0] && **s != "photo large red circle")
                .count();
        }
        // Stop words go with probability 0.8; nearly every strong text is changed by its EDA
        // operation (a swap of two equal positions or a deletion of nothing leaves it).
        assert!((140..=180).contains(&weak_stripped), "{weak_stripped}");
        assert!(strong_changed > 300, "{strong_changed}");
        let none = TextInput {
            captions: &[],
            ..input
        };
        assert!(views.texts(&none, &mut Rng::new(0)).is_empty());
    }
}
