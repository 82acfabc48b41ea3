//! DreamLIP's sub-caption sampler (Zheng et al., 2024, §3.1; official code
//! `zyf0619sjtu/DreamLIP`, `training/data.py`: `split_caption`, `draw_numbers`): a long caption
//! is split into sentences, and each training sample carries its caption plus `count`
//! sub-captions drawn from them — without replacement when there are enough, with replacement
//! otherwise — optionally `merged` consecutive sentences joined into one sub-caption.
//!
//! Where this departs from the code: `draw_numbers(len(long_captions) - 1, ...)` draws from all
//! sentences but the last (and from all windows but the last two when merging), and fails on a
//! one-sentence caption; here every sentence (every window) can be drawn, as the paper
//! describes.

use crate::loader::{TextInput, TextTransform};
use crate::shapes::Rng;

/// Sentences of `text`: split at newlines, `</s>` and full stops (the code's
/// `re.split(r'\n|</s>|[.]', text)`), trimmed, empty pieces dropped.
pub fn split_sentences(text: &str) -> Vec<String> {
    text.replace("</s>", "\n")
        .split(['\n', '.'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Draws each sample's sub-captions from its long caption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubCaptionSampler {
    /// Sub-captions per sample (the code's `num_text`).
    pub count: usize,
    /// Consecutive sentences joined into one sub-caption (the code's `merged_num`).
    pub merged: usize,
}

impl SubCaptionSampler {
    /// The candidate sub-captions of a long caption: its sentences, or every window of
    /// `merged` consecutive ones joined by ". " (a caption shorter than the window is one
    /// candidate).
    pub fn candidates(&self, long: &str) -> Vec<String> {
        let sentences = split_sentences(long);
        let w = self.merged.max(1).min(sentences.len().max(1));
        if w <= 1 {
            return sentences;
        }
        sentences.windows(w).map(|s| s.join(". ")).collect()
    }

    /// `caption` followed by `count` sub-captions of `long` (empty when `long` has none).
    pub fn sample(&self, caption: &str, long: &str, rng: &mut Rng) -> Vec<String> {
        let mut pool = self.candidates(long);
        if pool.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(self.count + 1);
        out.push(caption.to_string());
        if pool.len() >= self.count {
            // Partial Fisher–Yates: the first `count` of a uniform random permutation.
            for i in 0..self.count {
                let j = i + rng.below(pool.len() - i);
                pool.swap(i, j);
                out.push(pool[i].clone());
            }
        } else {
            for _ in 0..self.count {
                out.push(pool[rng.below(pool.len())].clone());
            }
        }
        out
    }
}

impl TextTransform for SubCaptionSampler {
    fn texts(&self, sample: &TextInput<'_>, rng: &mut Rng) -> Vec<String> {
        match (sample.captions.first(), &sample.annotations.long_caption) {
            (Some(caption), Some(long)) => self.sample(caption, long, rng),
            _ => Vec::new(),
        }
    }

    fn skip_reason(&self) -> &'static str {
        "no caption or no long caption to draw DreamLIP's sub-captions from"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const LONG: &str = "There is a large red circle. There is a small blue square.\nThe red \
                        circle is left of the blue square.</s>There is a green star.";

    #[test]
    fn splits_like_the_reference_regex() {
        assert_eq!(
            split_sentences(LONG),
            vec![
                "There is a large red circle",
                "There is a small blue square",
                "The red circle is left of the blue square",
                "There is a green star",
            ]
        );
        assert!(split_sentences(" . \n</s>.").is_empty());
    }

    #[test]
    fn draws_without_replacement_when_there_are_enough_and_covers_every_sentence() {
        let s = SubCaptionSampler {
            count: 3,
            merged: 1,
        };
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for i in 0..400 {
            let mut rng = Rng::for_item(7, 1, i);
            let t = s.sample("a red circle", LONG, &mut rng);
            assert_eq!(t.len(), 4);
            assert_eq!(t[0], "a red circle");
            let mut drawn = t[1..].to_vec();
            drawn.sort();
            drawn.dedup();
            assert_eq!(drawn.len(), 3, "repeated sub-caption in {t:?}");
            for d in &t[1..] {
                *seen.entry(d.clone()).or_default() += 1;
            }
        }
        // Every sentence is drawn, each about 3/4 of the time (300 of 400).
        assert_eq!(seen.len(), 4, "{seen:?}");
        for (k, &v) in &seen {
            assert!((250..=350).contains(&v), "{k} drawn {v} times of 400");
        }
    }

    #[test]
    fn draws_with_replacement_when_there_are_too_few_and_merges_windows() {
        let s = SubCaptionSampler {
            count: 6,
            merged: 1,
        };
        let mut rng = Rng::for_item(3, 0, 0);
        let t = s.sample("c", "There is a red circle.", &mut rng);
        assert_eq!(
            t,
            vec![
                "c",
                "There is a red circle",
                "There is a red circle",
                "There is a red circle",
                "There is a red circle",
                "There is a red circle",
                "There is a red circle"
            ]
        );
        let m = SubCaptionSampler {
            count: 2,
            merged: 2,
        };
        assert_eq!(
            m.candidates(LONG),
            vec![
                "There is a large red circle. There is a small blue square",
                "There is a small blue square. The red circle is left of the blue square",
                "The red circle is left of the blue square. There is a green star",
            ]
        );
        // A window longer than the caption: the whole caption is the one candidate.
        let big = SubCaptionSampler {
            count: 1,
            merged: 9,
        };
        assert_eq!(big.candidates("A. B."), vec!["A. B"]);
        assert!(s.sample("c", " . ", &mut rng).is_empty());
    }

    #[test]
    fn is_deterministic_under_the_seed() {
        let s = SubCaptionSampler {
            count: 2,
            merged: 1,
        };
        let draw = |seed| s.sample("c", LONG, &mut Rng::for_item(seed, 2, 5));
        assert_eq!(draw(11), draw(11));
        // Some other seed draws differently (12 possible ordered pairs).
        assert!((12..40).any(|seed| draw(seed) != draw(11)));
    }
}
