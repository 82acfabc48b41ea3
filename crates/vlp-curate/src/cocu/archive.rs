//! The concept archive on disk: what `vlp curate cocu` writes and the CoCu method trains from.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{CocuError, ConceptGallery, ScoredConcept};

/// One concept of an image's archive, by name, with its scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchivedConcept {
    /// The gallery phrase.
    pub concept: String,
    /// `global / max + local`, the ranking score.
    pub score: f32,
    /// Similarity to the image.
    pub global: f32,
    /// That similarity over its mean over the reference images.
    pub local: f32,
}

/// One image's curated concepts, best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArchiveEntry {
    /// The image's key in its source.
    pub key: String,
    /// Its caption.
    pub caption: String,
    /// Its concepts, ranked.
    pub concepts: Vec<ArchivedConcept>,
}

/// Every image's curated concepts, and how they were curated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConceptArchive {
    /// Model, data, index, gallery size and settings of the curation run.
    pub summary: serde_json::Value,
    /// The images, in source order.
    pub images: Vec<ArchiveEntry>,
}

impl ConceptArchive {
    /// Reads an archive, naming the file in every error.
    pub fn read(path: &Path) -> Result<Self, CocuError> {
        let bad = |reason: String| CocuError::File {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let archive: Self = serde_json::from_slice(&bytes).map_err(|e| {
            bad(format!(
                "not a concept archive (from `vlp curate cocu`): {e}"
            ))
        })?;
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = archive.images.iter().find(|e| !seen.insert(e.key.as_str())) {
            return Err(bad(format!("image {:?} appears twice", dup.key)));
        }
        Ok(archive)
    }

    /// The archive of images `keys` with `captions`, from their ranked concepts
    /// ([`concept_archive`](super::concept_archive)) named by `gallery`.
    ///
    /// Fails when the three lists differ in length (an image would be lost or misattributed).
    pub fn from_ranked(
        summary: serde_json::Value,
        keys: &[String],
        captions: &[String],
        ranked: &[Vec<ScoredConcept>],
        gallery: &ConceptGallery,
    ) -> Result<Self, String> {
        if keys.len() != captions.len() || keys.len() != ranked.len() {
            return Err(format!(
                "{} keys, {} captions and {} ranked lists: one of each per image",
                keys.len(),
                captions.len(),
                ranked.len()
            ));
        }
        let images = keys
            .iter()
            .zip(captions)
            .zip(ranked)
            .map(|((key, caption), ranked)| ArchiveEntry {
                key: key.clone(),
                caption: caption.clone(),
                concepts: ranked
                    .iter()
                    .map(|c| ArchivedConcept {
                        concept: gallery.name(c.concept).to_string(),
                        score: c.score,
                        global: c.global,
                        local: c.local,
                    })
                    .collect(),
            })
            .collect();
        Ok(Self { summary, images })
    }

    /// Writes the archive atomically.
    pub fn write(&self, path: &Path) -> Result<(), CocuError> {
        let bytes = serde_json::to_vec(self).expect("an archive serialises");
        vlp_core::io::write_atomic(path, &bytes).map_err(|e| CocuError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_ranked_names_concepts_and_refuses_unequal_lists() {
        let g = ConceptGallery::new(["red circle", "blue star"]);
        let scored = |concept, score| ScoredConcept {
            concept,
            score,
            global: score / 2.0,
            local: score / 4.0,
        };
        let keys = vec!["k1".to_string(), "k2".to_string()];
        let caps = vec!["a red circle".to_string(), "a blue star".to_string()];
        let ranked = vec![vec![scored(1, 2.0), scored(0, 1.0)], vec![]];
        let a = ConceptArchive::from_ranked(serde_json::json!({"n": 2}), &keys, &caps, &ranked, &g)
            .unwrap();
        assert_eq!(a.images.len(), 2);
        assert_eq!(a.images[1].key, "k2");
        assert_eq!(a.images[1].caption, "a blue star");
        assert!(a.images[1].concepts.is_empty());
        let names: Vec<&str> = a.images[0]
            .concepts
            .iter()
            .map(|c| c.concept.as_str())
            .collect();
        assert_eq!(names, [g.name(1), g.name(0)]);
        assert_eq!(
            a.images[0].concepts[0],
            ArchivedConcept {
                concept: g.name(1).to_string(),
                score: 2.0,
                global: 1.0,
                local: 0.5
            }
        );
        let err =
            ConceptArchive::from_ranked(serde_json::json!({}), &keys, &caps, &ranked[..1], &g)
                .unwrap_err();
        assert!(
            err.contains("2 keys, 2 captions and 1 ranked lists"),
            "{err}"
        );
    }

    #[test]
    fn round_trips_and_refuses_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        let entry = |key: &str| ArchiveEntry {
            key: key.into(),
            caption: "a red circle".into(),
            concepts: vec![ArchivedConcept {
                concept: "blue star".into(),
                score: 1.5,
                global: 0.3,
                local: 1.2,
            }],
        };
        let a = ConceptArchive {
            summary: serde_json::json!({"neighbours": 8}),
            images: vec![entry("k1"), entry("k2")],
        };
        a.write(&path).unwrap();
        assert_eq!(ConceptArchive::read(&path).unwrap(), a);
        let twice = ConceptArchive {
            images: vec![entry("k1"), entry("k1")],
            ..a
        };
        twice.write(&path).unwrap();
        let err = ConceptArchive::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("a.json") && err.contains("\"k1\" appears twice"),
            "{err}"
        );
        std::fs::write(&path, b"[1, 2]").unwrap();
        assert!(
            ConceptArchive::read(&path)
                .unwrap_err()
                .to_string()
                .contains("not a concept archive")
        );
    }
}
