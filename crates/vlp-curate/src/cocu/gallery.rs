//! The concept gallery: the nouns and noun phrases a caption's concepts are drawn from.

use std::collections::HashMap;
use std::path::Path;

use vlp_data::text::{is_stop_word, words};

use super::CocuError;

/// Longest concept, in words (CoCu matches 1–4-grams: `everygrams(..., max_len=4)`).
pub const MAX_WORDS: usize = 4;

/// A set of concepts (lower-case phrases of 1–4 words) with their plurals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConceptGallery {
    concepts: Vec<String>,
    index: HashMap<String, usize>,
}

/// The plural of a phrase's last word ("red circle" → "red circles", "box" → "boxes",
/// "butterfly" → "butterflies", "person" → "people"), as CoCu's TextBlob `pluralize` on the last
/// word does for common nouns.
pub fn pluralize(phrase: &str) -> String {
    const IRREGULAR: &[(&str, &str)] = &[
        ("man", "men"),
        ("woman", "women"),
        ("person", "people"),
        ("child", "children"),
        ("foot", "feet"),
        ("tooth", "teeth"),
        ("goose", "geese"),
        ("mouse", "mice"),
        ("ox", "oxen"),
        ("leaf", "leaves"),
        ("knife", "knives"),
        ("wife", "wives"),
        ("life", "lives"),
        ("wolf", "wolves"),
        ("shelf", "shelves"),
        ("half", "halves"),
        ("sheep", "sheep"),
        ("fish", "fish"),
        ("deer", "deer"),
        ("series", "series"),
        ("species", "species"),
    ];
    let (head, last) = match phrase.rsplit_once(' ') {
        Some((h, l)) => (format!("{h} "), l),
        None => (String::new(), phrase),
    };
    let plural = if let Some((_, p)) = IRREGULAR.iter().find(|(s, _)| *s == last) {
        p.to_string()
    } else if ["s", "x", "z", "ch", "sh"]
        .iter()
        .any(|e| last.ends_with(e))
    {
        format!("{last}es")
    } else if last.len() > 1
        && last.ends_with('y')
        && !last[..last.len() - 1].ends_with(['a', 'e', 'i', 'o', 'u'])
    {
        format!("{}ies", &last[..last.len() - 1])
    } else {
        format!("{last}s")
    };
    format!("{head}{plural}")
}

/// Lower-case words of `text` (punctuation split off as its own tokens, which no concept
/// matches, so n-grams never span it).
fn tokens(text: &str) -> Vec<String> {
    words(&text.to_lowercase())
}

impl ConceptGallery {
    /// A gallery of `concepts` (normalised to lower-case words separated by single spaces;
    /// empty ones and ones longer than [`MAX_WORDS`] dropped) and their plurals, in the order
    /// given, each once.
    pub fn new<S: AsRef<str>>(concepts: impl IntoIterator<Item = S>) -> Self {
        let mut g = Self::default();
        let given: Vec<String> = concepts
            .into_iter()
            .map(|c| tokens(c.as_ref()).join(" "))
            .filter(|c| !c.is_empty() && c.split(' ').count() <= MAX_WORDS)
            .collect();
        for c in &given {
            g.insert(c.clone());
        }
        for c in &given {
            g.insert(pluralize(c));
        }
        g
    }

    fn insert(&mut self, concept: String) {
        if !self.index.contains_key(&concept) {
            self.index.insert(concept.clone(), self.concepts.len());
            self.concepts.push(concept);
        }
    }

    /// A gallery from a file: one concept per line (`#` comments and blank lines skipped), or
    /// a JSON object of lists (CoCu's `gallery.json`: `{"category": ["concept", ...], ...}`)
    /// or a JSON list.
    pub fn from_file(path: &Path) -> Result<Self, CocuError> {
        let text = std::fs::read_to_string(path).map_err(|e| CocuError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let bad = |reason: String| CocuError::File {
            path: path.to_path_buf(),
            reason,
        };
        let trimmed = text.trim_start();
        let concepts: Vec<String> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
            let lists: Vec<&serde_json::Value> = match &v {
                serde_json::Value::Object(m) => m.values().collect(),
                list => vec![list],
            };
            let mut out = Vec::new();
            for list in lists {
                let items = list
                    .as_array()
                    .ok_or_else(|| bad("expected lists of concept strings".into()))?;
                for item in items {
                    out.push(
                        item.as_str()
                            .ok_or_else(|| bad(format!("{item} is not a string")))?
                            .to_string(),
                    );
                }
            }
            out
        } else {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect()
        };
        let g = Self::new(concepts);
        if g.is_empty() {
            return Err(bad("no concepts".into()));
        }
        Ok(g)
    }

    /// A gallery mined from captions when no curated one is at hand: every 1–4-gram of
    /// alphabetic words that neither starts nor ends with a stop word and occurs in at least
    /// `min_count` captions. Without a part-of-speech tagger this keeps frequent phrases, not
    /// only nouns (CoCu's gallery is a curated noun list); give a file for a clean gallery.
    pub fn from_captions<S: AsRef<str>>(captions: &[S], min_count: usize) -> Self {
        let mut counts: HashMap<String, (usize, usize)> = HashMap::new();
        for (ci, caption) in captions.iter().enumerate() {
            let t = tokens(caption.as_ref());
            for n in 1..=MAX_WORDS {
                for w in t.windows(n) {
                    let ok = w.iter().all(|x| x.chars().all(char::is_alphabetic))
                        && !is_stop_word(&w[0])
                        && !is_stop_word(&w[n - 1]);
                    if ok {
                        let e = counts.entry(w.join(" ")).or_insert((0, usize::MAX));
                        // Count captions, not occurrences; remember the first for ordering.
                        if e.1 != ci {
                            e.0 += 1;
                            e.1 = ci;
                        }
                    }
                }
            }
        }
        let mut kept: Vec<(String, usize)> = counts
            .into_iter()
            .filter(|(_, (c, _))| *c >= min_count.max(1))
            .map(|(p, (c, _))| (p, c))
            .collect();
        kept.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Self::new(kept.into_iter().map(|(p, _)| p))
    }

    /// Number of concepts, plurals included.
    pub fn len(&self) -> usize {
        self.concepts.len()
    }

    /// `true` when there are no concepts.
    pub fn is_empty(&self) -> bool {
        self.concepts.is_empty()
    }

    /// Concept `i`.
    pub fn name(&self, i: usize) -> &str {
        &self.concepts[i]
    }

    /// Every concept, in index order.
    pub fn names(&self) -> &[String] {
        &self.concepts
    }

    /// The index of `concept`, if in the gallery.
    pub fn position(&self, concept: &str) -> Option<usize> {
        self.index.get(concept).copied()
    }

    /// A caption's concepts: its 1–4-grams found in the gallery, each once, in order of first
    /// appearance (shorter n-grams of a position first, as `everygrams` lists them).
    pub fn concepts_in(&self, caption: &str) -> Vec<usize> {
        let t = tokens(caption);
        let mut out = Vec::new();
        for start in 0..t.len() {
            for n in 1..=MAX_WORDS.min(t.len() - start) {
                if let Some(&i) = self.index.get(&t[start..start + n].join(" "))
                    && !out.contains(&i)
                {
                    out.push(i);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_follow_english_rules() {
        for (one, many) in [
            ("red circle", "red circles"),
            ("box", "boxes"),
            ("church", "churches"),
            ("butterfly", "butterflies"),
            ("toy", "toys"),
            ("traffic light", "traffic lights"),
            ("young woman", "young women"),
            ("person", "people"),
            ("sheep", "sheep"),
            ("glass", "glasses"),
        ] {
            assert_eq!(pluralize(one), many);
        }
    }

    #[test]
    fn concepts_are_the_grams_found_in_the_gallery() {
        let g = ConceptGallery::new(["Red  Circle", "circle", "blue square", "dog", "a b c d e"]);
        // Five words is too long; plurals added after the given concepts.
        assert_eq!(
            g.names(),
            [
                "red circle",
                "circle",
                "blue square",
                "dog",
                "red circles",
                "circles",
                "blue squares",
                "dogs"
            ]
        );
        let found: Vec<&str> = g
            .concepts_in("Two red circles, a blue square and a circle; a dog. Dogs!")
            .into_iter()
            .map(|i| g.name(i))
            .collect();
        assert_eq!(
            found,
            [
                "red circles",
                "circles",
                "blue square",
                "circle",
                "dog",
                "dogs"
            ]
        );
        // Punctuation breaks n-grams.
        assert!(
            g.concepts_in("red. circle")
                .iter()
                .all(|&i| g.name(i) == "circle")
        );
        assert!(g.concepts_in("").is_empty());
    }

    #[test]
    fn galleries_from_files_and_captions() {
        let dir = tempfile::tempdir().unwrap();
        let lines = dir.path().join("g.txt");
        std::fs::write(&lines, "# shapes\nstar\n\ncross\n").unwrap();
        assert_eq!(
            ConceptGallery::from_file(&lines).unwrap().names(),
            ["star", "cross", "stars", "crosses"]
        );
        let json = dir.path().join("g.json");
        std::fs::write(&json, r#"{"animals": ["cat"], "things": ["bus"]}"#).unwrap();
        let g = ConceptGallery::from_file(&json).unwrap();
        assert!(g.position("buses").is_some() && g.position("cats").is_some());
        std::fs::write(&json, r#"{"animals": [3]}"#).unwrap();
        let err = ConceptGallery::from_file(&json).unwrap_err().to_string();
        assert!(
            err.contains("g.json") && err.contains("3 is not a string"),
            "{err}"
        );

        let mined = ConceptGallery::from_captions(
            &[
                "a photo of a red circle",
                "the red circle on grey",
                "a red circle",
                "a blue star",
            ],
            2,
        );
        // "red circle", "red" and "circle" are in 3 captions; "photo", "blue star" in fewer; no
        // n-gram starts or ends with a stop word ("a red").
        assert_eq!(mined.position("red circle"), Some(2));
        assert!(mined.position("circle").is_some() && mined.position("red").is_some());
        assert!(mined.position("photo").is_none() && mined.position("a red").is_none());
        assert!(mined.position("blue star").is_none());
    }
}
